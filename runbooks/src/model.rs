//! The runbook file as written (`version: 1`).

use serde::Deserialize;

/// A runbook file, exactly as parsed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunbookFile {
    /// The format version; only `1` exists.
    pub version: u32,
    /// A unique name, used in incidents and metrics.
    pub name: String,
    /// What the runbook is for.
    #[serde(default)]
    pub description: String,
    /// Label matchers in Alertmanager's string form; all must hold. An empty
    /// list matches every alert.
    #[serde(rename = "match", default)]
    pub matchers: Vec<String>,
    /// Labels whose values group alerts into one incident.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// Higher runs first when several runbooks match.
    #[serde(default)]
    pub priority: i32,
    /// The steps. Their language is the runbook-language issue; here each is
    /// only checked for an `id` and a `uses`.
    #[serde(default)]
    pub steps: Vec<StepFile>,
}

/// One step as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepFile {
    /// Unique within the runbook.
    pub id: String,
    /// The step type, for example `pprof.capture`.
    pub uses: String,
    /// The step's parameters, kept apart from the step's own fields.
    #[serde(default)]
    pub with: serde_json::Map<String, serde_json::Value>,
}

fn default_group_by() -> Vec<String> {
    vec!["alertname".to_string()]
}
