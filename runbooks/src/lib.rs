//! The runbook language.
//!
//! Module map:
//! - [`model`]: the file format (`version: 1`), parsed straight from YAML
//!   into typed structs that refuse unknown fields and keep positions.
//! - [`matcher`]: label matchers with Alertmanager's exact semantics.
//! - [`load`]: validation (every problem, with file:line:column and a code),
//!   the runbook set, selection and the "why" of every decision.
//! - [`diag`]: diagnostics and their stable codes.
//! - [`duration`]: `30s`, `5m`, `1h30m`.
//! - [`suppress`]: time intervals and inhibition.
//! - [`sync`]: following a git branch with libgit2.
//! - [`template`]: handlebars in strict mode, with validating helpers.
//! - [`testing`]: `quench test`, the tests embedded in runbooks.
//!
//! Still to come (the rest of the runbook-language issue):
//! suppression (`inhibit_when`, time intervals) and the JSON schema.
#![warn(missing_docs)]

pub mod diag;
pub mod duration;
pub mod index;
pub mod load;
pub mod matcher;
pub mod model;
pub mod runbook;
pub mod suppress;
pub mod sync;
pub mod template;
pub mod testing;

pub use diag::{Code, Diagnostic};
pub use load::{Decision, Explanation, Runbook, RunbookSet, Skip, load_dir, parse_runbook};
pub use matcher::{MatchOp, Matcher};
