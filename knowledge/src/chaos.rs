//! Chaos runs in the system of record: the fault ledger (written and
//! flushed before every fault is applied, so a crash cannot forget one)
//! and each run's verdict. Documents are JSON: the chaos crate owns their
//! shape, this store only keeps them.

use serde_json::Value;

use crate::store::StoreError;
use crate::writer::Writer;

/// The ledger and the verdicts. Writes go through the knowledge [`Writer`]
/// and are answered once fdatasync'd.
#[derive(Clone)]
pub struct ChaosStore {
    ledger: sled::Tree,
    runs: sled::Tree,
    writer: Writer,
}

impl ChaosStore {
    /// Opens the trees.
    pub fn open(db: &sled::Db, writer: Writer) -> Result<ChaosStore, StoreError> {
        Ok(ChaosStore {
            ledger: db.open_tree("knowledge/chaos_ledger")?,
            runs: db.open_tree("knowledge/chaos_runs")?,
            writer,
        })
    }

    /// Records a fault, durably, before it is applied.
    pub async fn ledger_put(&self, id: &str, entry: &Value) -> Result<(), StoreError> {
        let (tree, key) = (self.ledger.clone(), id.to_string());
        let bytes = serde_json::to_vec(entry).expect("JSON serialises");
        self.writer
            .run(true, move || {
                tree.insert(key.as_bytes(), bytes)?;
                Ok(())
            })
            .await
    }

    /// Forgets a cleaned-up fault, durably.
    pub async fn ledger_remove(&self, id: &str) -> Result<(), StoreError> {
        let (tree, key) = (self.ledger.clone(), id.to_string());
        self.writer
            .run(true, move || {
                tree.remove(key.as_bytes())?;
                Ok(())
            })
            .await
    }

    /// Every fault not cleaned up yet.
    pub fn ledger_entries(&self) -> Result<Vec<Value>, StoreError> {
        self.ledger
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    source,
                })
            })
            .collect()
    }

    /// Keeps (or replaces) a run's verdict, durably. Run ids sort by time.
    pub async fn put_run(&self, run: &str, verdict: &Value) -> Result<(), StoreError> {
        let (tree, key) = (self.runs.clone(), run.to_string());
        let bytes = serde_json::to_vec(verdict).expect("JSON serialises");
        self.writer
            .run(true, move || {
                tree.insert(key.as_bytes(), bytes)?;
                Ok(())
            })
            .await
    }

    /// A run's verdict.
    pub fn run(&self, run: &str) -> Result<Option<Value>, StoreError> {
        match self.runs.get(run.as_bytes())? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    key: run.to_string(),
                    source,
                }),
        }
    }

    /// The newest `limit` verdicts, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<Value>, StoreError> {
        self.runs
            .iter()
            .rev()
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    source,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_ledger_and_runs_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let s = ChaosStore::open(&db, Writer::inline(db.clone())).unwrap();
            s.ledger_put("r1/kill", &serde_json::json!({"id": "r1/kill"}))
                .await
                .unwrap();
            s.ledger_put("r1/delay", &serde_json::json!({"id": "r1/delay"}))
                .await
                .unwrap();
            s.ledger_remove("r1/kill").await.unwrap();
            s.put_run("20261127T100000-a", &serde_json::json!({"run": "a"}))
                .await
                .unwrap();
            s.put_run("20261127T110000-b", &serde_json::json!({"run": "b"}))
                .await
                .unwrap();
        }
        let db = crate::reopen(dir.path());
        let s = ChaosStore::open(&db, Writer::inline(db.clone())).unwrap();
        assert_eq!(
            s.ledger_entries().unwrap(),
            [serde_json::json!({"id": "r1/delay"})]
        );
        let runs = s.runs(10).unwrap();
        assert_eq!(runs[0]["run"], "b", "newest first");
        assert_eq!(s.run("20261127T100000-a").unwrap().unwrap()["run"], "a");
    }
}
