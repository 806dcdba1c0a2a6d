//! A validated runbook, in types. Validation (`load.rs`) builds it once:
//! step types resolved, durations, retries and approval gates parsed. The
//! executor reads only this; nothing is parsed again at run time, and
//! nothing falls back to a default because a value did not parse.

use std::time::Duration;

use quench_connectors::Source;
use quench_connectors::steps::StepType;
use serde_json::{Map, Value};

use crate::matcher::Matcher;
use crate::model::{OnTimeout, RunbookFile};

/// How long a verification waits between checks unless `every` says.
pub const DEFAULT_VERIFY_EVERY: Duration = Duration::from_secs(15);
/// How long a verification keeps checking unless `timeout` says.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(300);
/// The first wait between retries unless `retries.backoff` says.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

/// A validated runbook.
#[derive(Debug, Clone)]
pub struct Runbook {
    /// The file as written (its name, description, matching and tests).
    pub file: RunbookFile,
    /// Its path, relative to the runbook directory.
    pub path: String,
    /// The parsed matchers.
    pub matchers: Vec<Matcher>,
    /// The only sender it applies to, if `match.source` names one.
    pub source: Option<Source>,
    /// The parsed cooldown.
    pub cooldown: Option<Duration>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The steps run when a step fails.
    pub on_failure: Vec<Step>,
    /// The check polled after the steps.
    pub verify: Option<Verify>,
    /// Parsed `inhibit_when`: the inhibiting alert's matchers and the
    /// labels that must be equal.
    pub inhibit: Vec<(Vec<Matcher>, Vec<String>)>,
}

impl Runbook {
    /// The runbook's name.
    pub fn name(&self) -> &str {
        &self.file.name.value
    }

    /// Its name and path, as templates see them.
    pub fn info(&self) -> crate::template::RunbookInfo<'_> {
        crate::template::RunbookInfo {
            name: self.name(),
            path: &self.path,
        }
    }

    /// The step types of `steps`, in order.
    pub fn step_types(&self) -> Vec<StepType> {
        self.steps.iter().map(|s| s.kind).collect()
    }
}

/// One step, validated.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique within the runbook.
    pub id: String,
    /// Its type.
    pub kind: StepType,
    /// Its parameters as written (strings may be templates, rendered when
    /// the step runs).
    pub with: Map<String, Value>,
    /// A template that must render to `true` for the step to run.
    pub when: Option<String>,
    /// How long it may take; the executor's default when `None`.
    pub timeout: Option<Duration>,
    /// Retries after the first attempt, with exponential backoff.
    pub retry: Retry,
    /// Go on with the next step when this one fails.
    pub continue_on_error: bool,
    /// A human must approve it first.
    pub approval: Option<Gate>,
}

/// A step's retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts after the first.
    pub attempts: u32,
    /// The first wait, doubled each time (with jitter).
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 0,
            backoff: DEFAULT_BACKOFF,
        }
    }
}

/// An approval gate (only for `approval: {required: true}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// How long to wait; the executor's default when `None`.
    pub timeout: Option<Duration>,
    /// What happens when nobody answers in time.
    pub on_timeout: OnTimeout,
}

/// The verification, validated.
#[derive(Debug, Clone)]
pub struct Verify {
    /// The check's step type (never a destructive one).
    pub kind: StepType,
    /// Its parameters as written.
    pub with: Map<String, Value>,
    /// How often to check.
    pub every: Duration,
    /// How long to keep checking.
    pub timeout: Duration,
}
