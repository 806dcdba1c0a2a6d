//! Response KPIs over a time window, overall, per service or per runbook:
//!
//! - MTTD: the first alert's start to the incident opened;
//! - MTTA: opened to the first acknowledgement, approval or action;
//! - MTTR: the first alert's start to resolved;
//! - the auto-closure rate: incidents resolved after their run succeeded,
//!   with no human step before, over all incidents;
//! - the human-intervention rate: incidents a human touched, over all;
//! - the runbook success rate: runs that succeeded, over the runs that
//!   went to an end a runbook can be judged by (succeeded, failed,
//!   escalated, interrupted; not cancelled because the alert went away
//!   first, not dry runs);
//! - escalations: runs whose `on_failure` reached someone.
//!
//! Everything about runs comes from the run's own outcome
//! ([`crate::RunOutcome`]), never from the incident's status: an alert
//! that resolves by itself closes the incident but does not make its
//! failed run a success.
//!
//! Means are arithmetic, in seconds; a KPI with nothing to measure is
//! `None`, never zero.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::record::{IncidentRecord, Outcome, RunOutcome};

/// The KPIs of a set of incidents.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Kpis {
    /// Incidents opened in the window.
    pub incidents: usize,
    /// Of those, closed (resolved or cancelled).
    pub closed: usize,
    /// Mean time to detect, seconds.
    pub mttd_seconds: Option<f64>,
    /// Mean time to acknowledge (or act), seconds.
    pub mtta_seconds: Option<f64>,
    /// Mean time to resolve, seconds.
    pub mttr_seconds: Option<f64>,
    /// Resolved after a successful run with no human step, over all
    /// incidents.
    pub auto_closure_rate: Option<f64>,
    /// Touched by a human, over all incidents.
    pub human_intervention_rate: Option<f64>,
    /// Runs that succeeded, over runs that went to a judgeable end.
    pub runbook_success_rate: Option<f64>,
    /// Runs that went to a judgeable end.
    #[serde(default)]
    pub runs: usize,
    /// Runs whose `on_failure` reached someone.
    #[serde(default)]
    pub escalations: usize,
}

/// What the KPIs need of one incident: a few numbers, so that they can be
/// kept in the search index's columns and summed over 100,000 incidents
/// without reading a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fact {
    /// The first alert's start to opened, milliseconds, never negative.
    pub detect_ms: i64,
    /// Opened to the first acknowledgement, approval or action.
    pub ack_ms: Option<i64>,
    /// The first alert's start to resolved.
    pub resolve_ms: Option<i64>,
    /// Resolved or cancelled.
    pub closed: bool,
    /// Resolved after its run succeeded, with no human step before.
    pub auto: bool,
    /// A human stepped in.
    pub human: bool,
    /// Its run went to an end a runbook can be judged by.
    pub judged: bool,
    /// Its run succeeded.
    pub succeeded: bool,
    /// Its run's `on_failure` reached someone.
    pub escalated: bool,
}

fn ms(a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
    (b - a).num_milliseconds()
}

impl Fact {
    /// The fact of one record.
    pub fn of(r: &IncidentRecord) -> Fact {
        let run = r.run.as_ref().map(|run| run.outcome);
        Fact {
            detect_ms: ms(r.first_alert_at, r.opened_at).max(0),
            ack_ms: r.acknowledged_or_acted_at().map(|t| ms(r.opened_at, t)),
            resolve_ms: r.resolved_at.map(|t| ms(r.first_alert_at, t)),
            closed: r.status.is_closed(),
            auto: r.outcome() == Outcome::AutoResolved,
            human: r.first_human_at().is_some(),
            judged: run.is_some_and(RunOutcome::counts_for_success),
            succeeded: run == Some(RunOutcome::Succeeded),
            escalated: run == Some(RunOutcome::Escalated),
        }
    }

    /// The run's three flags in one number (for an index column).
    pub fn run_bits(&self) -> u64 {
        u64::from(self.judged) | u64::from(self.succeeded) << 1 | u64::from(self.escalated) << 2
    }

    /// Closed, auto-closed and touched by a human in one number.
    pub fn flag_bits(&self) -> u64 {
        u64::from(self.closed) | u64::from(self.auto) << 1 | u64::from(self.human) << 2
    }

    /// Back from the two numbers.
    pub fn set_bits(&mut self, run: u64, flags: u64) {
        self.judged = run & 1 != 0;
        self.succeeded = run & 2 != 0;
        self.escalated = run & 4 != 0;
        self.closed = flags & 1 != 0;
        self.auto = flags & 2 != 0;
        self.human = flags & 4 != 0;
    }
}

/// Sums facts into [`Kpis`].
#[derive(Debug, Clone, Default)]
pub struct Sum {
    incidents: usize,
    closed: usize,
    detect: (i64, usize),
    ack: (i64, usize),
    resolve: (i64, usize),
    auto: usize,
    human: usize,
    judged: usize,
    succeeded: usize,
    escalations: usize,
}

fn mean((total, n): (i64, usize)) -> Option<f64> {
    (n > 0).then(|| total as f64 / 1000.0 / n as f64)
}

fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

impl Sum {
    /// Counts one incident.
    pub fn add(&mut self, f: &Fact) {
        let add = |into: &mut (i64, usize), v: i64| {
            into.0 = into.0.saturating_add(v);
            into.1 += 1;
        };
        self.incidents += 1;
        self.closed += usize::from(f.closed);
        add(&mut self.detect, f.detect_ms);
        if let Some(a) = f.ack_ms {
            add(&mut self.ack, a);
        }
        if let Some(r) = f.resolve_ms {
            add(&mut self.resolve, r);
        }
        self.auto += usize::from(f.auto);
        self.human += usize::from(f.human);
        self.judged += usize::from(f.judged);
        self.succeeded += usize::from(f.judged && f.succeeded);
        self.escalations += usize::from(f.escalated);
    }

    /// Adds another sum.
    pub fn merge(&mut self, o: &Sum) {
        let add = |a: &mut (i64, usize), b: (i64, usize)| {
            a.0 = a.0.saturating_add(b.0);
            a.1 += b.1;
        };
        self.incidents += o.incidents;
        self.closed += o.closed;
        add(&mut self.detect, o.detect);
        add(&mut self.ack, o.ack);
        add(&mut self.resolve, o.resolve);
        self.auto += o.auto;
        self.human += o.human;
        self.judged += o.judged;
        self.succeeded += o.succeeded;
        self.escalations += o.escalations;
    }

    /// The KPIs.
    pub fn kpis(&self) -> Kpis {
        Kpis {
            incidents: self.incidents,
            closed: self.closed,
            mttd_seconds: mean(self.detect),
            mtta_seconds: mean(self.ack),
            mttr_seconds: mean(self.resolve),
            auto_closure_rate: ratio(self.auto, self.incidents),
            human_intervention_rate: ratio(self.human, self.incidents),
            runbook_success_rate: ratio(self.succeeded, self.judged),
            runs: self.judged,
            escalations: self.escalations,
        }
    }
}

/// The KPIs of `records`.
pub fn compute(records: &[&IncidentRecord]) -> Kpis {
    let mut sum = Sum::default();
    for r in records {
        sum.add(&Fact::of(r));
    }
    sum.kpis()
}

/// The group an incident counts in: its service or runbook (`-` for none).
pub fn group_name(by: By, service: &str, runbook: Option<&str>) -> String {
    let named = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    match by {
        By::Overall => "all".into(),
        By::Service => named(service),
        By::Runbook => named(runbook.unwrap_or("")),
    }
}

/// How to split the KPIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// One row for everything.
    Overall,
    /// Per service label.
    Service,
    /// Per runbook name (`-` for incidents none matched).
    Runbook,
}

/// The KPIs of incidents opened since `since`, split by `by`.
pub fn stats(records: &[IncidentRecord], since: DateTime<Utc>, by: By) -> BTreeMap<String, Kpis> {
    let mut groups: BTreeMap<String, Sum> = BTreeMap::new();
    for r in records.iter().filter(|r| r.opened_at >= since) {
        let key = group_name(
            by,
            &r.service(),
            r.runbook.as_ref().map(|b| b.name.as_str()),
        );
        groups.entry(key).or_default().add(&Fact::of(r));
    }
    groups.into_iter().map(|(k, v)| (k, v.kpis())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::*;

    fn t(s: &str) -> DateTime<Utc> {
        format!("2026-11-27T{s}Z").parse().unwrap()
    }

    /// An incident's shape for the fixture.
    struct Case<'a> {
        id: &'a str,
        service: &'a str,
        runbook: Option<&'a str>,
        start: &'a str,
        opened: &'a str,
        ack: Option<&'a str>,
        action: Option<&'a str>,
        resolved: Option<&'a str>,
        status: IncidentStatus,
        run: Option<RunOutcome>,
    }

    fn incident(c: Case<'_>) -> IncidentRecord {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("service".to_string(), c.service.to_string());
        IncidentRecord {
            schema: 1,
            id: c.id.into(),
            title: c.id.into(),
            status: c.status,
            runbook: c.runbook.map(|n| RunbookRef {
                name: n.into(),
                path: format!("{n}.yaml"),
                commit: None,
            }),
            group_key: String::new(),
            resolve_with_alerts: true,
            match_explanation: Vec::new(),
            alerts: vec![AlertRecord {
                seq: 1,
                source: "alertmanager".into(),
                fingerprint: c.id.into(),
                state: AlertState::Firing,
                labels,
                annotations: Default::default(),
                starts_at: Some(t(c.start)),
                ends_at: None,
                first_received_at: t(c.opened),
                notifications: 1,
            }],
            first_alert_at: t(c.start),
            opened_at: t(c.opened),
            updated_at: t(c.opened),
            resolved_at: c.resolved.map(t),
            timeline: Vec::new(),
            steps: c
                .action
                .map(|a| {
                    vec![StepRecord {
                        id: "restart".into(),
                        uses: "k8s.rollout_restart".into(),
                        destructive: true,
                        state: StepState::Succeeded,
                        attempts: 1,
                        attempt_key: String::new(),
                        rendered: serde_json::Value::Null,
                        output: serde_json::Value::Null,
                        reason: String::new(),
                        started_at: Some(t(a)),
                        ended_at: Some(t(a)),
                    }]
                })
                .unwrap_or_default(),
            acknowledged: c.ack.map(|a| Acknowledgement {
                at: t(a),
                by: "alice".into(),
            }),
            notes: Notes::default(),
            external_id: None,
            similar: None,
            chaos: Vec::new(),
            run: c.run.map(|outcome| RunResult {
                outcome,
                at: t(c.opened),
                detail: String::new(),
            }),
        }
    }

    fn fixture() -> Vec<IncidentRecord> {
        use IncidentStatus::*;
        use RunOutcome as R;
        let case = |id, service, runbook, start, opened| Case {
            id,
            service,
            runbook,
            start,
            opened,
            ack: None,
            action: None,
            resolved: None,
            status: Open,
            run: None,
        };
        vec![
            // The run fixed it: detected in 30 s, acted on after 60 s,
            // resolved 5 min after the start, nobody touched it.
            incident(Case {
                action: Some("10:01:30"),
                resolved: Some("10:05:00"),
                status: Resolved,
                run: Some(R::Succeeded),
                ..case("inc-1", "checkout", Some("restart"), "10:00:00", "10:00:30")
            }),
            // The run succeeded, but a human acknowledged after 120 s first.
            incident(Case {
                ack: Some("11:02:10"),
                resolved: Some("11:20:00"),
                status: Resolved,
                run: Some(R::Succeeded),
                ..case("inc-2", "checkout", Some("restart"), "11:00:00", "11:00:10")
            }),
            // Escalated, still open; detected in 50 s, acted on after 10 s.
            incident(Case {
                action: Some("12:01:00"),
                status: Escalated,
                run: Some(R::Escalated),
                ..case("inc-3", "search", Some("rollback"), "12:00:00", "12:00:50")
            }),
            // No runbook, still open.
            incident(case("inc-4", "search", None, "13:00:00", "13:00:00")),
            // Its only step failed; then the alert resolved by itself:
            // resolved, but neither auto-closed nor a runbook success.
            incident(Case {
                resolved: Some("14:10:00"),
                status: Resolved,
                run: Some(R::Failed),
                ..case("inc-5", "checkout", Some("restart"), "14:00:00", "14:00:20")
            }),
            // A runbook with no verify ran through; the alert still fires.
            incident(Case {
                run: Some(R::Succeeded),
                ..case("inc-6", "search", Some("triage"), "15:00:00", "15:00:40")
            }),
            // A triage run whose steps all failed (continue_on_error).
            incident(Case {
                status: Failed,
                run: Some(R::Failed),
                ..case("inc-7", "search", Some("triage"), "16:00:00", "16:00:00")
            }),
            // Cancelled: the alert resolved before the run's end.
            incident(Case {
                resolved: Some("17:02:00"),
                status: Cancelled,
                run: Some(R::Cancelled),
                ..case("inc-8", "checkout", Some("restart"), "17:00:00", "17:00:30")
            }),
            // A dry run.
            incident(Case {
                run: Some(R::DryRun),
                ..case("inc-9", "checkout", Some("restart"), "18:00:00", "18:00:10")
            }),
            // Before the window.
            incident(Case {
                resolved: Some("02:00:00"),
                status: Resolved,
                run: Some(R::Succeeded),
                ..case("inc-0", "checkout", Some("restart"), "01:00:00", "01:10:00")
            }),
        ]
    }

    #[test]
    fn kpis_match_the_hand_computed_values() {
        let records = fixture();
        let all = stats(&records, t("09:00:00"), By::Overall);
        let k = &all["all"];
        // inc-1..9; closed: inc-1, inc-2, inc-5 (resolved), inc-8 (cancelled).
        assert_eq!((k.incidents, k.closed), (9, 4));
        // MTTD: (30 + 10 + 50 + 0 + 20 + 40 + 0 + 30 + 10) / 9 = 190 / 9.
        assert!((k.mttd_seconds.unwrap() - 190.0 / 9.0).abs() < 1e-9);
        // MTTA: inc-1 60, inc-2 120, inc-3 10 => 190 / 3.
        assert!((k.mtta_seconds.unwrap() - 190.0 / 3.0).abs() < 1e-9);
        // MTTR: inc-1 300, inc-2 1200, inc-5 600, inc-8 120 => 555.
        assert_eq!(k.mttr_seconds, Some(555.0));
        // Auto-closed: inc-1 only (inc-2 had a human, inc-5's run failed).
        assert!((k.auto_closure_rate.unwrap() - 1.0 / 9.0).abs() < 1e-9);
        // A human touched inc-2 only.
        assert!((k.human_intervention_rate.unwrap() - 1.0 / 9.0).abs() < 1e-9);
        // Judged runs: inc-1 S, inc-2 S, inc-3 E, inc-5 F, inc-6 S, inc-7 F
        // (inc-8 cancelled and inc-9 a dry run say nothing) => 3 / 6.
        assert_eq!(k.runs, 6);
        assert_eq!(k.runbook_success_rate, Some(0.5));
        // Only inc-3 reached someone.
        assert_eq!(k.escalations, 1);

        let by_service = stats(&records, t("09:00:00"), By::Service);
        // checkout: inc-1 300, inc-2 1200, inc-5 600, inc-8 120.
        assert_eq!(by_service["checkout"].mttr_seconds, Some(555.0));
        assert_eq!(
            by_service["search"].mttr_seconds, None,
            "nothing resolved: no value, not zero"
        );
        // search: inc-3 E, inc-6 S, inc-7 F.
        assert!((by_service["search"].runbook_success_rate.unwrap() - 1.0 / 3.0).abs() < 1e-9);
        let by_runbook = stats(&records, t("09:00:00"), By::Runbook);
        assert_eq!(by_runbook["-"].incidents, 1);
        assert_eq!(by_runbook["-"].runbook_success_rate, None);
        assert_eq!(by_runbook["rollback"].runbook_success_rate, Some(0.0));
        assert_eq!(by_runbook["rollback"].escalations, 1);
        // restart: inc-1 S, inc-2 S, inc-5 F judged => 2 / 3.
        assert!((by_runbook["restart"].runbook_success_rate.unwrap() - 2.0 / 3.0).abs() < 1e-9);
    }

    /// The outcome of a resolved incident follows its run and its humans,
    /// not only its status.
    #[test]
    fn a_resolved_incident_is_auto_closed_only_when_its_run_succeeded() {
        let records = fixture();
        let by_id = |id: &str| records.iter().find(|r| r.id == id).unwrap().outcome();
        assert_eq!(by_id("inc-1"), Outcome::AutoResolved);
        assert_eq!(by_id("inc-2"), Outcome::ResolvedByHuman);
        assert_eq!(by_id("inc-5"), Outcome::ResolvedByItself);
        assert_eq!(by_id("inc-3"), Outcome::Escalated);
        assert_eq!(by_id("inc-7"), Outcome::Failed);
        assert_eq!(by_id("inc-6"), Outcome::Open);
    }

    /// The index's columns give the same KPIs as the records, per window
    /// and split, so the console's and the API's figures are the records'.
    #[test]
    fn the_index_columns_give_the_records_kpis() {
        let records = fixture();
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = crate::search::SearchIndex::open(dir.path()).unwrap();
        index.upsert(&records).unwrap();
        for since in ["00:00:00", "09:00:00", "12:00:00", "18:00:10", "19:00:00"] {
            for by in [By::Overall, By::Service, By::Runbook] {
                let want = stats(&records, t(since), by);
                assert_eq!(
                    index.kpis(t(since), by).unwrap(),
                    want,
                    "since {since}, {by:?}"
                );
            }
        }
        assert_eq!(stats(&records, t("09:00:00"), By::Runbook).len(), 4);
    }
}
