//! The runbook file as written (`version: 1`), parsed straight from YAML
//! into typed structs that refuse unknown fields. Fields whose values are
//! checked after parsing keep their position (`Spanned`), so a problem is
//! reported at its line and column.
//!
//! Steps are `uses:` plus `with:`, never flattened (STYLE.md, practice 3):
//! a flattened step reports a typo in its params at the wrong line, or
//! accepts it silently.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A runbook file, exactly as parsed.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunbookFile {
    /// The format version; only `1` exists.
    #[schemars(with = "u32")]
    pub version: Spanned<u32>,
    /// A unique name (lowercase letters, digits, `-`, `_`), used in
    /// incidents, metrics and `quench explain`.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// What the runbook is for.
    #[serde(default)]
    pub description: String,
    /// Which alerts the runbook applies to.
    #[serde(rename = "match")]
    pub matching: MatchSpec,
    /// Labels whose values group alerts into one incident.
    #[serde(default = "default_group_by")]
    #[schemars(with = "Vec<String>")]
    pub group_by: Vec<Spanned<String>>,
    /// Higher is tried first when several runbooks could match.
    #[serde(default)]
    pub priority: i32,
    /// After this runbook matches, keep trying lower-priority runbooks (as
    /// Alertmanager's `continue`). Without it, the first match wins.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// Resolve the incident when all its alerts resolve (the default).
    /// `false` leaves that to the runbook's `verify` or to a human.
    #[serde(default = "yes")]
    pub resolve_with_alerts: bool,
    /// The least time between two runs for the same group, such as `30m`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub cooldown: Option<Spanned<String>>,
    /// The steps, in order.
    #[serde(default)]
    pub steps: Vec<StepFile>,
    /// Steps run when a step fails (escalation).
    #[serde(default)]
    pub on_failure: Vec<StepFile>,
    /// After the steps: a check run every `every` until it succeeds (the fix
    /// worked: the incident resolves) or `timeout` passes (`on_failure`).
    #[serde(default)]
    pub verify: Option<VerifyFile>,
    /// Run only while one of these named time intervals holds
    /// (`time-intervals.yaml`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub active_time: Vec<Spanned<String>>,
    /// Do not run while one of these named time intervals holds.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Names the test in the report.
    #[schemars(with = "String")]
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
    /// Values of allowlisted environment variables, for templates that read
    /// `env.<NAME>` (tests never read the real environment).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Step id to the `with` it must render to.
    #[serde(default)]
    pub with: serde_json::Map<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}

/// An alert written inline in a test.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestPayload {
    /// `alertmanager`, `pagerduty` or `datadog`.
    pub source: String,
    /// The JSON file, relative to the runbook file.
    pub file: String,
}

/// An inhibition: another firing alert that stops this runbook.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InhibitRule {
    /// Matchers the inhibiting alert must satisfy.
    #[schemars(with = "Vec<String>")]
    pub matchers: Vec<Spanned<String>>,
    /// Labels whose values must be equal in both alerts (missing counts as
    /// `""`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub equal: Vec<Spanned<String>>,
}

/// Which alerts a runbook applies to.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Label matchers in Alertmanager's string form (`severity=~"critical|page"`);
    /// all must hold. None matches every alert.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub matchers: Vec<Spanned<String>>,
    /// Only alerts from this sender: `alertmanager`, `pagerduty`, `datadog`,
    /// or `generic/NAME`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub source: Option<Spanned<String>>,
    /// Which notifications: `firing` (the default), `resolved` or `any`.
    #[serde(default)]
    pub status: StatusFilter,
}

/// Which notifications a runbook reacts to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepFile {
    /// Unique within the runbook; templates reach its output as
    /// `steps.<id>.output`.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// The step type, for example `pprof.capture`.
    #[schemars(schema_with = "step_type_schema")]
    pub uses: Spanned<String>,
    /// The step type's parameters, kept apart from the step's own fields.
    /// Strings may be templates (`{{alert.labels.pod}}`).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub with: Option<Spanned<serde_json::Map<String, serde_json::Value>>>,
    /// A condition on the alert and earlier steps' outputs, a template that
    /// renders to `true` or `false`; the step is skipped when it is false.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub when: Option<Spanned<String>>,
    /// How long the step may take, such as `2m`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
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

/// A verification: one step, polled.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyFile {
    /// The check's step type, for example `promql.verify` or `http.request`.
    #[schemars(schema_with = "step_type_schema")]
    pub uses: Spanned<String>,
    /// Its parameters (templates allowed).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub with: Option<Spanned<serde_json::Map<String, serde_json::Value>>>,
    /// How often to check, such as `10s` (default 15s).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub every: Option<Spanned<String>>,
    /// How long to keep checking, such as `5m` (default 5m).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
}

/// Retry policy of a step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Attempts after the first.
    pub attempts: u32,
    /// The first wait, doubled each time (with jitter), such as `2s`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub backoff: Option<Spanned<String>>,
}

/// An approval gate.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Whether a human must approve.
    #[serde(default)]
    pub required: bool,
    /// How long to wait, such as `15m`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// What happens when nobody answers in time.
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

/// What an unanswered approval does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
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

/// `uses:` in the schema: one of the step type names, so editors complete it.
fn step_type_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = quench_connectors::steps::StepType::ALL
        .iter()
        .map(|t| t.name())
        .collect();
    schemars::json_schema!({
        "type": "string",
        "description": "The step type.",
        "enum": names,
    })
}

/// The JSON schema of the runbook format, for editors and `quench schema`.
/// A step's `with` has the schema of its step type, chosen by `uses`, so an
/// editor completes and checks step parameters.
pub fn schema() -> serde_json::Value {
    let mut schema =
        serde_json::to_value(schemars::schema_for!(RunbookFile)).expect("schemas serialise");
    let by_type: Vec<serde_json::Value> = quench_connectors::steps::StepType::ALL
        .iter()
        .map(|t| {
            let mut with = t.with_schema().to_value();
            if let Some(o) = with.as_object_mut() {
                o.remove("title");
            }
            serde_json::json!({
                "if": {"properties": {"uses": {"const": t.name()}}, "required": ["uses"]},
                "then": {"properties": {"with": with}},
            })
        })
        .collect();
    for def in ["StepFile", "VerifyFile"] {
        if let Some(step) = schema["$defs"][def].as_object_mut() {
            step.insert("allOf".into(), serde_json::Value::Array(by_type.clone()));
        }
    }
    schema
}

fn default_group_by() -> Vec<Spanned<String>> {
    vec![Spanned::new(
        "alertname".to_string(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )]
}

#[cfg(test)]
mod tests {
    use quench_connectors::steps::StepType;

    use super::*;

    #[test]
    fn the_schema_describes_every_field_and_lists_every_step_type() {
        let s = schema();
        let text = s.to_string();
        let props = &s["properties"];
        for field in [
            "version",
            "name",
            "match",
            "group_by",
            "priority",
            "continue",
            "cooldown",
            "steps",
            "on_failure",
            "tests",
            "inhibit_when",
            "active_time",
            "mute_time",
        ] {
            assert!(props.get(field).is_some(), "schema lacks {field}");
        }
        // Doc comments became descriptions.
        assert!(text.contains("Higher is tried first"), "{text}");
        let step = &s["$defs"]["StepFile"]["properties"];
        for field in [
            "id",
            "uses",
            "with",
            "when",
            "timeout",
            "retries",
            "continue_on_error",
            "approval",
        ] {
            assert!(step.get(field).is_some(), "step schema lacks {field}");
        }
        let names = step["uses"]["enum"]
            .as_array()
            .expect("uses lists the step types");
        for t in StepType::ALL {
            assert!(
                names.iter().any(|n| n == t.name()),
                "{t} missing from the schema"
            );
        }
        assert_eq!(
            s["$defs"]["StepFile"]["additionalProperties"], false,
            "unknown fields are refused"
        );
        // Each step type's `with` has its own schema, chosen by `uses`.
        let by_type = s["$defs"]["StepFile"]["allOf"].as_array().unwrap();
        assert_eq!(by_type.len(), StepType::ALL.len());
        let scale = by_type
            .iter()
            .find(|c| c["if"]["properties"]["uses"]["const"] == "k8s.scale")
            .expect("k8s.scale has a schema");
        let with = &scale["then"]["properties"]["with"];
        assert_eq!(with["additionalProperties"], false, "{with}");
        assert!(with["properties"]["replicas"].is_object(), "{with}");
        assert_eq!(with["required"], serde_json::json!(["name", "replicas"]));
        // A number may be written as a template.
        assert_eq!(
            with["properties"]["max"]["type"],
            serde_json::json!(["integer", "string"])
        );
        // Secrets are inlined: an object with env or file.
        let slack = by_type
            .iter()
            .find(|c| c["if"]["properties"]["uses"]["const"] == "notify.slack")
            .unwrap();
        let webhook = &slack["then"]["properties"]["with"]["properties"]["webhook"];
        assert!(webhook["properties"]["env"].is_object(), "{webhook}");
    }
}
