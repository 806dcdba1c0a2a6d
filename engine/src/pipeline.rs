//! The pipeline after the alert log: match a runbook, then open or attach
//! the incident.
//!
//! It follows the log with a persisted cursor, so an alert acknowledged just
//! before a crash is processed after the restart. Attaching is idempotent in
//! the alert's sequence number, so replaying the entries between the last
//! cursor write and the crash changes nothing.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use quench_connectors::AlertStatus;
use quench_knowledge::{AlertRecord, AlertState, Attach, IncidentStore, RunbookRef};
use quench_runbooks::RunbookSet;
use tracing::{error, info, warn};

use crate::alert_log::{AlertLog, StoredAlert};
use crate::metrics::Metrics;

/// The runbook set in force. Swapped whole, never edited in place.
pub type SharedRunbooks = Arc<RwLock<Arc<RunbookSet>>>;

/// Entries processed between cursor writes.
const CHUNK: usize = 256;

/// Follows the alert log.
pub struct Pipeline {
    /// The log it follows.
    pub log: AlertLog,
    /// Where incidents go.
    pub incidents: IncidentStore,
    /// The runbooks alerts are matched against.
    pub runbooks: SharedRunbooks,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// Why one entry could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] crate::alert_log::LogError),
    /// Writing the incident failed.
    #[error(transparent)]
    Store(#[from] quench_knowledge::StoreError),
}

impl Pipeline {
    /// Runs until the task is dropped. Never returns on a storage error: it
    /// logs, waits and tries the same entry again, so nothing is skipped.
    pub async fn run(self) {
        let appended = self.log.appended();
        loop {
            match self.catch_up() {
                Ok(0) => appended.notified().await,
                Ok(_) => {}
                Err(e) => {
                    error!(error = %e, "pipeline failed, retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Processes one chunk after the cursor; returns how many entries it did.
    pub fn catch_up(&self) -> Result<usize, PipelineError> {
        let cursor = self.log.cursor()?;
        let entries = self.log.read_after(cursor, CHUNK)?;
        for entry in &entries {
            self.process(entry)?;
        }
        if let Some(last) = entries.last() {
            self.log.set_cursor(last.seq)?;
        }
        Ok(entries.len())
    }

    fn process(&self, entry: &StoredAlert) -> Result<(), PipelineError> {
        let alert = &entry.alert;
        let set = self
            .runbooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let runbook = match alert.status {
            AlertStatus::Firing => set.select(alert),
            AlertStatus::Resolved => set.select_by_labels(alert),
        };
        let Some(runbook) = runbook else {
            if alert.status == AlertStatus::Firing {
                self.metrics.add("quench_alerts_unmatched_total", &[], 1);
                info!(seq = entry.seq, fingerprint = %alert.fingerprint, alertname = alert.name(), "no runbook matched");
            }
            return Ok(());
        };
        let group_key = runbook.group_key(alert);
        let title = alert
            .annotations
            .get("summary")
            .filter(|s| !s.is_empty())
            .map(String::as_str)
            .unwrap_or_else(|| alert.name());
        let title = if title.is_empty() { runbook.file.name.as_str() } else { title };
        let rb = RunbookRef {
            name: runbook.file.name.clone(),
            path: runbook.path.clone(),
            commit: None,
        };
        let record = AlertRecord {
            seq: entry.seq,
            source: alert.source.to_string(),
            fingerprint: alert.fingerprint.clone(),
            state: match alert.status {
                AlertStatus::Firing => AlertState::Firing,
                AlertStatus::Resolved => AlertState::Resolved,
            },
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            starts_at: alert.starts_at,
            ends_at: alert.ends_at,
            first_received_at: entry.received_at,
            notifications: 1,
        };
        match self
            .incidents
            .attach(&group_key, title, Some(&rb), record, Utc::now())?
        {
            Attach::Opened(r) => {
                self.metrics
                    .add("quench_incidents_opened_total", &[("runbook", &rb.name)], 1);
                info!(incident_id = %r.id, runbook = %rb.name, seq = entry.seq, "incident opened");
            }
            Attach::Attached(r) => {
                info!(incident_id = %r.id, runbook = %rb.name, seq = entry.seq, status = r.status.as_str(), "alert attached");
            }
            Attach::AlreadyAttached(r) => {
                info!(incident_id = %r.id, seq = entry.seq, "alert already attached (replay)");
            }
            Attach::NoOpenIncident => {
                warn!(seq = entry.seq, fingerprint = %alert.fingerprint, "resolved alert has no open incident");
            }
        }
        Ok(())
    }
}
