//! Everything quench says to the outside world.
//!
//! Module map:
//! - [`alert`]: the normalised [`Alert`] every sender is turned into.
//! - [`inbound`]: one pure parser per webhook sender (bytes plus headers in,
//!   alerts out), each with its own authentication check. No I/O happens here,
//!   so the parsers can be fuzzed and property-tested in isolation.
//!
//! Step types (`steps/`) and the profile analysis (`pprof/`) join this crate
//! in later work; see `docs/ARCHITECTURE.md`.
#![warn(missing_docs)]

pub mod alert;
pub mod inbound;

pub use alert::{Alert, AlertStatus, Source};
