//! The durable alert log, with group commit.
//!
//! An alert is acknowledged only after it is in sled *and flushed*. Flushing
//! is the expensive part, so one writer thread takes every append request
//! that is waiting, writes them all, flushes once, and only then answers each
//! request. Under load many requests share one flush; alone, a request pays
//! for one flush and nothing more.
//!
//! Trees (all under `intake/`):
//! - `alerts`: sequence number (u64, big-endian) to a JSON [`StoredAlert`];
//! - `keys`: idempotency key to the sequence number that first stored it;
//! - `raw`: content address to the raw payload bytes;
//! - `meta`: the pipeline's cursor.
//!
//! Within one append an alert is written before its idempotency key. If the
//! process dies between the two (before the flush, so nothing was
//! acknowledged), the sender's retry stores the alert again rather than
//! losing it: at-least-once, never at-most-once.

use std::sync::Arc;
use std::thread;

use chrono::{DateTime, Utc};
use quench_connectors::Alert;
use quench_connectors::alert::content_address;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

/// The most requests one flush covers. Bounds the latency of the first
/// request of a batch.
const MAX_BATCH: usize = 1024;

/// Requests waiting for the writer beyond this make senders wait (back
/// pressure) instead of growing memory without bound.
const QUEUE_DEPTH: usize = 4096;

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
    #[error("alert log: entry {seq} does not decode: {source}")]
    Corrupt {
        /// The entry's sequence number.
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

struct Request {
    raw: Vec<u8>,
    alerts: Vec<Alert>,
    reply: oneshot::Sender<Result<Vec<Appended>, LogError>>,
}

/// The handle the HTTP handlers and the pipeline share.
#[derive(Clone)]
pub struct AlertLog {
    tx: mpsc::Sender<Request>,
    alerts: sled::Tree,
    raw: sled::Tree,
    meta: sled::Tree,
    appended: Arc<Notify>,
}

impl AlertLog {
    /// Opens the log's trees and starts the writer thread.
    pub fn open(db: &sled::Db) -> Result<AlertLog, LogError> {
        let alerts = db.open_tree("intake/alerts")?;
        let keys = db.open_tree("intake/keys")?;
        let raw = db.open_tree("intake/raw")?;
        let meta = db.open_tree("intake/meta")?;
        let next_seq = match alerts.last()? {
            Some((k, _)) => seq_of(&k) + 1,
            None => 1,
        };
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let appended = Arc::new(Notify::new());
        let writer = Writer {
            db: db.clone(),
            alerts: alerts.clone(),
            keys,
            raw: raw.clone(),
            next_seq,
            appended: appended.clone(),
        };
        thread::Builder::new()
            .name("alert-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::Sled(sled::Error::Io(e)))?;
        Ok(AlertLog {
            tx,
            alerts,
            raw,
            meta,
            appended,
        })
    }

    /// Appends the alerts of one delivery and its raw payload. Returns once
    /// they are flushed to disk, never before.
    pub async fn append(&self, raw: Vec<u8>, alerts: Vec<Alert>) -> Result<Vec<Appended>, LogError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { raw, alerts, reply })
            .await
            .map_err(|_| LogError::Stopped)?;
        rx.await.map_err(|_| LogError::Stopped)?
    }

    /// Wakes whenever an append has been flushed.
    pub fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    /// Up to `limit` entries after `seq`, oldest first.
    pub fn read_after(&self, seq: u64, limit: usize) -> Result<Vec<StoredAlert>, LogError> {
        self.alerts
            .range((seq + 1).to_be_bytes()..)
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                decode(seq_of(&k), &v)
            })
            .collect()
    }

    /// The newest entries, newest first, optionally only one fingerprint's.
    pub fn recent(&self, limit: usize, fingerprint: Option<&str>) -> Result<Vec<StoredAlert>, LogError> {
        let mut out = Vec::new();
        for item in self.alerts.iter().rev() {
            let (k, v) = item?;
            let s = decode(seq_of(&k), &v)?;
            if fingerprint.is_none_or(|f| s.alert.fingerprint == f) {
                out.push(s);
                if out.len() >= limit {
                    break;
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
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    /// True when nothing was ever stored.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }
}

fn seq_of(k: &[u8]) -> u64 {
    <[u8; 8]>::try_from(k).map(u64::from_be_bytes).unwrap_or(0)
}

fn decode(seq: u64, bytes: &[u8]) -> Result<StoredAlert, LogError> {
    serde_json::from_slice(bytes).map_err(|source| LogError::Corrupt { seq, source })
}

struct Writer {
    db: sled::Db,
    alerts: sled::Tree,
    keys: sled::Tree,
    raw: sled::Tree,
    next_seq: u64,
    appended: Arc<Notify>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let results: Vec<_> = batch.iter().map(|r| self.write(r)).collect();
            let flushed = self.db.flush();
            let stored_any = results
                .iter()
                .any(|r| r.as_ref().is_ok_and(|v| v.iter().any(|a| !a.duplicate)));
            for (req, result) in batch.drain(..).zip(results) {
                let result = match &flushed {
                    Ok(_) => result,
                    Err(e) => Err(LogError::Sled(e.clone())),
                };
                // The sender may have gone (client hung up); the alert is
                // stored all the same.
                let _ = req.reply.send(result);
            }
            if flushed.is_ok() && stored_any {
                self.appended.notify_one();
            }
        }
        // Every handle is gone: make whatever is left durable.
        let _ = self.db.flush();
    }

    fn write(&mut self, req: &Request) -> Result<Vec<Appended>, LogError> {
        let raw_ref = content_address(&req.raw);
        if !self.raw.contains_key(raw_ref.as_bytes())? {
            self.raw.insert(raw_ref.as_bytes(), req.raw.as_slice())?;
        }
        let now = Utc::now();
        let mut out = Vec::with_capacity(req.alerts.len());
        for alert in &req.alerts {
            if let Some(seq) = self.keys.get(alert.idempotency_key.as_bytes())? {
                out.push(Appended {
                    seq: seq_of(&seq),
                    fingerprint: alert.fingerprint.clone(),
                    duplicate: true,
                });
                continue;
            }
            let seq = self.next_seq;
            let mut alert = alert.clone();
            alert.raw_ref.clone_from(&raw_ref);
            let fingerprint = alert.fingerprint.clone();
            let stored = StoredAlert {
                seq,
                received_at: now,
                alert,
            };
            let bytes = serde_json::to_vec(&stored).expect("alerts always serialise");
            self.alerts.insert(seq.to_be_bytes(), bytes)?;
            self.keys
                .insert(stored.alert.idempotency_key.as_bytes(), &seq.to_be_bytes())?;
            self.next_seq += 1;
            out.push(Appended {
                seq,
                fingerprint,
                duplicate: false,
            });
        }
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
    async fn appends_dedups_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let log = AlertLog::open(&db).unwrap();
            let r = log
                .append(b"payload".to_vec(), vec![alert("a"), alert("b"), alert("a")])
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
                    log.append(format!("p{i}").into_bytes(), vec![alert(&format!("k{i}")), alert("a")])
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
        let log = AlertLog::open(&db).unwrap();
        assert_eq!(log.len(), 52);
        let first = log.read_after(0, 1).unwrap();
        assert_eq!(first[0].seq, 1);
        let raw = log.raw_payload(&first[0].alert.raw_ref).unwrap().unwrap();
        assert_eq!(raw, b"payload");
        let r = log.append(b"again".to_vec(), vec![alert("b"), alert("c")]).await.unwrap();
        assert!(r[0].duplicate);
        assert_eq!(r[1].seq, 53, "sequence numbers continue after a reopen");
        assert_eq!(log.recent(1, None).unwrap()[0].seq, 53);
        assert_eq!(log.recent(10, Some("fp-b")).unwrap().len(), 1);
        log.set_cursor(7).unwrap();
        assert_eq!(log.cursor().unwrap(), 7);
    }
}
