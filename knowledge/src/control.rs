//! The global kill switch. While paused, incidents still open and evidence
//! is still gathered, but no destructive step runs. The state survives a
//! restart: it is flushed to disk before the change is acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::writer::Writer;

/// The switch's state, with who set it and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseState {
    /// True while automation is paused.
    pub paused: bool,
    /// Who changed it last.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, in their words.
    #[serde(default)]
    pub reason: String,
}

/// The kill switch.
#[derive(Clone)]
pub struct Control {
    tree: sled::Tree,
    paused: Arc<AtomicBool>,
    writer: Writer,
}

const KEY: &str = "pause";

impl Control {
    /// Opens the switch, in whatever state it was left.
    pub fn open(db: &sled::Db, writer: Writer) -> Result<Control, StoreError> {
        let tree = db.open_tree("knowledge/control")?;
        let c = Control {
            tree,
            paused: Arc::new(AtomicBool::new(false)),
            writer,
        };
        let paused = c.state()?.is_some_and(|s| s.paused);
        c.paused.store(paused, Ordering::SeqCst);
        Ok(c)
    }

    /// Whether automation is paused (no destructive step may start).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// The last change, if there was one.
    pub fn state(&self) -> Result<Option<PauseState>, StoreError> {
        match self.tree.get(KEY)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    key: KEY.into(),
                    source,
                }),
        }
    }

    /// Pauses or resumes, durably: the switch changes only once the new
    /// state is fdatasync'd.
    pub async fn set(
        &self,
        paused: bool,
        by: &str,
        reason: &str,
    ) -> Result<PauseState, StoreError> {
        let (me, s) = (self.clone(), self.state_of(paused, by, reason));
        let out = self.writer.run(true, move || me.write(s)).await?;
        self.paused.store(paused, Ordering::SeqCst);
        Ok(out)
    }

    /// [`Control::set`] for a plain thread.
    pub fn set_blocking(
        &self,
        paused: bool,
        by: &str,
        reason: &str,
    ) -> Result<PauseState, StoreError> {
        let (me, s) = (self.clone(), self.state_of(paused, by, reason));
        let out = self.writer.run_blocking(true, move || me.write(s))?;
        self.paused.store(paused, Ordering::SeqCst);
        Ok(out)
    }

    fn state_of(&self, paused: bool, by: &str, reason: &str) -> PauseState {
        PauseState {
            paused,
            by: by.to_string(),
            at: Utc::now(),
            reason: reason.to_string(),
        }
    }

    fn write(&self, s: PauseState) -> Result<PauseState, StoreError> {
        self.tree
            .insert(KEY, serde_json::to_vec(&s).expect("pause state serialises"))?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let c = Control::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
            assert!(!c.is_paused());
            c.set_blocking(true, "alice", "bad deploy").unwrap();
            assert!(c.is_paused());
        }
        let db = crate::reopen(dir.path());
        let c = Control::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        assert!(c.is_paused());
        assert_eq!(c.state().unwrap().unwrap().by, "alice");
        c.set_blocking(false, "bob", "").unwrap();
        assert!(!c.is_paused());
    }
}
