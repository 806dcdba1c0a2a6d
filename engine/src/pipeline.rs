//! The pipeline after the alert log: match a runbook, then open or attach
//! the incident.
//!
//! It follows the log with a persisted cursor, so an alert acknowledged just
//! before a crash is processed after the restart. Attaching is idempotent in
//! the alert's sequence number, so replaying the entries between the last
//! cursor write and the crash changes nothing.

use std::sync::Arc;
use std::time::Duration;

use quench_connectors::AlertStatus;
use quench_knowledge::{
    AlertRecord, AlertState, Attach, IncidentStore, MatchDecision, Opening, RunbookRef,
};
use quench_runbooks::Runbook;
use quench_runbooks::load::Decision;
use tracing::{debug, error, info};

use crate::alert_log::{AlertLog, StoredAlert};
use crate::metrics::Metrics;
use crate::runbook_source::Runbooks;

/// Entries read from the log at a time while catching up.
const CHUNK: usize = 256;

/// Entries processed between cursor writes (or a second, whichever comes
/// first): a restart replays at most this many, idempotently.
const PERSIST_EVERY: u64 = 4096;

/// The shortest time between two wake-ups on the live feed under load.
const COALESCE: Duration = Duration::from_millis(1);

/// Under load means: this many wake-ups in a row each came less than half
/// of [`COALESCE`] after the one before (over 2,000 a second). A steady
/// stream slower than that, such as one alert a millisecond, is processed
/// as it comes, without the wait (tokio's timer rounds it up to the next
/// millisecond, which was most of such an alert's latency).
const COALESCE_AFTER: u32 = 3;

/// A firing alert whose sender has said nothing for this long no longer
/// inhibits anything: senders repeat firing alerts (Alertmanager every
/// `repeat_interval`, 4 h by default), so silence this long means the
/// sender lost it.
const FIRING_TTL: chrono::Duration = chrono::Duration::hours(24);

/// The live feed's wake-up rule: from the time since the last wake-up
/// ended and how many quick ones came in a row before this one, the new
/// count and how long to wait before taking what the feed holds.
fn coalesce(since: Option<Duration>, quick_wakes: u32) -> (u32, Option<Duration>) {
    match since {
        Some(since) if since < COALESCE / 2 => {
            let quick = quick_wakes.saturating_add(1);
            (quick, (quick >= COALESCE_AFTER).then(|| COALESCE - since))
        }
        _ => (0, None),
    }
}

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
    /// The alerts firing now, for `inhibit_when`.
    pub firing: std::sync::Mutex<FiringIndex>,
    /// The wall clock, for time intervals; injected so tests can fix it.
    pub clock: Arc<dyn quench_knowledge::Clock>,
    /// Runs the runbooks of new incidents; `None` only records them.
    pub executor: Option<Arc<crate::executor::Executor>>,
    /// The sequence number of the last alert processed, for `/readyz` and
    /// `/metrics` (lag = stored - processed).
    pub position: Arc<std::sync::atomic::AtomicU64>,
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

/// Up to this many runbooks, an incident keeps every runbook's decision;
/// above, the index decides and the record keeps the runbooks it tried.
const FULL_EXPLANATION_UP_TO: usize = 64;

impl Pipeline {
    /// Counts and logs the runbooks a suppression (inhibition, mute or
    /// active time) kept from running.
    fn count_suppressed(&self, seq: u64, alert: &quench_connectors::Alert, all: &[Decision]) {
        for d in all {
            if let Some(skip) = d.skipped.as_ref().filter(|s| s.is_suppression()) {
                self.metrics.add(
                    "quench_alerts_suppressed_total",
                    &[("runbook", &d.runbook)],
                    1,
                );
                info!(seq, fingerprint = %alert.fingerprint, runbook = %d.runbook, reason = %skip, "runbook suppressed");
            }
        }
    }

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
        let mut persisted_when = std::time::Instant::now();
        let mut last_wake: Option<std::time::Instant> = None;
        let mut quick_wakes = 0u32;
        loop {
            let step = if behind {
                self.catch_up(&mut cursor).await.map(|n| {
                    behind = n > 0;
                })
            } else {
                // Wakes at least every second, so an idle pipeline still
                // writes its cursor, and sees alerts the feed dropped
                // while it was full: when they were the last of a storm,
                // no later batch shows the gap.
                match tokio::time::timeout(Duration::from_secs(1), live.recv()).await {
                    Err(_) => {
                        behind = self.log.len() > cursor;
                        Ok(())
                    }
                    Ok(None) => return,
                    Ok(Some(mut batch)) => {
                        // In a storm the writer sends a batch per group
                        // commit, thousands a second, and waking for each
                        // costs more than its matching. Once wake-ups come
                        // that fast (COALESCE_AFTER in a row, each within
                        // half of COALESCE of the last one's end), the
                        // loop waits out the rest of COALESCE, so it wakes
                        // at most once per COALESCE and takes what came
                        // meanwhile; an alert after a quiet spell, or in a
                        // slower stream, is processed at once.
                        let wait;
                        (quick_wakes, wait) = coalesce(last_wake.map(|t| t.elapsed()), quick_wakes);
                        if let Some(wait) = wait
                            && batch.len() < CHUNK
                        {
                            tokio::time::sleep(wait).await;
                        }
                        last_wake = Some(std::time::Instant::now());
                        // Take every batch already waiting: one attach
                        // request to the writer for all of them.
                        while batch.len() < CHUNK * 4 {
                            match live.try_recv() {
                                Ok(more) => batch.extend(more),
                                Err(_) => break,
                            }
                        }
                        self.follow(&mut cursor, &batch).await.map(|gap| {
                            behind = gap;
                        })
                    }
                }
            };
            self.position
                .store(cursor, std::sync::atomic::Ordering::Release);
            // The cursor is where a restart replays from (replaying is
            // idempotent). It may only pass alerts whose incidents are on
            // the disk: the records' writer answers before its flush, and
            // an alert the cursor passed whose incident a crash took is
            // never matched again. So a durable barrier goes first, and
            // both happen every PERSIST_EVERY alerts or second, not after
            // every alert or every chunk read back from the log (a barrier
            // per 256 alerts would slow the catching up).
            let due = cursor != persisted_at
                && (cursor - persisted_at >= PERSIST_EVERY
                    || persisted_when.elapsed() >= Duration::from_secs(1));
            let persisted = match step {
                Ok(()) if due => match self.incidents.sync().await {
                    Ok(()) => self.log.set_cursor(cursor).map_err(PipelineError::from),
                    Err(e) => Err(e.into()),
                }
                .map(|()| {
                    persisted_at = cursor;
                    persisted_when = std::time::Instant::now();
                }),
                other => other,
            };
            if let Err(e) = persisted {
                error!(error = %e, cursor, "pipeline failed, retrying in 1s");
                behind = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Processes one chunk of the log after `cursor`; returns how many
    /// entries it did.
    pub async fn catch_up(&self, cursor: &mut u64) -> Result<usize, PipelineError> {
        let (log, from) = (self.log.clone(), *cursor);
        let entries = tokio::task::spawn_blocking(move || log.read_after(from, CHUNK))
            .await
            .map_err(|_| crate::alert_log::LogError::Stopped)??;
        self.process(&entries).await?;
        if let Some(last) = entries.last() {
            *cursor = last.seq;
        }
        Ok(entries.len())
    }

    /// Processes a live batch; returns true when it found a gap and the log
    /// must be read.
    async fn follow(&self, cursor: &mut u64, batch: &[StoredAlert]) -> Result<bool, PipelineError> {
        // The feed is in sequence order: skip what was already read from
        // the log, take what follows the cursor without a gap.
        let fresh = &batch[batch.partition_point(|e| e.seq <= *cursor)..];
        let contiguous = fresh
            .iter()
            .enumerate()
            .take_while(|(i, e)| e.seq == *cursor + 1 + *i as u64)
            .count();
        let run = &fresh[..contiguous];
        self.process(run).await?;
        if let Some(last) = run.last() {
            *cursor = last.seq;
        }
        Ok(contiguous < fresh.len())
    }

    /// Matches a run of consecutive entries, then opens or attaches all
    /// their incidents in one request to the records' writer (one round
    /// trip, however long the run), in order.
    async fn process(&self, entries: &[StoredAlert]) -> Result<(), PipelineError> {
        let loaded = self.runbooks.current();
        let mut attaches = Vec::new();
        let mut planned = Vec::new();
        for entry in entries {
            self.plan(entry, &loaded, &mut attaches, &mut planned)
                .await?;
        }
        if attaches.is_empty() {
            return Ok(());
        }
        let outcomes = self
            .incidents
            .attach_many(attaches, self.clock.now())
            .await?;
        for (p, outcome) in planned.into_iter().zip(outcomes) {
            let Planned {
                seq,
                runbook: name,
                group_key,
                alert,
            } = p;
            match outcome {
                Attach::Opened(r) => {
                    self.metrics
                        .add("quench_incidents_opened_total", &[("runbook", &name)], 1);
                    info!(incident_id = %r.id, runbook = %name, seq, "incident opened");
                    if let (Some(exec), Some(runbook)) = (&self.executor, loaded.set.by_name(&name))
                    {
                        exec.start(r.id.clone(), runbook.clone(), group_key, alert)
                            .await;
                    }
                }
                Attach::Attached(r) => {
                    debug!(incident_id = %r.id, runbook = %name, seq, status = r.status.as_str(), "alert attached");
                }
                Attach::AlreadyAttached(r) => {
                    debug!(incident_id = %r.id, seq, "alert already attached (replay)");
                }
                Attach::NoOpenIncident => {
                    debug!(seq, fingerprint = %alert.fingerprint, runbook = %name, "resolved alert has no open incident");
                }
            }
        }
        Ok(())
    }

    /// Decides which runbooks an entry goes to, and adds one attach per
    /// runbook.
    async fn plan(
        &self,
        entry: &StoredAlert,
        loaded: &crate::runbook_source::Loaded,
        attaches: &mut Vec<(String, Opening, AlertRecord)>,
        planned: &mut Vec<Planned>,
    ) -> Result<(), PipelineError> {
        let alert = &entry.alert;
        let set = &loaded.set;
        let now = self.clock.now();
        // Only inhibition looks at other alerts, so the index is kept only
        // while some runbook inhibits; when one starts to, it is rebuilt
        // from the log (the last FIRING_TTL is all that can still inhibit).
        let inhibits = set.runbooks.iter().any(|r| !r.inhibit.is_empty());
        // Rebuilding the index reads the log: off the async workers, before
        // the lock.
        let kept = self.firing.lock().unwrap_or_else(|e| e.into_inner()).kept;
        let recent = if inhibits && !kept {
            let log = self.log.clone();
            let since = now - FIRING_TTL;
            Some(
                tokio::task::spawn_blocking(move || log.received_since(since))
                    .await
                    .map_err(|_| crate::alert_log::LogError::Stopped)??,
            )
        } else {
            None
        };
        // The firing index is locked only for the matching, never across
        // an await.
        let (runbooks, explanation) = {
            let mut index = self.firing.lock().unwrap_or_else(|e| e.into_inner());
            if !inhibits {
                index.kept = false;
                index.alerts.clear();
            } else if let Some(recent) = recent {
                index.alerts.clear();
                for a in recent {
                    index.track(a);
                }
                index.kept = true;
            } else {
                index.track(entry.clone());
                if entry.seq.is_multiple_of(4096) {
                    index.alerts.retain(|_, a| now - a.received_at < FIRING_TTL);
                }
            }
            let firing: Vec<&quench_connectors::Alert> = index
                .alerts
                .values()
                .filter(|a| now - a.received_at < FIRING_TTL)
                .map(|a| &a.alert)
                .collect();
            // A firing alert goes to the runbooks that apply, and the why is kept
            // with the incident it opens. A resolved one goes to the incidents its
            // firing twin opened, found by source and labels alone.
            let (runbooks, explanation) = match alert.status {
                AlertStatus::Firing if set.runbooks.len() > FULL_EXPLANATION_UP_TO => {
                    // Large sets go through the index: the record keeps
                    // the decisions of the runbooks that were tried, and
                    // how many were ruled out by an equality matcher.
                    let m = set.matching_at(alert, now, &firing);
                    self.count_suppressed(entry.seq, alert, &m.decisions);
                    let mut kept = decisions(&m.decisions, m.triage.as_deref());
                    if m.ruled_out > 0 {
                        kept.push(MatchDecision {
                            runbook: "*".into(),
                            matched: false,
                            reason: format!(
                                "{} other runbooks: a matcher does not hold (quench explain shows each)",
                                m.ruled_out
                            ),
                        });
                    }
                    if let (n @ 1.., Some(by)) = (m.not_tried, &m.stopped_by) {
                        kept.push(MatchDecision {
                            runbook: "*".into(),
                            matched: false,
                            reason: format!(
                                "{n} other runbooks: not tried: {by} matched first without continue"
                            ),
                        });
                    }
                    (m.runbooks, kept)
                }
                AlertStatus::Firing => {
                    let why = set.explain_at(alert, now, &firing);
                    self.count_suppressed(entry.seq, alert, &why.decisions);
                    let runbooks: Vec<&Runbook> = why
                        .matched()
                        .into_iter()
                        .filter_map(|name| set.by_name(name))
                        .collect();
                    (runbooks, decisions(&why.decisions, why.triage.as_deref()))
                }
                AlertStatus::Resolved => (set.select_by_labels(alert), Vec::new()),
            };
            (runbooks, explanation)
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
                resolve_with_alerts: runbook.file.resolve_with_alerts,
            };
            let group_key = runbook.group_key(alert);
            attaches.push((group_key.clone(), opening, record.clone()));
            planned.push(Planned {
                seq: entry.seq,
                runbook: name.to_string(),
                group_key,
                alert: alert.clone(),
            });
        }
        Ok(())
    }
}

/// An attach the pipeline sent, and what to do with its outcome.
struct Planned {
    seq: u64,
    runbook: String,
    group_key: String,
    alert: quench_connectors::Alert,
}

/// The alerts firing now, by source and fingerprint.
#[derive(Default)]
pub struct FiringIndex {
    /// Whether the index is being kept (some runbook inhibits).
    kept: bool,
    alerts: std::collections::HashMap<String, StoredAlert>,
}

impl FiringIndex {
    /// Keeps the latest notification of each firing alert; drops it once
    /// resolved.
    fn track(&mut self, a: StoredAlert) {
        let key = format!("{}\u{1f}{}", a.alert.source, a.alert.fingerprint);
        match a.alert.status {
            AlertStatus::Firing => {
                self.alerts.insert(key, a);
            }
            AlertStatus::Resolved => {
                self.alerts.remove(&key);
            }
        }
    }
}

/// The explanation in the knowledge store's own terms.
/// The record's copy of match decisions (and of the triage fallback).
fn decisions(all: &[Decision], triage: Option<&str>) -> Vec<MatchDecision> {
    let mut out: Vec<MatchDecision> = all
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
    if let Some(t) = triage {
        out.push(MatchDecision {
            runbook: t.to_string(),
            matched: true,
            reason: "triage runbook: nothing else matched".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
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

    fn pipeline(db: &sled::Db, data: &Path) -> (Pipeline, AlertLog, IncidentStore) {
        pipeline_with(db, data, "../runbooks/examples", None)
    }

    fn pipeline_with(
        db: &sled::Db,
        data: &Path,
        rel: &str,
        triage: Option<&str>,
    ) -> (Pipeline, AlertLog, IncidentStore) {
        let writer = quench_knowledge::Writer::start(db.clone(), None).unwrap();
        pipeline_on(db, data, rel, triage, writer)
    }

    /// The same, writing the records through `writer`.
    fn pipeline_on(
        db: &sled::Db,
        data: &Path,
        rel: &str,
        triage: Option<&str>,
        writer: quench_knowledge::Writer,
    ) -> (Pipeline, AlertLog, IncidentStore) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        let set = quench_runbooks::load_dir(&dir, triage).unwrap();
        let log = AlertLog::open(&data.join("intake")).unwrap();
        let incidents = IncidentStore::open(db, writer).unwrap();
        let p = Pipeline {
            log: log.clone(),
            incidents: incidents.clone(),
            runbooks: Arc::new(Runbooks::fixed(set)),
            metrics: Arc::new(Metrics::default()),
            firing: Default::default(),
            clock: quench_knowledge::clock::system(),
            executor: None,
            position: Default::default(),
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

    /// Above [`FULL_EXPLANATION_UP_TO`] runbooks the index decides; the
    /// record keeps the runbooks whose matchers hold and counts the rest.
    #[tokio::test]
    async fn a_large_set_keeps_the_runbooks_that_were_tried_and_counts_the_rest() {
        let rb = tempfile::tempdir().unwrap();
        for i in 0..70 {
            let name = if i == 7 {
                "HighCPU".to_string()
            } else {
                format!("Other{i}")
            };
            let cont = i == 7;
            std::fs::write(
                rb.path().join(format!("r{i:02}.yaml")),
                format!("version: 1\nname: r{i:02}\ncontinue: {cont}\nmatch:\n  matchers: ['alertname=\"{name}\"']\nsteps: []\n"),
            )
            .unwrap();
        }
        // A regex runbook, tried for every alert, after r07 (which goes on).
        std::fs::write(
            rb.path().join("zz.yaml"),
            "version: 1\nname: zz\nmatch:\n  matchers: ['alertname=~\"High.*\"']\nsteps: []\n",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let (p, log, incidents) = pipeline_with(&db, dir.path(), rb.path().to_str().unwrap(), None);
        log.append(b"1".to_vec(), vec![alert("a", AlertStatus::Firing)])
            .await
            .unwrap();
        let task = tokio::spawn(p.run());
        wait_for(&incidents, 2, 0).await;
        task.abort();
        let all = incidents.list(&IncidentFilter::default()).unwrap();
        let why: Vec<(String, bool, String)> = all[0]
            .match_explanation
            .iter()
            .map(|d| (d.runbook.clone(), d.matched, d.reason.clone()))
            .collect();
        assert_eq!(
            why,
            [
                ("r07".to_string(), true, String::new()),
                ("zz".to_string(), true, String::new()),
                (
                    "*".to_string(),
                    false,
                    "69 other runbooks: a matcher does not hold (quench explain shows each)"
                        .to_string()
                ),
            ]
        );
    }

    #[tokio::test]
    async fn reads_the_backlog_then_follows_the_live_feed() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let writer = quench_knowledge::Writer::start(db.clone(), None).unwrap();
        let (p, log, incidents) = pipeline_on(
            &db,
            dir.path(),
            "../runbooks/examples",
            None,
            writer.clone(),
        );
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
        // The cursor is written within a second of going idle.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while log.cursor().unwrap() != 4 {
            assert!(std::time::Instant::now() < deadline, "cursor never written");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Not before the incidents it passed were flushed: the records'
        // writer answers attaches before its flush, and a restart replays
        // only from the cursor.
        assert!(
            writer
                .stats()
                .flushes
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1,
            "the cursor was written before the records were flushed"
        );
        task.abort();
        let _ = task.await;
    }

    #[tokio::test]
    async fn a_gap_in_the_feed_sends_it_back_to_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let (p, log, incidents) = pipeline(&db, dir.path());
        log.append(b"1".to_vec(), vec![alert("a", AlertStatus::Firing)])
            .await
            .unwrap();
        log.append(b"2".to_vec(), vec![alert("b", AlertStatus::Firing)])
            .await
            .unwrap();
        let all = log.read_after(0, 10).unwrap();
        let mut cursor = 0;
        // The feed lost seq 1: the batch holding seq 2 is a gap.
        assert!(p.follow(&mut cursor, &all[1..]).await.unwrap());
        assert_eq!(cursor, 0);
        assert_eq!(p.catch_up(&mut cursor).await.unwrap(), 2);
        assert_eq!(cursor, 2);
        // Entries already read from the log are skipped, not processed twice.
        assert!(!p.follow(&mut cursor, &all).await.unwrap());
        assert_eq!(incidents.list(&IncidentFilter::default()).unwrap().len(), 2);
    }

    /// The storm ends while the pipeline is behind: the live feed was full
    /// and the writer dropped the last batches. Nothing will come after
    /// them to show the gap, so the idle pipeline must notice on its own
    /// that the log holds more than it did (the storm test once waited
    /// two minutes on 184 such alerts).
    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_pipeline_finds_what_the_full_feed_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let (p, log, incidents) = pipeline(&db, dir.path());
        let task = tokio::spawn(p.run());
        // Let it take the feed and wait on it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        // This runtime has one thread: while it is blocked here the pipeline
        // reads nothing, so the feed fills and the rest is dropped.
        let total = crate::alert_log::LIVE_DEPTH + 50;
        let writer_log = log.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for i in 0..total {
                    let a = alert(&format!("svc-{i}"), AlertStatus::Firing);
                    writer_log
                        .append(i.to_string().into_bytes(), vec![a])
                        .await
                        .unwrap();
                }
            });
        })
        .join()
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let n = incidents.list(&IncidentFilter::default()).unwrap().len();
            if n == total {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} of {total} alerts opened their incidents"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.abort();
        let _ = task.await;
    }

    /// One alert a millisecond is processed as it comes; wake-ups faster
    /// than 2,000 a second wait, once three came in a row, for the rest of
    /// the millisecond, and keep waiting while the storm lasts.
    #[test]
    fn the_feed_waits_only_in_a_storm() {
        let us = |n: u64| Some(Duration::from_micros(n));
        let mut quick = 0;
        for _ in 0..100 {
            let (q, wait) = coalesce(us(900), quick);
            assert_eq!(
                wait, None,
                "a steady stream of one a millisecond never waits"
            );
            quick = q;
        }
        assert_eq!(
            coalesce(None, 7),
            (0, None),
            "the first wake-up does not wait"
        );
        let (q1, w1) = coalesce(us(100), 0);
        let (q2, w2) = coalesce(us(100), q1);
        assert_eq!((w1, w2), (None, None), "two quick wake-ups may be a burst");
        let (q3, w3) = coalesce(us(100), q2);
        assert_eq!(w3, us(900), "the third waits out the millisecond");
        // Measured from the end of that wait, the next batch is there at
        // once: the storm goes on, and so does the waiting.
        assert_eq!(coalesce(us(50), q3).1, us(950));
        // A pause of half a millisecond ends it.
        assert_eq!(coalesce(us(600), q3), (0, None));
    }

    /// Friday 2026-11-27 11:00 UTC: inside business hours, outside maintenance.
    fn friday_noon() -> chrono::DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(2026, 11, 27, 11, 0, 0).unwrap()
    }

    fn labelled(name: &str, service: &str, status: AlertStatus, key: &str) -> Alert {
        let mut a = alert(service, status);
        a.labels.insert("alertname".into(), name.into());
        a.fingerprint = format!("{name}-{service}");
        a.idempotency_key = key.into();
        a
    }

    #[tokio::test]
    async fn a_firing_circuit_breaker_inhibits_the_latency_runbook() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let (mut p, log, incidents) = pipeline_with(
            &db,
            dir.path(),
            "../runbooks/testdata/suppress",
            Some("triage"),
        );
        p.clock = Arc::new(quench_knowledge::ManualClock::at(friday_noon()));
        let metrics = p.metrics.clone();
        let task = tokio::spawn(p.run());
        let open = |name: &'static str| {
            let incidents = incidents.clone();
            async move {
                for _ in 0..200 {
                    let all = incidents.list(&IncidentFilter::default()).unwrap();
                    if all.iter().any(|i| {
                        i.runbook.as_ref().is_some_and(|r| r.name == name) && !i.status.is_closed()
                    }) {
                        return all;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!(
                    "no open {name} incident: {:#?}",
                    incidents.list(&IncidentFilter::default())
                )
            }
        };
        log.append(
            b"1".to_vec(),
            vec![labelled(
                "CircuitBreakerOpen",
                "checkout",
                AlertStatus::Firing,
                "cb-1",
            )],
        )
        .await
        .unwrap();
        open("triage").await;
        log.append(
            b"2".to_vec(),
            vec![labelled(
                "Latency",
                "checkout",
                AlertStatus::Firing,
                "lat-1",
            )],
        )
        .await
        .unwrap();
        // Suppressed: counted, explained in the log, no incident, no triage.
        for _ in 0..200 {
            if metrics
                .render()
                .contains("quench_alerts_suppressed_total{runbook=\"latency\"} 1")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            metrics
                .render()
                .contains("quench_alerts_suppressed_total{runbook=\"latency\"} 1")
        );
        assert_eq!(incidents.list(&IncidentFilter::default()).unwrap().len(), 1);
        // The breaker closes; the next latency notification runs.
        log.append(
            b"3".to_vec(),
            vec![labelled(
                "CircuitBreakerOpen",
                "checkout",
                AlertStatus::Resolved,
                "cb-2",
            )],
        )
        .await
        .unwrap();
        log.append(
            b"4".to_vec(),
            vec![labelled(
                "Latency",
                "checkout",
                AlertStatus::Firing,
                "lat-2",
            )],
        )
        .await
        .unwrap();
        let all = open("latency").await;
        let lat = all
            .iter()
            .find(|i| i.runbook.as_ref().is_some_and(|r| r.name == "latency"))
            .unwrap();
        assert_eq!(lat.match_explanation[0].runbook, "latency");
        assert!(lat.match_explanation[0].matched);
        task.abort();
    }
}
