//! The bodies the HTTP API takes and gives, shared by the server
//! (`http/`) and the CLI (`client.rs`, the `quench` commands): one
//! definition of each shape, so the two cannot drift apart.

use std::collections::BTreeMap;

use crate::chaos::RunReport;
use chrono::{DateTime, Utc};
use quench_knowledge::kpi::Kpis;
use quench_knowledge::search::Hit;
use quench_knowledge::{Acknowledgement, AuditEntry, IncidentRecord, Notes, PauseState};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/incidents/{id}/approvals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The waiting step's id.
    pub step: String,
    /// `approve` or `reject`.
    pub decision: String,
    /// Why (kept in the audit log).
    #[serde(default)]
    pub reason: String,
}

/// `POST /api/v1/incidents/{id}/annotations`: what a human learned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationRequest {
    /// The root cause, replacing the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<String>,
    /// The resolution, replacing the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Commits to link: `SHA` or `SHA@repository`.
    #[serde(default)]
    pub commits: Vec<String>,
    /// Tags to add.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `POST /api/v1/control/pause` and `/resume`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReasonRequest {
    /// Why (kept in the audit log).
    #[serde(default)]
    pub reason: String,
}

/// What `GET /api/v1/incidents?status=` takes: `unresolved` (any status
/// but resolved and cancelled), or one status by name.
pub fn status_names() -> Vec<&'static str> {
    std::iter::once("unresolved")
        .chain(
            quench_knowledge::IncidentStatus::ALL
                .iter()
                .map(|s| s.as_str()),
        )
        .collect()
}

/// `GET /api/v1/incidents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentList {
    /// Newest first.
    pub incidents: Vec<IncidentRecord>,
}

/// `GET /api/v1/search`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResponse {
    /// The query as given.
    pub query: String,
    /// How many incidents match in all.
    #[serde(default)]
    pub total: usize,
    /// How many matches this page skipped.
    #[serde(default)]
    pub offset: usize,
    /// The page size asked for.
    #[serde(default)]
    pub limit: usize,
    /// This page, best first.
    pub hits: Vec<Hit>,
}

/// `GET /api/v1/stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsResponse {
    /// The window's start.
    pub since: DateTime<Utc>,
    /// `all`, `service` or `runbook`.
    pub by: String,
    /// The KPIs of each group.
    pub groups: BTreeMap<String, Kpis>,
    /// Record changes the figures do not include yet: 0 unless the search
    /// index (they are summed from its columns) was still behind the
    /// records 2 s after the request.
    #[serde(default)]
    pub index_lag_changes: u64,
}

/// `GET /api/v1/audit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditList {
    /// Newest first.
    pub audit: Vec<AuditEntry>,
}

/// An error answer: `{"error": {"code", "message", ...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong, for a program (`code`) and a human (`message`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `not_found`, `invalid_import`, ...
    pub code: String,
    /// For a human.
    pub message: String,
    /// Each problem, for answers that list several (an import).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Whatever else the error names (`field`, `line`, `column`, ...).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// The answer to an approval.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalAnswer {
    /// `ok`.
    pub status: String,
    /// The incident.
    pub incident: String,
    /// The step that was waiting.
    pub step: String,
    /// `approve` or `reject`.
    pub decision: String,
    /// Who answered.
    pub by: String,
}

/// `POST /api/v1/incidents/{id}/ack`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckAnswer {
    /// The incident.
    pub incident: String,
    /// The first acknowledgement (a second one changes nothing).
    pub acknowledged: Option<Acknowledgement>,
}

/// `POST /api/v1/incidents/{id}/annotations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotesAnswer {
    /// The incident.
    pub incident: String,
    /// Its notes after the change.
    pub notes: Notes,
}

/// `POST /api/v1/incidents/{id}/rerun`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerunAnswer {
    /// The incident.
    pub incident: String,
    /// The runbook that runs.
    pub runbook: String,
    /// Its commit, for git.
    pub commit: Option<String>,
}

/// `POST /api/v1/import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportAnswer {
    /// How many incidents were stored.
    pub imported: usize,
    /// Their ids, in the file's order (the first 1,000).
    pub ids: Vec<String>,
    /// Whether `ids` stops short of `imported`.
    #[serde(default)]
    pub ids_truncated: bool,
    /// The first new incident.
    #[serde(default)]
    pub first: Option<String>,
    /// The last new incident.
    #[serde(default)]
    pub last: Option<String>,
    /// Records an incident already holds (by external id): not imported
    /// again (the first 1,000).
    #[serde(default)]
    pub already: Vec<AlreadyImported>,
    /// How many records were already held.
    #[serde(default)]
    pub already_count: usize,
    /// With `batch=N`: each batch of lines, written or not.
    #[serde(default)]
    pub batches: Vec<ImportBatch>,
    /// With `batch=N`: problems in all batches.
    #[serde(default)]
    pub problem_count: usize,
}

/// One batch (N incidents) of a JSON Lines import with `batch=N`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportBatch {
    /// Its first line (1-based).
    pub first_line: u64,
    /// Its last line.
    pub last_line: u64,
    /// Whether it was written (every line good).
    pub written: bool,
    /// New incidents it added.
    pub imported: usize,
    /// Its problems (the first 100 of the import in all).
    pub problems: Vec<String>,
}

/// A record of an import file that an incident already holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlreadyImported {
    /// Its id in the system it came from.
    pub external_id: String,
    /// The incident that holds it.
    pub incident: String,
}

/// `POST /api/v1/reindex`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReindexAnswer {
    /// Incidents indexed.
    pub indexed: u64,
}

/// `GET /api/v1/control`, and the answer to pause and resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlAnswer {
    /// True while no destructive step runs.
    pub paused: bool,
    /// The last change, if there was one.
    pub last_change: Option<PauseState>,
}

/// `GET /api/v1/status`: what an on-call engineer checks first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// The server's version.
    pub version: String,
    /// The kill switch.
    pub control: ControlAnswer,
    /// The runbook set in force.
    pub runbooks: RunbookSetStatus,
    /// Alerts the pipeline has not processed yet.
    pub pipeline_lag_alerts: u64,
    /// Record changes the search index has not taken in yet.
    pub index_lag_changes: u64,
    /// Jobs waiting for the knowledge store's writer.
    pub store_writer_queue: u64,
    /// Runbook runs going on.
    pub runs_active: u64,
    /// Incidents not resolved or cancelled.
    pub unresolved_incidents: usize,
    /// Whether chaos experiments start at their scheduled times.
    pub chaos_schedule: bool,
}

/// The runbook set in force, in [`StatusAnswer`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunbookSetStatus {
    /// A directory, or a git repository, branch and path.
    pub source: String,
    /// The commit, for git.
    pub commit: Option<String>,
    /// How many runbooks.
    pub count: usize,
    /// When it was swapped in.
    pub loaded_at: Option<DateTime<Utc>>,
    /// Why the last attempt to load a newer set was refused, if it was
    /// (the set above stays in force).
    pub last_error: Option<Vec<String>>,
}

/// `GET /api/v1/chaos`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChaosList {
    /// Whether schedules fire (`chaos.schedule`); when false, an
    /// experiment runs only when started.
    #[serde(default)]
    pub schedules_on: bool,
    /// The experiments in force.
    pub experiments: Vec<ExperimentInfo>,
}

/// One experiment in [`ChaosList`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentInfo {
    /// Its name.
    pub name: String,
    /// Its title.
    pub title: String,
    /// Its file, relative to the runbook directory.
    pub path: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its schedule, if it has one.
    pub schedule: Option<ScheduleInfo>,
    /// Runs of it going on.
    pub running: Vec<String>,
}

/// When an experiment runs by itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleInfo {
    /// The cron expression.
    pub cron: String,
    /// Its time zone.
    pub timezone: String,
    /// In words.
    pub describe: String,
    /// The next three runs.
    pub next: Vec<DateTime<Utc>>,
}

/// `POST /api/v1/chaos/{name}/run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChaosStarted {
    /// The run's id.
    pub run: String,
}

/// `POST /api/v1/chaos/runs/{run}/abort`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChaosAborting {
    /// The run.
    pub run: String,
    /// Always true: the rollbacks run.
    pub aborting: bool,
}

/// `GET /api/v1/chaos/runs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChaosRuns {
    /// Verdicts, newest first.
    pub runs: Vec<RunReport>,
    /// Runs going on: (run, experiment).
    pub running: Vec<(String, String)>,
}

/// `GET /api/v1/chaos/runs/{run}`: still going on, or its verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChaosRunAnswer {
    /// Going on.
    Running {
        /// The run.
        run: String,
        /// `running`.
        state: String,
    },
    /// Ended.
    Done(Box<RunReport>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_keep_the_documented_shapes() {
        let a: ApprovalRequest =
            serde_json::from_str(r#"{"step": "restart", "decision": "approve"}"#).unwrap();
        assert_eq!(a.reason, "");
        let body = serde_json::to_value(AnnotationRequest {
            root_cause: Some("dns".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"root_cause": "dns", "commits": [], "tags": []})
        );
    }

    #[test]
    fn answers_decode_the_shapes_the_server_writes() {
        let running: ChaosRunAnswer =
            serde_json::from_str(r#"{"run": "r1", "state": "running"}"#).unwrap();
        assert!(matches!(running, ChaosRunAnswer::Running { ref run, .. } if run == "r1"));
        let done: ChaosRunAnswer = serde_json::from_str(
            r#"{"experiment": "kill", "run": "r1", "outcome": "not-run",
                "started_at": "2026-12-01T10:00:00Z", "ended_at": "2026-12-01T10:00:01Z"}"#,
        )
        .unwrap();
        let ChaosRunAnswer::Done(v) = done else {
            panic!("a verdict read as running")
        };
        assert_eq!(v.verdict.outcome, quench_chaos::run::Outcome::NotRun);
        // `as_str` is the serialised name, for every outcome.
        use quench_chaos::run::Outcome;
        for o in [
            Outcome::NotRun,
            Outcome::DryRun,
            Outcome::Passed,
            Outcome::Deviated,
            Outcome::Aborted,
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        let e: ErrorAnswer = serde_json::from_str(
            r#"{"error": {"code": "invalid_import", "message": "2 problem(s)",
                "problems": ["a:1:1: x", "a:2:1: y"], "field": "title"}}"#,
        )
        .unwrap();
        assert_eq!(e.error.problems.len(), 2);
        assert_eq!(e.error.details["field"], "title");
    }
}
