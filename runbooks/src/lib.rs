//! The runbook language.
//!
//! Module map:
//! - [`model`]: the file format (`version: 1`), parsed straight from YAML
//!   into typed structs that refuse unknown fields and keep positions.
//! - [`validate`]: one file into the typed [`runbook::Runbook`]: every
//!   problem, with file:line:column and a code.
//! - [`runbook`]: the validated runbook: steps with their type, durations,
//!   retry policy and approval gate, `verify`, `match.source`.
//! - [`load`]: a whole directory, its time intervals, the set in order.
//! - [`select`]: which runbooks an alert runs, and why not the others.
//! - [`index`]: the same choice through an index over equality matchers,
//!   for large sets.
//! - [`matcher`]: label matchers with Alertmanager's exact semantics.
//! - [`diag`]: diagnostics and their stable codes.
//! - [`duration`]: `30s`, `5m`, `1h30m`.
//! - [`suppress`]: time intervals and inhibition.
//! - [`sync`]: following a git branch with libgit2.
//! - [`template`]: handlebars in strict mode, with validating helpers.
//! - [`testing`]: `quench test`, the tests embedded in runbooks.
#![warn(missing_docs)]

pub mod diag;
pub mod duration;
pub mod index;
pub mod load;
pub mod matcher;
pub mod model;
pub mod runbook;
pub mod select;
pub mod suppress;
pub mod sync;
pub mod template;
pub mod testing;
pub mod validate;

pub use diag::{Code, Diagnostic};
pub use load::{Decision, Explanation, Runbook, RunbookSet, Skip, load_dir, parse_runbook};
pub use matcher::{MatchOp, Matcher};
