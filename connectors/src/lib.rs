//! Everything quench says to the outside world.
//!
//! Module map:
//! - [`alert`]: the normalised [`Alert`] every sender is turned into.
//! - [`inbound`]: one pure parser per webhook sender (bytes plus headers in,
//!   alerts out), each with its own authentication check. No I/O happens here,
//!   so the parsers can be fuzzed and property-tested in isolation.
//! - [`steps`]: the `Step` trait, the registry of step types (the closed
//!   `StepType` enum and everything derived from it) and one file per step
//!   type.
//! - [`pprof`]: the profile.proto decoder, the top table, flame graphs and
//!   diffs.
//! - [`k8s`]: the Kubernetes client trait the steps use, its kube-rs
//!   implementation, its error, name checks and the node-local perf Job.
//! - [`argocd`]: the Argo CD API client of the `argocd.*` steps.
//! - [`hosts`]: `executor.allowed_hosts`, the hosts steps may call.
#![warn(missing_docs)]

pub mod alert;
pub mod argocd;
pub mod hosts;
pub mod inbound;
pub mod k8s;
pub mod pprof;
pub mod steps;

pub use alert::{Alert, AlertStatus, Source};
