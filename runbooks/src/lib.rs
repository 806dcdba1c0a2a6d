//! The runbook language.
//!
//! Module map:
//! - [`model`]: the file format (`version: 1`), parsed straight from YAML
//!   into typed structs that refuse unknown fields.
//! - [`matcher`]: label matchers in Alertmanager's string form.
//! - [`load`]: reading a directory of runbooks into a [`RunbookSet`] that
//!   picks the runbook for an alert.
//!
//! This is the first cut the intake path needs: equality matchers and a
//! `group_by`. The full language (every matcher operator, templates, step
//! validation, lint, tests and git sync) is the runbook-language issue.
#![warn(missing_docs)]

pub mod load;
pub mod matcher;
pub mod model;

pub use load::{LoadError, Runbook, RunbookSet, load_dir};
pub use matcher::{MatchOp, Matcher};
