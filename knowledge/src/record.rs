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
    /// Opened; nothing has run yet.
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

/// One entry on an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// When it happened, UTC.
    pub at: DateTime<Utc>,
    /// A stable kind: `opened`, `alert`, `resolved`, ...
    pub kind: String,
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
    /// `event`, `step` or `evidence`.
    pub lane: &'static str,
    /// What: the event kind, the step id, the evidence's step.
    pub what: String,
    /// A sentence.
    pub detail: String,
}

impl IncidentRecord {
    /// Everything that happened, on one time axis: timeline events, each
    /// step's run, and the capture window of every piece of evidence
    /// (profiles, traces: `output.window`), sorted by start.
    pub fn aligned(&self) -> Vec<AlignedEntry> {
        let mut out: Vec<AlignedEntry> = self
            .timeline
            .iter()
            .map(|e| AlignedEntry {
                at: e.at,
                until: None,
                lane: "event",
                what: e.kind.clone(),
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
                out.push(AlignedEntry {
                    at: start,
                    until: Some(end),
                    lane: "evidence",
                    what: s.id.clone(),
                    detail: format!("{} capture window", s.uses),
                });
            }
        }
        out.sort_by_key(|e| e.at);
        out
    }
}
