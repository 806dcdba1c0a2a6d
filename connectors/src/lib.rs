//! Everything quench says to the outside world.
//!
//! Module map:
//! - [`alert`]: the normalised [`Alert`] every sender is turned into.
//! - [`inbound`]: one pure parser per webhook sender (bytes plus headers in,
//!   alerts out), each with its own authentication check. No I/O happens here,
//!   so the parsers can be fuzzed and property-tested in isolation.
//! - [`steps`]: the closed list of step types. Each type's params and `run`
//!   join it in its own file as the evidence and Kubernetes work lands.
//!
//! - [`pprof`]: the profile.proto decoder and the top table.
//! - [`k8s`]: the Kubernetes client trait the steps use, and name checks.
#![warn(missing_docs)]

pub mod alert;
pub mod argocd;
pub mod hosts;
pub mod inbound;
pub mod k8s;
pub mod pprof;
pub mod steps;

pub use alert::{Alert, AlertStatus, Source};
