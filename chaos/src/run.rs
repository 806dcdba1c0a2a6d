//! Running an experiment, with these semantics:
//!
//! | situation | what happens |
//! |---|---|
//! | the steady state fails before the method | nothing is injected; verdict `not-run` |
//! | the method started | the rollbacks always run: after success, failure, an `abort_when` breach, an abort request, or shutdown (a crash leaves the ledger, which is reconciled on restart) |
//! | a rollback fails | recorded (`rollback_failed`), and the `escalate` steps run (a page) |
//! | after the rollbacks | the steady state is checked again: `passed` or `deviated`, with the probe values |
//!
//! Every fault is written to the ledger before it is applied and removed
//! from it once cleaned up.

use std::time::Duration;

use chrono::{DateTime, Utc};
use quench_connectors::k8s::objects::{self, ObjectRef};
use quench_connectors::k8s::{Kube, KubeError};
use quench_connectors::steps::{Call, StepError, StepRunner, StepType};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::faults::{self, Fault};
use crate::load::Experiment;
use crate::model::{ChaosStep, Probe, Strategy};

/// A fault as the ledger keeps it: enough to clean it up after a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// `RUN/STEP`.
    pub id: String,
    /// The experiment.
    pub experiment: String,
    /// The run.
    pub run: String,
    /// The fault type.
    pub fault: String,
    /// The Chaos Mesh object to delete, for those faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    /// The pods it touched (pod kill, netem).
    #[serde(default)]
    pub pods: Vec<String>,
    /// For netem: the interface and container to undo it in.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub native: Value,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// Where faults are recorded before they are applied. The engine keeps it
/// in the knowledge store, flushed.
pub trait Ledger: Send + Sync {
    /// Records durably.
    fn record<'a>(&'a self, e: &'a LedgerEntry) -> LedgerFuture<'a, ()>;
    /// Forgets a cleaned-up fault.
    fn remove<'a>(&'a self, id: &'a str) -> LedgerFuture<'a, ()>;
    /// Everything not cleaned up yet.
    fn entries(&self) -> LedgerFuture<'_, Vec<LedgerEntry>>;
}

/// What a [`Ledger`] call returns: async, so recording a fault never
/// blocks the run's task.
pub type LedgerFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, LedgerError>> + Send + 'a>>;

/// The ledger's store failed: the fault was not recorded (so it is not
/// applied), not forgotten, or the ledger could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the chaos fault ledger: {0}")]
pub struct LedgerError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// A step that could not record or forget its fault failed; a retry may
/// find the store working.
impl From<LedgerError> for StepError {
    fn from(e: LedgerError) -> StepError {
        StepError::Failed(e.to_string())
    }
}

impl LedgerError {
    /// Wraps the store's error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> LedgerError {
        LedgerError(Box::new(e))
    }
}

/// An in-memory ledger, for tests and dry runs.
#[derive(Default)]
pub struct MemoryLedger(std::sync::Mutex<Vec<LedgerEntry>>);

impl Ledger for MemoryLedger {
    fn record<'a>(&'a self, e: &'a LedgerEntry) -> LedgerFuture<'a, ()> {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|x| x.id != e.id);
        v.push(e.clone());
        Box::pin(async { Ok(()) })
    }
    fn remove<'a>(&'a self, id: &'a str) -> LedgerFuture<'a, ()> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|x| x.id != id);
        Box::pin(async { Ok(()) })
    }
    fn entries(&self) -> LedgerFuture<'_, Vec<LedgerEntry>> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Box::pin(async { Ok(v) })
    }
}

/// What a run needs.
pub struct Env<'a> {
    /// The cluster.
    pub kube: &'a dyn Kube,
    /// For PromQL and HTTP probes.
    pub http: &'a reqwest::Client,
    /// Ordinary steps of the method (`wait`, `http.request`, `k8s.*`),
    /// under the engine's guards.
    pub steps: &'a dyn StepRunner,
    /// The rollback and escalation steps: they always run (a kill switch
    /// or a spent budget must not leave a fault in place).
    pub rollback_steps: &'a dyn StepRunner,
    /// The fault ledger.
    pub ledger: &'a dyn Ledger,
    /// Whether the kill switch is on (`quench pause`): looked at before
    /// each fault, which is then not injected and the run aborts (its
    /// rollbacks run).
    pub paused: &'a (dyn Fn() -> bool + Sync),
}

/// How to run.
pub struct RunOptions {
    /// The run's id.
    pub run: String,
    /// Render and select, inject nothing.
    pub dry_run: bool,
    /// Set to true to stop the method (`quench chaos abort`, shutdown).
    pub abort: watch::Receiver<bool>,
    /// How often `abort_when` (and a continuous steady state) is checked.
    pub probe_every: Duration,
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The probe.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// What it saw.
    pub value: Value,
    /// When.
    pub at: DateTime<Utc>,
}

/// One step's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// The step id.
    pub id: String,
    /// Its type.
    pub uses: String,
    /// Whether it worked.
    pub ok: bool,
    /// Its output, or the error.
    pub output: Value,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The steady state did not hold before: nothing was injected.
    NotRun,
    /// Rendered only.
    DryRun,
    /// The steady state held again after the rollbacks.
    Passed,
    /// It did not.
    Deviated,
    /// A probe breached or an abort was asked for; rollbacks ran.
    Aborted,
}

/// The verdict of a run. Stored as JSON; a field added later reads as
/// empty in an older verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    /// The experiment.
    pub experiment: String,
    /// The run.
    pub run: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it aborted, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Ended.
    pub ended_at: DateTime<Utc>,
    /// The steady state before.
    #[serde(default)]
    pub before: Vec<ProbeResult>,
    /// Every `abort_when` (and continuous steady-state) check during the
    /// method: the probe series.
    #[serde(default)]
    pub during: Vec<ProbeResult>,
    /// The steady state after the rollbacks.
    #[serde(default)]
    pub after: Vec<ProbeResult>,
    /// The method's steps.
    #[serde(default)]
    pub method: Vec<StepResult>,
    /// Faults applied (targets, objects).
    #[serde(default)]
    pub faults: Vec<Value>,
    /// Faults removed by the cleanup.
    #[serde(default)]
    pub removed: Vec<String>,
    /// The rollbacks' steps.
    #[serde(default)]
    pub rollbacks: Vec<StepResult>,
    /// A rollback or cleanup failed: someone must look.
    #[serde(default)]
    pub rollback_failed: bool,
    /// The `escalate` steps that ran because of it.
    #[serde(default)]
    pub escalated: Vec<StepResult>,
}

impl Outcome {
    /// As written in verdicts: `passed`, `dry-run`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::NotRun => "not-run",
            Outcome::DryRun => "dry-run",
            Outcome::Passed => "passed",
            Outcome::Deviated => "deviated",
            Outcome::Aborted => "aborted",
        }
    }

    /// Passed, or a dry run: nothing for anyone to look at.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Passed | Outcome::DryRun)
    }
}

/// Checks one probe now.
pub async fn probe(p: &Probe, env: &Env<'_>) -> ProbeResult {
    let at = Utc::now();
    let (ok, value) = match (&p.promql, &p.http, &p.k8s_ready) {
        (Some(q), _, _) => match promql_values(env.http, &q.url, &q.query).await {
            Ok(values) if values.is_empty() => (false, json!({"error": "no data"})),
            Ok(values) => {
                let within = values
                    .iter()
                    .all(|v| q.min.is_none_or(|m| *v >= m) && q.max.is_none_or(|m| *v <= m));
                (within, json!(values))
            }
            Err(e) => (false, json!({"error": e.to_string()})),
        },
        (_, Some(h), _) => {
            let t = std::time::Instant::now();
            match env
                .http
                .get(&h.url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
            {
                Ok(r) => {
                    let ms = t.elapsed().as_millis() as u64;
                    let ok =
                        r.status().as_u16() == h.status && h.max_latency_ms.is_none_or(|m| ms <= m);
                    (ok, json!({"status": r.status().as_u16(), "latency_ms": ms}))
                }
                Err(e) => (false, json!({"error": e.to_string()})),
            }
        }
        (_, _, Some(r)) => {
            let obj = ObjectRef::new(&r.kind, Some(&r.namespace), &r.name, None, None, env.kube);
            match obj {
                Err(e) => (false, json!({"error": e.to_string()})),
                Ok(o) => match objects::get(env.kube, &o.path(None)).await {
                    Ok(d) => {
                        let field = if r.kind == "StatefulSet" {
                            "readyReplicas"
                        } else {
                            "availableReplicas"
                        };
                        let n = d["status"][field].as_u64().unwrap_or(0);
                        (n >= u64::from(r.min_available), json!({field: n}))
                    }
                    Err(e) => (false, json!({"error": e.to_string()})),
                },
            }
        }
        _ => (false, json!({"error": "no probe"})),
    };
    ProbeResult {
        name: p.name.value.clone(),
        ok,
        value,
        at,
    }
}

/// Why a PromQL probe has no values.
#[derive(Debug, thiserror::Error)]
enum PromqlError {
    /// No answer, or one that is not JSON.
    #[error("{endpoint}: {source}")]
    Request {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// Prometheus answered with an error.
    #[error("{endpoint}: {error}")]
    Answer { endpoint: String, error: Value },
}

async fn promql_values(
    http: &reqwest::Client,
    url: &str,
    query: &str,
) -> Result<Vec<f64>, PromqlError> {
    let endpoint = format!("{}/api/v1/query", url.trim_end_matches('/'));
    let failed = |source| PromqlError::Request {
        endpoint: endpoint.clone(),
        source,
    };
    let resp = http
        .get(&endpoint)
        .query(&[("query", query)])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(failed)?;
    let bytes = quench_connectors::steps::read_capped(resp, quench_connectors::steps::MAX_ANSWER)
        .await
        .map_err(|e| PromqlError::Answer {
            endpoint: endpoint.clone(),
            error: Value::String(e.to_string()),
        })?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| PromqlError::Answer {
        endpoint: endpoint.clone(),
        error: Value::String(format!("not JSON: {e}")),
    })?;
    if v["status"] != "success" {
        return Err(PromqlError::Answer {
            endpoint,
            error: v["error"].clone(),
        });
    }
    let num = |x: &Value| x.as_str().and_then(|s| s.parse::<f64>().ok());
    let r = &v["data"]["result"];
    Ok(match v["data"]["resultType"].as_str() {
        Some("scalar") => num(&r[1]).into_iter().collect(),
        _ => r
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| num(&s["value"][1]))
            .collect(),
    })
}

async fn probes(ps: &[Probe], env: &Env<'_>) -> Vec<ProbeResult> {
    let mut out = Vec::new();
    for p in ps {
        out.push(probe(p, env).await);
    }
    out
}

/// Pods the blast radius matches now, `namespace/name`, running and not
/// terminating.
pub async fn matching_pods(
    exp: &Experiment,
    env: &Env<'_>,
) -> Result<Vec<(String, String)>, StepError> {
    let encoded = quench_connectors::steps::k8s_delete_pod::check_selector(&exp.blast.selector)?;
    let mut out = Vec::new();
    for ns in &exp.blast.namespaces {
        let any = ObjectRef::new("Pod", Some(ns), "x", None, None, env.kube)?;
        let list = objects::get(
            env.kube,
            &format!("{}?labelSelector={encoded}", any.collection()),
        )
        .await?;
        for p in list["items"].as_array().into_iter().flatten() {
            if p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running" {
                out.push((
                    ns.clone(),
                    p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn pick(mut pods: Vec<(String, String)>, n: usize) -> Vec<(String, String)> {
    // A rotation by the clock: different pods on different runs, without a
    // random number generator.
    if !pods.is_empty() {
        let shift = (Utc::now().timestamp_subsec_nanos() as usize) % pods.len();
        pods.rotate_left(shift);
    }
    pods.truncate(n);
    pods
}

/// A ledger entry for a fault of this run, targets still to fill in.
fn ledger_entry(exp: &Experiment, run: &str, id: &str, fault: Fault) -> LedgerEntry {
    LedgerEntry {
        id: id.to_string(),
        experiment: exp.name.clone(),
        run: run.to_string(),
        fault: fault.name().into(),
        object: None,
        pods: Vec::new(),
        native: Value::Null,
        at: Utc::now(),
    }
}

/// Applies one fault: the ledger first, then the change.
async fn apply_fault(
    exp: &Experiment,
    env: &Env<'_>,
    run: &str,
    step: &ChaosStep,
    fault: Fault,
    dry_run: bool,
) -> Result<Value, StepError> {
    let empty = Map::new();
    let with = step.with.as_ref().map(|w| &w.value).unwrap_or(&empty);
    let matched = matching_pods(exp, env).await?;
    let cap = exp.blast.max_pods.unwrap_or(1);
    let n = faults::count(exp.blast.mode, matched.len(), cap);
    let id = format!("{run}/{}", step.id.value);
    match fault {
        Fault::PodKill => {
            let targets = pick(matched.clone(), n);
            let names: Vec<String> = targets.iter().map(|(ns, p)| format!("{ns}/{p}")).collect();
            if dry_run {
                return Ok(
                    json!({"fault": fault.name(), "matched": matched.len(), "would_kill": names}),
                );
            }
            let fault_entry = LedgerEntry {
                pods: names.clone(),
                ..ledger_entry(exp, run, &id, fault)
            };
            env.ledger.record(&fault_entry).await?;
            for (ns, pod) in &targets {
                let mut w = json!({"pod": pod, "namespace": ns});
                if let Some(g) = with.get("grace_seconds") {
                    w["grace_seconds"] = g.clone();
                }
                env.steps
                    .run(StepType::K8sDeletePod, Call::default(), &w)
                    .await?;
            }
            Ok(json!({"fault": fault.name(), "matched": matched.len(), "killed": names}))
        }
        Fault::Netem => {
            let argv = faults::netem_argv(with).map_err(|e| StepError::Params(e.to_string()))?;
            let iface =
                faults::netem_interface(with).map_err(|e| StepError::Params(e.to_string()))?;
            let container = with
                .get("container")
                .and_then(Value::as_str)
                .map(str::to_string);
            let targets = pick(matched.clone(), n);
            let names: Vec<String> = targets.iter().map(|(ns, p)| format!("{ns}/{p}")).collect();
            if dry_run {
                return Ok(
                    json!({"fault": fault.name(), "matched": matched.len(), "would_run": argv, "in": names}),
                );
            }
            let fault_entry = LedgerEntry {
                pods: names.clone(),
                native: json!({"interface": iface, "container": container}),
                ..ledger_entry(exp, run, &id, fault)
            };
            env.ledger.record(&fault_entry).await?;
            for (ns, pod) in &targets {
                let mut w = json!({"pod": pod, "namespace": ns, "argv": argv});
                if let Some(c) = &container {
                    w["container"] = json!(c);
                }
                env.steps
                    .run(StepType::K8sExec, Call::default(), &w)
                    .await?;
            }
            Ok(
                json!({"fault": fault.name(), "matched": matched.len(), "argv": argv, "pods": names}),
            )
        }
        _ => {
            let (kind, resource) = fault.chaos_mesh_kind().expect("not native");
            let name = format!("quench-{}-{}", run, step.id.value.replace('_', "-"));
            let labels: Map<String, Value> = serde_json::from_value(json!({
                "app.kubernetes.io/managed-by": "quench",
                "quench.dev/experiment": exp.name,
                "quench.dev/run": run,
            }))
            .expect("labels");
            let manifest = faults::chaos_mesh_object(fault, with, &exp.blast, n, &name, &labels)
                .map_err(|e| StepError::Params(e.to_string()))?;
            let obj = ObjectRef::new(
                kind,
                Some(&exp.blast.namespaces[0]),
                &name,
                Some("chaos-mesh.org/v1alpha1"),
                Some(resource),
                env.kube,
            )?;
            if dry_run {
                return Ok(
                    json!({"fault": fault.name(), "matched": matched.len(), "would_create": manifest}),
                );
            }
            let fault_entry = LedgerEntry {
                object: Some(obj.clone()),
                ..ledger_entry(exp, run, &id, fault)
            };
            env.ledger.record(&fault_entry).await?;
            objects::send(
                env.kube,
                http::Method::POST,
                &obj.collection(),
                manifest,
                "application/json",
            )
            .await?;
            Ok(
                json!({"fault": fault.name(), "matched": matched.len(), "affected": n, "object": obj.label()}),
            )
        }
    }
}

/// Removes what a ledger entry applied: a Chaos Mesh object is deleted, and
/// if finalizers hold it, they are cleared. Pod kills need nothing.
pub async fn cleanup(
    entry: &LedgerEntry,
    kube: &dyn Kube,
    ledger: &dyn Ledger,
) -> Result<(), StepError> {
    if entry.fault == Fault::Netem.name() {
        let iface = entry.native["interface"].as_str().unwrap_or("eth0");
        let argv = faults::netem_cleanup_argv(iface);
        for target in &entry.pods {
            let Some((ns, pod)) = target.split_once('/') else {
                continue;
            };
            quench_connectors::k8s::names::label("namespace", ns)?;
            quench_connectors::k8s::names::subdomain("pod", pod)?;
            let r = kube
                .exec(quench_connectors::k8s::ExecCall {
                    namespace: ns,
                    pod,
                    container: entry.native["container"].as_str(),
                    argv: &argv,
                    max: 64 << 10,
                    timeout: Duration::from_secs(30),
                })
                .await;
            match r {
                Ok(out) if out.exit_code == Some(0) => {}
                // The pod is gone, and its network namespace with it.
                Err(KubeError::Refused(m)) if m.contains("HTTP 404") => {}
                Ok(out) => {
                    return Err(StepError::Failed(format!(
                        "netem cleanup in {target} exited with {:?}: {}",
                        out.exit_code,
                        out.stderr.trim()
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if let Some(obj) = &entry.object {
        let path = obj.path(None);
        match objects::send(
            kube,
            http::Method::DELETE,
            &path,
            json!({"kind": "DeleteOptions", "apiVersion": "v1"}),
            "application/json",
        )
        .await
        {
            Ok(_) => {}
            Err(KubeError::Refused(m)) if m.contains("HTTP 404") => {}
            Err(e) => return Err(e.into()),
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match objects::get(kube, &path).await {
                Err(KubeError::Refused(m)) if m.contains("HTTP 404") => break,
                Err(e) => return Err(e.into()),
                Ok(o) => {
                    // Held by finalizers (a controller that is gone, say):
                    // clear them, so the fault cannot outlive the experiment.
                    if o["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|f| !f.is_empty())
                    {
                        objects::send(
                            kube,
                            http::Method::PATCH,
                            &path,
                            json!({"metadata": {"finalizers": null}}),
                            objects::MERGE,
                        )
                        .await?;
                    }
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(StepError::Failed(format!(
                    "{} still there after 30s",
                    obj.label()
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    Ok(ledger.remove(&entry.id).await?)
}

async fn run_step(step: &ChaosStep, runner: &dyn StepRunner) -> StepResult {
    let with = step
        .with
        .as_ref()
        .map(|w| Value::Object(w.value.clone()))
        .unwrap_or(json!({}));
    let result = match StepType::from_name(&step.uses.value) {
        Some(t) => runner.run(t, Call::default(), &with).await,
        None => Err(StepError::Params(format!(
            "unknown step type {}",
            step.uses.value
        ))),
    };
    match result {
        Ok(o) => StepResult {
            id: step.id.value.clone(),
            uses: step.uses.value.clone(),
            ok: true,
            output: o,
        },
        Err(e) => StepResult {
            id: step.id.value.clone(),
            uses: step.uses.value.clone(),
            ok: false,
            output: json!({"error": e.to_string()}),
        },
    }
}

/// Runs an experiment to its verdict.
pub async fn run(exp: &Experiment, env: &Env<'_>, opts: RunOptions) -> Verdict {
    let started_at = Utc::now();
    let mut v = Verdict {
        experiment: exp.name.clone(),
        run: opts.run.clone(),
        outcome: Outcome::NotRun,
        abort_reason: None,
        started_at,
        ended_at: started_at,
        before: probes(&exp.file.steady_state.probes, env).await,
        during: Vec::new(),
        after: Vec::new(),
        method: Vec::new(),
        faults: Vec::new(),
        removed: Vec::new(),
        rollbacks: Vec::new(),
        rollback_failed: false,
        escalated: Vec::new(),
    };
    let steady = v.before.iter().all(|p| p.ok);
    if opts.dry_run {
        // Everything a run would do, worked out and changed nowhere: the
        // targets each fault picks now, the steps it would run, the
        // rollbacks. Also when the steady state does not hold (a run would
        // not start, and the dry run says so).
        let mut failed = Vec::new();
        let planned = |step: &ChaosStep, part: &str| StepResult {
            id: step.id.value.clone(),
            uses: step.uses.value.clone(),
            ok: true,
            output: json!({"would_run": part, "with": step.with.as_ref().map(|w| &w.value)}),
        };
        for step in &exp.file.method {
            match Fault::from_name(&step.uses.value) {
                Some(f) => match apply_fault(exp, env, &opts.run, step, f, true).await {
                    Ok(o) => v.faults.push(o),
                    Err(e) => {
                        failed.push(format!("{}: {e}", step.id.value));
                        v.faults
                            .push(json!({"fault": f.name(), "error": e.to_string()}));
                    }
                },
                None => v.method.push(planned(step, "method")),
            }
        }
        v.rollbacks = exp
            .file
            .rollbacks
            .iter()
            .map(|s| planned(s, "rollback"))
            .collect();
        (v.outcome, v.abort_reason) = match (steady, failed.is_empty()) {
            (_, false) => (
                Outcome::Aborted,
                Some(format!(
                    "dry run: {} could not be worked out: {}",
                    if failed.len() == 1 {
                        "a fault"
                    } else {
                        "faults"
                    },
                    failed.join("; ")
                )),
            ),
            (false, true) => (
                Outcome::NotRun,
                Some(
                    "dry run: the steady state does not hold now, so a run would not start".into(),
                ),
            ),
            (true, true) => (Outcome::DryRun, None),
        };
        v.ended_at = Utc::now();
        return v;
    }
    if !steady {
        v.ended_at = Utc::now();
        return v;
    }
    // Watch the abort conditions (and a continuous steady state) while the
    // method and its duration run.
    let mut watched: Vec<Probe> = exp.file.abort_when.clone();
    if exp.file.steady_state.strategy == Strategy::Continuous {
        watched.extend(exp.file.steady_state.probes.iter().cloned());
    }
    let mut abort = opts.abort.clone();
    // Every check is kept (up to a bound): the probe series of the run.
    let series: std::sync::Mutex<Vec<ProbeResult>> = std::sync::Mutex::new(Vec::new());
    let breach = async {
        if watched.is_empty() {
            std::future::pending::<(String, Vec<ProbeResult>)>().await
        } else {
            loop {
                tokio::time::sleep(opts.probe_every).await;
                let results = probes(&watched, env).await;
                {
                    let mut s = series.lock().unwrap_or_else(|e| e.into_inner());
                    if s.len() < 2000 {
                        s.extend(results.iter().cloned());
                    }
                }
                if let Some(b) = results.iter().find(|r| !r.ok) {
                    return (
                        format!("probe {:?} breached: {}", b.name, b.value),
                        Vec::new(),
                    );
                }
            }
        }
    };
    let mut method_results: Vec<StepResult> = Vec::new();
    let mut applied: Vec<Value> = Vec::new();
    let aborted: Option<(String, Vec<ProbeResult>)> = {
        let method = async {
            for step in &exp.file.method {
                if Fault::from_name(&step.uses.value).is_some() && (env.paused)() {
                    return Some(
                        "the kill switch is on (quench pause): no more faults are injected"
                            .to_string(),
                    );
                }
                let r = match Fault::from_name(&step.uses.value) {
                    Some(f) => match apply_fault(exp, env, &opts.run, step, f, false).await {
                        Ok(o) => {
                            applied.push(o.clone());
                            StepResult {
                                id: step.id.value.clone(),
                                uses: step.uses.value.clone(),
                                ok: true,
                                output: o,
                            }
                        }
                        Err(e) => StepResult {
                            id: step.id.value.clone(),
                            uses: step.uses.value.clone(),
                            ok: false,
                            output: json!({"error": e.to_string()}),
                        },
                    },
                    None => run_step(step, env.steps).await,
                };
                let failed = !r.ok;
                method_results.push(r);
                if failed {
                    return None;
                }
            }
            if let Some(d) = exp.duration {
                tokio::time::sleep(d).await;
            }
            None
        };
        let requested = async {
            while !*abort.borrow() {
                if abort.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            paused = method => paused.map(|why| (why, Vec::new())),
            found = breach => Some(found),
            _ = requested => Some(("aborted on request".to_string(), Vec::new())),
        }
    };
    v.method = method_results;
    v.faults = applied;
    v.during = series.into_inner().unwrap_or_else(|e| e.into_inner());
    let aborted = aborted.map(|(why, _)| why);
    // From here the rollbacks always run.
    let entries = match env.ledger.entries().await {
        Ok(entries) => entries,
        Err(e) => {
            // Nothing says which faults are still applied: someone must
            // look (the restart's reconcile will try again).
            v.rollback_failed = true;
            v.rollbacks.push(StepResult {
                id: "cleanup".into(),
                uses: "ledger".into(),
                ok: false,
                output: json!({"error": e.to_string()}),
            });
            Vec::new()
        }
    };
    for entry in entries.into_iter().filter(|e| e.run == opts.run) {
        match cleanup(&entry, env.kube, env.ledger).await {
            Ok(()) => v.removed.push(entry.id.clone()),
            Err(e) => {
                v.rollback_failed = true;
                v.rollbacks.push(StepResult {
                    id: format!("cleanup {}", entry.id),
                    uses: entry.fault.clone(),
                    ok: false,
                    output: json!({"error": e.to_string()}),
                });
            }
        }
    }
    for step in &exp.file.rollbacks {
        let r = run_step(step, env.rollback_steps).await;
        if !r.ok {
            v.rollback_failed = true;
        }
        v.rollbacks.push(r);
    }
    if v.rollback_failed {
        tracing::error!(experiment = %exp.name, run = %opts.run, "a chaos rollback failed; escalating");
        for step in &exp.file.escalate {
            v.escalated.push(run_step(step, env.rollback_steps).await);
        }
    }
    v.after = probes(&exp.file.steady_state.probes, env).await;
    v.outcome = match &aborted {
        Some(_) => Outcome::Aborted,
        None if v.after.iter().all(|p| p.ok) && v.method.iter().all(|s| s.ok) => Outcome::Passed,
        None => Outcome::Deviated,
    };
    v.abort_reason = aborted;
    v.ended_at = Utc::now();
    v
}

/// After a restart: cleans up every fault a crashed run left in the
/// ledger. Answers each fault's id with how its cleanup went, or why the
/// ledger could not be read.
pub async fn reconcile(
    kube: &dyn Kube,
    ledger: &dyn Ledger,
) -> Result<Vec<(String, Result<(), StepError>)>, LedgerError> {
    let mut out = Vec::new();
    for entry in ledger.entries().await? {
        let r = cleanup(&entry, kube, ledger).await;
        out.push((entry.id.clone(), r));
    }
    Ok(out)
}
