//! The audit log: append-only, one entry per action quench takes or is
//! asked to take (steps, approvals, pauses), with who and why.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::writer::Writer;

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1 (set when appended).
    #[serde(default)]
    pub seq: u64,
    /// When, UTC.
    pub at: DateTime<Utc>,
    /// Who: `quench` for automation, else the token's name.
    pub actor: String,
    /// What: `step.run`, `step.dry_run`, `step.blocked`,
    /// `approval.approved`, `control.pause`, ...
    pub action: crate::kinds::AuditAction,
    /// The incident, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    /// The step, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The object acted on (`namespace/name`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The outcome or the reason, in a sentence.
    pub detail: String,
    /// SHA-256 (hex) of the previous entry as stored: the entries form a
    /// chain, and an entry changed or removed after the fact breaks it
    /// ([`AuditLog::verify`]). None on the first entry, and on entries
    /// written before the chain existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// The lease epoch (`leaseTransitions`) of the replica that acted,
    /// with high availability on: which leader did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_epoch: Option<u64>,
}

/// What [`AuditLog::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCheck {
    /// Entries read.
    pub entries: u64,
    /// The first entry that does not follow from the one before (changed,
    /// removed, reordered), and why; None when the chain holds.
    pub broken: Option<(u64, String)>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The audit tree. Appends go through the knowledge [`Writer`] and are
/// answered only once fdatasync'd.
#[derive(Clone)]
pub struct AuditLog {
    tree: sled::Tree,
    /// Entries a standby set aside (see [`AuditLog::replicate`]).
    aside: sled::Tree,
    writer: Writer,
    next: Arc<AtomicU64>,
    /// The hash of the last entry as stored: the next entry's `prev`.
    last: Arc<std::sync::Mutex<Option<String>>>,
}

impl AuditLog {
    /// Opens the audit tree in `db`.
    pub fn open(db: &sled::Db, writer: Writer) -> Result<AuditLog, StoreError> {
        let tree = db.open_tree("knowledge/audit")?;
        let (last, hash) = match tree.last()? {
            Some((k, v)) => (
                u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
                Some(sha256_hex(&v)),
            ),
            None => (0, None),
        };
        Ok(AuditLog {
            aside: db.open_tree("knowledge/audit-set-aside")?,
            tree,
            writer,
            next: Arc::new(AtomicU64::new(last + 1)),
            last: Arc::new(std::sync::Mutex::new(hash)),
        })
    }

    /// Appends an entry durably: answered only after it is flushed and
    /// fdatasync'd, so an action that proceeds is on record after a crash.
    /// An error means it is not: the caller must not proceed (fail closed).
    /// Returns the entry's sequence number. Entries are never changed or
    /// removed.
    pub async fn append(&self, entry: AuditEntry) -> Result<u64, StoreError> {
        let me = self.clone();
        self.writer.run(true, move || me.append_now(entry)).await
    }

    /// Appends an entry without waiting for an fdatasync: for what is
    /// already done and gates nothing (an evidence step's outcome). It is
    /// on disk with the next durable write or sled's own flush.
    pub async fn note(&self, entry: AuditEntry) -> Result<u64, StoreError> {
        let me = self.clone();
        self.writer.run(false, move || me.append_now(entry)).await
    }

    /// [`AuditLog::append`] for a plain thread.
    pub fn append_blocking(&self, entry: AuditEntry) -> Result<u64, StoreError> {
        let me = self.clone();
        self.writer.run_blocking(true, move || me.append_now(entry))
    }

    fn append_now(&self, mut entry: AuditEntry) -> Result<u64, StoreError> {
        // Only the writer thread gets here, so the numbers are gap-free.
        let seq = self.next.load(Ordering::Acquire);
        entry.seq = seq;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        entry.prev = last.clone();
        let bytes = serde_json::to_vec(&entry).expect("audit entries serialise");
        let hash = sha256_hex(&bytes);
        self.tree.insert(seq.to_be_bytes(), bytes)?;
        *last = Some(hash);
        self.next.store(seq + 1, Ordering::Release);
        Ok(seq)
    }

    /// The last entry's number (0: none).
    pub fn last_seq(&self) -> u64 {
        self.next.load(Ordering::Acquire).saturating_sub(1)
    }

    /// Entries after `after`, as stored (for a standby), at most `limit`.
    pub fn stored_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.range((after + 1).to_be_bytes()..).take(limit) {
            let (k, v) = item?;
            out.push((
                u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
                v.to_vec(),
            ));
        }
        Ok(out)
    }

    /// The stored bytes of entry `seq`.
    pub fn stored(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(seq.to_be_bytes())?.map(|v| v.to_vec()))
    }

    /// Writes a leader's entries as they are stored there (a standby), so
    /// both chains are the same bytes. Entries this log holds from `from`
    /// on that the leader does not (a replica that led before and wrote
    /// them after the standby's last copy) are set aside, not deleted:
    /// moved to the `knowledge/audit-set-aside` tree with their numbers,
    /// and the count returned. Returns once durable.
    pub async fn replicate(
        &self,
        from: u64,
        entries: Vec<(u64, Vec<u8>)>,
    ) -> Result<usize, StoreError> {
        let me = self.clone();
        self.writer
            .run(true, move || me.replicate_now(from, entries))
            .await
    }

    fn replicate_now(&self, from: u64, entries: Vec<(u64, Vec<u8>)>) -> Result<usize, StoreError> {
        let mut set_aside = 0;
        if self.next.load(Ordering::Acquire) > from {
            let aside = &self.aside;
            for item in self.tree.range(from.to_be_bytes()..) {
                let (k, v) = item?;
                aside.insert(k.clone(), v)?;
                self.tree.remove(k)?;
                set_aside += 1;
            }
            let (last, hash) = match self.tree.last()? {
                Some((k, v)) => (
                    u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
                    Some(sha256_hex(&v)),
                ),
                None => (0, None),
            };
            self.next.store(last + 1, Ordering::Release);
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = hash;
        }
        for (seq, bytes) in entries {
            if seq != self.next.load(Ordering::Acquire) {
                return Err(StoreError::Corrupt {
                    key: format!("audit-{seq}"),
                    source: <serde_json::Error as serde::de::Error>::custom(format!(
                        "the leader's entry {seq} does not follow this log's {}",
                        self.last_seq()
                    )),
                });
            }
            let hash = sha256_hex(&bytes);
            self.tree.insert(seq.to_be_bytes(), bytes)?;
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(hash);
            self.next.store(seq + 1, Ordering::Release);
        }
        Ok(set_aside)
    }

    /// Walks the whole log in order and checks the chain: every entry's
    /// number follows the one before, and its `prev` is the hash of the
    /// one before as stored. Entries from before the chain existed (no
    /// `prev` at the start of the log) are counted, not checked.
    pub fn verify(&self) -> Result<ChainCheck, StoreError> {
        let mut entries = 0;
        let mut prev: Option<(u64, String)> = None;
        let mut chained = false;
        for item in self.tree.iter() {
            let (k, v) = item?;
            let key = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            entries += 1;
            let broken = |why: String| {
                Ok(ChainCheck {
                    entries,
                    broken: Some((key, why)),
                })
            };
            let e: AuditEntry = match serde_json::from_slice(&v) {
                Ok(e) => e,
                Err(err) => return broken(format!("does not decode: {err}")),
            };
            if e.seq != key {
                return broken(format!("says it is entry {} but is stored as {key}", e.seq));
            }
            if let Some((n, _)) = &prev
                && key != n + 1
            {
                return broken(format!("follows entry {n}: entries between are missing"));
            }
            match (&e.prev, &prev) {
                (Some(p), Some((_, h))) if p != h => {
                    return broken(
                        "does not follow from the entry before it (that one was changed, or this one was)"
                            .into(),
                    );
                }
                (Some(_), None) => {
                    return broken("names an entry before it, but it is the first".into());
                }
                (None, Some(_)) if chained => {
                    return broken("has no link to the entry before it".into());
                }
                (Some(_), Some(_)) => chained = true,
                _ => {}
            }
            prev = Some((key, sha256_hex(&v)));
        }
        Ok(ChainCheck {
            entries,
            broken: None,
        })
    }

    /// The newest entries first, optionally of one incident.
    pub fn list(
        &self,
        limit: usize,
        incident: Option<&str>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter().rev() {
            let (k, v) = item?;
            let e: AuditEntry =
                serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                    key: format!(
                        "audit-{}",
                        u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]))
                    ),
                    source,
                })?;
            if incident.is_none_or(|i| e.incident.as_deref() == Some(i)) {
                out.push(e);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::AuditAction;

    #[test]
    fn appends_and_lists_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = AuditLog::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        for (i, inc) in ["inc-1", "inc-2", "inc-1"].iter().enumerate() {
            let seq = log
                .append_blocking(AuditEntry {
                    seq: 0,
                    at: Utc::now(),
                    actor: "quench".into(),
                    action: AuditAction::StepRun,
                    incident: Some(inc.to_string()),
                    step: None,
                    target: None,
                    detail: format!("n{i}"),
                    prev: None,
                    lease_epoch: None,
                })
                .unwrap();
            assert!(seq > i as u64);
        }
        let all = log.list(10, None).unwrap();
        assert_eq!(
            all.iter().map(|e| e.detail.as_str()).collect::<Vec<_>>(),
            ["n2", "n1", "n0"]
        );
        assert!(all[0].seq > all[1].seq && all[1].seq > all[2].seq);
        assert_eq!(log.list(10, Some("inc-1")).unwrap().len(), 2);
        assert_eq!(log.list(1, None).unwrap()[0].detail, "n2");
    }

    /// The entries form a hash chain: one changed or removed after the
    /// fact is found, with its number.
    #[test]
    fn a_changed_or_removed_entry_breaks_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = AuditLog::open(&db, Writer::inline(db.clone())).unwrap();
        for i in 0..5 {
            log.append_blocking(AuditEntry {
                seq: 0,
                at: Utc::now(),
                actor: "quench".into(),
                action: AuditAction::StepRun,
                incident: Some(format!("inc-{i}")),
                step: None,
                target: None,
                detail: format!("run {i}"),
                prev: None,
                lease_epoch: None,
            })
            .unwrap();
        }
        assert_eq!(
            log.verify().unwrap(),
            ChainCheck {
                entries: 5,
                broken: None
            }
        );
        // A reopened log goes on with the chain.
        let log = AuditLog::open(&db, Writer::inline(db.clone())).unwrap();
        let tree = db.open_tree("knowledge/audit").unwrap();
        // Someone edits entry 3's detail in place.
        let raw = tree.get(3u64.to_be_bytes()).unwrap().unwrap();
        let mut e: AuditEntry = serde_json::from_slice(&raw).unwrap();
        e.detail = "nothing happened".into();
        tree.insert(3u64.to_be_bytes(), serde_json::to_vec(&e).unwrap())
            .unwrap();
        let c = log.verify().unwrap();
        assert_eq!(c.broken.as_ref().map(|b| b.0), Some(4), "{c:?}");
        // Put it back, remove entry 2 instead.
        tree.insert(3u64.to_be_bytes(), raw).unwrap();
        assert!(log.verify().unwrap().broken.is_none());
        tree.remove(2u64.to_be_bytes()).unwrap();
        let c = log.verify().unwrap();
        assert_eq!(c.broken.as_ref().map(|b| b.0), Some(3), "{c:?}");
        assert!(c.broken.unwrap().1.contains("missing"));
    }

    /// A standby's copy: the leader's stored bytes, the same chain; its own
    /// entries past where the leader's differ are set aside, not lost.
    #[tokio::test]
    async fn a_copy_is_the_same_chain_and_a_divergent_tail_is_set_aside() {
        let entry = |d: &str| AuditEntry {
            seq: 0,
            at: Utc::now(),
            actor: "quench".into(),
            action: AuditAction::StepRun,
            incident: None,
            step: None,
            target: None,
            detail: d.into(),
            prev: None,
            lease_epoch: Some(1),
        };
        let open = |dir: &std::path::Path| {
            let db = sled::open(dir).unwrap();
            AuditLog::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap()
        };
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (leader, standby) = (open(d1.path()), open(d2.path()));
        for d in ["a", "b", "c"] {
            leader.append(entry(d)).await.unwrap();
        }
        standby
            .replicate(1, leader.stored_after(0, 10).unwrap())
            .await
            .unwrap();
        assert_eq!(
            standby.stored_after(0, 10).unwrap(),
            leader.stored_after(0, 10).unwrap()
        );
        assert_eq!(standby.verify().unwrap().broken, None);
        // The standby writes one of its own (it led for a moment); the
        // leader writes two more.
        standby.append(entry("mine")).await.unwrap();
        leader.append(entry("d")).await.unwrap();
        leader.append(entry("e")).await.unwrap();
        let aside = standby
            .replicate(4, leader.stored_after(3, 10).unwrap())
            .await
            .unwrap();
        assert_eq!(aside, 1);
        assert_eq!(
            standby.stored_after(0, 10).unwrap(),
            leader.stored_after(0, 10).unwrap()
        );
        assert_eq!(
            standby.verify().unwrap(),
            ChainCheck {
                entries: 5,
                broken: None
            }
        );
        let kept: Vec<_> = standby
            .aside
            .iter()
            .map(|x| x.unwrap().1.to_vec())
            .collect();
        assert!(String::from_utf8_lossy(&kept[0]).contains("mine"));
        // Out of order is refused.
        assert!(
            standby
                .replicate(9, vec![(9, b"{}".to_vec())])
                .await
                .is_err()
        );
    }
}
