//! The experiment file, as written: `*.chaos.yaml` in the runbook
//! repository, `version: 1`. Fields checked after parsing keep their place
//! (`Spanned`), so every problem is reported at its line and column.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A chaos experiment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    /// Always 1.
    pub version: Spanned<u32>,
    /// What the experiment checks, in one line.
    pub title: Spanned<String>,
    /// More words.
    #[serde(default)]
    pub description: String,
    /// Labels for search and selection.
    #[serde(default)]
    pub tags: Vec<String>,
    /// What "healthy" means, checked before and after (or throughout).
    #[serde(default)]
    pub steady_state: SteadyState,
    /// The faults and steps, in order (`wait` steps are the pauses).
    pub method: Vec<ChaosStep>,
    /// How long the faults stay after the method (`5m`); default none.
    #[serde(default)]
    pub duration: Option<Spanned<String>>,
    /// Probes checked throughout; one breach aborts at once.
    #[serde(default)]
    pub abort_when: Vec<Probe>,
    /// Steps that always run once the method has started.
    #[serde(default)]
    pub rollbacks: Vec<ChaosStep>,
    /// Steps that run when a rollback or a fault's cleanup fails: a page,
    /// a Slack message. Someone must look.
    #[serde(default)]
    pub escalate: Vec<ChaosStep>,
    /// Which pods faults may touch, and how many at most. Required.
    #[serde(default)]
    pub blast_radius: Option<Spanned<BlastRadius>>,
    /// When it runs by itself.
    #[serde(default)]
    pub schedule: Option<Schedule>,
}

/// The steady-state hypothesis.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteadyState {
    /// `before_after` (default) or `continuous` (also during the method).
    #[serde(default)]
    pub strategy: Strategy,
    /// Every probe must hold.
    #[serde(default)]
    pub probes: Vec<Probe>,
}

/// When the steady state is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Before the method and after the rollbacks.
    #[default]
    BeforeAfter,
    /// Also throughout the method, like `abort_when`.
    Continuous,
}

/// One probe: exactly one of `promql`, `http`, `k8s_ready`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Its name in the verdict.
    pub name: Spanned<String>,
    /// A PromQL value within bounds.
    #[serde(default)]
    pub promql: Option<PromqlProbe>,
    /// An HTTP answer with a status, within a latency.
    #[serde(default)]
    pub http: Option<HttpProbe>,
    /// A workload with enough available replicas.
    #[serde(default)]
    pub k8s_ready: Option<ReadyProbe>,
}

/// `promql: {url, query, min, max}`: the query's value (every series of an
/// instant vector, or a scalar) must lie within `[min, max]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromqlProbe {
    /// Prometheus's base URL.
    pub url: String,
    /// The expression.
    pub query: String,
    /// The lowest acceptable value.
    #[serde(default)]
    pub min: Option<f64>,
    /// The highest acceptable value.
    #[serde(default)]
    pub max: Option<f64>,
}

/// `http: {url, status, max_latency_ms}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// The URL to GET.
    pub url: String,
    /// The status expected (default 200).
    #[serde(default = "ok")]
    pub status: u16,
    /// The slowest acceptable answer.
    #[serde(default)]
    pub max_latency_ms: Option<u64>,
}

fn ok() -> u16 {
    200
}

/// `k8s_ready: {kind, name, namespace, min_available}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyProbe {
    /// `Deployment` (default) or `StatefulSet`.
    #[serde(default = "deployment")]
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Available (ready, for a StatefulSet) replicas needed.
    pub min_available: u32,
}

fn deployment() -> String {
    "Deployment".into()
}

/// A method or rollback step: a fault (`chaos.pod_kill`, ...) or any step
/// type (`wait`, `http.request`, `k8s.scale`, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosStep {
    /// Its id in the verdict.
    pub id: Spanned<String>,
    /// The fault or step type.
    pub uses: Spanned<String>,
    /// Its parameters.
    #[serde(default)]
    pub with: Option<Spanned<serde_json::Map<String, serde_json::Value>>>,
}

/// Which pods faults may touch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlastRadius {
    /// The namespaces targets are chosen in.
    pub namespaces: Vec<String>,
    /// A label selector on pods (`app=checkout`).
    pub selector: String,
    /// How many of the matching pods: `one`, `all`, `{fixed: N}`,
    /// `{percent: P}`.
    #[serde(default)]
    pub mode: Mode,
    /// The hard cap: never more pods than this, whatever the mode says.
    #[serde(default)]
    pub max_pods: Option<u32>,
}

/// How many matching pods a fault takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One, at random.
    #[default]
    One,
    /// All of them (still within the cap).
    All,
    /// N of them.
    Fixed(u32),
    /// P percent of them, rounded down, at least one.
    Percent(u32),
}

/// When an experiment runs by itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// A 5-field cron expression (`0 3 * * MON`).
    pub cron: Spanned<String>,
    /// The IANA timezone the expression is read in (default UTC).
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// Periods in which no run starts.
    #[serde(default)]
    pub blackouts: Vec<Blackout>,
    /// `forbid` (default): a run does not start while one is going on.
    #[serde(default)]
    pub concurrency: Concurrency,
}

/// A period without runs, in the schedule's timezone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blackout {
    /// Its start, `2026-12-20T00:00`.
    pub from: Spanned<String>,
    /// Its end.
    pub to: Spanned<String>,
}

/// Whether runs may overlap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// Never two runs of one experiment at once.
    #[default]
    Forbid,
    /// Runs may overlap.
    Allow,
}
