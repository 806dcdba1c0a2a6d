//! Chaos runs in the system of record: the fault ledger (written and
//! flushed before every fault is applied, so a crash cannot forget one)
//! and each run's verdict. Documents are JSON: the chaos crate owns their
//! shape, this store only keeps them.

use serde_json::Value;

use crate::store::StoreError;

/// The ledger and the verdicts.
#[derive(Clone)]
pub struct ChaosStore {
    db: sled::Db,
    ledger: sled::Tree,
    runs: sled::Tree,
}

impl ChaosStore {
    /// Opens the trees.
    pub fn open(db: &sled::Db) -> Result<ChaosStore, StoreError> {
        Ok(ChaosStore {
            db: db.clone(),
            ledger: db.open_tree("knowledge/chaos_ledger")?,
            runs: db.open_tree("knowledge/chaos_runs")?,
        })
    }

    /// Records a fault, durably, before it is applied.
    pub fn ledger_put(&self, id: &str, entry: &Value) -> Result<(), StoreError> {
        self.ledger.insert(
            id.as_bytes(),
            serde_json::to_vec(entry).expect("JSON serialises"),
        )?;
        self.db.flush()?;
        Ok(())
    }

    /// Forgets a cleaned-up fault, durably.
    pub fn ledger_remove(&self, id: &str) -> Result<(), StoreError> {
        self.ledger.remove(id.as_bytes())?;
        self.db.flush()?;
        Ok(())
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

    /// Keeps (or replaces) a run's verdict. Run ids sort by time.
    pub fn put_run(&self, run: &str, verdict: &Value) -> Result<(), StoreError> {
        self.runs.insert(
            run.as_bytes(),
            serde_json::to_vec(verdict).expect("JSON serialises"),
        )?;
        self.db.flush()?;
        Ok(())
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

    #[test]
    fn the_ledger_and_runs_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let s = ChaosStore::open(&db).unwrap();
            s.ledger_put("r1/kill", &serde_json::json!({"id": "r1/kill"}))
                .unwrap();
            s.ledger_put("r1/delay", &serde_json::json!({"id": "r1/delay"}))
                .unwrap();
            s.ledger_remove("r1/kill").unwrap();
            s.put_run("20261127T100000-a", &serde_json::json!({"run": "a"}))
                .unwrap();
            s.put_run("20261127T110000-b", &serde_json::json!({"run": "b"}))
                .unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let s = ChaosStore::open(&db).unwrap();
        assert_eq!(
            s.ledger_entries().unwrap(),
            [serde_json::json!({"id": "r1/delay"})]
        );
        let runs = s.runs(10).unwrap();
        assert_eq!(runs[0]["run"], "b", "newest first");
        assert_eq!(s.run("20261127T100000-a").unwrap().unwrap()["run"], "a");
    }
}
