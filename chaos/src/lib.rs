//! Chaos experiments: the experiment model (steady-state hypothesis, method,
//! rollbacks, abort conditions, blast radius), the verdict, and the fault
//! steps.
//!
//! Nothing lives here yet. The crate exists so the workspace already has the
//! shape of `docs/ARCHITECTURE.md`: the engine depends on chaos, chaos on the
//! runbook language, and the experiment format arrives with the chaos issue.
#![warn(missing_docs)]
