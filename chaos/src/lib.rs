//! Chaos experiments: the experiment model (steady-state hypothesis, method,
//! rollbacks, abort conditions, blast radius, schedule), its validation
//! with file:line:column errors, the fault steps, and the runner with its
//! guarantees (the ledger before every fault, rollbacks that always run,
//! reconcile after a crash).
//!
//! Module map:
//! - [`model`]: the file as written (`*.chaos.yaml`, `version: 1`).
//! - [`load`]: validation into an [`load::Experiment`]; `quench lint` uses it.
//! - [`faults`]: `chaos.pod_kill` (native) and the Chaos Mesh faults.
//! - [`run`]: probes, the method, rollbacks, the verdict, reconcile.
#![warn(missing_docs)]

pub mod faults;
pub mod load;
pub mod model;
pub mod run;
pub mod schedule;

pub use load::{Experiment, load_experiments, parse_experiment};
pub use run::{Env, Ledger, LedgerEntry, MemoryLedger, Outcome, RunOptions, Verdict};
