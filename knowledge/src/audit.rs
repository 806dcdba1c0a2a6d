//! The audit log: append-only, one entry per action quench takes or is
//! asked to take (steps, approvals, pauses), with who and why.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

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
    /// What: `step.run`, `step.dry_run`, `step.blocked`, `approval.approve`,
    /// `control.pause`, ...
    pub action: String,
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

/// The audit tree.
#[derive(Clone)]
pub struct AuditLog {
    db: sled::Db,
    tree: sled::Tree,
}

impl AuditLog {
    /// Opens the audit tree in `db`.
    pub fn open(db: &sled::Db) -> Result<AuditLog, StoreError> {
        Ok(AuditLog {
            db: db.clone(),
            tree: db.open_tree("knowledge/audit")?,
        })
    }

    /// Appends an entry durably (flushed before returning); returns its
    /// sequence number. Entries are never changed or removed.
    pub fn append(&self, mut entry: AuditEntry) -> Result<u64, StoreError> {
        // Ids are unique and increasing across threads, not gap-free.
        let seq = self.db.generate_id()? + 1;
        entry.seq = seq;
        let bytes = serde_json::to_vec(&entry).expect("audit entries serialise");
        self.tree.insert(seq.to_be_bytes(), bytes)?;
        // An action that happened must stay on record after a crash.
        self.tree.flush()?;
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

    #[test]
    fn appends_and_lists_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = AuditLog::open(&db).unwrap();
        for (i, inc) in ["inc-1", "inc-2", "inc-1"].iter().enumerate() {
            let seq = log
                .append(AuditEntry {
                    seq: 0,
                    at: Utc::now(),
                    actor: "quench".into(),
                    action: "step.run".into(),
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
