//! Replication between the two replicas, over the change feeds quench
//! owns: the write-ahead log of alerts (whole deliveries, in order, so the
//! standby's sequence numbers are the leader's) and the records' change
//! numbers (each changed record copied whole), with the kill switch.
//!
//! The standby asks the leader's `GET /internal/v1/replicate` for what
//! follows its own position, and its position is its acknowledgement: it
//! asks for `log=N` only once everything up to `N` is fdatasync'd. In sync
//! mode the leader answers a webhook once the standby's acknowledgement
//! covers the webhook's alerts; when the standby does not get there within
//! `ha.replication_timeout_ms`, the leader answers anyway, degrades to
//! async (said in `/readyz`, `/metrics` and the log), and goes back to
//! sync once the standby has caught up with its log.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quench_knowledge::{Control, IncidentRecord, IncidentStore, PauseState};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::alert_log::{AlertLog, Delivery};
use crate::config::ReplicationMode;
use crate::ha::Ha;

/// Deliveries (about this many alerts) and records per answer.
pub const BATCH: usize = 1000;
/// How long the leader holds a request that has nothing new yet.
pub const LONG_POLL: Duration = Duration::from_secs(2);

/// The leader's side: what the standby has acknowledged.
pub struct Replication {
    /// Sync or async, as configured.
    pub mode: ReplicationMode,
    timeout: Duration,
    /// Sync mode gave up waiting: answering without the standby.
    degraded: AtomicBool,
    /// The standby's durable log position, as it last said.
    acked: AtomicU64,
    /// The standby's position in the records' change feed.
    acked_changes: AtomicU64,
    /// The standby's audit position.
    acked_audit: AtomicU64,
    moved: tokio::sync::Notify,
    /// Told when this leader's log grows: a standby's long poll answers at
    /// once.
    grown: tokio::sync::Notify,
    /// When the standby last asked (ms since `start`), 0 never.
    last_seen_ms: AtomicU64,
    start: Instant,
}

/// What the leader answers a standby.
#[derive(Debug, Serialize, Deserialize)]
pub struct Batch {
    /// The leader's lease epoch.
    pub epoch: u64,
    /// The leader's log length.
    pub log_head: u64,
    /// How far the leader's pipeline got (the standby starts there when it
    /// takes over).
    pub pipeline: u64,
    /// Deliveries after the standby's position.
    pub deliveries: Vec<Delivery>,
    /// The records changed after the standby's feed position, each once.
    pub records: Vec<IncidentRecord>,
    /// The feed position these records bring the standby to.
    pub changes_to: u64,
    /// The leader's last change.
    pub change_head: u64,
    /// The feed no longer holds the standby's position.
    #[serde(default)]
    pub gap: bool,
    /// Asked for a page of a full copy (`full_after`): `records` is the
    /// page, in id order, and this says it was the last.
    #[serde(default)]
    pub full_done: bool,
    /// The kill switch.
    pub control: Option<PauseState>,
    /// The leader's delivery that ends at the standby's position (its
    /// first sequence number and key digest), for the standby to check its
    /// own against: a replica that led before may hold alerts the new
    /// leader never had.
    #[serde(default)]
    pub at_position: Option<(u64, u32)>,
    /// The audit entries after the standby's audit position, as stored
    /// (JSON text), with their numbers.
    #[serde(default)]
    pub audit: Vec<(u64, String)>,
    /// SHA-256 of the leader's entries just up to the standby's audit
    /// position: where the two chains agree.
    #[serde(default)]
    pub audit_hashes: Vec<(u64, String)>,
    /// The leader's last audit entry.
    #[serde(default)]
    pub audit_last: u64,
}

/// Audit entries a standby compares at its position, looking for where
/// its chain and the leader's agree.
pub const AUDIT_WINDOW: u64 = 64;

/// The delivery of `log` that ends at `at`, as `FIRST-DIGEST`: what the
/// standby sends with its position and the leader checks it against.
pub async fn tail_at(log: &AlertLog, at: u64) -> Option<String> {
    let log = log.clone();
    tokio::task::spawn_blocking(move || log.delivery_ending_at(at))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .map(|(first, digest)| format!("{first}-{digest}"))
}

/// Why one round of following failed.
#[derive(Debug)]
enum Halt {
    /// The copies differ: going on would make it worse, so following stops
    /// and says why.
    Diverged(String),
    /// Storage or the runtime failed this round (a full disk, an I/O
    /// error); the next round may not, so it is tried again.
    Retry(String),
}

impl From<String> for Halt {
    fn from(why: String) -> Halt {
        Halt::Retry(why)
    }
}

/// Where a replica that just took the Lease starts its pipeline, given
/// where the old leader's was as far as it copied (`copied`: none if it
/// never caught up with a leader), its own cursor (from when it led
/// before, or 0) and its log's length. Without a copied position and a
/// cursor of its own, where the old leader had got to is unknown:
/// starting at 0 would match a month of history again and run its
/// runbooks a second time, so it starts at the log's end and processes
/// what comes next.
pub fn takeover_start(copied: Option<u64>, own_cursor: u64, log_len: u64) -> u64 {
    match copied {
        Some(p) => p.min(log_len).max(own_cursor.min(log_len)),
        None if own_cursor == 0 => log_len,
        None => own_cursor.min(log_len),
    }
}

/// Every `sha256:` artifact id in a step's output.
fn artifact_ids(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s)
            if s.strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())) =>
        {
            out.push(s.clone());
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| artifact_ids(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| artifact_ids(x, out)),
        _ => {}
    }
}

/// SHA-256 (hex) of stored bytes.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Replication {
    /// As configured.
    pub fn new(mode: ReplicationMode, timeout: Duration) -> Arc<Replication> {
        Arc::new(Replication {
            mode,
            timeout,
            degraded: AtomicBool::new(false),
            acked: AtomicU64::new(0),
            acked_changes: AtomicU64::new(0),
            acked_audit: AtomicU64::new(0),
            moved: tokio::sync::Notify::new(),
            grown: tokio::sync::Notify::new(),
            last_seen_ms: AtomicU64::new(0),
            start: Instant::now(),
        })
    }

    /// The standby asked with these positions; `head` is this log's length.
    pub fn report(&self, log: u64, changes: u64, audit: u64, head: u64) {
        self.acked.fetch_max(log, Ordering::AcqRel);
        self.acked_changes.fetch_max(changes, Ordering::AcqRel);
        self.acked_audit.store(audit, Ordering::Release);
        self.last_seen_ms.store(
            self.start.elapsed().as_millis() as u64 + 1,
            Ordering::Release,
        );
        if log >= head && self.degraded.swap(false, Ordering::AcqRel) {
            info!(
                position = log,
                "replication: the standby caught up; back to sync"
            );
        }
        self.moved.notify_waiters();
    }

    /// The log grew (an intake answered by this leader).
    pub fn grew(&self) {
        self.grown.notify_waiters();
    }

    /// Waits until the log grows or `d` passes.
    pub async fn wait_growth(&self, d: Duration) {
        let _ = tokio::time::timeout(d, self.grown.notified()).await;
    }

    /// Sync mode: waits until the standby holds the alert `seq` on disk,
    /// or the timeout (then degrades). Async, or degraded: returns at once.
    pub async fn wait_synced(&self, seq: u64) {
        self.wait_for("an alert", || self.acked.load(Ordering::Acquire) >= seq)
            .await;
    }

    /// Sync mode: waits until the standby holds the records' change `seq`
    /// and the audit log's entry `audit` on disk, as
    /// [`Replication::wait_synced`].
    pub async fn wait_changes(&self, seq: u64, audit: u64) {
        self.wait_for("a step's start", || {
            self.acked_changes.load(Ordering::Acquire) >= seq
                && self.acked_audit.load(Ordering::Acquire) >= audit
        })
        .await;
    }

    /// Waits, in sync mode, until `held` (re-checked at each of the
    /// standby's reports) or the timeout, after which it degrades.
    async fn wait_for(&self, what: &str, held: impl Fn() -> bool) {
        if self.mode != ReplicationMode::Sync || self.degraded.load(Ordering::Acquire) {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let moved = self.moved.notified();
            if held() {
                return;
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                if !self.degraded.swap(true, Ordering::AcqRel) {
                    warn!(
                        what,
                        standby_alerts = self.acked.load(Ordering::Acquire),
                        standby_changes = self.acked_changes.load(Ordering::Acquire),
                        timeout_ms = self.timeout.as_millis() as u64,
                        "replication: the standby did not confirm in time; degraded to async until it catches up"
                    );
                }
                return;
            }
        }
    }

    /// Whether sync mode is answering without the standby.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// The standby's acknowledged log position.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// The standby's acknowledged change-feed position.
    pub fn acked_changes(&self) -> u64 {
        self.acked_changes.load(Ordering::Acquire)
    }

    /// Seconds since the standby last asked; None if it never did.
    pub fn standby_silent_seconds(&self) -> Option<f64> {
        match self.last_seen_ms.load(Ordering::Acquire) {
            0 => None,
            at => Some(
                (self.start.elapsed().as_millis() as u64).saturating_sub(at - 1) as f64 / 1000.0,
            ),
        }
    }
}

/// The stores a standby copies into.
pub struct Stores {
    /// The alert log.
    pub log: AlertLog,
    /// The incident records.
    pub incidents: IncidentStore,
    /// The kill switch.
    pub control: Control,
    /// The audit log.
    pub audit: quench_knowledge::AuditLog,
    /// Evidence.
    pub artifacts: quench_knowledge::ArtifactStore,
}

/// The standby's side: where it is, and how far it has copied.
pub struct Follower {
    /// The records' change-feed position copied so far (kept in a file).
    pub changes: AtomicU64,
    /// The leader's pipeline position at the last copy (kept in the same
    /// file).
    pub pipeline: AtomicU64,
    /// This replica has caught up with a leader's records at least once,
    /// so `pipeline` says where a leader's pipeline was.
    synced: std::sync::atomic::AtomicBool,
    /// The leader's log length at the last answer.
    pub leader_log: AtomicU64,
    /// The leader's last change at the last answer.
    pub leader_changes: AtomicU64,
    /// The audit position asked for: this log's last entry, or lower while
    /// looking for where it agrees with the leader's.
    pub audit: AtomicU64,
    /// Entries this replica set aside (it led before and wrote them after
    /// the standby's last copy).
    pub audit_set_aside: AtomicU64,
    /// Why following stopped, if it did.
    pub broken: std::sync::Mutex<Option<String>>,
    /// Artifacts the copied records name that are not here yet (tried
    /// again each round).
    missing: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Artifacts copied.
    pub artifacts_copied: AtomicU64,
    /// A full copy of the records in progress: the last id copied (empty
    /// before the first page) and the leader's last change when it began,
    /// where the change feed takes over once the copy is done.
    full: std::sync::Mutex<Option<(String, u64)>>,
    file: PathBuf,
}

impl Follower {
    /// Reads the position kept in `data_dir`.
    pub fn open(data_dir: &std::path::Path) -> Arc<Follower> {
        let file = data_dir.join("replica-changes");
        // `CHANGES PIPELINE` (older files: `CHANGES` alone).
        let kept = std::fs::read_to_string(&file).unwrap_or_default();
        let mut kept = kept.split_whitespace().map(|t| t.parse::<u64>().ok());
        let changes = kept.next().flatten().unwrap_or(0);
        let pipeline = kept.next().flatten();
        Arc::new(Follower {
            changes: AtomicU64::new(changes),
            pipeline: AtomicU64::new(pipeline.unwrap_or(0)),
            synced: std::sync::atomic::AtomicBool::new(pipeline.is_some()),
            leader_log: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            audit: AtomicU64::new(u64::MAX),
            audit_set_aside: AtomicU64::new(0),
            broken: std::sync::Mutex::new(None),
            missing: Default::default(),
            artifacts_copied: AtomicU64::new(0),
            full: std::sync::Mutex::new(None),
            file,
        })
    }

    /// The full copy in progress, if one is.
    fn copying(&self) -> Option<(String, u64)> {
        self.full.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_copying(&self, to: Option<(String, u64)>) {
        *self.full.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }

    fn keep(&self, changes: u64) {
        self.changes.store(changes, Ordering::Release);
        self.persist();
    }

    /// Writes the feed position, and the leader's pipeline position once
    /// known. Losing this only means copying some records again (and, for
    /// a replica that never caught up, taking over at the log's end).
    fn persist(&self) {
        let changes = self.changes.load(Ordering::Acquire);
        let text = if self.synced.load(Ordering::Acquire) {
            format!("{changes} {}", self.pipeline.load(Ordering::Acquire))
        } else {
            changes.to_string()
        };
        let tmp = self.file.with_extension("tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &self.file);
        }
    }

    /// Where the leader's pipeline was, as far as this replica knows: none
    /// until it has caught up with a leader once.
    pub fn copied_pipeline(&self) -> Option<u64> {
        self.synced
            .load(Ordering::Acquire)
            .then(|| self.pipeline.load(Ordering::Acquire))
    }

    fn stop(&self, why: String) {
        error!(
            why,
            "replication stopped: this standby no longer follows the leader"
        );
        *self.broken.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// Why following stopped, if it did.
    pub fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Follows the leader until this replica leads (or the copy diverges).
    pub async fn run(self: Arc<Self>, ha: Arc<Ha>, stores: Stores, token: String) {
        let Stores {
            log,
            incidents,
            control,
            audit,
            artifacts,
        } = stores;
        if self.audit.load(Ordering::Acquire) == u64::MAX {
            self.audit.store(audit.last_seq(), Ordering::Release);
        }
        let http = reqwest::Client::builder()
            .timeout(LONG_POLL + Duration::from_secs(8))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        let mut said_waiting = false;
        loop {
            if ha.is_leader() {
                return;
            }
            let Some(url) = ha.leader_url() else {
                if !said_waiting {
                    info!("standby: no leader yet; waiting for the Lease to name one");
                    said_waiting = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            said_waiting = false;
            let (at, changes) = (log.len(), self.changes.load(Ordering::Acquire));
            let audit_at = self.audit.load(Ordering::Acquire);
            let tail = tail_at(&log, at)
                .await
                .map(|t| format!("&tail={t}"))
                .unwrap_or_default();
            let full = self
                .copying()
                .map(|(after, _)| format!("&full_after={after}"))
                .unwrap_or_default();
            let asked = http
                .get(format!(
                    "{}/internal/v1/replicate?log={at}&changes={changes}&audit={audit_at}&wait_ms={}{tail}{full}",
                    url.trim_end_matches('/'),
                    LONG_POLL.as_millis()
                ))
                .bearer_auth(&token)
                .send()
                .await;
            let batch: Batch = match asked {
                Ok(r) if r.status().is_success() => match r.json().await {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(error = %e, "standby: the leader's answer does not decode");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                },
                Ok(r) => {
                    warn!(status = %r.status(), %url, "standby: the leader refused to replicate");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, %url, "standby: the leader does not answer");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if ha.is_leader() {
                return;
            }
            let applied = match self.apply_audit(&batch, audit_at, &audit).await {
                Ok(()) => self.apply(&batch, &log, &incidents, &control).await,
                Err(e) => Err(e),
            };
            match applied {
                Ok(()) => {}
                Err(Halt::Diverged(why)) => {
                    self.stop(why);
                    return;
                }
                Err(Halt::Retry(why)) => {
                    // Positions move only with what was kept, so the next
                    // round asks again for the rest.
                    warn!(error = %why, "standby: copying failed this round; trying again in 2 s");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            }
            self.copy_artifacts(&batch.records, &artifacts, &http, &url, &token)
                .await;
        }
    }

    /// Copies the leader's audit entries, once this log agrees with the
    /// leader's up to the position asked for; while it does not, moves the
    /// position back to where they agree (the entries after it are set
    /// aside when the copy starts there).
    async fn apply_audit(
        &self,
        b: &Batch,
        asked: u64,
        audit: &quench_knowledge::AuditLog,
    ) -> Result<(), Halt> {
        if asked > b.audit_last {
            // This log is longer than the leader's: compare from there.
            self.audit.store(b.audit_last, Ordering::Release);
            return Ok(());
        }
        let agree = {
            let (audit, hashes) = (audit.clone(), b.audit_hashes.clone());
            tokio::task::spawn_blocking(move || -> Result<Option<u64>, String> {
                let mut best = None;
                for (seq, hash) in hashes {
                    let mine = audit.stored(seq).map_err(|e| e.to_string())?;
                    if mine.as_deref().map(digest).as_deref() == Some(hash.as_str()) {
                        best = Some(seq);
                    }
                }
                Ok(best)
            })
            .await
            .map_err(|e| e.to_string())??
        };
        let window_start = asked.saturating_sub(AUDIT_WINDOW - 1).max(1);
        let agreed = match agree {
            _ if asked == 0 => 0,
            Some(s) => s,
            // No agreement in the window: look further back.
            None => {
                self.audit
                    .store(window_start.saturating_sub(1), Ordering::Release);
                return Ok(());
            }
        };
        if agreed < asked {
            self.audit.store(agreed, Ordering::Release);
            return Ok(());
        }
        let entries: Vec<(u64, Vec<u8>)> = b
            .audit
            .iter()
            .map(|(seq, text)| (*seq, text.clone().into_bytes()))
            .collect();
        let last = entries.last().map(|e| e.0);
        let set_aside = audit
            .replicate(asked + 1, entries)
            .await
            .map_err(|e| format!("copying the audit log: {e}"))?;
        if set_aside > 0 {
            warn!(
                set_aside,
                from = asked + 1,
                "standby: this replica's audit entries the leader never had are set aside (knowledge/audit-set-aside), not lost"
            );
            self.audit_set_aside
                .fetch_add(set_aside as u64, Ordering::AcqRel);
        }
        self.audit
            .store(last.unwrap_or(asked).max(asked), Ordering::Release);
        Ok(())
    }

    /// Copies the artifacts the records name (profiles, flame graphs,
    /// traces: `sha256:` ids in their steps' output) that this replica
    /// lacks; what fails is tried again next round.
    async fn copy_artifacts(
        &self,
        records: &[IncidentRecord],
        store: &quench_knowledge::ArtifactStore,
        http: &reqwest::Client,
        leader: &str,
        token: &str,
    ) {
        let mut want: Vec<String> = self
            .missing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        for r in records {
            for st in &r.steps {
                artifact_ids(&st.output, &mut want);
            }
        }
        want.sort();
        want.dedup();
        for id in want {
            let (s, i) = (store.clone(), id.clone());
            let here = tokio::task::spawn_blocking(move || s.meta(&i))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .is_some();
            if here {
                self.missing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                continue;
            }
            let got = async {
                let r = http
                    .get(format!(
                        "{}/internal/v1/artifacts/{id}",
                        leader.trim_end_matches('/')
                    ))
                    .bearer_auth(token)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !r.status().is_success() {
                    return Err(format!("the leader answered {}", r.status()));
                }
                let header = |k: &str| {
                    r.headers()
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let (media, kind) = (header("content-type"), header("x-quench-kind"));
                let bytes = r.bytes().await.map_err(|e| e.to_string())?;
                store
                    .store(&kind, &media, bytes.to_vec(), Default::default())
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            let mut missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
            match got {
                Ok(stored) if stored == id => {
                    missing.remove(&id);
                    self.artifacts_copied.fetch_add(1, Ordering::Relaxed);
                }
                Ok(other) => {
                    warn!(%id, %other, "standby: a copied artifact has another digest; not kept");
                    missing.remove(&id);
                }
                Err(e) => {
                    warn!(%id, error = %e, "standby: could not copy an artifact; trying again");
                    missing.insert(id);
                }
            }
        }
    }

    async fn apply(
        &self,
        b: &Batch,
        log: &AlertLog,
        incidents: &IncidentStore,
        control: &Control,
    ) -> Result<(), Halt> {
        // The log this replica holds must be the leader's up to here: a
        // replica that led before may have appended alerts (never
        // acknowledged in sync mode) that the new leader never received.
        let mine = {
            let log = log.clone();
            let at = log.len();
            tokio::task::spawn_blocking(move || log.delivery_ending_at(at))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
        };
        if !log.is_empty() && mine != b.at_position {
            return Err(Halt::Diverged(format!(
                "this log diverged from the leader's at or before alert {} (this replica led before and kept alerts the leader never got, or the leader lost some): move this replica's data directory away and start it again to copy the leader afresh",
                log.len()
            )));
        }
        // An empty log starts where the leader's does: retention may have
        // retired the leader's first segments.
        if log.is_empty()
            && let Some(first) = b.deliveries.first().map(|d| d.first_seq)
            && first > 1
        {
            let l = log.clone();
            tokio::task::spawn_blocking(move || l.start_at(first))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("starting the log at alert {first}: {e}"))?;
            info!(
                first,
                "standby: the leader's log starts at this alert; so does this one"
            );
        }
        // Every delivery of the batch goes to the log's writer at once, in
        // order: one group commit (one fdatasync) for the lot.
        let mut expected = log.len() + 1;
        for d in &b.deliveries {
            if d.first_seq != expected {
                return Err(Halt::Diverged(format!(
                    "the leader sent delivery {} where this log expects {expected}",
                    d.first_seq
                )));
            }
            expected += d.alerts.len() as u64;
        }
        let appends = b
            .deliveries
            .iter()
            .map(|d| log.append_copy(d.raw.clone(), d.alerts.clone()));
        let results = futures_util::future::join_all(appends).await;
        for (d, appended) in b.deliveries.iter().zip(results) {
            let appended =
                appended.map_err(|e| format!("appending delivery {}: {e}", d.first_seq))?;
            for (i, a) in appended.iter().enumerate() {
                if a.duplicate || a.seq != d.first_seq + i as u64 {
                    return Err(Halt::Diverged(format!(
                        "the copy of delivery {} got sequence {} for its alert {i} (duplicate: {}): the logs diverged",
                        d.first_seq, a.seq, a.duplicate
                    )));
                }
            }
        }
        let position = self.changes.load(Ordering::Acquire);
        if let Some((_, from)) = self.copying() {
            // A page of the full copy, in id order.
            if !b.records.is_empty() {
                incidents
                    .replicate(b.records.clone())
                    .await
                    .map_err(|e| format!("copying records: {e}"))?;
            }
            if b.full_done {
                // Every record is here as it was at change `from` or
                // later; the feed brings what changed since.
                info!(
                    from,
                    "standby: full copy of the records done; following the change feed"
                );
                self.keep(from);
                self.set_copying(None);
            } else if let Some(last) = b.records.last() {
                self.set_copying(Some((last.id.clone(), from)));
            }
        } else if b.gap || (position == 0 && b.change_head > 0) {
            // The feed no longer holds this position (or this replica is
            // new): copy every record page by page instead, then follow
            // the feed from the leader's last change as of now (read
            // before any page, so each page is at least that new).
            info!(
                position,
                leader = b.change_head,
                "standby: copying every record (the change feed does not reach back to this position)"
            );
            self.set_copying(Some((String::new(), b.change_head)));
        } else {
            if !b.records.is_empty() {
                incidents
                    .replicate(b.records.clone())
                    .await
                    .map_err(|e| format!("copying records: {e}"))?;
            }
            if b.changes_to > position {
                self.keep(b.changes_to);
            }
        }
        if let Some(want) = &b.control
            && control.is_paused() != want.paused
            && let Err(e) = control.set(want.paused, &want.by, &want.reason).await
        {
            warn!(error = %e, "standby: could not copy the kill switch");
        }
        // The leader read its pipeline's position before its last change,
        // so once every change up to that one is here, every record the
        // pipeline wrote for those alerts is too; until then the older
        // position stands (going over an alert twice is harmless: it is
        // already attached).
        if b.changes_to >= b.change_head {
            let before = self.copied_pipeline();
            self.pipeline.store(b.pipeline, Ordering::Release);
            self.synced.store(true, Ordering::Release);
            if before != Some(b.pipeline) {
                self.persist();
            }
        }
        self.leader_log.store(b.log_head, Ordering::Release);
        self.leader_changes.store(b.change_head, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_takeover_never_replays_history_it_cannot_place() {
        // Caught up with the old leader: its position, within this log.
        assert_eq!(takeover_start(Some(70), 0, 100), 70);
        assert_eq!(takeover_start(Some(170), 0, 100), 100);
        // Led before and got further itself: its own cursor.
        assert_eq!(takeover_start(Some(70), 90, 100), 90);
        assert_eq!(takeover_start(None, 90, 100), 90);
        // Never caught up, never led: the log's end, not 0.
        assert_eq!(takeover_start(None, 0, 100), 100);
        assert_eq!(takeover_start(None, 0, 0), 0);
    }

    #[test]
    fn the_copied_pipeline_position_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        // A file from before the pipeline position was kept.
        std::fs::write(dir.path().join("replica-changes"), "12").unwrap();
        let f = Follower::open(dir.path());
        assert_eq!(f.changes.load(Ordering::Acquire), 12);
        assert_eq!(f.copied_pipeline(), None);
        f.keep(15);
        assert_eq!(Follower::open(dir.path()).copied_pipeline(), None);
        f.pipeline.store(40, Ordering::Release);
        f.synced.store(true, Ordering::Release);
        f.keep(20);
        let again = Follower::open(dir.path());
        assert_eq!(again.changes.load(Ordering::Acquire), 20);
        assert_eq!(again.copied_pipeline(), Some(40));
    }
}
