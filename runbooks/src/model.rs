//! The runbook file as written (`version: 1`), parsed straight from YAML
//! into typed structs that refuse unknown fields. Fields whose values are
//! checked after parsing keep their position (`Spanned`), so a problem is
//! reported at its line and column.
//!
//! Steps are `uses:` plus `with:`, never flattened (STYLE.md, practice 3):
//! a flattened step reports a typo in its params at the wrong line, or
//! accepts it silently.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A runbook file, exactly as parsed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunbookFile {
    /// The format version; only `1` exists.
    pub version: Spanned<u32>,
    /// A unique name (lowercase letters, digits, `-`, `_`), used in
    /// incidents, metrics and `quench explain`.
    pub name: Spanned<String>,
    /// What the runbook is for.
    #[serde(default)]
    pub description: String,
    /// Which alerts the runbook applies to.
    #[serde(rename = "match")]
    pub matching: MatchSpec,
    /// Labels whose values group alerts into one incident.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<Spanned<String>>,
    /// Higher is tried first when several runbooks could match.
    #[serde(default)]
    pub priority: i32,
    /// After this runbook matches, keep trying lower-priority runbooks (as
    /// Alertmanager's `continue`). Without it, the first match wins.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// The least time between two runs for the same group, such as `30m`.
    #[serde(default)]
    pub cooldown: Option<Spanned<String>>,
    /// The steps, in order.
    #[serde(default)]
    pub steps: Vec<StepFile>,
    /// Steps run when a step fails (escalation).
    #[serde(default)]
    pub on_failure: Vec<StepFile>,
    /// Run only while one of these named time intervals holds
    /// (`time-intervals.yaml`).
    #[serde(default)]
    pub active_time: Vec<Spanned<String>>,
    /// Do not run while one of these named time intervals holds.
    #[serde(default)]
    pub mute_time: Vec<Spanned<String>>,
    /// Do not run while another alert matching these fires with the same
    /// values of the `equal` labels (Alertmanager's inhibition).
    #[serde(default)]
    pub inhibit_when: Vec<InhibitRule>,
    /// Embedded tests, run by `quench test`: nothing is executed.
    #[serde(default)]
    pub tests: Vec<TestCase>,
}

/// One embedded test: an alert, whether this runbook must match it, and
/// what given steps' `with` must render to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Names the test in the report.
    pub name: Spanned<String>,
    /// An alert written inline.
    #[serde(default)]
    pub alert: Option<TestAlert>,
    /// Or a payload file as a sender delivers it, relative to the runbook.
    #[serde(default)]
    pub payload: Option<TestPayload>,
    /// Whether this runbook must run for the alert (default true).
    #[serde(default = "yes", rename = "match")]
    pub should_match: bool,
    /// Outputs of earlier steps, for templates that read `steps.<id>.output`.
    #[serde(default)]
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// Step id to the `with` it must render to.
    #[serde(default)]
    pub with: serde_json::Map<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}

/// An alert written inline in a test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestAlert {
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// `firing` (default) or `resolved`.
    #[serde(default)]
    pub status: Option<String>,
    /// The sender (default `alertmanager`).
    #[serde(default)]
    pub source: Option<String>,
}

/// A sender's payload file used as a test's alert.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestPayload {
    /// `alertmanager`, `pagerduty` or `datadog`.
    pub source: String,
    /// The JSON file, relative to the runbook file.
    pub file: String,
}

/// An inhibition: another firing alert that stops this runbook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRule {
    /// Matchers the inhibiting alert must satisfy.
    pub matchers: Vec<Spanned<String>>,
    /// Labels whose values must be equal in both alerts (missing counts as
    /// `""`).
    #[serde(default)]
    pub equal: Vec<Spanned<String>>,
}

/// Which alerts a runbook applies to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Label matchers in Alertmanager's string form (`severity=~"critical|page"`);
    /// all must hold. None matches every alert.
    #[serde(default)]
    pub matchers: Vec<Spanned<String>>,
    /// Only alerts from this sender: `alertmanager`, `pagerduty`, `datadog`,
    /// or `generic/NAME`.
    #[serde(default)]
    pub source: Option<Spanned<String>>,
    /// Which notifications: `firing` (the default), `resolved` or `any`.
    #[serde(default)]
    pub status: StatusFilter,
}

/// Which notifications a runbook reacts to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    /// Firing alerts only: the default, so nothing acts on a resolved alert
    /// unless its author asked for it.
    #[default]
    Firing,
    /// Resolved notifications only.
    Resolved,
    /// Both.
    Any,
}

/// One step as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepFile {
    /// Unique within the runbook; templates reach its output as
    /// `steps.<id>.output`.
    pub id: Spanned<String>,
    /// The step type, for example `pprof.capture`.
    pub uses: Spanned<String>,
    /// The step type's parameters, kept apart from the step's own fields.
    /// Strings may be templates (`{{alert.labels.pod}}`).
    #[serde(default)]
    pub with: Option<Spanned<serde_json::Map<String, serde_json::Value>>>,
    /// A condition on the alert and earlier steps' outputs, a template that
    /// renders to `true` or `false`; the step is skipped when it is false.
    #[serde(default)]
    pub when: Option<Spanned<String>>,
    /// How long the step may take, such as `2m`.
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    /// Retries with exponential backoff.
    #[serde(default)]
    pub retries: Option<Retries>,
    /// Go on with the next step when this one fails.
    #[serde(default)]
    pub continue_on_error: bool,
    /// Wait for a human before running.
    #[serde(default)]
    pub approval: Option<Approval>,
}

/// Retry policy of a step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Attempts after the first.
    pub attempts: u32,
    /// The first wait, doubled each time (with jitter), such as `2s`.
    #[serde(default)]
    pub backoff: Option<Spanned<String>>,
}

/// An approval gate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Whether a human must approve.
    #[serde(default)]
    pub required: bool,
    /// How long to wait, such as `15m`.
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    /// What happens when nobody answers in time.
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

/// What an unanswered approval does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// The step fails (the default).
    #[default]
    Fail,
    /// The step is skipped.
    Skip,
    /// The step runs.
    Proceed,
}

fn default_group_by() -> Vec<Spanned<String>> {
    vec![Spanned::new(
        "alertname".to_string(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )]
}
