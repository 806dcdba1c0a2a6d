//! The pipeline after the alert log: match a runbook, then open or attach
//! the incident.
//!
//! It follows the log with a persisted cursor, so an alert acknowledged just
//! before a crash is processed after the restart. Attaching is idempotent in
//! the alert's sequence number, so replaying the entries between the last
//! cursor write and the crash changes nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use quench_connectors::AlertStatus;
use quench_knowledge::{
    AlertRecord, AlertState, Attach, IncidentStore, MatchDecision, Opening, RunbookRef,
};
use quench_runbooks::{Explanation, Runbook};
use tracing::{debug, error, info};

use crate::alert_log::{AlertLog, StoredAlert};
use crate::metrics::Metrics;
use crate::runbook_source::Runbooks;

/// Entries processed between cursor writes.
const CHUNK: usize = 256;

/// Follows the alert log.
pub struct Pipeline {
    /// The log it follows.
    pub log: AlertLog,
    /// Where incidents go.
    pub incidents: IncidentStore,
    /// The runbooks alerts are matched against.
    pub runbooks: Arc<Runbooks>,
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
    /// Runs until the log's writer stops. Never gives up on a storage
    /// error: it logs, waits and tries the same entry again, so nothing is
    /// skipped.
    ///
    /// It reads the log from the persisted cursor until it is level with the
    /// writer, then follows the writer's live feed, which spares reading
    /// back and decoding what was just written. A gap in the feed's sequence
    /// numbers (the feed drops batches when this loop falls behind) sends
    /// it back to the log.
    pub async fn run(self) {
        let Some(mut live) = self.log.take_live_feed() else {
            error!("the alert log's live feed is already taken; pipeline not started");
            return;
        };
        let mut cursor = loop {
            match self.log.cursor() {
                Ok(c) => break c,
                Err(e) => {
                    error!(error = %e, "cannot read the pipeline cursor, retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut behind = true;
        let mut persisted_at = cursor;
        loop {
            let step = if behind {
                self.catch_up(&mut cursor).map(|n| {
                    behind = n > 0;
                })
            } else {
                match live.recv().await {
                    None => return,
                    Some(batch) => self.follow(&mut cursor, &batch).map(|gap| {
                        behind = gap;
                    }),
                }
            };
            let persisted = step.and_then(|()| {
                if cursor != persisted_at
                    && (behind || live.is_empty() || cursor - persisted_at >= CHUNK as u64)
                {
                    self.log.set_cursor(cursor)?;
                    persisted_at = cursor;
                }
                Ok(())
            });
            if let Err(e) = persisted {
                error!(error = %e, cursor, "pipeline failed, retrying in 1s");
                behind = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Processes one chunk of the log after `cursor`; returns how many
    /// entries it did.
    pub fn catch_up(&self, cursor: &mut u64) -> Result<usize, PipelineError> {
        let entries = self.log.read_after(*cursor, CHUNK)?;
        for entry in &entries {
            self.process(entry)?;
            *cursor = entry.seq;
        }
        Ok(entries.len())
    }

    /// Processes a live batch; returns true when it found a gap and the log
    /// must be read.
    fn follow(&self, cursor: &mut u64, batch: &[StoredAlert]) -> Result<bool, PipelineError> {
        for entry in batch {
            if entry.seq <= *cursor {
                continue; // already read from the log
            }
            if entry.seq != *cursor + 1 {
                return Ok(true);
            }
            self.process(entry)?;
            *cursor = entry.seq;
        }
        Ok(false)
    }

    fn process(&self, entry: &StoredAlert) -> Result<(), PipelineError> {
        let alert = &entry.alert;
        let loaded = self.runbooks.current();
        let set = &loaded.set;
        // A firing alert goes to the runbooks that apply, and the why is kept
        // with the incident it opens. A resolved one goes to the incidents its
        // firing twin opened, found by source and labels alone.
        let (runbooks, explanation) = match alert.status {
            AlertStatus::Firing => {
                let why = set.explain(alert);
                let runbooks: Vec<&Runbook> = why
                    .matched()
                    .into_iter()
                    .filter_map(|name| set.by_name(name))
                    .collect();
                (runbooks, decisions(&why))
            }
            AlertStatus::Resolved => (set.select_by_labels(alert), Vec::new()),
        };
        if runbooks.is_empty() {
            if alert.status == AlertStatus::Firing {
                self.metrics.add("quench_alerts_unmatched_total", &[], 1);
                debug!(seq = entry.seq, fingerprint = %alert.fingerprint, alertname = alert.name(), "no runbook matched");
            }
            return Ok(());
        }
        let title = alert
            .annotations
            .get("summary")
            .filter(|s| !s.is_empty())
            .map(String::as_str)
            .unwrap_or_else(|| alert.name());
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
        for runbook in runbooks {
            let name = runbook.name();
            let opening = Opening {
                title: if title.is_empty() { name } else { title }.to_string(),
                runbook: Some(RunbookRef {
                    name: name.to_string(),
                    path: runbook.path.clone(),
                    commit: loaded.commit.clone(),
                }),
                explanation: explanation.clone(),
            };
            let group_key = runbook.group_key(alert);
            match self
                .incidents
                .attach(&group_key, &opening, record.clone(), Utc::now())?
            {
                Attach::Opened(r) => {
                    self.metrics
                        .add("quench_incidents_opened_total", &[("runbook", name)], 1);
                    info!(incident_id = %r.id, runbook = name, seq = entry.seq, "incident opened");
                }
                Attach::Attached(r) => {
                    debug!(incident_id = %r.id, runbook = name, seq = entry.seq, status = r.status.as_str(), "alert attached");
                }
                Attach::AlreadyAttached(r) => {
                    debug!(incident_id = %r.id, seq = entry.seq, "alert already attached (replay)");
                }
                Attach::NoOpenIncident => {
                    debug!(seq = entry.seq, fingerprint = %alert.fingerprint, runbook = name, "resolved alert has no open incident");
                }
            }
        }
        Ok(())
    }
}

/// The explanation in the knowledge store's own terms.
fn decisions(why: &Explanation) -> Vec<MatchDecision> {
    let mut out: Vec<MatchDecision> = why
        .decisions
        .iter()
        .map(|d| MatchDecision {
            runbook: d.runbook.clone(),
            matched: d.skipped.is_none(),
            reason: d
                .skipped
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
        })
        .collect();
    if let Some(t) = &why.triage {
        out.push(MatchDecision {
            runbook: t.clone(),
            matched: true,
            reason: "triage runbook: nothing else matched".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use quench_connectors::{Alert, Source};
    use quench_knowledge::IncidentFilter;

    use super::*;

    fn alert(service: &str, status: AlertStatus) -> Alert {
        Alert {
            source: Source::Alertmanager,
            fingerprint: format!("fp-{service}"),
            status,
            labels: BTreeMap::from([
                ("alertname".to_string(), "HighCPU".to_string()),
                ("severity".to_string(), "page".to_string()),
                ("service".to_string(), service.to_string()),
            ]),
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            meta: BTreeMap::new(),
            idempotency_key: format!("{service}-{}", status.as_str()),
            raw_ref: String::new(),
        }
    }

    fn pipeline(db: &sled::Db) -> (Pipeline, AlertLog, IncidentStore) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks/examples");
        let set = quench_runbooks::load_dir(&dir, None).unwrap();
        let log = AlertLog::open(db, None).unwrap();
        let incidents = IncidentStore::open(db).unwrap();
        let p = Pipeline {
            log: log.clone(),
            incidents: incidents.clone(),
            runbooks: Arc::new(Runbooks::fixed(set)),
            metrics: Arc::new(Metrics::default()),
        };
        (p, log, incidents)
    }

    async fn wait_for(incidents: &IncidentStore, n: usize, resolved: usize) {
        for _ in 0..200 {
            let all = incidents.list(&IncidentFilter::default()).unwrap();
            let r = all.iter().filter(|i| i.status.is_closed()).count();
            if all.len() == n && r == resolved {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "expected {n} incidents, {resolved} resolved: {:#?}",
            incidents.list(&IncidentFilter::default())
        );
    }

    #[tokio::test]
    async fn reads_the_backlog_then_follows_the_live_feed() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let (p, log, incidents) = pipeline(&db);
        // A backlog written before the pipeline starts (as after a restart).
        log.append(
            b"1".to_vec(),
            vec![
                alert("a", AlertStatus::Firing),
                alert("b", AlertStatus::Firing),
            ],
        )
        .await
        .unwrap();
        let task = tokio::spawn(p.run());
        wait_for(&incidents, 2, 0).await;
        // Live: a new group, and a resolution of an old one.
        log.append(b"2".to_vec(), vec![alert("c", AlertStatus::Firing)])
            .await
            .unwrap();
        log.append(b"3".to_vec(), vec![alert("a", AlertStatus::Resolved)])
            .await
            .unwrap();
        wait_for(&incidents, 3, 1).await;
        task.abort();
        let _ = task.await;
        assert_eq!(log.cursor().unwrap(), 4);
    }

    #[tokio::test]
    async fn a_gap_in_the_feed_sends_it_back_to_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let (p, log, incidents) = pipeline(&db);
        log.append(b"1".to_vec(), vec![alert("a", AlertStatus::Firing)])
            .await
            .unwrap();
        log.append(b"2".to_vec(), vec![alert("b", AlertStatus::Firing)])
            .await
            .unwrap();
        let all = log.read_after(0, 10).unwrap();
        let mut cursor = 0;
        // The feed lost seq 1: the batch holding seq 2 is a gap.
        assert!(p.follow(&mut cursor, &all[1..]).unwrap());
        assert_eq!(cursor, 0);
        assert_eq!(p.catch_up(&mut cursor).unwrap(), 2);
        assert_eq!(cursor, 2);
        // Entries already read from the log are skipped, not processed twice.
        assert!(!p.follow(&mut cursor, &all).unwrap());
        assert_eq!(incidents.list(&IncidentFilter::default()).unwrap().len(), 2);
    }
}
