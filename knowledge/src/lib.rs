//! The system of record.
//!
//! Module map:
//! - [`record`]: the incident record and its parts. This crate owns its types
//!   and depends on no other quench crate; the engine converts into them.
//! - [`store`]: incident records in sled, opened or attached atomically.
//!
//! Search, similar-incident suggestions, KPIs and postmortems arrive with the
//! knowledge-store issue.
#![warn(missing_docs)]

pub mod record;
pub mod store;

pub use record::{
    AlertRecord, AlertState, IncidentRecord, IncidentStatus, MatchDecision, RunbookRef,
    TimelineEvent,
};
pub use store::{Attach, IncidentFilter, IncidentStore, Opening, StoreError};
