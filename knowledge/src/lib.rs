//! The system of record.
//!
//! Module map:
//! - [`record`]: the incident record and its parts. This crate owns its types
//!   and depends on no other quench crate; the engine converts into them.
//! - [`store`]: incident records in sled, opened or attached atomically,
//!   and their change feed.
//! - [`writer`]: the one thread that writes the knowledge database.
//! - [`audit`]: the append-only audit log.
//! - [`artifacts`]: evidence bytes, content-addressed.
//! - [`control`]: the kill switch.
//!
//! Search, similar-incident suggestions, KPIs and postmortems arrive with the
//! knowledge-store issue.
#![warn(missing_docs)]

pub mod artifacts;
pub mod audit;
pub mod chaos;
pub mod clock;
pub mod control;
pub mod kinds;
pub mod kpi;
pub mod record;
pub mod search;
pub mod store;
pub mod writer;

pub use artifacts::{ArtifactError, ArtifactMeta, ArtifactStore, Baseline};
pub use audit::{AuditEntry, AuditLog, ChainCheck};
pub use chaos::ChaosStore;
pub use clock::{Clock, ManualClock, SystemClock};
pub use control::{Control, PauseState};
pub use kinds::{AuditAction, EventKind};
pub use record::{
    Acknowledgement, AlertRecord, AlertState, AlignedEntry, ChaosLink, CommitRef, IncidentRecord,
    IncidentStatus, MatchDecision, Notes, Outcome, RunOutcome, RunResult, RunbookRef, StepRecord,
    StepState, TimelineEvent,
};
pub use store::{
    Attach, Change, Changes, Imported, IncidentFilter, IncidentStore, Opening, StoreError,
};
pub use writer::{Syncer, Writer};

/// Opens the sled database in `path` again, waiting (up to 10 s) until the
/// previous handles have let go: sled's own flusher thread and the writer
/// thread release it a moment after the last handle is dropped.
#[cfg(test)]
pub(crate) fn reopen(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the database is still held: {e}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}
