//! Response KPIs over a time window, overall, per service or per runbook:
//!
//! - MTTD: the first alert's start to the incident opened;
//! - MTTA: opened to the first acknowledgement, approval or action;
//! - MTTR: the first alert's start to resolved;
//! - the auto-closure rate: incidents resolved with no human step, over all;
//! - the human-intervention rate: incidents a human touched, over all;
//! - the runbook success rate: runs that ended in resolution, over all
//!   runs that ended (resolved, escalated, failed, cancelled, interrupted).
//!
//! Means are arithmetic, in seconds; a KPI with nothing to measure is
//! `None`, never zero.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::record::{IncidentRecord, Outcome};

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
    /// Resolved with no human step, over all incidents.
    pub auto_closure_rate: Option<f64>,
    /// Touched by a human, over all incidents.
    pub human_intervention_rate: Option<f64>,
    /// Runs that ended (resolved, escalated, failed, cancelled,
    /// interrupted) in resolution, over all runs that ended.
    pub runbook_success_rate: Option<f64>,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

fn secs(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// The KPIs of `records`.
pub fn compute(records: &[&IncidentRecord]) -> Kpis {
    use crate::record::IncidentStatus as S;
    let closed = records.iter().filter(|r| r.status.is_closed()).count();
    // Runs that ended, one way or another.
    let ended: Vec<&&IncidentRecord> = records
        .iter()
        .filter(|r| r.runbook.is_some())
        .filter(|r| {
            !matches!(
                r.status,
                S::Open | S::Diagnosing | S::Remediating | S::Verifying
            )
        })
        .collect();
    Kpis {
        incidents: records.len(),
        closed,
        mttd_seconds: mean(
            records
                .iter()
                .map(|r| secs(r.first_alert_at, r.opened_at).max(0.0)),
        ),
        mtta_seconds: mean(
            records
                .iter()
                .filter_map(|r| r.acknowledged_or_acted_at().map(|t| secs(r.opened_at, t))),
        ),
        mttr_seconds: mean(
            records
                .iter()
                .filter_map(|r| r.resolved_at.map(|t| secs(r.first_alert_at, t))),
        ),
        auto_closure_rate: ratio(
            records
                .iter()
                .filter(|r| r.outcome() == Outcome::AutoResolved)
                .count(),
            records.len(),
        ),
        human_intervention_rate: ratio(
            records
                .iter()
                .filter(|r| r.first_human_at().is_some())
                .count(),
            records.len(),
        ),
        runbook_success_rate: ratio(
            ended.iter().filter(|r| r.status == S::Resolved).count(),
            ended.len(),
        ),
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
    let mut groups: BTreeMap<String, Vec<&IncidentRecord>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.opened_at >= since) {
        let key = match by {
            By::Overall => "all".to_string(),
            By::Service => {
                let s = r.service();
                if s.is_empty() { "-".into() } else { s }
            }
            By::Runbook => r
                .runbook
                .as_ref()
                .map(|b| b.name.clone())
                .unwrap_or_else(|| "-".into()),
        };
        groups.entry(key).or_default().push(r);
    }
    groups.into_iter().map(|(k, v)| (k, compute(&v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::*;

    fn t(s: &str) -> DateTime<Utc> {
        format!("2026-11-27T{s}Z").parse().unwrap()
    }

    /// An incident: alert start, opened, optional ack, optional action,
    /// optional resolution.
    fn incident(
        id: &str,
        service: &str,
        runbook: Option<&str>,
        times: (&str, &str, Option<&str>, Option<&str>, Option<&str>),
        status: IncidentStatus,
    ) -> IncidentRecord {
        let (start, opened, ack, action, resolved) = times;
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("service".to_string(), service.to_string());
        IncidentRecord {
            schema: 1,
            id: id.into(),
            title: id.into(),
            status,
            runbook: runbook.map(|n| RunbookRef {
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
                fingerprint: id.into(),
                state: AlertState::Firing,
                labels,
                annotations: Default::default(),
                starts_at: Some(t(start)),
                ends_at: None,
                first_received_at: t(opened),
                notifications: 1,
            }],
            first_alert_at: t(start),
            opened_at: t(opened),
            updated_at: t(opened),
            resolved_at: resolved.map(t),
            timeline: Vec::new(),
            steps: action
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
            acknowledged: ack.map(|a| Acknowledgement {
                at: t(a),
                by: "alice".into(),
            }),
            notes: Notes::default(),
            external_id: None,
            similar: None,
            chaos: Vec::new(),
        }
    }

    fn fixture() -> Vec<IncidentRecord> {
        use IncidentStatus::*;
        vec![
            // Auto-remediated: detected in 30s, acted on after 60s, resolved 5 min after start.
            incident(
                "inc-1",
                "checkout",
                Some("restart"),
                (
                    "10:00:00",
                    "10:00:30",
                    None,
                    Some("10:01:30"),
                    Some("10:05:00"),
                ),
                Resolved,
            ),
            // A human acknowledged after 120s, resolved 20 min after start.
            incident(
                "inc-2",
                "checkout",
                Some("restart"),
                (
                    "11:00:00",
                    "11:00:10",
                    Some("11:02:10"),
                    None,
                    Some("11:20:00"),
                ),
                Resolved,
            ),
            // Escalated, never resolved; detected in 50s, acted on after 10s.
            incident(
                "inc-3",
                "search",
                Some("rollback"),
                ("12:00:00", "12:00:50", None, Some("12:01:00"), None),
                Escalated,
            ),
            // No runbook, still open; detected in 0s.
            incident(
                "inc-4",
                "search",
                None,
                ("13:00:00", "13:00:00", None, None, None),
                Open,
            ),
            // Before the window.
            incident(
                "inc-0",
                "checkout",
                Some("restart"),
                ("01:00:00", "01:10:00", None, None, Some("02:00:00")),
                Resolved,
            ),
        ]
    }

    #[test]
    fn kpis_match_the_hand_computed_values() {
        let records = fixture();
        let all = stats(&records, t("09:00:00"), By::Overall);
        let k = &all["all"];
        assert_eq!((k.incidents, k.closed), (4, 2));
        // MTTD: (30 + 10 + 50 + 0) / 4 = 22.5
        assert_eq!(k.mttd_seconds, Some(22.5));
        // MTTA: inc-1 60, inc-2 120, inc-3 10 => 63.33
        assert!((k.mtta_seconds.unwrap() - 190.0 / 3.0).abs() < 1e-9);
        // MTTR: inc-1 300, inc-2 1200 => 750
        assert_eq!(k.mttr_seconds, Some(750.0));
        // Auto-closed: inc-1 only, of 4.
        assert_eq!(k.auto_closure_rate, Some(0.25));
        // A human touched inc-2 only.
        assert_eq!(k.human_intervention_rate, Some(0.25));
        // Runs that ended: inc-1, inc-2 (resolved), inc-3 (escalated) => 2/3.
        assert!((k.runbook_success_rate.unwrap() - 2.0 / 3.0).abs() < 1e-9);

        let by_service = stats(&records, t("09:00:00"), By::Service);
        assert_eq!(by_service["checkout"].mttr_seconds, Some(750.0));
        assert_eq!(
            by_service["search"].mttr_seconds, None,
            "nothing resolved: no value, not zero"
        );
        let by_runbook = stats(&records, t("09:00:00"), By::Runbook);
        assert_eq!(by_runbook["-"].incidents, 1);
        assert_eq!(by_runbook["rollback"].runbook_success_rate, Some(0.0));
    }
}
