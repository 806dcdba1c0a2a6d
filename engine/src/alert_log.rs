//! The durable alert log, with group commit.
//!
//! An alert is acknowledged only after it is in sled *and flushed*. Flushing
//! is the expensive part, so one writer thread takes every append request
//! that is waiting, writes them all, flushes once, and only then answers each
//! request. Under load many requests share one flush; alone, a request pays
//! for one flush and nothing more.
//!
//! Trees (all under `intake/`):
//! - `deliveries`: one entry per webhook delivery that brought anything new,
//!   keyed by the sequence number of its first new alert (u64, big-endian).
//!   Its alerts have consecutive sequence numbers from there. One entry per
//!   delivery, not per alert, because sled's cost is per insert: a delivery
//!   of 100 alerts is one insert, not 100.
//! - `keys`: a 128-bit hash of each idempotency key to the alert's sequence
//!   number;
//! - `raw`: content address to the raw payload bytes;
//! - `meta`: the pipeline's cursor.
//!
//! Alerts are encoded in the request's own task (in parallel). The writer
//! thread only de-duplicates and inserts; it hands each batch to the
//! flusher thread, which flushes (one fsync for every batch waiting) and
//! then answers. While one batch is being flushed, the writer is already
//! inserting the next: a flush covers every insert that finished before it
//! began, so answering after it is sound.
//!
//! Within one append the delivery is written before its idempotency keys. If
//! the process dies between the two (before the flush, so nothing was
//! acknowledged), the sender's retry stores the alert again rather than
//! losing it: at-least-once, never at-most-once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use chrono::{DateTime, Utc};
use quench_connectors::Alert;
use quench_connectors::alert::content_address;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::store::Syncer;

/// The most requests one flush covers. Bounds the latency of the first
/// request of a batch.
const MAX_BATCH: usize = 1024;

/// Requests waiting for the writer beyond this make senders wait (back
/// pressure) instead of growing memory without bound.
const QUEUE_DEPTH: usize = 4096;

/// Flushed batches the live feed holds before the writer drops them.
const LIVE_DEPTH: usize = 1024;

/// Bits in the filter of idempotency keys already stored (8 MiB): about 1 %
/// false positives at 7 million keys. Past that it only gets slower, never
/// wrong: a positive is always checked against sled.
const BLOOM_BITS: usize = 1 << 26;

/// A Bloom filter over stored idempotency keys. Almost every alert is new,
/// and proving that with sled costs a tree lookup; the filter answers "new"
/// for certain in a few nanoseconds.
struct Bloom {
    bits: Vec<u64>,
}

impl Bloom {
    fn load(keys: &sled::Tree) -> Result<Bloom, LogError> {
        let mut b = Bloom {
            bits: vec![0; BLOOM_BITS / 64],
        };
        for k in keys.iter().keys() {
            if let Ok(k) = <[u8; 16]>::try_from(k?.as_ref()) {
                b.insert(&k);
            }
        }
        Ok(b)
    }

    /// Four probes taken from the key, which is already a uniform hash.
    fn probes(key: &[u8; 16]) -> [usize; 4] {
        let mut out = [0; 4];
        for (i, chunk) in key.chunks_exact(4).enumerate() {
            let v = u32::from_le_bytes(chunk.try_into().expect("4 bytes")) as usize;
            out[i] = v % BLOOM_BITS;
        }
        out
    }

    fn insert(&mut self, key: &[u8; 16]) {
        for p in Self::probes(key) {
            self.bits[p / 64] |= 1 << (p % 64);
        }
    }

    fn may_contain(&self, key: &[u8; 16]) -> bool {
        Self::probes(key)
            .iter()
            .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }
}

/// What went wrong while appending.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// sled failed to write or flush; nothing in the request was acknowledged.
    #[error("alert log: {0}")]
    Sled(#[from] sled::Error),
    /// The writer thread is gone (the engine is shutting down).
    #[error("alert log: writer stopped")]
    Stopped,
    /// A stored entry does not decode.
    #[error("alert log: delivery {seq} does not decode: {source}")]
    Corrupt {
        /// The delivery's first sequence number.
        seq: u64,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// An alert as the log keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredAlert {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When quench received it.
    pub received_at: DateTime<Utc>,
    /// The alert.
    pub alert: Alert,
}

/// One stored delivery.
#[derive(Deserialize)]
struct Delivery {
    received_at: DateTime<Utc>,
    alerts: Vec<Alert>,
}

/// The outcome for one alert of an append.
#[derive(Debug, Clone, Serialize)]
pub struct Appended {
    /// The sequence number of the stored alert (for a duplicate, the original).
    pub seq: u64,
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// True when the idempotency key was already stored.
    pub duplicate: bool,
}

/// One alert, encoded before it reaches the writer.
struct Item {
    key: [u8; 16],
    json: Vec<u8>,
    alert: Alert,
}

struct Request {
    raw: Vec<u8>,
    raw_ref: String,
    items: Vec<Item>,
    reply: oneshot::Sender<Reply>,
}

/// The handle the HTTP handlers and the pipeline share.
#[derive(Clone)]
pub struct AlertLog {
    tx: mpsc::Sender<Request>,
    deliveries: sled::Tree,
    keys: sled::Tree,
    raw: sled::Tree,
    meta: sled::Tree,
    next_seq: Arc<AtomicU64>,
    live: Arc<std::sync::Mutex<Option<mpsc::Receiver<Vec<StoredAlert>>>>>,
}

/// The idempotency key as stored: a 128-bit hash, so every key is 16 bytes
/// however long the sender's identifiers are.
fn key_hash(key: &str) -> [u8; 16] {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

impl AlertLog {
    /// Opens the log's trees and starts the writer thread. `syncer`, when
    /// given, runs after every flush, before anything is acknowledged.
    pub fn open(db: &sled::Db, syncer: Option<Syncer>) -> Result<AlertLog, LogError> {
        let deliveries = db.open_tree("intake/deliveries")?;
        let keys = db.open_tree("intake/keys")?;
        let raw = db.open_tree("intake/raw")?;
        let meta = db.open_tree("intake/meta")?;
        let next_seq = match deliveries.last()? {
            Some((k, v)) => {
                let first = seq_of(&k);
                first + decode(first, &v)?.alerts.len() as u64
            }
            None => 1,
        };
        let next_seq = Arc::new(AtomicU64::new(next_seq));
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (live_tx, live_rx) = mpsc::channel(LIVE_DEPTH);
        let seen = Bloom::load(&keys)?;
        let writer = Writer {
            deliveries: deliveries.clone(),
            keys: keys.clone(),
            raw: raw.clone(),
            next_seq: next_seq.clone(),
            seen,
        };
        // A few batches in flight between writer and flusher; beyond that
        // the writer waits, and so do senders (back pressure).
        let (flush_tx, flush_rx) = std::sync::mpsc::sync_channel(8);
        let flush_db = db.clone();
        thread::Builder::new()
            .name("alert-log-flush".into())
            .spawn(move || flush_loop(flush_db, syncer, flush_rx, live_tx))
            .map_err(|e| LogError::Sled(sled::Error::Io(e)))?;
        thread::Builder::new()
            .name("alert-log-writer".into())
            .spawn(move || writer.run(rx, flush_tx))
            .map_err(|e| LogError::Sled(sled::Error::Io(e)))?;
        Ok(AlertLog {
            tx,
            deliveries,
            keys,
            raw,
            meta,
            next_seq,
            live: Arc::new(std::sync::Mutex::new(Some(live_rx))),
        })
    }

    /// Forgets the idempotency keys of alerts received before `cutoff`, so
    /// the key tree stays the size of the de-duplication window. A sender
    /// that repeats such an alert later gets it stored again (it attaches
    /// to its incident as a repeat). The deliveries themselves stay.
    /// Returns how many keys went.
    pub fn forget_keys_before(&self, cutoff: DateTime<Utc>) -> Result<usize, LogError> {
        // The first sequence number received at or after the cutoff: a
        // binary search, as deliveries are appended in time order.
        let received = |seq: u64| -> Result<Option<DateTime<Utc>>, LogError> {
            match self.deliveries.range(..=seq.to_be_bytes()).next_back() {
                Some(item) => {
                    let (k, v) = item?;
                    Ok(Some(decode(seq_of(&k), &v)?.received_at))
                }
                None => Ok(None),
            }
        };
        let (mut lo, mut hi) = (1u64, self.next_seq.load(Ordering::SeqCst));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match received(mid)? {
                Some(t) if t < cutoff => lo = mid + 1,
                _ => hi = mid,
            }
        }
        let keep_from = lo;
        let mut forgotten = 0;
        for item in self.keys.iter() {
            let (k, v) = item?;
            if seq_of(&v) < keep_from {
                // Only if the writer has not re-used the key meanwhile.
                if self
                    .keys
                    .compare_and_swap(&k, Some(&v), None::<&[u8]>)?
                    .is_ok()
                {
                    forgotten += 1;
                }
            }
        }
        Ok(forgotten)
    }

    /// Every alert received since `cutoff`, oldest first. Reads the log
    /// backwards from its end, so it costs what is that recent, not what is
    /// stored.
    pub fn received_since(&self, cutoff: DateTime<Utc>) -> Result<Vec<StoredAlert>, LogError> {
        let mut out = Vec::new();
        for item in self.deliveries.iter().rev() {
            let (k, v) = item?;
            let first = seq_of(&k);
            let d = decode(first, &v)?;
            if d.received_at < cutoff {
                break;
            }
            for (i, alert) in d.alerts.into_iter().enumerate().rev() {
                out.push(StoredAlert {
                    seq: first + i as u64,
                    received_at: d.received_at,
                    alert,
                });
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Appends the alerts of one delivery and its raw payload. Returns once
    /// they are flushed to disk, never before.
    pub async fn append(
        &self,
        raw: Vec<u8>,
        alerts: Vec<Alert>,
    ) -> Result<Vec<Appended>, LogError> {
        let raw_ref = content_address(&raw);
        let items = alerts
            .into_iter()
            .map(|mut alert| {
                alert.raw_ref.clone_from(&raw_ref);
                Item {
                    key: key_hash(&alert.idempotency_key),
                    json: serde_json::to_vec(&alert).expect("alerts always serialise"),
                    alert,
                }
            })
            .collect();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                raw,
                raw_ref,
                items,
                reply,
            })
            .await
            .map_err(|_| LogError::Stopped)?;
        rx.await.map_err(|_| LogError::Stopped)?
    }

    /// The live feed of flushed alerts, in sequence order, for the one
    /// consumer that follows the log (the pipeline). `None` if taken.
    ///
    /// The feed is best effort: when the consumer falls behind, the writer
    /// drops batches rather than wait, and the consumer, seeing a gap in
    /// the sequence numbers, reads the missing alerts back from the log.
    pub fn take_live_feed(&self) -> Option<mpsc::Receiver<Vec<StoredAlert>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// At least `limit` alerts after `seq` (fewer at the end of the log),
    /// oldest first. Whole deliveries are returned, so it may be more.
    pub fn read_after(&self, seq: u64, limit: usize) -> Result<Vec<StoredAlert>, LogError> {
        let start = seq + 1;
        let from = match self.deliveries.range(..=start.to_be_bytes()).next_back() {
            Some(item) => item?.0,
            None => sled::IVec::from(&start.to_be_bytes()),
        };
        let mut out = Vec::new();
        for item in self.deliveries.range(from..) {
            let (k, v) = item?;
            let first = seq_of(&k);
            let d = decode(first, &v)?;
            for (i, alert) in d.alerts.into_iter().enumerate() {
                let seq = first + i as u64;
                if seq >= start {
                    out.push(StoredAlert {
                        seq,
                        received_at: d.received_at,
                        alert,
                    });
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The newest alerts, newest first, optionally only one fingerprint's.
    pub fn recent(
        &self,
        limit: usize,
        fingerprint: Option<&str>,
    ) -> Result<Vec<StoredAlert>, LogError> {
        let mut out = Vec::new();
        for item in self.deliveries.iter().rev() {
            let (k, v) = item?;
            let first = seq_of(&k);
            let d = decode(first, &v)?;
            for (i, alert) in d.alerts.into_iter().enumerate().rev() {
                if fingerprint.is_none_or(|f| alert.fingerprint == f) {
                    out.push(StoredAlert {
                        seq: first + i as u64,
                        received_at: d.received_at,
                        alert,
                    });
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The raw payload behind a `sha256:` reference.
    pub fn raw_payload(&self, raw_ref: &str) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.raw.get(raw_ref.as_bytes())?.map(|v| v.to_vec()))
    }

    /// How far the pipeline got.
    pub fn cursor(&self) -> Result<u64, LogError> {
        Ok(self.meta.get("cursor")?.map(|v| seq_of(&v)).unwrap_or(0))
    }

    /// Records how far the pipeline got.
    pub fn set_cursor(&self, seq: u64) -> Result<(), LogError> {
        self.meta.insert("cursor", &seq.to_be_bytes())?;
        Ok(())
    }

    /// The number of stored alerts.
    pub fn len(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire) - 1
    }

    /// True when nothing was ever stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an append request is answered with.
type Reply = Result<Vec<Appended>, LogError>;

/// A batch the writer has inserted, waiting for a flush.
struct Written {
    replies: Vec<(oneshot::Sender<Reply>, Reply)>,
    fresh: Vec<StoredAlert>,
}

/// Flushes whatever the writer has inserted, then answers the senders.
fn flush_loop(
    db: sled::Db,
    syncer: Option<Syncer>,
    rx: std::sync::mpsc::Receiver<Written>,
    live: mpsc::Sender<Vec<StoredAlert>>,
) {
    let mut groups = Vec::new();
    while let Ok(first) = rx.recv() {
        groups.push(first);
        while let Ok(more) = rx.try_recv() {
            groups.push(more);
        }
        let flushed = db.flush().and_then(|n| match &syncer {
            Some(s) => s.sync().map(|()| n).map_err(sled::Error::Io),
            None => Ok(n),
        });
        for group in groups.drain(..) {
            for (reply, result) in group.replies {
                let result = match &flushed {
                    Ok(_) => result,
                    Err(e) => Err(LogError::Sled(e.clone())),
                };
                // The sender may have gone (client hung up); the alert is
                // stored all the same.
                let _ = reply.send(result);
            }
            if flushed.is_ok() && !group.fresh.is_empty() {
                // Full means the consumer is behind; it will find the gap
                // and read these back from the log.
                let _ = live.try_send(group.fresh);
            }
        }
    }
    // The writer is gone: make whatever is left durable.
    let _ = db.flush();
}

fn seq_of(k: &[u8]) -> u64 {
    <[u8; 8]>::try_from(k).map(u64::from_be_bytes).unwrap_or(0)
}

fn decode(seq: u64, bytes: &[u8]) -> Result<Delivery, LogError> {
    serde_json::from_slice(bytes).map_err(|source| LogError::Corrupt { seq, source })
}

struct Writer {
    deliveries: sled::Tree,
    keys: sled::Tree,
    raw: sled::Tree,
    next_seq: Arc<AtomicU64>,
    seen: Bloom,
}

impl Writer {
    fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        flusher: std::sync::mpsc::SyncSender<Written>,
    ) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let mut fresh = Vec::new();
            let replies = batch
                .drain(..)
                .map(|r: Request| {
                    let reply = r.reply;
                    let result = self.write(&r.raw, &r.raw_ref, r.items, &mut fresh);
                    (reply, result)
                })
                .collect();
            if flusher.send(Written { replies, fresh }).is_err() {
                return;
            }
        }
    }

    fn write(
        &mut self,
        raw: &[u8],
        raw_ref: &str,
        items: Vec<Item>,
        fresh: &mut Vec<StoredAlert>,
    ) -> Result<Vec<Appended>, LogError> {
        let first = self.next_seq.load(Ordering::Acquire);
        let mut out = Vec::with_capacity(items.len());
        let mut new: Vec<Item> = Vec::with_capacity(items.len());
        for item in items {
            // Only this thread writes keys, so a read-then-write is race
            // free. The filter holds every stored key and every key of this
            // delivery so far; when it says no, the key is certainly new.
            let earlier = if self.seen.may_contain(&item.key) {
                match self.keys.get(item.key)? {
                    Some(seq) => Some(seq_of(&seq)),
                    // The same key twice in one delivery.
                    None => new
                        .iter()
                        .position(|n| n.key == item.key)
                        .map(|pos| first + pos as u64),
                }
            } else {
                None
            };
            if let Some(seq) = earlier {
                out.push(Appended {
                    seq,
                    fingerprint: item.alert.fingerprint.clone(),
                    duplicate: true,
                });
            } else {
                // Set now, so a repeat later in this delivery is caught. If
                // the write fails, the stray bits only cost a lookup.
                self.seen.insert(&item.key);
                out.push(Appended {
                    seq: first + new.len() as u64,
                    fingerprint: item.alert.fingerprint.clone(),
                    duplicate: false,
                });
                new.push(item);
            }
        }
        if new.is_empty() {
            return Ok(out);
        }
        // {"received_at":"...","alerts":[<encoded>,<encoded>]}
        let now = Utc::now();
        let received_at = serde_json::to_string(&now).expect("timestamps serialise");
        let mut value =
            Vec::with_capacity(64 + new.iter().map(|i| i.json.len() + 1).sum::<usize>());
        value.extend_from_slice(b"{\"received_at\":");
        value.extend_from_slice(received_at.as_bytes());
        value.extend_from_slice(b",\"alerts\":[");
        for (i, item) in new.iter().enumerate() {
            if i > 0 {
                value.push(b',');
            }
            value.extend_from_slice(&item.json);
        }
        value.extend_from_slice(b"]}");
        self.raw.insert(raw_ref.as_bytes(), raw)?;
        self.deliveries.insert(first.to_be_bytes(), value)?;
        let count = new.len() as u64;
        for (i, item) in new.into_iter().enumerate() {
            let seq = first + i as u64;
            self.keys.insert(item.key, &seq.to_be_bytes())?;
            fresh.push(StoredAlert {
                seq,
                received_at: now,
                alert: item.alert,
            });
        }
        self.next_seq.store(first + count, Ordering::Release);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use quench_connectors::{AlertStatus, Source};

    use super::*;

    fn alert(key: &str) -> Alert {
        Alert {
            source: Source::Alertmanager,
            fingerprint: format!("fp-{key}"),
            status: AlertStatus::Firing,
            labels: BTreeMap::from([("alertname".to_string(), "X".to_string())]),
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            meta: BTreeMap::new(),
            idempotency_key: key.to_string(),
            raw_ref: String::new(),
        }
    }

    #[tokio::test]
    async fn keys_older_than_the_window_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = AlertLog::open(&db, None).unwrap();
        log.append(b"one".to_vec(), vec![alert("a"), alert("b")])
            .await
            .unwrap();
        let between = Utc::now();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        log.append(b"two".to_vec(), vec![alert("c")]).await.unwrap();
        // Nothing is that old yet.
        let hour_ago = between - chrono::Duration::hours(1);
        assert_eq!(log.forget_keys_before(hour_ago).unwrap(), 0);
        // The first delivery's two keys go, the second's stays.
        assert_eq!(log.forget_keys_before(between).unwrap(), 2);
        assert_eq!(log.forget_keys_before(between).unwrap(), 0);
        let r = log
            .append(b"three".to_vec(), vec![alert("a"), alert("c")])
            .await
            .unwrap();
        assert_eq!(
            r.iter().map(|a| (a.seq, a.duplicate)).collect::<Vec<_>>(),
            [(4, false), (3, true)],
            "a is stored again, c is still a duplicate"
        );
        // The deliveries themselves stay.
        assert_eq!(log.read_after(0, 10).unwrap().len(), 4);
    }

    #[tokio::test]
    async fn appends_dedups_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let log = AlertLog::open(&db, None).unwrap();
            let r = log
                .append(
                    b"payload".to_vec(),
                    vec![alert("a"), alert("b"), alert("a")],
                )
                .await
                .unwrap();
            assert_eq!(
                r.iter().map(|a| (a.seq, a.duplicate)).collect::<Vec<_>>(),
                [(1, false), (2, false), (1, true)]
            );
            // concurrent appends all land, each exactly once
            let mut tasks = Vec::new();
            for i in 0..50 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    log.append(
                        format!("p{i}").into_bytes(),
                        vec![alert(&format!("k{i}")), alert("a")],
                    )
                    .await
                }));
            }
            for t in tasks {
                let r = t.await.unwrap().unwrap();
                assert!(!r[0].duplicate);
                assert!(r[1].duplicate);
            }
            assert_eq!(log.len(), 52);
        }
        // The writer thread lets go of the database once every handle is
        // dropped; wait for that rather than racing it.
        let db = {
            let mut tries = 0;
            loop {
                match sled::open(dir.path()) {
                    Ok(db) => break db,
                    Err(e) if tries < 100 => {
                        tries += 1;
                        let _ = e;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("reopen: {e}"),
                }
            }
        };
        let log = AlertLog::open(&db, None).unwrap();
        assert_eq!(log.len(), 52);
        let first = log.read_after(0, 1).unwrap();
        assert_eq!(first[0].seq, 1);
        // Reading from the middle of a delivery starts at the next alert.
        let mid = log.read_after(1, 1).unwrap();
        assert_eq!(mid[0].seq, 2);
        assert_eq!(mid[0].alert.idempotency_key, "b");
        let all = log.read_after(0, 1000).unwrap();
        assert_eq!(
            all.iter().map(|a| a.seq).collect::<Vec<_>>(),
            (1..=52).collect::<Vec<_>>()
        );
        let raw = log.raw_payload(&first[0].alert.raw_ref).unwrap().unwrap();
        assert_eq!(raw, b"payload");
        let r = log
            .append(b"again".to_vec(), vec![alert("b"), alert("c")])
            .await
            .unwrap();
        assert!(r[0].duplicate);
        assert_eq!(r[1].seq, 53, "sequence numbers continue after a reopen");
        assert_eq!(log.recent(1, None).unwrap()[0].seq, 53);
        assert_eq!(log.recent(10, Some("fp-b")).unwrap().len(), 1);
        let all = log
            .received_since(Utc::now() - chrono::Duration::hours(1))
            .unwrap();
        assert_eq!(all.len(), 53, "everything is recent");
        assert_eq!(all.first().unwrap().seq, 1, "oldest first");
        assert!(
            log.received_since(Utc::now() + chrono::Duration::hours(1))
                .unwrap()
                .is_empty()
        );
        log.set_cursor(7).unwrap();
        assert_eq!(log.cursor().unwrap(), 7);
    }
}
