//! Incident records in sled, written by one owner, with a change feed.
//!
//! Three trees: `incidents` (id number, big-endian, to the JSON record),
//! `open_groups` (group key to the id of the open incident for it) and
//! `changes` (change number, big-endian, to the id of the incident that
//! changed). Every write goes through the knowledge [`Writer`] thread and
//! touches the record, the change feed and, when it opens or closes, the
//! group, in one sled transaction. Since that thread is the only writer, a
//! read-modify-write cannot conflict.
//!
//! Readers (the search index, later a standby) follow the change feed at
//! their own pace: "changes after N". Nothing a reader does can make a
//! writer wait, unlike sled's own subscriptions, whose full channel blocks
//! the writer that holds the transaction lock.

use crate::kinds::EventKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::writer::Writer;

use crate::record::{
    AlertRecord, AlertState, IncidentRecord, IncidentStatus, MatchDecision, RunbookRef,
    SCHEMA_VERSION, TimelineEvent,
};

impl Default for Opening {
    fn default() -> Self {
        Opening {
            title: String::new(),
            runbook: None,
            explanation: Vec::new(),
            resolve_with_alerts: true,
        }
    }
}

/// What a new incident starts with, when an alert opens one.
#[derive(Debug, Clone)]
pub struct Opening {
    /// A one-line title.
    pub title: String,
    /// The runbook, pinned to its commit.
    pub runbook: Option<RunbookRef>,
    /// Every runbook's decision for the alert.
    pub explanation: Vec<MatchDecision>,
    /// Whether the incident resolves when every alert has.
    pub resolve_with_alerts: bool,
}

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, or a corrupted file).
    #[error("incident store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record does not decode; its key is named so it can be fixed.
    #[error("incident store: record {key} does not decode")]
    Corrupt {
        /// The record's key.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The writer thread is gone (shutting down).
    #[error("knowledge store: the writer stopped")]
    Stopped,
    /// The write happened but could not be made durable (flush or
    /// fdatasync failed); whatever it recorded must not proceed.
    #[error("knowledge store: not durable: {0}")]
    NotDurable(#[source] std::sync::Arc<crate::writer::SettleError>),
    /// A record's schema is newer than this build understands.
    #[error(
        "incident store: record {key} has schema {found}, this build reads up to {SCHEMA_VERSION}"
    )]
    FutureSchema {
        /// The record's key.
        key: String,
        /// The schema it was written with.
        found: u32,
    },
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// The key of the incident counter in `open_groups`. Group keys start with
/// a runbook name (letters, digits, `-`, `_`), so a leading NUL cannot
/// collide with one.
const NEXT_ID: &[u8] = b"\0next-incident-id";

/// What happened to an alert offered to [`IncidentStore::attach`].
#[derive(Debug, Clone, PartialEq)]
pub enum Attach {
    /// It opened a new incident.
    Opened(IncidentRecord),
    /// It joined (or updated) the open incident of its group.
    Attached(IncidentRecord),
    /// It was already part of the incident (a replay after a restart).
    AlreadyAttached(IncidentRecord),
    /// A resolved alert with no open incident for its group: nothing to do.
    NoOpenIncident,
}

/// What an import wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// The new incidents, in the file's order.
    pub new: Vec<String>,
    /// Records whose external id an incident already has: (external id,
    /// that incident). Importing a file again changes nothing.
    pub existing: Vec<(String, String)>,
}

/// Where an external id's incident is noted, beside the open groups
/// (byte 0xff never starts a group key, which is UTF-8).
fn external_key(ext: &str) -> Vec<u8> {
    let mut k = b"\xffexternal\x1f".to_vec();
    k.extend_from_slice(ext.as_bytes());
    k
}

/// Which incidents [`IncidentStore::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only open (not closed) incidents.
    pub open_only: bool,
    /// Only incidents in this state.
    pub status: Option<IncidentStatus>,
    /// At most this many, newest first.
    pub limit: Option<usize>,
}

/// The changes the feed keeps at least, for followers that join late.
pub const FEED_KEEP: u64 = 1_000_000;

/// The changes the feed keeps at most, however far behind a registered
/// follower is (a dead one must not make it grow forever). A reader further
/// behind than what is kept gets [`Changes::Gap`] and starts over from a
/// full copy of the records.
pub const FEED_MAX: u64 = 20_000_000;

/// Feed entries one commit deletes at most, so trimming never stalls the
/// writer.
const TRIM_PER_COMMIT: usize = 20_000;

/// Timeline events one record keeps at most. Repeats of the same alert are
/// counted on one event rather than added, so only a pathological incident
/// gets here; past it the oldest alert events go first.
pub const MAX_TIMELINE: usize = 1000;

/// The most records of one commit kept decoded after it (a storm commits
/// tens every few milliseconds; an import commits all it brings at once).
const RECENT_MAX: usize = 4096;

/// The key in the feed's tree that holds its watermark (no change is
/// numbered 0): every change from the watermark on is kept, save those a
/// later change of the same incident in the same commit made redundant.
const WATERMARK: [u8; 8] = 0u64.to_be_bytes();

/// One entry of the change feed: incident `id` changed; its current record
/// is what to read.
///
/// Every write gets the next number, but a commit keeps only the last
/// change of each incident it writes (a reader reads the record as it is
/// now, so the earlier ones would only make it read the same record
/// again): the numbers the feed holds rise, with holes.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The change number: monotonic, from 1.
    pub seq: u64,
    /// The incident that changed.
    pub id: String,
}

/// What [`IncidentStore::changes_after`] answers.
#[derive(Debug, PartialEq)]
pub enum Changes {
    /// The next changes, oldest first; empty when there are none yet.
    Next(Vec<Change>),
    /// The feed was trimmed past the reader's position: the oldest change
    /// it still holds is `oldest`. The reader must copy every record.
    Gap {
        /// The oldest change kept.
        oldest: u64,
    },
}

/// The feed's position, for followers to wait on.
struct Feed {
    /// The number the next change gets (writer thread only; staged changes
    /// included).
    next: AtomicU64,
    /// The last committed change number, under a lock followers wait on.
    last: Mutex<u64>,
    /// The oldest change number the feed answers for: a reader whose next
    /// change is older gets [`Changes::Gap`]. Raised (and stored under
    /// [`WATERMARK`]) before a trim deletes anything.
    oldest: AtomicU64,
    moved: Condvar,
}

/// Writes staged by the writer's jobs, committed together in one sled
/// transaction when a job needs it or [`crate::writer::COMMIT_EVERY`] after
/// the first of them: sled seals its log buffer twice for every
/// transaction, however little it holds. Readers look here before sled
/// ([`IncidentStore::get`], [`IncidentStore::list`]), so a write is
/// visible as soon as it is answered.
#[derive(Default)]
struct Staged {
    records: std::collections::HashMap<[u8; 8], IncidentRecord>,
    /// In write order, for the transaction.
    order: Vec<[u8; 8]>,
    groups: std::collections::HashMap<Vec<u8>, Option<[u8; 8]>>,
    changes: Vec<(u64, String)>,
    /// The records of the commit under way: out of `records`, not yet in
    /// sled, still what readers must see.
    committing: Option<Arc<std::collections::HashMap<[u8; 8], IncidentRecord>>>,
    /// The records of the last commit, as sled holds them (the commit is
    /// the only writer of the incidents tree): the records a run updates
    /// again a few milliseconds later and the indexer reads right after
    /// the commit, handed out without decoding them again.
    recent: Option<Arc<std::collections::HashMap<[u8; 8], IncidentRecord>>>,
}

impl Staged {
    /// The newest version of a record that is not in sled yet, or that the
    /// last commit wrote.
    fn latest(&self, key: &[u8; 8]) -> Option<&IncidentRecord> {
        self.records
            .get(key)
            .or_else(|| self.committing.as_ref()?.get(key))
            .or_else(|| self.recent.as_ref()?.get(key))
    }
}

/// The incident records, their open groups and their change feed.
///
/// Writes are async and run on the knowledge [`Writer`] thread; each has a
/// `_blocking` twin for plain threads. Reads (`get`, `list`, the feed) are
/// plain sled reads: call them from a thread or `spawn_blocking`, or use
/// [`IncidentStore::fetch`] and [`IncidentStore::query`] from async code.
#[derive(Clone)]
pub struct IncidentStore {
    core: Core,
    writer: Writer,
}

/// The trees and the feed: everything but the writer handle, so the
/// batch-end commit the writer holds does not hold the writer (which would
/// keep its thread alive forever).
#[derive(Clone)]
struct Core {
    incidents: sled::Tree,
    open_groups: sled::Tree,
    changes: sled::Tree,
    feed: Arc<Feed>,
    staged: Arc<Mutex<Staged>>,
    /// The positions of registered followers: the feed is kept for them.
    followers: Arc<Mutex<Vec<std::sync::Weak<AtomicU64>>>>,
}

fn encode(r: &IncidentRecord) -> Vec<u8> {
    // Most records take a kilobyte or two: one allocation, not a series.
    let mut out = Vec::with_capacity(2048);
    serde_json::to_writer(&mut out, r).expect("incident records always serialise");
    out
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<IncidentRecord, StoreError> {
    let key_name = || match <[u8; 8]>::try_from(key) {
        Ok(b) => format!("inc-{}", u64::from_be_bytes(b)),
        Err(_) => String::from_utf8_lossy(key).into_owned(),
    };
    #[derive(serde::Deserialize)]
    struct Version {
        schema: u32,
    }
    if let Ok(v) = serde_json::from_slice::<Version>(bytes)
        && v.schema > SCHEMA_VERSION
    {
        return Err(StoreError::FutureSchema {
            key: key_name(),
            found: v.schema,
        });
    }
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: key_name(),
        source,
    })
}

/// Parses `inc-<n>` into its key.
fn key_of(id: &str) -> Option<[u8; 8]> {
    id.strip_prefix("inc-")?
        .parse::<u64>()
        .ok()
        .map(u64::to_be_bytes)
}

fn be(v: &[u8]) -> u64 {
    <[u8; 8]>::try_from(v).map(u64::from_be_bytes).unwrap_or(0)
}

/// A change to `open_groups` written with a record.
enum Group {
    Set(Vec<u8>, [u8; 8]),
    Remove(Vec<u8>),
}

impl Core {
    /// Commits what the jobs staged, in one transaction, and publishes the
    /// new changes to followers. On failure all of it is staged again, to
    /// be tried with the next commit. Writer thread only.
    fn commit(&self) -> Result<(), StoreError> {
        let (records, order, groups, changes) = {
            let mut s = self.staged.lock().unwrap_or_else(|e| e.into_inner());
            if s.changes.is_empty() {
                return Ok(());
            }
            let records = Arc::new(std::mem::take(&mut s.records));
            s.committing = Some(records.clone());
            (
                records,
                std::mem::take(&mut s.order),
                std::mem::take(&mut s.groups),
                std::mem::take(&mut s.changes),
            )
        };
        let (first, last) = (changes[0].0, changes[changes.len() - 1].0);
        let encoded: Vec<([u8; 8], Vec<u8>)> =
            order.iter().map(|k| (*k, encode(&records[k]))).collect();
        // Each incident's last change of the commit (the last change of
        // all is one of them, so `last` stays on the feed).
        let feed: Vec<&(u64, String)> = {
            let mut seen = std::collections::HashSet::with_capacity(order.len());
            let mut kept: Vec<_> = changes
                .iter()
                .rev()
                .filter(|(_, id)| seen.insert(id.as_str()))
                .collect();
            kept.reverse();
            kept
        };
        let done =
            (&self.incidents, &self.open_groups, &self.changes).transaction(|(inc, open, ch)| {
                for (key, bytes) in &encoded {
                    inc.insert(&key[..], bytes.as_slice())?;
                }
                for (seq, id) in &feed {
                    ch.insert(&seq.to_be_bytes()[..], id.as_bytes())?;
                }
                for (k, v) in &groups {
                    match v {
                        Some(v) => {
                            open.insert(k.as_slice(), &v[..])?;
                        }
                        None => {
                            open.remove(k.as_slice())?;
                        }
                    }
                }
                Ok::<(), ConflictableTransactionError<StoreError>>(())
            });
        let mut s = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        s.committing = None;
        if done.is_ok() {
            // Not an import's hundred thousand records, kept for good.
            s.recent = (records.len() <= RECENT_MAX).then(|| records.clone());
        }
        if let Err(e) = done {
            // Staged again under the same change numbers: nothing was
            // staged meanwhile (this runs on the writer thread).
            s.records = Arc::unwrap_or_clone(records);
            s.order = order;
            s.groups = groups;
            s.changes = changes;
            return Err(e.into());
        }
        drop(s);
        // Trim what no follower needs any more, a slice at a time.
        if last / 4096 != first.saturating_sub(1) / 4096 {
            self.trim(self.trim_below(last))?;
        }
        *self.feed.last.lock().unwrap_or_else(|e| e.into_inner()) = last;
        self.feed.moved.notify_all();
        Ok(())
    }

    /// Deletes up to [`TRIM_PER_COMMIT`] feed entries below `below`, once
    /// the watermark says the feed answers from `below` on. Writer thread
    /// only.
    fn trim(&self, below: u64) -> Result<(), StoreError> {
        if below > self.feed.oldest.load(Ordering::Acquire) {
            self.changes.insert(WATERMARK, &below.to_be_bytes())?;
            self.feed.oldest.store(below, Ordering::Release);
        }
        let from = 1u64.to_be_bytes();
        for k in self
            .changes
            .range(from..below.to_be_bytes())
            .keys()
            .take(TRIM_PER_COMMIT)
        {
            self.changes.remove(k?)?;
        }
        Ok(())
    }

    /// The first change to keep: what the slowest live follower has not
    /// read, but at least the last [`FEED_KEEP`] and at most [`FEED_MAX`].
    fn trim_below(&self, last: u64) -> u64 {
        let slowest = self
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .map(|p| p.load(Ordering::Acquire) + 1)
            .min()
            .unwrap_or(u64::MAX);
        let keep_from = slowest.min(last.saturating_sub(FEED_KEEP));
        keep_from.max(last.saturating_sub(FEED_MAX))
    }
}

impl IncidentStore {
    /// Opens the incident trees in `db`; writes go through `writer`.
    pub fn open(db: &sled::Db, writer: Writer) -> Result<Self, StoreError> {
        let changes = db.open_tree("knowledge/changes")?;
        let last = match changes.last()? {
            Some((k, _)) => be(&k),
            None => 0,
        };
        // A feed from before the watermark has none and no holes: its
        // first change is where it answers from. Stored before the first
        // commit can leave holes (sled recovers a prefix of its writes).
        let oldest = match changes.get(WATERMARK)? {
            Some(w) => be(&w),
            None => {
                let oldest = match changes.range(1u64.to_be_bytes()..).next() {
                    Some(item) => be(&item?.0),
                    None => 1,
                };
                changes.insert(WATERMARK, &oldest.to_be_bytes())?;
                oldest
            }
        };
        let core = Core {
            incidents: db.open_tree("knowledge/incidents")?,
            open_groups: db.open_tree("knowledge/open_groups")?,
            changes,
            feed: Arc::new(Feed {
                next: AtomicU64::new(last + 1),
                last: Mutex::new(last),
                moved: Condvar::new(),
                oldest: AtomicU64::new(oldest),
            }),
            staged: Arc::default(),
            followers: Arc::default(),
        };
        let committer = core.clone();
        writer.on_commit(Arc::new(move || committer.commit()));
        Ok(IncidentStore { core, writer })
    }

    /// Offers an alert to the open incident of `group_key`, opening one when
    /// there is none and the alert is firing, from a plain thread.
    /// Idempotent in `alert.seq`: a replay of the same log entry changes
    /// nothing. Async code uses [`IncidentStore::attach_many`].
    pub fn attach_blocking(
        &self,
        group_key: &str,
        opening: &Opening,
        alert: AlertRecord,
        now: DateTime<Utc>,
    ) -> Result<Attach, StoreError> {
        let (me, g, o) = (self.clone(), group_key.to_string(), opening.clone());
        self.writer
            .run_blocking(false, move || me.attach_now(&g, &o, alert, now))
    }

    /// [`IncidentStore::attach_blocking`] for many alerts, in order, in one
    /// request to the writer. Idempotent like `attach`: if it fails part-way, the
    /// whole list may be offered again.
    pub async fn attach_many(
        &self,
        items: Vec<(String, Opening, AlertRecord)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Attach>, StoreError> {
        let me = self.clone();
        self.writer
            .run(false, move || {
                items
                    .into_iter()
                    .map(|(g, o, a)| me.attach_now(&g, &o, a, now))
                    .collect()
            })
            .await
    }

    /// Changes one incident: `f` gets the stored record and returns the
    /// value to hand back; the changed record is written. Returns `None`
    /// when there is no such incident.
    pub async fn update<T: Send + 'static>(
        &self,
        id: &str,
        f: impl FnOnce(&mut IncidentRecord) -> T + Send + 'static,
    ) -> Result<Option<(IncidentRecord, T)>, StoreError> {
        let (me, id) = (self.clone(), id.to_string());
        self.writer.run(false, move || me.update_now(&id, f)).await
    }

    /// Answers once every change written before it is flushed and
    /// fdatasync'd.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.writer.run(true, || Ok(())).await
    }

    /// [`IncidentStore::update`], answered only once the change is flushed
    /// and fdatasync'd: for a state that must survive a crash (a
    /// destructive step about to start).
    pub async fn update_durable<T: Send + 'static>(
        &self,
        id: &str,
        f: impl FnOnce(&mut IncidentRecord) -> T + Send + 'static,
    ) -> Result<Option<(IncidentRecord, T)>, StoreError> {
        let (me, id) = (self.clone(), id.to_string());
        self.writer.run(true, move || me.update_now(&id, f)).await
    }

    /// Waits (a plain thread) until every write answered so far is
    /// committed to sled and on the change feed (not flushed): writes are
    /// answered before their commit, which follows within
    /// [`crate::writer::COMMIT_EVERY`].
    pub fn commit_blocking(&self) -> Result<(), StoreError> {
        self.writer.commit_blocking()
    }

    /// [`IncidentStore::update`] for a plain thread.
    pub fn update_blocking<T: Send + 'static>(
        &self,
        id: &str,
        f: impl FnOnce(&mut IncidentRecord) -> T + Send + 'static,
    ) -> Result<Option<(IncidentRecord, T)>, StoreError> {
        let (me, id) = (self.clone(), id.to_string());
        self.writer
            .run_blocking(false, move || me.update_now(&id, f))
    }

    /// Adds historical incidents, all or none, in one transaction: each gets
    /// the next `inc-N` id (its own id is kept as `external_id`). Closed
    /// records never join an open group. Returns the new ids once durable.
    pub async fn import(&self, records: Vec<IncidentRecord>) -> Result<Imported, StoreError> {
        let me = self.clone();
        self.writer.run(true, move || me.import_now(records)).await
    }

    /// Writes records copied from a leader, as they are (a standby
    /// following the leader's change feed): each replaces the record with
    /// its id, and the open-group, external-id and next-id entries follow,
    /// so that after a takeover a new alert joins the incident it would
    /// have joined on the leader. Returns once durable.
    pub async fn replicate(&self, records: Vec<IncidentRecord>) -> Result<(), StoreError> {
        let me = self.clone();
        self.writer
            .run(true, move || me.replicate_now(records))
            .await
    }

    fn replicate_now(&self, records: Vec<IncidentRecord>) -> Result<(), StoreError> {
        let mut n = self.group(NEXT_ID)?.map(|v| be(&v)).unwrap_or(0);
        let (mut out, mut groups) = (Vec::with_capacity(records.len()), Vec::new());
        for r in records {
            let Some(key) = key_of(&r.id) else {
                continue;
            };
            n = n.max(be(&key));
            if !r.status.is_closed() {
                groups.push(Group::Set(r.group_key.as_bytes().to_vec(), key));
            } else if self.group(r.group_key.as_bytes())? == Some(key)
                || groups.iter().any(
                    |g| matches!(g, Group::Set(k, v) if k == r.group_key.as_bytes() && *v == key),
                )
            {
                groups.push(Group::Remove(r.group_key.as_bytes().to_vec()));
            }
            if let Some(ext) = &r.external_id {
                groups.push(Group::Set(external_key(ext), key));
            }
            out.push((key, r));
        }
        groups.push(Group::Set(NEXT_ID.to_vec(), n.to_be_bytes()));
        self.stage(out, &groups);
        Ok(())
    }

    /// [`IncidentStore::import`] for a plain thread.
    pub fn import_blocking(&self, records: Vec<IncidentRecord>) -> Result<Imported, StoreError> {
        let me = self.clone();
        self.writer
            .run_blocking(true, move || me.import_now(records))
    }

    /// One incident, read off the async workers.
    pub async fn fetch(&self, id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        let (me, id) = (self.clone(), id.to_string());
        tokio::task::spawn_blocking(move || me.get(&id))
            .await
            .map_err(|_| StoreError::Stopped)?
    }

    /// Incidents, newest first, read off the async workers.
    pub async fn query(&self, filter: IncidentFilter) -> Result<Vec<IncidentRecord>, StoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.list(&filter))
            .await
            .map_err(|_| StoreError::Stopped)?
    }

    fn attach_now(
        &self,
        group_key: &str,
        opening: &Opening,
        alert: AlertRecord,
        now: DateTime<Utc>,
    ) -> Result<Attach, StoreError> {
        let title = opening.title.as_str();
        let existing = match self.group(group_key.as_bytes())? {
            Some(id_key) => self.record(id_key)?.map(|r| (id_key, r)),
            None => None,
        };
        let Some((id_key, mut record)) = existing else {
            if alert.state == AlertState::Resolved {
                return Ok(Attach::NoOpenIncident);
            }
            // Incident numbers are their own sequence (sled's id generator
            // is shared by the whole database), so they go 1, 2, 3
            // whatever else is written.
            let n = self.group(NEXT_ID)?.map(|v| be(&v)).unwrap_or(0) + 1;
            let record = IncidentRecord {
                schema: SCHEMA_VERSION,
                id: format!("inc-{n}"),
                title: title.to_string(),
                status: IncidentStatus::Open,
                runbook: opening.runbook.clone(),
                group_key: group_key.to_string(),
                match_explanation: opening.explanation.clone(),
                resolve_with_alerts: opening.resolve_with_alerts,
                first_alert_at: alert.starts_at.unwrap_or(alert.first_received_at),
                opened_at: now,
                updated_at: now,
                resolved_at: None,
                timeline: vec![TimelineEvent {
                    at: now,
                    kind: EventKind::Opened,
                    detail: format!(
                        "opened by {} alert {} ({})",
                        alert.source, alert.fingerprint, title
                    ),
                }],
                alerts: vec![alert],
                steps: Vec::new(),
                acknowledged: None,
                notes: Default::default(),
                external_id: None,
                similar: None,
                chaos: Vec::new(),
                run: None,
            };
            let key = n.to_be_bytes();
            self.write(
                &[(key, &record)],
                &[
                    Group::Set(NEXT_ID.to_vec(), key),
                    Group::Set(group_key.as_bytes().to_vec(), key),
                ],
            )?;
            return Ok(Attach::Opened(record));
        };
        let slot = record
            .alerts
            .iter_mut()
            .find(|a| a.fingerprint == alert.fingerprint && a.source == alert.source);
        let detail = match slot {
            Some(a) if a.seq >= alert.seq => return Ok(Attach::AlreadyAttached(record)),
            Some(a) => {
                let changed = a.state != alert.state;
                let first = a.first_received_at;
                let count = a.notifications;
                *a = AlertRecord {
                    first_received_at: first,
                    notifications: count + 1,
                    ..alert.clone()
                };
                changed.then(|| {
                    format!(
                        "alert {} is now {}",
                        alert.fingerprint,
                        state_name(alert.state)
                    )
                })
            }
            None => {
                record.alerts.push(alert.clone());
                Some(format!("alert {} attached", alert.fingerprint))
            }
        };
        match detail {
            Some(detail) => record.timeline.push(TimelineEvent {
                at: now,
                kind: EventKind::Alert,
                detail,
            }),
            None => note_repeat(&mut record, &alert.fingerprint, now),
        }
        record.updated_at = now;
        let all_resolved = record
            .alerts
            .iter()
            .all(|a| a.state == AlertState::Resolved);
        if all_resolved && !record.resolve_with_alerts {
            record.timeline.push(TimelineEvent {
                at: now,
                kind: EventKind::AlertsResolved,
                detail: "every alert resolved; the runbook resolves this incident itself".into(),
            });
        }
        let mut groups = Vec::new();
        if all_resolved && record.resolve_with_alerts {
            record.status = IncidentStatus::Resolved;
            record.resolved_at = Some(now);
            record.timeline.push(TimelineEvent {
                at: now,
                kind: EventKind::Resolved,
                detail: "every alert of the incident resolved".into(),
            });
            groups.push(Group::Remove(group_key.as_bytes().to_vec()));
        }
        bound_timeline(&mut record);
        self.write(&[(id_key, &record)], &groups)?;
        Ok(Attach::Attached(record))
    }

    fn update_now<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut IncidentRecord) -> T,
    ) -> Result<Option<(IncidentRecord, T)>, StoreError> {
        let Some(key) = key_of(id) else {
            return Ok(None);
        };
        let Some(mut r) = self.record(key)? else {
            return Ok(None);
        };
        let t = f(&mut r);
        bound_timeline(&mut r);
        let mut groups = Vec::new();
        // Only drop the group if it still points here.
        if r.status.is_closed() && self.group(r.group_key.as_bytes())? == Some(key) {
            groups.push(Group::Remove(r.group_key.as_bytes().to_vec()));
        }
        self.write(&[(key, &r)], &groups)?;
        Ok(Some((r, t)))
    }

    fn import_now(&self, records: Vec<IncidentRecord>) -> Result<Imported, StoreError> {
        let mut n = self.group(NEXT_ID)?.map(|v| be(&v)).unwrap_or(0);
        let mut done = Imported::default();
        let mut out = Vec::with_capacity(records.len());
        let mut groups = Vec::new();
        // External ids seen in this file, for a file that repeats one.
        let mut here: std::collections::HashMap<String, [u8; 8]> = Default::default();
        for mut r in records {
            if let Some(ext) = &r.external_id {
                let known = match here.get(ext) {
                    Some(k) => Some(*k),
                    None => self.group(&external_key(ext))?,
                };
                if let Some(k) = known {
                    done.existing.push((ext.clone(), format!("inc-{}", be(&k))));
                    continue;
                }
            }
            n += 1;
            r.id = format!("inc-{n}");
            r.schema = SCHEMA_VERSION;
            if let Some(ext) = &r.external_id {
                here.insert(ext.clone(), n.to_be_bytes());
                groups.push(Group::Set(external_key(ext), n.to_be_bytes()));
            }
            done.new.push(r.id.clone());
            out.push((n.to_be_bytes(), r));
        }
        groups.push(Group::Set(NEXT_ID.to_vec(), n.to_be_bytes()));
        self.stage(out, &groups);
        Ok(done)
    }

    /// The newest version of the record under `key`: staged (answered, not
    /// yet committed), else stored.
    fn record(&self, key: [u8; 8]) -> Result<Option<IncidentRecord>, StoreError> {
        if let Some(r) = self
            .core
            .staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .latest(&key)
        {
            return Ok(Some(r.clone()));
        }
        match self.core.incidents.get(key)? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// An `open_groups` entry as the writer sees it. Writer thread only.
    fn group(&self, key: &[u8]) -> Result<Option<[u8; 8]>, StoreError> {
        if let Some(v) = self
            .core
            .staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .groups
            .get(key)
        {
            return Ok(*v);
        }
        Ok(self
            .core
            .open_groups
            .get(key)?
            .map(|v| be(&v).to_be_bytes()))
    }

    /// Stages records, their group changes and one change number each;
    /// readers see them at once, and the next commit writes them to sled
    /// together, atomically (see [`Staged`]). Writer thread only.
    fn write(
        &self,
        records: &[([u8; 8], &IncidentRecord)],
        groups: &[Group],
    ) -> Result<(), StoreError> {
        self.stage(
            records.iter().map(|(k, r)| (*k, (*r).clone())).collect(),
            groups,
        );
        Ok(())
    }

    /// [`IncidentStore::write`] of records the caller gives away (an
    /// import: no copy).
    fn stage(&self, records: Vec<([u8; 8], IncidentRecord)>, groups: &[Group]) {
        let mut staged = self.core.staged.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.core.feed.next.load(Ordering::Acquire);
        for (key, r) in records {
            staged.changes.push((next, r.id.clone()));
            next += 1;
            if staged.records.insert(key, r).is_none() {
                staged.order.push(key);
            }
        }
        for g in groups {
            match g {
                Group::Set(k, v) => staged.groups.insert(k.clone(), Some(*v)),
                Group::Remove(k) => staged.groups.insert(k.clone(), None),
            };
        }
        self.core.feed.next.store(next, Ordering::Release);
    }

    /// Registers a follower's position (the last change it has): the feed
    /// keeps the changes after it, up to [`FEED_MAX`], while the follower
    /// lives (the `Arc` is held weakly).
    pub fn follow_from(&self, position: &Arc<AtomicU64>) {
        let mut f = self
            .core
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f.retain(|w| w.strong_count() > 0);
        f.push(Arc::downgrade(position));
    }

    /// The number of the newest committed change (0 before the first).
    pub fn last_change(&self) -> u64 {
        *self
            .core
            .feed
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Up to `limit` changes after change `after`, oldest first; or a gap
    /// when the feed was trimmed past it.
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Changes, StoreError> {
        let oldest = self.core.feed.oldest.load(Ordering::Acquire);
        if after + 1 < oldest {
            return Ok(Changes::Gap { oldest });
        }
        let mut out = Vec::new();
        for item in self
            .core
            .changes
            .range((after + 1).to_be_bytes()..)
            .take(limit)
        {
            let (k, v) = item?;
            out.push(Change {
                seq: be(&k),
                id: String::from_utf8_lossy(&v).into_owned(),
            });
        }
        // A trim that started meanwhile may have taken some of them.
        let oldest = self.core.feed.oldest.load(Ordering::Acquire);
        if after + 1 < oldest {
            return Ok(Changes::Gap { oldest });
        }
        Ok(Changes::Next(out))
    }

    /// Waits (a plain thread, never an async worker) until there is a
    /// change after `after` or `timeout` passes; returns the last change.
    pub fn wait_for_change(&self, after: u64, timeout: Duration) -> u64 {
        let last = self
            .core
            .feed
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (last, _) = self
            .core
            .feed
            .moved
            .wait_timeout_while(last, timeout, |l| *l <= after)
            .unwrap_or_else(|e| e.into_inner());
        *last
    }

    /// One incident by id (`inc-<n>`). A sled read: from a thread or
    /// `spawn_blocking` (async code: [`IncidentStore::fetch`]).
    pub fn get(&self, id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        match key_of(id) {
            Some(key) => self.record(key),
            None => Ok(None),
        }
    }

    /// Every incident, oldest first, decoded one at a time. Sled reads:
    /// from a thread or `spawn_blocking`.
    pub fn scan(&self) -> impl Iterator<Item = Result<IncidentRecord, StoreError>> + '_ {
        self.core.incidents.iter().map(|item| {
            let (k, v) = item?;
            decode(&k, &v)
        })
    }

    /// Up to `limit` incidents in id order, after the one named `after`
    /// (from the first when `None`): a full copy, page by page, for a
    /// standby the change feed can no longer bring up to date. Sled reads:
    /// from a thread or `spawn_blocking`.
    pub fn page_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<IncidentRecord>, StoreError> {
        let from = match after.map(key_of) {
            None => std::ops::Bound::Unbounded,
            Some(Some(key)) => std::ops::Bound::Excluded(key),
            // Not an id of this store: nothing sorts after it.
            Some(None) => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for item in self
            .core
            .incidents
            .range::<[u8; 8], _>((from, std::ops::Bound::Unbounded))
            .take(limit)
        {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Incidents, newest first. A sled read: from a thread or
    /// `spawn_blocking` (async code: [`IncidentStore::query`]).
    pub fn list(&self, filter: &IncidentFilter) -> Result<Vec<IncidentRecord>, StoreError> {
        // What is answered but not committed yet, newest version of each,
        // merged into sled's order (newest id first).
        let (overlay, recent): (std::collections::BTreeMap<[u8; 8], IncidentRecord>, _) = {
            let s = self.core.staged.lock().unwrap_or_else(|e| e.into_inner());
            let committing = s.committing.iter().flat_map(|c| c.iter());
            let overlay = committing
                .chain(s.records.iter())
                .map(|(k, r)| (*k, r.clone()))
                .collect();
            (overlay, s.recent.clone())
        };
        let mut overlay = overlay.into_iter().rev().peekable();
        let mut out = Vec::new();
        // Keeps `r` if the filter lets it through; true once full.
        let take = |out: &mut Vec<IncidentRecord>, r: IncidentRecord| {
            if !(filter.open_only && r.status.is_closed())
                && filter.status.is_none_or(|s| s == r.status)
            {
                out.push(r);
            }
            filter.limit.is_some_and(|l| out.len() >= l)
        };
        for item in self.core.incidents.iter().rev() {
            let (k, v) = item?;
            let key = <[u8; 8]>::try_from(k.as_ref()).ok();
            // Staged incidents newer than this one (not in sled yet).
            while let Some((_, r)) = overlay.next_if(|(o, _)| key.is_some_and(|k| *o > k)) {
                if take(&mut out, r) {
                    return Ok(out);
                }
            }
            let r = match overlay.next_if(|(o, _)| Some(*o) == key) {
                Some((_, staged)) => staged,
                None => match key.and_then(|k| recent.as_ref()?.get(&k)) {
                    // What sled holds, decoded already.
                    Some(r) => r.clone(),
                    None => decode(&k, &v)?,
                },
            };
            if take(&mut out, r) {
                return Ok(out);
            }
        }
        for (_, r) in overlay {
            if take(&mut out, r) {
                break;
            }
        }
        Ok(out)
    }
}

/// Counts a repeat notification of an alert on one timeline event instead
/// of adding one per notification, so a noisy alert keeps its incident
/// small: `alert X notified again (N times)`.
fn note_repeat(record: &mut IncidentRecord, fingerprint: &str, now: DateTime<Utc>) {
    let prefix = format!("alert {fingerprint} notified again");
    if let Some(e) = record
        .timeline
        .iter_mut()
        .rev()
        .take(16)
        .find(|e| e.kind == EventKind::Alert && e.detail.starts_with(&prefix))
    {
        let times = e
            .detail
            .rsplit_once('(')
            .and_then(|(_, t)| t.strip_suffix(" times)"))
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(1);
        e.detail = format!("{prefix} ({} times)", times + 1);
        e.at = now;
        return;
    }
    record.timeline.push(TimelineEvent {
        at: now,
        kind: EventKind::Alert,
        detail: prefix,
    });
}

/// Keeps a record's timeline within [`MAX_TIMELINE`], dropping the oldest
/// alert events first, then the oldest of any kind after the first.
fn bound_timeline(record: &mut IncidentRecord) {
    let over = record.timeline.len().saturating_sub(MAX_TIMELINE);
    if over == 0 {
        return;
    }
    let mut drop_alerts = over;
    record.timeline.retain(|e| {
        if drop_alerts > 0 && e.kind == EventKind::Alert {
            drop_alerts -= 1;
            false
        } else {
            true
        }
    });
    let still = record.timeline.len().saturating_sub(MAX_TIMELINE);
    if still > 0 {
        record.timeline.drain(1..=still);
    }
}

fn state_name(s: AlertState) -> &'static str {
    match s {
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn op() -> Opening {
        Opening {
            title: "HighCPU".into(),
            ..Default::default()
        }
    }

    fn alert(seq: u64, fp: &str, state: AlertState) -> AlertRecord {
        AlertRecord {
            seq,
            source: "alertmanager".into(),
            fingerprint: fp.into(),
            state,
            labels: BTreeMap::from([("alertname".to_string(), "HighCPU".to_string())]),
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            first_received_at: Utc::now(),
            notifications: 1,
        }
    }

    #[test]
    fn open_attach_resolve_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = IncidentStore::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        let now = Utc::now();

        // a resolved alert alone opens nothing
        assert_eq!(
            s.attach_blocking("g", &op(), alert(1, "a", AlertState::Resolved), now)
                .unwrap(),
            Attach::NoOpenIncident
        );
        let Attach::Opened(r) = s
            .attach_blocking("g", &op(), alert(2, "a", AlertState::Firing), now)
            .unwrap()
        else {
            panic!("expected open")
        };
        assert_eq!(r.id, "inc-1");
        let Attach::Attached(r) = s
            .attach_blocking("g", &op(), alert(3, "b", AlertState::Firing), now)
            .unwrap()
        else {
            panic!("expected attach")
        };
        assert_eq!(r.alerts.len(), 2);
        // replaying seq 3 changes nothing
        assert!(matches!(
            s.attach_blocking("g", &op(), alert(3, "b", AlertState::Firing), now)
                .unwrap(),
            Attach::AlreadyAttached(_)
        ));
        s.attach_blocking("g", &op(), alert(4, "a", AlertState::Resolved), now)
            .unwrap();
        assert_eq!(
            s.get("inc-1").unwrap().unwrap().status,
            IncidentStatus::Open
        );
        let Attach::Attached(r) = s
            .attach_blocking("g", &op(), alert(5, "b", AlertState::Resolved), now)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(r.status, IncidentStatus::Resolved);
        assert_eq!(r.alerts[0].notifications, 2);
        // the group is free again: a new firing alert opens inc-2
        let Attach::Opened(r2) = s
            .attach_blocking("g", &op(), alert(6, "a", AlertState::Firing), now)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(r2.id, "inc-2");
        let all = s.list(&IncidentFilter::default()).unwrap();
        assert_eq!(
            all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["inc-2", "inc-1"]
        );
        let open = s
            .list(&IncidentFilter {
                open_only: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(open.len(), 1);
        let resolved = s
            .list(&IncidentFilter {
                status: Some(IncidentStatus::Resolved),
                limit: Some(5),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].id, "inc-1");
        assert_eq!(s.get("nope").unwrap(), None);
    }

    #[test]
    fn a_runbook_can_keep_resolution_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = IncidentStore::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        let own = Opening {
            title: "x".into(),
            resolve_with_alerts: false,
            ..Default::default()
        };
        s.attach_blocking("g", &own, alert(1, "a", AlertState::Firing), Utc::now())
            .unwrap();
        let Attach::Attached(r) = s
            .attach_blocking("g", &own, alert(2, "a", AlertState::Resolved), Utc::now())
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(r.status, IncidentStatus::Open);
        assert_eq!(r.timeline.last().unwrap().kind, EventKind::AlertsResolved);
    }

    #[test]
    fn corrupt_and_future_records_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = IncidentStore::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        s.core
            .incidents
            .insert(7u64.to_be_bytes(), b"{not json".to_vec())
            .unwrap();
        let err = s.get("inc-7").unwrap_err();
        assert!(err.to_string().contains("inc-7"), "{err}");
        s.core
            .incidents
            .insert(8u64.to_be_bytes(), br#"{"schema": 99}"#.to_vec())
            .unwrap();
        assert!(matches!(
            s.get("inc-8"),
            Err(StoreError::FutureSchema { found: 99, .. })
        ));
    }

    #[test]
    fn pages_in_id_order_for_a_full_copy() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = IncidentStore::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        let now = Utc::now();
        // Ten incidents: ids past 9 must not sort as text ("inc-10" < "inc-2").
        for n in 1..=10u64 {
            s.attach_blocking(
                &format!("g{n}"),
                &op(),
                alert(n, &format!("f{n}"), AlertState::Firing),
                now,
            )
            .unwrap();
        }
        // Pages read what is committed (a copy goes on from the feed's
        // committed position).
        s.commit_blocking().unwrap();
        let ids = |v: Vec<IncidentRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(s.page_after(None, 2).unwrap()), ["inc-1", "inc-2"]);
        assert_eq!(
            ids(s.page_after(Some("inc-8"), 5).unwrap()),
            ["inc-9", "inc-10"]
        );
        assert!(s.page_after(Some("inc-10"), 5).unwrap().is_empty());
        assert!(s.page_after(Some("nonsense"), 5).unwrap().is_empty());
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = s.page_after(after.as_deref(), 3).unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            all.extend(ids(page));
        }
        assert_eq!(all.len(), 10);
    }

    #[test]
    fn every_write_is_numbered_and_readers_resume_after_n() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = IncidentStore::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        assert_eq!(s.last_change(), 0);
        assert_eq!(s.changes_after(0, 10).unwrap(), Changes::Next(vec![]));
        let now = Utc::now();
        // One writer job: the three writes are staged before any commit.
        let me = s.clone();
        s.writer
            .run_blocking(false, move || {
                me.attach_now("g", &op(), alert(1, "a", AlertState::Firing), now)?;
                me.attach_now("h", &op(), alert(2, "b", AlertState::Firing), now)?;
                me.update_now("inc-1", |r| r.title = "x".into())?;
                Ok(())
            })
            .unwrap();
        // a replay changes nothing, so it is no change
        s.attach_blocking("g", &op(), alert(1, "a", AlertState::Firing), now)
            .unwrap();
        // Answered, readable, but on the feed only once committed.
        assert_eq!(s.get("inc-1").unwrap().unwrap().title, "x");
        s.commit_blocking().unwrap();
        assert_eq!(s.last_change(), 3);
        // One commit: inc-1's first change is made redundant by its last
        // (a reader reads the record as it is now). The hole it leaves is
        // no gap: a reader at 0 misses nothing.
        let Changes::Next(all) = s.changes_after(0, 10).unwrap() else {
            panic!("a reader at 0 was sent to a full copy")
        };
        assert_eq!(
            all.iter()
                .map(|c| (c.seq, c.id.as_str()))
                .collect::<Vec<_>>(),
            [(2, "inc-2"), (3, "inc-1")]
        );
        let Changes::Next(rest) = s.changes_after(2, 10).unwrap() else {
            panic!()
        };
        assert_eq!(rest.len(), 1);
        assert_eq!(s.wait_for_change(2, Duration::from_millis(1)), 3);
        // a follower waiting for change 4 is woken by it
        let s2 = s.clone();
        let waiter = std::thread::spawn(move || s2.wait_for_change(3, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        s.update_blocking("inc-2", |r| r.title = "y".into())
            .unwrap();
        assert_eq!(waiter.join().unwrap(), 4);
        // the numbers go on after a reopen
        s.commit_blocking().unwrap();
        drop(s);
        let s = IncidentStore::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        assert_eq!(s.last_change(), 4);
        s.update_blocking("inc-2", |r| r.title = "z".into())
            .unwrap();
        s.commit_blocking().unwrap();
        assert_eq!(s.last_change(), 5);
    }

    #[test]
    fn a_noisy_alert_keeps_its_incident_small() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = IncidentStore::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        let now = Utc::now();
        for seq in 1..=3000 {
            s.attach_blocking("g", &op(), alert(seq, "a", AlertState::Firing), now)
                .unwrap();
        }
        let r = s.get("inc-1").unwrap().unwrap();
        assert_eq!(r.alerts.len(), 1);
        assert_eq!(r.alerts[0].notifications, 3000);
        assert_eq!(r.timeline.len(), 2, "{:?}", r.timeline);
        assert_eq!(r.timeline[1].detail, "alert a notified again (2999 times)");
        // many distinct events are capped too
        for i in 0..(MAX_TIMELINE + 50) {
            s.update_blocking("inc-1", move |r| {
                r.timeline.push(TimelineEvent {
                    at: Utc::now(),
                    kind: EventKind::Note,
                    detail: format!("n{i}"),
                })
            })
            .unwrap();
        }
        let r = s.get("inc-1").unwrap().unwrap();
        assert_eq!(r.timeline.len(), MAX_TIMELINE);
        assert_eq!(
            r.timeline[0].kind,
            EventKind::Opened,
            "the opening event stays"
        );
        assert_eq!(
            r.timeline.last().unwrap().detail,
            format!("n{}", MAX_TIMELINE + 49)
        );
    }

    #[test]
    fn the_feed_is_kept_for_slow_followers_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = IncidentStore::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        // No follower: the last FEED_KEEP changes.
        assert_eq!(s.core.trim_below(3 * FEED_KEEP), 2 * FEED_KEEP);
        assert_eq!(s.core.trim_below(10), 0);
        // A slow follower keeps what it has not read...
        let slow = Arc::new(AtomicU64::new(5));
        s.follow_from(&slow);
        assert_eq!(s.core.trim_below(3 * FEED_KEEP), 6);
        // ...but not beyond FEED_MAX.
        assert_eq!(s.core.trim_below(FEED_MAX + 50), 50);
        // A follower that is gone holds nothing.
        drop(slow);
        assert_eq!(s.core.trim_below(3 * FEED_KEEP), 2 * FEED_KEEP);
        // With a gap, a reader is told to start over.
        let me = s.clone();
        s.writer
            .run_blocking(false, move || {
                me.attach_now("g", &op(), alert(1, "a", AlertState::Firing), Utc::now())?;
                me.update_now("inc-1", |r| r.title = "t".into())?;
                Ok(())
            })
            .unwrap();
        s.commit_blocking().unwrap();
        s.update_blocking("inc-1", |r| r.title = "u".into())
            .unwrap();
        s.commit_blocking().unwrap();
        assert_eq!(
            s.changes_after(0, 10).unwrap(),
            Changes::Next(vec![
                Change {
                    seq: 2,
                    id: "inc-1".into()
                },
                Change {
                    seq: 3,
                    id: "inc-1".into()
                },
            ])
        );
        s.core.trim(3).unwrap();
        assert_eq!(s.changes_after(0, 10).unwrap(), Changes::Gap { oldest: 3 });
        assert_eq!(s.changes_after(1, 10).unwrap(), Changes::Gap { oldest: 3 });
        assert_eq!(
            s.changes_after(2, 10).unwrap(),
            Changes::Next(vec![Change {
                seq: 3,
                id: "inc-1".into()
            },])
        );
        // The watermark is kept across a reopen (the first key left, 3,
        // would say the same here; after a hole it would not).
        drop(s);
        let s = IncidentStore::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        assert_eq!(s.changes_after(1, 10).unwrap(), Changes::Gap { oldest: 3 });
        assert_eq!(s.last_change(), 3);
    }

    /// The watermark and the holes coalescing leaves: a reader is sent to
    /// a full copy only when a trim took changes it had not read.
    #[test]
    fn holes_in_the_feed_are_not_gaps_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = IncidentStore::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        let now = Utc::now();
        // One writer job, so one commit: the feed's first key is 4.
        let me = s.clone();
        s.writer
            .run_blocking(false, move || {
                me.attach_now("g", &op(), alert(1, "a", AlertState::Firing), now)?;
                for t in ["x", "y", "z"] {
                    me.update_now("inc-1", move |r| r.title = t.into())?;
                }
                Ok(())
            })
            .unwrap();
        s.commit_blocking().unwrap();
        assert_eq!(s.last_change(), 4);
        drop(s);
        let s = IncidentStore::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        assert_eq!(s.last_change(), 4);
        assert_eq!(
            s.changes_after(0, 10).unwrap(),
            Changes::Next(vec![Change {
                seq: 4,
                id: "inc-1".into()
            },])
        );
        assert_eq!(s.get("inc-1").unwrap().unwrap().title, "z");
    }

    /// Writes nobody needs durable share a transaction (sled seals its log
    /// buffer twice for each), yet each is readable once answered.
    #[test]
    fn answered_writes_are_read_back_at_once_and_committed_together() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let w = Writer::start(db.clone(), None).unwrap();
        let s = IncidentStore::open(&db, w.clone()).unwrap();
        let now = Utc::now();
        s.attach_blocking("g", &op(), alert(1, "a", AlertState::Firing), now)
            .unwrap();
        let before = w.stats().commits.load(Ordering::Relaxed);
        let started = std::time::Instant::now();
        for i in 0..300 {
            s.update_blocking("inc-1", move |r| r.title = format!("t{i}"))
                .unwrap();
            // Read your writes, committed or still staged.
            assert_eq!(s.get("inc-1").unwrap().unwrap().title, format!("t{i}"));
            let listed = s.list(&IncidentFilter::default()).unwrap();
            assert_eq!(listed.len(), 1);
            assert_eq!(listed[0].title, format!("t{i}"));
        }
        let commits = w.stats().commits.load(Ordering::Relaxed) - before;
        let bound = started.elapsed().as_micros() / crate::writer::COMMIT_EVERY.as_micros() + 2;
        assert!(
            u128::from(commits) <= bound,
            "{commits} transactions for 300 writes in {:?}",
            started.elapsed()
        );
        // Committed within COMMIT_EVERY with no one asking: the feed has
        // all 301 changes.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while s.last_change() < 301 {
            assert!(std::time::Instant::now() < deadline, "never committed");
            std::thread::sleep(Duration::from_millis(1));
        }
        // A new incident still staged is listed in id order, newest first.
        s.attach_blocking("h", &op(), alert(2, "b", AlertState::Firing), now)
            .unwrap();
        let ids: Vec<String> = s
            .list(&IncidentFilter::default())
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["inc-2", "inc-1"]);
        // Once committed, the last commit's records are kept decoded; an
        // import too large for that is read back from sled.
        s.commit_blocking().unwrap();
        let kept = |s: &IncidentStore| {
            s.core
                .staged
                .lock()
                .unwrap()
                .recent
                .as_ref()
                .map(|r| r.len())
        };
        assert!(kept(&s).is_some_and(|n| n >= 1));
        let mut r = s.get("inc-1").unwrap().unwrap();
        r.external_id = None;
        let many = vec![r; RECENT_MAX + 1];
        let done = s.import_blocking(many).unwrap();
        assert_eq!(kept(&s), None);
        let last = done.new.last().unwrap();
        assert_eq!(s.get(last).unwrap().unwrap().id, *last);
        assert_eq!(s.get("inc-1").unwrap().unwrap().title, "t299");
    }

    /// The commit the store registers with the writer must not keep the
    /// writer's thread (and the database) alive once the handles are gone.
    #[test]
    fn the_writer_thread_ends_when_the_store_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let probe = {
            let db = sled::open(dir.path()).unwrap();
            let w = Writer::start(db.clone(), None).unwrap();
            let probe = w.probe();
            let s = IncidentStore::open(&db, w).unwrap();
            s.attach_blocking("g", &op(), alert(1, "a", AlertState::Firing), Utc::now())
                .unwrap();
            probe
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while probe.upgrade().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer thread is still running"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let db = crate::reopen(dir.path());
        let s = IncidentStore::open(&db, Writer::inline(db.clone())).unwrap();
        assert_eq!(s.get("inc-1").unwrap().unwrap().title, "HighCPU");
    }
}
