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
}

/// The audit tree. Appends go through the knowledge [`Writer`] and are
/// answered only once fdatasync'd.
#[derive(Clone)]
pub struct AuditLog {
    tree: sled::Tree,
    writer: Writer,
    next: Arc<AtomicU64>,
}

impl AuditLog {
    /// Opens the audit tree in `db`.
    pub fn open(db: &sled::Db, writer: Writer) -> Result<AuditLog, StoreError> {
        let tree = db.open_tree("knowledge/audit")?;
        let last = match tree.last()? {
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        };
        Ok(AuditLog {
            tree,
            writer,
            next: Arc::new(AtomicU64::new(last + 1)),
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
        let bytes = serde_json::to_vec(&entry).expect("audit entries serialise");
        self.tree.insert(seq.to_be_bytes(), bytes)?;
        self.next.store(seq + 1, Ordering::Release);
        Ok(seq)
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
}
