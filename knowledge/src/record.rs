//! The incident record.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The version of [`IncidentRecord`]'s stored form. Bump it, and teach
/// [`crate::store`] to migrate, whenever a stored field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

fn yes() -> bool {
    true
}

/// Where an incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    /// Open, and no run is going on: nothing has run yet, or the run
    /// ended without a verification and the incident waits for its alerts
    /// to resolve.
    Open,
    /// Evidence steps are running.
    Diagnosing,
    /// Remediation steps are running.
    Remediating,
    /// Waiting for the fix to show.
    Verifying,
    /// Every alert resolved, or the runbook verified its fix.
    Resolved,
    /// Handed to a human.
    Escalated,
    /// The runbook failed.
    Failed,
    /// Stopped by a human or by the alert resolving first.
    Cancelled,
    /// Automation stopped in the middle (the engine died during a step that
    /// could not be resumed safely); a human takes over.
    Interrupted,
}

impl IncidentStatus {
    /// Every status, in the order of an incident's life.
    pub const ALL: [IncidentStatus; 9] = [
        IncidentStatus::Open,
        IncidentStatus::Diagnosing,
        IncidentStatus::Remediating,
        IncidentStatus::Verifying,
        IncidentStatus::Resolved,
        IncidentStatus::Escalated,
        IncidentStatus::Failed,
        IncidentStatus::Cancelled,
        IncidentStatus::Interrupted,
    ];

    /// The status named `name` (its lowercase name).
    pub fn parse(name: &str) -> Option<IncidentStatus> {
        IncidentStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// True once the incident is over: its alerts resolved, or a run was
    /// cancelled because they did. An escalated, failed or interrupted run
    /// leaves the incident open: alerts still attach to it, and it resolves
    /// when they do.
    pub fn is_closed(self) -> bool {
        matches!(self, IncidentStatus::Resolved | IncidentStatus::Cancelled)
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Diagnosing => "diagnosing",
            IncidentStatus::Remediating => "remediating",
            IncidentStatus::Verifying => "verifying",
            IncidentStatus::Resolved => "resolved",
            IncidentStatus::Escalated => "escalated",
            IncidentStatus::Failed => "failed",
            IncidentStatus::Cancelled => "cancelled",
            IncidentStatus::Interrupted => "interrupted",
        }
    }
}

/// How a runbook's run ended. Kept apart from the incident's status: an
/// alert that resolves by itself closes the incident, but does not make a
/// failed run a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    /// Every step succeeded (or was skipped by its `when`), and the
    /// verification, if the runbook has one, saw the fix.
    Succeeded,
    /// A step failed (one that continued on error too) or the fix did not
    /// show, and there was nobody to escalate to (no `on_failure`, or all
    /// of it failed).
    Failed,
    /// As failed, and `on_failure` reached someone.
    Escalated,
    /// Stopped before its end: the alert resolved first, a human stopped
    /// it, or a guard (kill switch, budget, rejected approval) blocked a
    /// step.
    Cancelled,
    /// The engine stopped in the middle of a step that could not be
    /// resumed safely.
    Interrupted,
    /// `executor.dry_run`: reported what it would do, changed nothing.
    DryRun,
}

impl RunOutcome {
    /// As written in records: `succeeded`, `dry-run`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Escalated => "escalated",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Interrupted => "interrupted",
            RunOutcome::DryRun => "dry-run",
        }
    }

    /// Whether the run went to an end a runbook can be judged by:
    /// succeeded, failed, escalated or interrupted. A cancelled run (the
    /// alert went away first) and a dry run say nothing about the runbook.
    pub fn counts_for_success(self) -> bool {
        matches!(
            self,
            RunOutcome::Succeeded
                | RunOutcome::Failed
                | RunOutcome::Escalated
                | RunOutcome::Interrupted
        )
    }
}

/// The end of the last run for an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// How it ended.
    pub outcome: RunOutcome,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, in words (the failed step and its error, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// An alert's state as the record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Still firing.
    Firing,
    /// Resolved by its sender.
    Resolved,
}

/// One alert of an incident: the latest notification for its fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Position of the latest notification in the engine's alert log.
    pub seq: u64,
    /// The sender (`alertmanager`, `pagerduty`, `generic/NAME`, ...).
    pub source: String,
    /// The sender's fingerprint.
    pub fingerprint: String,
    /// Firing or resolved, as of the latest notification.
    pub state: AlertState,
    /// Labels, untrusted.
    pub labels: BTreeMap<String, String>,
    /// Annotations, untrusted.
    pub annotations: BTreeMap<String, String>,
    /// When the sender says the condition began.
    pub starts_at: Option<DateTime<Utc>>,
    /// When the sender says it ended.
    pub ends_at: Option<DateTime<Utc>>,
    /// When quench first received this fingerprint.
    pub first_received_at: DateTime<Utc>,
    /// How many notifications for this fingerprint reached the incident.
    pub notifications: u32,
}

/// The runbook an incident runs, pinned to the commit it was loaded from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunbookRef {
    /// The runbook's name.
    pub name: String,
    /// Its file, relative to the runbook repository.
    pub path: String,
    /// The commit it was loaded from, when it came from git.
    pub commit: Option<String>,
}

/// Why one runbook did or did not apply to the alert that opened the
/// incident (`quench explain`, kept with the record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchDecision {
    /// The runbook.
    pub runbook: String,
    /// Whether it applied.
    pub matched: bool,
    /// Why not (the failing matcher and the value it saw, ...); for the
    /// triage runbook, why it ran; otherwise empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Where one step of a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// Started; an attempt is under way.
    Running,
    /// Waiting for a human's approval.
    AwaitingApproval,
    /// Finished with an output.
    Succeeded,
    /// Failed after its retries.
    Failed,
    /// Not run: `when` was false, the approval timed out with `skip`, or
    /// the run ended before it.
    Skipped,
    /// Reported what it would do, changed nothing.
    DryRun,
    /// Refused by a guard (kill switch, budget, lock, resolved alert,
    /// rejected approval).
    Blocked,
    /// The engine died while it ran.
    Interrupted,
}

/// One step of an incident's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step id.
    pub id: String,
    /// The step type.
    pub uses: String,
    /// Whether the step changes something outside quench.
    pub destructive: bool,
    /// Where it is.
    pub state: StepState,
    /// Attempts started.
    pub attempts: u32,
    /// `incident/step/attempt` of the latest attempt: the idempotency key a
    /// step can hand to the system it calls, so a repeated attempt is
    /// recognisable there.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attempt_key: String,
    /// The parameters after rendering.
    #[serde(default)]
    pub rendered: serde_json::Value,
    /// What it returned.
    #[serde(default)]
    pub output: serde_json::Value,
    /// Why it failed, was skipped or blocked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When the first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
}

impl StepRecord {
    /// What its evidence says, a line each, for a human reading the
    /// incident: the top of a profile, what grew since the baseline, the
    /// largest goroutine groups and the step's own summary lines.
    pub fn evidence_summary(&self) -> Vec<String> {
        let mut out = self.top_lines();
        out.extend(self.evidence_notes());
        out
    }

    /// The top of a profile's table, a line per function.
    fn top_lines(&self) -> Vec<String> {
        let o = &self.output;
        let mut out = Vec::new();
        let pct = |v: &serde_json::Value| v.as_f64().map_or("-".into(), |x| format!("{x:.1}%"));
        if let Some(rows) = o["top"].as_array().filter(|r| !r.is_empty()) {
            out.push(format!(
                "top by {} (flat, cum):",
                o["sample_type"].as_str().unwrap_or("samples")
            ));
            for r in rows.iter().take(5) {
                out.push(format!(
                    "  {:>7} {:>7}  {}",
                    pct(&r["flat_pct"]),
                    pct(&r["cum_pct"]),
                    r["function"].as_str().unwrap_or("?")
                ));
            }
        }
        out
    }

    /// [`StepRecord::evidence_summary`] without the top table: what grew
    /// since the baseline, goroutine groups, the step's summary lines.
    pub fn evidence_notes(&self) -> Vec<String> {
        let o = &self.output;
        let mut out = Vec::new();
        if let Some(rows) = o["diff"].as_array().filter(|r| !r.is_empty()) {
            out.push(format!(
                "since the baseline of {}:",
                o["baseline"]["service"].as_str().unwrap_or("this service")
            ));
            for r in rows.iter().take(3) {
                let (b, n) = (
                    r["base_pct"].as_f64().unwrap_or(0.0),
                    r["new_pct"].as_f64().unwrap_or(0.0),
                );
                out.push(format!(
                    "  {b:>6.1}% -> {n:>6.1}% ({:+.1})  {}",
                    n - b,
                    r["function"].as_str().unwrap_or("?")
                ));
            }
        } else if let Some(note) = o["baseline"]["note"].as_str() {
            out.push(note.to_string());
        }
        if let Some(groups) = o["groups"].as_array().filter(|g| !g.is_empty()) {
            out.push(format!(
                "{} goroutines, largest groups:",
                o["total"].as_u64().unwrap_or(0)
            ));
            for g in groups.iter().take(3) {
                out.push(format!(
                    "  {:>6} {:<12} {}",
                    g["count"].as_u64().unwrap_or(0),
                    g["state"].as_str().unwrap_or(""),
                    g["function"].as_str().unwrap_or("?")
                ));
            }
        }
        if o["groups"].is_null() {
            for line in o["summary"].as_array().into_iter().flatten().take(5) {
                if let Some(l) = line.as_str() {
                    out.push(l.to_string());
                }
            }
        }
        out
    }

    /// A step that has not started yet.
    pub fn pending(id: &str, uses: &str, destructive: bool) -> StepRecord {
        StepRecord {
            id: id.to_string(),
            uses: uses.to_string(),
            destructive,
            state: StepState::Pending,
            attempts: 0,
            attempt_key: String::new(),
            rendered: serde_json::Value::Null,
            output: serde_json::Value::Null,
            reason: String::new(),
            started_at: None,
            ended_at: None,
        }
    }
}

/// One entry on an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// When it happened, UTC.
    pub at: DateTime<Utc>,
    /// A stable kind: `opened`, `alert`, `resolved`, ...
    pub kind: crate::kinds::EventKind,
    /// A human sentence.
    pub detail: String,
}

/// Everything known about one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentRecord {
    /// Stored-form version; see [`SCHEMA_VERSION`].
    pub schema: u32,
    /// `inc-<n>`, increasing.
    pub id: String,
    /// A one-line title, from the first alert.
    pub title: String,
    /// Where it is in its life.
    pub status: IncidentStatus,
    /// The runbook, if one matched.
    pub runbook: Option<RunbookRef>,
    /// The `group_by` values that alerts attach by.
    pub group_key: String,
    /// Whether the incident resolves when every alert has (the runbook's
    /// `resolve_with_alerts`).
    #[serde(default = "yes")]
    pub resolve_with_alerts: bool,
    /// Every runbook's decision for the alert that opened the incident.
    #[serde(default)]
    pub match_explanation: Vec<MatchDecision>,
    /// One entry per fingerprint.
    pub alerts: Vec<AlertRecord>,
    /// When the first alert's condition started (sender's clock), else when
    /// quench received it.
    pub first_alert_at: DateTime<Utc>,
    /// When quench opened the incident.
    pub opened_at: DateTime<Utc>,
    /// The last change.
    pub updated_at: DateTime<Utc>,
    /// When it closed.
    pub resolved_at: Option<DateTime<Utc>>,
    /// What happened, in order.
    pub timeline: Vec<TimelineEvent>,
    /// The runbook's steps and where each one is.
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// When a human first acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledgement>,
    /// What humans wrote about it: root cause, resolution, commits, tags.
    #[serde(default)]
    pub notes: Notes,
    /// Its id in the system it was imported from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Past incidents like this one, found when it opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similar: Option<Vec<Similar>>,
    /// The chaos experiment runs it opened during.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chaos: Vec<ChaosLink>,
    /// How the last run ended; none while a run goes on, or when no
    /// runbook ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunResult>,
}

/// A chaos experiment run that an incident opened during.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChaosLink {
    /// The experiment's name.
    pub experiment: String,
    /// The run's id.
    pub run: String,
}

/// A human's acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// When.
    pub at: DateTime<Utc>,
    /// Who (the API token's name).
    pub by: String,
}

/// The human fields of an incident, edited with `quench annotate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Notes {
    /// What caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<String>,
    /// What fixed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Commits that caused or fixed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<CommitRef>,
    /// Free labels (`redis`, `capacity`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The last edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime<Utc>>,
    /// By whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_by: Option<String>,
}

/// A commit linked to an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRef {
    /// Its SHA (7 to 40 hex digits).
    pub sha: String,
    /// Its repository, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
}

/// How an incident ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Still open.
    Open,
    /// Resolved after its run succeeded, with no human step before it:
    /// the automation closed it.
    AutoResolved,
    /// Resolved after a human approved or acknowledged.
    ResolvedByHuman,
    /// Resolved with no run that succeeded and no human: the alerts went
    /// away by themselves (or no runbook ran).
    ResolvedByItself,
    /// Handed to a human (`on_failure` reached someone).
    Escalated,
    /// The run failed, and nobody was reached.
    Failed,
    /// Closed otherwise (cancelled, interrupted).
    Other,
}

/// One entry of the aligned timeline: events, steps and evidence windows on
/// one UTC axis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlignedEntry {
    /// When it started (or happened).
    pub at: DateTime<Utc>,
    /// When it ended, for spans (a step, a capture window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// `event`, `step`, `evidence` (capture windows), `metrics` (range
    /// query series) or `kubernetes` (events).
    pub lane: &'static str,
    /// What: the event kind, the step id, the evidence's step.
    pub what: String,
    /// A sentence.
    pub detail: String,
}

impl IncidentRecord {
    /// The service: the first alert's `service`, else `app`, else `job`
    /// label; empty when none has one.
    pub fn service(&self) -> String {
        for key in ["service", "app", "job"] {
            if let Some(v) = self.alerts.iter().find_map(|a| a.labels.get(key)) {
                return v.clone();
            }
        }
        String::new()
    }

    /// The first alert's `severity` label.
    pub fn severity(&self) -> String {
        self.alerts
            .iter()
            .find_map(|a| a.labels.get("severity"))
            .cloned()
            .unwrap_or_default()
    }

    /// When the first destructive step (an action) started.
    pub fn first_action_at(&self) -> Option<DateTime<Utc>> {
        self.steps
            .iter()
            .filter(|s| s.destructive)
            .filter_map(|s| s.started_at)
            .min()
    }

    /// When a human first touched it: an acknowledgement or an approval.
    pub fn first_human_at(&self) -> Option<DateTime<Utc>> {
        let approval = self
            .timeline
            .iter()
            .filter(|e| e.kind == crate::kinds::EventKind::Approval)
            .map(|e| e.at)
            .min();
        match (approval, self.acknowledged.as_ref().map(|a| a.at)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When it was first acknowledged or acted on: MTTA's end.
    pub fn acknowledged_or_acted_at(&self) -> Option<DateTime<Utc>> {
        match (self.first_human_at(), self.first_action_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the fix was in: the run reached verification.
    pub fn mitigated_at(&self) -> Option<DateTime<Utc>> {
        self.timeline
            .iter()
            .find(|e| {
                e.kind == crate::kinds::EventKind::Status && e.detail.ends_with("-> verifying")
            })
            .map(|e| e.at)
            .or(self.resolved_at)
    }

    /// How it ended.
    pub fn outcome(&self) -> Outcome {
        match self.status {
            IncidentStatus::Resolved => {
                let human = self
                    .first_human_at()
                    .zip(self.resolved_at)
                    .is_some_and(|(h, r)| h <= r);
                let fixed = self
                    .run
                    .as_ref()
                    .is_some_and(|r| r.outcome == RunOutcome::Succeeded);
                match (human, fixed) {
                    (true, _) => Outcome::ResolvedByHuman,
                    (false, true) => Outcome::AutoResolved,
                    (false, false) => Outcome::ResolvedByItself,
                }
            }
            IncidentStatus::Escalated => Outcome::Escalated,
            IncidentStatus::Failed => Outcome::Failed,
            s if !s.is_closed() => Outcome::Open,
            _ => Outcome::Other,
        }
    }

    /// Everything that happened, on one time axis: timeline events, each
    /// step's run, the capture window of every piece of evidence
    /// (profiles, traces, logs: `output.window`, with `output.target`),
    /// each series of a range query, and each Kubernetes event, sorted by
    /// start.
    pub fn aligned(&self) -> Vec<AlignedEntry> {
        let mut out: Vec<AlignedEntry> = self
            .timeline
            .iter()
            .map(|e| AlignedEntry {
                at: e.at,
                until: None,
                lane: "event",
                what: e.kind.to_string(),
                detail: e.detail.clone(),
            })
            .collect();
        for s in &self.steps {
            if let Some(start) = s.started_at {
                out.push(AlignedEntry {
                    at: start,
                    until: s.ended_at,
                    lane: "step",
                    what: s.id.clone(),
                    detail: format!("{} {:?}", s.uses, s.state).to_lowercase(),
                });
            }
            let window = &s.output["window"];
            let parse =
                |v: &serde_json::Value| v.as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok());
            if let (Some(start), Some(end)) = (parse(&window["start"]), parse(&window["end"])) {
                let detail = match s.output["target"].as_str() {
                    Some(t) => format!("{} of {t}: capture window", s.uses),
                    None => format!("{} capture window", s.uses),
                };
                out.push(AlignedEntry {
                    at: start,
                    until: Some(end),
                    lane: "evidence",
                    what: s.id.clone(),
                    detail,
                });
            }
            // A range query: each series as a span, with what it did.
            for series in s.output["series"].as_array().into_iter().flatten().take(20) {
                let points: Vec<(f64, f64)> = series["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                    .collect();
                let (Some(first), Some(last)) = (points.first(), points.last()) else {
                    continue;
                };
                let at = |t: f64| DateTime::from_timestamp_millis((t * 1000.0) as i64);
                let (Some(from), Some(to)) = (at(first.0), at(last.0)) else {
                    continue;
                };
                let min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
                let max = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
                let labels: Vec<String> = series["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect();
                out.push(AlignedEntry {
                    at: from,
                    until: Some(to),
                    lane: "metrics",
                    what: s.id.clone(),
                    detail: format!(
                        "{{{}}}: min {min}, max {max}, last {}",
                        labels.join(", "),
                        last.1
                    ),
                });
            }
            // Kubernetes events, each at its own time.
            for e in s.output["events"].as_array().into_iter().flatten() {
                if let Some(t) = parse(&e["time"]) {
                    out.push(AlignedEntry {
                        at: t,
                        until: None,
                        lane: "kubernetes",
                        what: s.id.clone(),
                        detail: format!(
                            "{} {} {}: {}",
                            e["type"].as_str().unwrap_or("?"),
                            e["reason"].as_str().unwrap_or("?"),
                            e["object"].as_str().unwrap_or("?"),
                            e["message"].as_str().unwrap_or("").trim()
                        ),
                    });
                }
            }
        }
        out.sort_by_key(|e| e.at);
        out
    }
}

/// A similar past incident.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Similar {
    /// The incident.
    pub id: String,
    /// Its title.
    pub title: String,
    /// The similarity score.
    pub score: f32,
    /// What matched: `alertname`, `service`, `labels (n)`, `text`.
    pub matched: Vec<String>,
    /// Its root cause, when someone recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<String>,
    /// Its resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, uses: &str, output: serde_json::Value) -> StepRecord {
        StepRecord {
            id: id.into(),
            uses: uses.into(),
            destructive: false,
            state: StepState::Succeeded,
            attempts: 1,
            attempt_key: String::new(),
            rendered: serde_json::Value::Null,
            output,
            reason: String::new(),
            started_at: Some("2026-11-27T17:00:00Z".parse().unwrap()),
            ended_at: Some("2026-11-27T17:00:12Z".parse().unwrap()),
        }
    }

    #[test]
    fn aligns_windows_series_and_kubernetes_events_on_one_axis() {
        let t0: DateTime<Utc> = "2026-11-27T17:00:00Z".parse().unwrap();
        let record = IncidentRecord {
            schema: 1,
            id: "inc-1".into(),
            title: "t".into(),
            status: IncidentStatus::Open,
            runbook: None,
            group_key: String::new(),
            resolve_with_alerts: true,
            match_explanation: Vec::new(),
            alerts: Vec::new(),
            first_alert_at: t0,
            opened_at: t0,
            updated_at: t0,
            resolved_at: None,
            timeline: Vec::new(),
            steps: vec![
                step(
                    "cpu",
                    "pprof.capture",
                    serde_json::json!({"target": "pod/shop/web-1:6060",
                        "window": {"start": "2026-11-27T17:00:01Z", "end": "2026-11-27T17:00:11Z"}}),
                ),
                step(
                    "rate",
                    "promql.range",
                    serde_json::json!({"series": [{"labels": {"job": "web"},
                        "values": [[1795798802.0, 1.0], [1795798812.0, 9.5], [1795798822.0, 4.0]]}]}),
                ),
                step(
                    "events",
                    "k8s.events",
                    serde_json::json!({"events": [{"time": "2026-11-27T16:59:59Z", "type": "Warning",
                        "reason": "BackOff", "object": "Pod/web-1", "message": "restarting"}]}),
                ),
            ],
            acknowledged: None,
            notes: Notes::default(),
            external_id: None,
            similar: None,
            chaos: Vec::new(),
            run: None,
        };
        let entries = record.aligned();
        let lanes: Vec<(&str, &str)> = entries.iter().map(|e| (e.lane, e.what.as_str())).collect();
        assert!(lanes.contains(&("evidence", "cpu")), "{lanes:?}");
        let window = entries.iter().find(|e| e.lane == "evidence").unwrap();
        assert_eq!(
            window.detail,
            "pprof.capture of pod/shop/web-1:6060: capture window"
        );
        let series = entries.iter().find(|e| e.lane == "metrics").unwrap();
        assert_eq!(series.detail, "{job=web}: min 1, max 9.5, last 4");
        assert_eq!(series.at.timestamp(), 1795798802);
        assert_eq!(series.until.unwrap().timestamp(), 1795798822);
        // The event happened before every step, so it comes first.
        assert_eq!(entries[0].lane, "kubernetes");
        assert_eq!(entries[0].detail, "Warning BackOff Pod/web-1: restarting");
        assert!(entries.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn evidence_summaries_name_the_top_the_growth_and_the_goroutine_groups() {
        let mut s = StepRecord::pending("cpu", "pprof.capture", false);
        s.output = serde_json::json!({
            "sample_type": "cpu",
            "top": [{"function": "main.burn", "flat_pct": 91.25, "cum_pct": 95.0}],
            "diff": [{"function": "main.burn", "base_pct": 2.0, "new_pct": 91.25}],
            "baseline": {"service": "checkout"},
        });
        let lines = s.evidence_summary();
        assert_eq!(lines[0], "top by cpu (flat, cum):");
        assert!(
            lines[1].contains("91.2%") && lines[1].ends_with("main.burn"),
            "{lines:?}"
        );
        assert_eq!(lines[2], "since the baseline of checkout:");
        assert!(lines[3].contains("(+89.2)"), "{lines:?}");
        assert_eq!(s.evidence_notes(), lines[2..].to_vec());
        let mut g = StepRecord::pending("dump", "goroutine.dump", false);
        g.output = serde_json::json!({
            "total": 1203,
            "summary": ["ignored: the groups say it"],
            "groups": [{"count": 1200, "state": "chan receive", "function": "main.leak"}],
        });
        let lines = g.evidence_summary();
        assert_eq!(lines[0], "1203 goroutines, largest groups:");
        assert!(
            lines[1].contains("1200") && lines[1].contains("main.leak"),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 2);
    }
}
