//! Chaos experiments in the server: runs started by the API, the CLI or
//! the schedule, their fault ledger and verdicts in the knowledge store,
//! reconcile at start-up, and the incidents each run provoked.

use quench_knowledge::{AuditAction, EventKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quench_chaos::run::{self, Env, Ledger, LedgerEntry, LedgerError, LedgerFuture, RunOptions};
use quench_chaos::{Experiment, Outcome};
use quench_connectors::k8s::KubeClient;
use quench_connectors::steps::StepRunner;
use quench_knowledge::{AuditEntry, AuditLog, ChaosStore, IncidentStore};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::runbook_source::Runbooks;

/// The knowledge store as the runner's ledger.
struct StoreLedger(ChaosStore);

impl Ledger for StoreLedger {
    fn record<'a>(&'a self, e: &'a LedgerEntry) -> LedgerFuture<'a, ()> {
        Box::pin(async move {
            let v = serde_json::to_value(e).map_err(LedgerError::new)?;
            self.0.ledger_put(&e.id, &v).await.map_err(LedgerError::new)
        })
    }
    fn remove<'a>(&'a self, id: &'a str) -> LedgerFuture<'a, ()> {
        Box::pin(async move { self.0.ledger_remove(id).await.map_err(LedgerError::new) })
    }
    fn entries(&self) -> LedgerFuture<'_, Vec<LedgerEntry>> {
        let store = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.ledger_entries())
                .await
                .map_err(LedgerError::new)?
                .map_err(LedgerError::new)?
                .into_iter()
                .map(|v| serde_json::from_value(v).map_err(LedgerError::new))
                .collect()
        })
    }
}

/// Why a run did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No such experiment in the set in force.
    #[error("no chaos experiment {0:?}")]
    NotFound(String),
    /// The kill switch is on: no experiment injects faults (a dry run
    /// still may).
    #[error("the kill switch is on (quench pause): chaos experiment {0:?} does not start")]
    Paused(String),
    /// A probe's URL names a host outside `executor.allowed_hosts`.
    #[error("chaos experiment {experiment:?}: {why}")]
    Refused {
        /// The experiment.
        experiment: String,
        /// Which URL, and why.
        why: String,
    },
    /// Its schedule forbids overlapping runs, and one is going on.
    #[error("chaos experiment {0:?} is already running (concurrency: forbid)")]
    Busy(String),
}

/// The chaos side of the server.
pub struct ChaosService {
    store: ChaosStore,
    ledger: StoreLedger,
    kube: Arc<KubeClient>,
    http: reqwest::Client,
    /// `executor.allowed_hosts`: probes go through the same check as steps.
    hosts: Option<quench_connectors::hosts::HostAllowlist>,
    /// The kill switch, shared with the executor.
    control: Option<quench_knowledge::Control>,
    /// `executor.dry_run`: every run is a dry run.
    dry_run_only: bool,
    steps: Arc<dyn StepRunner>,
    /// Rollbacks and escalations: unguarded, they always run.
    rollback_steps: Arc<dyn StepRunner>,
    runbooks: Arc<Runbooks>,
    incidents: IncidentStore,
    audit: AuditLog,
    running: Mutex<HashMap<String, (String, watch::Sender<bool>)>>,
    /// The wall clock for run ids, audit entries and schedules.
    pub clock: Arc<dyn quench_knowledge::Clock>,
}

impl ChaosService {
    /// The service over the server's stores and clients.
    pub fn new(
        store: ChaosStore,
        kube: Arc<KubeClient>,
        steps: Arc<dyn StepRunner>,
        runbooks: Arc<Runbooks>,
        incidents: IncidentStore,
        audit: AuditLog,
    ) -> ChaosService {
        ChaosService {
            ledger: StoreLedger(store.clone()),
            store,
            kube,
            http: quench_connectors::hosts::client(None),
            hosts: None,
            control: None,
            dry_run_only: false,
            rollback_steps: steps.clone(),
            steps,
            runbooks,
            incidents,
            audit,
            running: Mutex::new(HashMap::new()),
            clock: quench_knowledge::clock::system(),
        }
    }

    /// The same service, its probes held to `hosts` as steps are (the
    /// names before a run, the resolved addresses and redirects on every
    /// request).
    pub fn with_hosts(self, hosts: Option<quench_connectors::hosts::HostAllowlist>) -> Self {
        ChaosService {
            http: quench_connectors::hosts::client(hosts.clone()),
            hosts,
            ..self
        }
    }

    /// The same service running its method steps through `guarded` (the
    /// executor's guards); rollbacks keep the plain runner.
    pub fn with_method_runner(self, guarded: Arc<dyn StepRunner>) -> Self {
        ChaosService {
            steps: guarded,
            ..self
        }
    }

    /// The same service under the executor's kill switch and
    /// `executor.dry_run`: paused, nothing starts but dry runs and a run
    /// stops before its next fault; with `dry_run`, every run is one.
    pub fn with_guards(self, control: quench_knowledge::Control, dry_run: bool) -> Self {
        ChaosService {
            control: Some(control),
            dry_run_only: dry_run,
            ..self
        }
    }

    fn paused(&self) -> bool {
        self.control.as_ref().is_some_and(|c| c.is_paused())
    }

    /// Every probe URL of `exp` outside the host list, in words.
    fn refused_probe(&self, exp: &Experiment) -> Option<String> {
        let f = &exp.file;
        let probes = f.steady_state.probes.iter().chain(f.abort_when.iter());
        for p in probes {
            let urls = p
                .promql
                .as_ref()
                .map(|q| q.url.as_str())
                .into_iter()
                .chain(p.http.as_ref().map(|h| h.url.as_str()));
            for url in urls {
                let checked = match &self.hosts {
                    Some(h) => h.check_url(url),
                    None => quench_connectors::hosts::check_literal(url),
                };
                if let Err(e) = checked {
                    return Some(format!("probe {:?}: {e}", p.name.value));
                }
            }
        }
        None
    }

    /// The experiments in force (loaded with the runbooks).
    pub fn experiments(&self) -> Vec<Experiment> {
        self.runbooks.current().experiments.clone()
    }

    /// Runs going on: (run, experiment).
    pub fn running(&self) -> Vec<(String, String)> {
        let r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, String)> =
            r.iter().map(|(k, (e, _))| (k.clone(), e.clone())).collect();
        v.sort();
        v
    }

    /// The store of verdicts.
    pub fn store(&self) -> &ChaosStore {
        &self.store
    }

    /// Records a chaos action. The append runs on the knowledge writer;
    /// this does not wait for it (callers are not async), and a failure is
    /// logged.
    fn audit(&self, actor: &str, action: AuditAction, target: &str, detail: String) {
        let entry = AuditEntry {
            seq: 0,
            at: self.clock.now(),
            actor: actor.to_string(),
            action,
            incident: None,
            step: None,
            target: Some(target.to_string()),
            detail,
            prev: None,
            lease_epoch: None,
        };
        let audit = self.audit.clone();
        tokio::spawn(async move {
            if let Err(e) = audit.append(entry).await {
                error!(error = %e, "chaos audit append failed");
            }
        });
    }

    /// Starts a run in the background; returns its id.
    pub fn start(
        self: &Arc<Self>,
        name: &str,
        dry_run: bool,
        actor: &str,
    ) -> Result<String, StartError> {
        let exp = self
            .experiments()
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| StartError::NotFound(name.to_string()))?;
        let dry_run = dry_run || self.dry_run_only;
        if !dry_run && self.paused() {
            return Err(StartError::Paused(name.to_string()));
        }
        if let Some(why) = self.refused_probe(&exp) {
            return Err(StartError::Refused {
                experiment: name.to_string(),
                why,
            });
        }
        let forbid = exp
            .schedule
            .as_ref()
            .is_none_or(|s| s.concurrency == quench_chaos::model::Concurrency::Forbid);
        let (tx, rx) = watch::channel(false);
        let run_id = format!(
            "{}-{}",
            self.clock.now().format("%Y%m%d%H%M%S%3f"),
            exp.name
        );
        {
            let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if forbid && !dry_run && r.values().any(|(e, _)| e == name) {
                return Err(StartError::Busy(name.to_string()));
            }
            r.insert(run_id.clone(), (exp.name.clone(), tx));
        }
        self.audit(
            actor,
            AuditAction::ChaosStart,
            &exp.name,
            format!("run {run_id}{}", if dry_run { " (dry-run)" } else { "" }),
        );
        info!(experiment = %exp.name, run = %run_id, dry_run, "chaos run started");
        let me = self.clone();
        let id = run_id.clone();
        tokio::spawn(async move {
            let paused = || me.paused();
            let env = Env {
                kube: me.kube.as_ref(),
                http: &me.http,
                steps: me.steps.as_ref(),
                rollback_steps: me.rollback_steps.as_ref(),
                ledger: &me.ledger,
                paused: &paused,
            };
            let opts = RunOptions {
                run: id.clone(),
                dry_run,
                abort: rx,
                probe_every: Duration::from_secs(2),
            };
            let verdict = run::run(&exp, &env, opts).await;
            let incidents = me.incidents_during(&verdict, &exp.name).await;
            let mut report = RunReport {
                verdict: verdict.clone(),
                title: exp.file.title.value.clone(),
                dry_run,
                incidents,
                defects: Vec::new(),
            };
            report.defects = defects(&report);
            let stored = match serde_json::to_value(&report) {
                Ok(doc) => me.store.put_run(&id, &doc).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = stored {
                error!(run = %id, error = %e, "cannot store the chaos verdict");
            }
            if verdict.rollback_failed {
                error!(experiment = %exp.name, run = %id, "a chaos rollback failed: the fault may still be in place; look now");
            }
            me.audit(
                "quench",
                AuditAction::ChaosVerdict,
                &exp.name,
                format!("run {id}: {:?}", verdict.outcome),
            );
            info!(experiment = %exp.name, run = %id, outcome = ?verdict.outcome, "chaos run ended");
            me.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
        Ok(run_id)
    }

    /// Asks a run to stop; its rollbacks run. False when no such run.
    pub fn abort(&self, run: &str, actor: &str) -> bool {
        let r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match r.get(run) {
            Some((exp, tx)) => {
                let _ = tx.send(true);
                self.audit(actor, AuditAction::ChaosAbort, exp, format!("run {run}"));
                true
            }
            None => false,
        }
    }

    /// Asks every run to stop (shutdown).
    pub fn abort_all(&self) {
        for (_, tx) in self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            let _ = tx.send(true);
        }
    }

    /// The incidents opened while a run was going on, each tagged on its
    /// timeline, with the runbook that ran and how long it took to recover.
    async fn incidents_during(
        &self,
        v: &quench_chaos::Verdict,
        experiment: &str,
    ) -> Vec<RunIncident> {
        if v.outcome == Outcome::NotRun || v.outcome == Outcome::DryRun {
            return Vec::new();
        }
        let all = self
            .incidents
            .query(quench_knowledge::IncidentFilter {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap_or_default();
        let mut out = Vec::new();
        for r in all
            .iter()
            .filter(|r| r.opened_at >= v.started_at && r.opened_at <= v.ended_at)
        {
            let detail = format!(
                "opened during chaos experiment {experiment} (run {})",
                v.run
            );
            let link = quench_knowledge::ChaosLink {
                experiment: experiment.to_string(),
                run: v.run.clone(),
            };
            let now = self.clock.now();
            let _ = self
                .incidents
                .update(&r.id, move |rec| {
                    if !rec.chaos.contains(&link) {
                        rec.chaos.push(link);
                        rec.timeline.push(quench_knowledge::TimelineEvent {
                            at: now,
                            kind: EventKind::Chaos,
                            detail,
                        });
                    }
                })
                .await;
            out.push(RunIncident {
                id: r.id.clone(),
                title: r.title.clone(),
                runbook: r.runbook.as_ref().map(|b| b.path.clone()),
                status: r.status,
                opened_at: r.opened_at,
                resolved_at: r.resolved_at,
                recovered_seconds: r
                    .resolved_at
                    .map(|t| (t - r.opened_at).num_milliseconds() as f64 / 1000.0),
                remediated_before_verdict: r.resolved_at.is_some_and(|t| t <= v.ended_at),
            });
        }
        out
    }

    /// At start-up: cleans up every fault a crashed run left behind.
    pub async fn reconcile(&self) {
        let results = match run::reconcile(self.kube.as_ref(), &self.ledger).await {
            Ok(results) => results,
            Err(e) => {
                error!(error = %e, "cannot read the chaos fault ledger: faults a crashed run applied may still be in place");
                return;
            }
        };
        if !results.is_empty() {
            warn!(
                count = results.len(),
                "chaos faults left by an earlier run were found; each was cleaned up or is reported below"
            );
        }
        for (id, result) in results {
            match result {
                Ok(()) => {
                    info!(fault = %id, "chaos fault cleaned up after a restart");
                    self.audit(
                        "quench",
                        AuditAction::ChaosReconcile,
                        &id,
                        "cleaned up after a restart".into(),
                    );
                }
                Err(e) => {
                    error!(fault = %id, error = %e, "a chaos fault could not be cleaned up; it is still in the ledger")
                }
            }
        }
    }

    /// Starts scheduled runs at their times, forever.
    pub async fn scheduler(self: Arc<Self>) {
        let mut last = self.clock.now();
        loop {
            tokio::time::sleep(Duration::from_secs(15)).await;
            let now = self.clock.now();
            for exp in self.experiments() {
                let Some(s) = &exp.schedule else { continue };
                // A run time that passed since the last look fires now.
                let Some(due) = quench_chaos::schedule::next_run(s, last) else {
                    continue;
                };
                if due > now {
                    continue;
                }
                let running = self
                    .running()
                    .iter()
                    .filter(|(_, e)| *e == exp.name)
                    .count();
                if !quench_chaos::schedule::may_start(s, running) {
                    warn!(experiment = %exp.name, "scheduled chaos run skipped: the last one is still going (concurrency: forbid)");
                    continue;
                }
                if let Err(e) = self.start(&exp.name, false, "schedule") {
                    warn!(experiment = %exp.name, error = %e, "scheduled chaos run not started");
                }
            }
            last = now;
        }
    }
}

/// A run as stored and served: the runner's verdict, and what the engine
/// knows around it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunReport {
    /// The runner's verdict.
    #[serde(flatten)]
    pub verdict: run::Verdict,
    /// The experiment's title.
    #[serde(default)]
    pub title: String,
    /// Rendered only.
    #[serde(default)]
    pub dry_run: bool,
    /// Incidents opened while it ran.
    #[serde(default)]
    pub incidents: Vec<RunIncident>,
    /// What it found wrong, in words.
    #[serde(default)]
    pub defects: Vec<String>,
}

/// An incident opened while a chaos run was going on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunIncident {
    /// The incident.
    pub id: String,
    /// Its title.
    pub title: String,
    /// The runbook that handled it (its path), if one matched.
    pub runbook: Option<String>,
    /// Its status when the verdict was written.
    pub status: quench_knowledge::IncidentStatus,
    /// When it opened.
    pub opened_at: chrono::DateTime<chrono::Utc>,
    /// When it resolved.
    pub resolved_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Opened to resolved.
    pub recovered_seconds: Option<f64>,
    /// Resolved before the verdict: the runbook coped with the fault.
    pub remediated_before_verdict: bool,
}

/// What a run found wrong, in words: probes that did not hold afterwards,
/// method steps that failed, rollbacks that failed, and incidents whose
/// runbooks did not resolve them before the verdict.
pub fn defects(r: &RunReport) -> Vec<String> {
    let v = &r.verdict;
    let mut out = Vec::new();
    for p in v.after.iter().filter(|p| !p.ok) {
        out.push(format!(
            "steady state {:?} did not hold after the experiment: {}",
            p.name, p.value
        ));
    }
    let error = |s: &run::StepResult| s.output["error"].as_str().unwrap_or("").to_string();
    for s in v.method.iter().filter(|s| !s.ok) {
        out.push(format!("method step {} failed: {}", s.id, error(s)));
    }
    for s in v.rollbacks.iter().filter(|s| !s.ok) {
        out.push(format!("rollback {} failed: {}", s.id, error(s)));
    }
    for i in r.incidents.iter().filter(|i| !i.remediated_before_verdict) {
        out.push(format!(
            "incident {} ({}) was not resolved by runbook {} before the verdict",
            i.id,
            i.title,
            i.runbook.as_deref().unwrap_or("none")
        ));
    }
    out
}

fn xml(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c if c.is_control() && c != '\n' && c != '\t' => " ".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Verdicts as JUnit XML: one test case per run, a failure unless it
/// passed (a dry run is skipped), so CI can gate a deploy on the last
/// experiments.
pub fn junit(runs: &[RunReport]) -> String {
    let failures = runs
        .iter()
        .filter(|r| !r.verdict.outcome.is_success())
        .count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"quench chaos\" tests=\"{}\" failures=\"{failures}\">\n",
        runs.len()
    );
    for r in runs.iter().map(|r| &r.verdict) {
        let name = xml(&r.experiment);
        let run = xml(&r.run);
        let seconds = (r.ended_at - r.started_at).num_milliseconds() as f64 / 1000.0;
        out.push_str(&format!(
            "  <testcase classname=\"chaos.{name}\" name=\"{run}\" time=\"{seconds:.3}\">\n"
        ));
        match r.outcome {
            run::Outcome::Passed => {}
            run::Outcome::DryRun => out.push_str("    <skipped message=\"dry-run\"/>\n"),
            other => {
                let failed: Vec<String> = r
                    .after
                    .iter()
                    .filter(|p| !p.ok)
                    .map(|p| format!("{}: {}", p.name, p.value))
                    .collect();
                let message = match &r.abort_reason {
                    Some(a) => format!("aborted: {a}"),
                    None => other.as_str().to_string(),
                };
                out.push_str(&format!(
                    "    <failure message=\"{}\">{}</failure>\n",
                    xml(&message),
                    xml(&failed.join("\n"))
                ));
            }
        }
        out.push_str("  </testcase>\n");
    }
    out.push_str("</testsuite>\n");
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defects_name_what_went_wrong() {
        let at = "2026-11-27T10:00:00Z";
        let report: RunReport = serde_json::from_value(json!({
            "experiment": "kill", "run": "r1", "outcome": "deviated",
            "started_at": at, "ended_at": at,
            "after": [{"name": "web available", "ok": false, "value": {"availableReplicas": 1}, "at": at},
                      {"name": "errors", "ok": true, "value": [0.0], "at": at}],
            "method": [{"id": "kill", "uses": "pod_kill", "ok": true, "output": {}}],
            "rollbacks": [{"id": "back", "uses": "k8s.scale", "ok": false, "output": {"error": "timed out"}}],
            "incidents": [{"id": "inc-4", "title": "WebDown", "runbook": "web.yaml", "status": "open",
                           "opened_at": at, "resolved_at": null, "recovered_seconds": null,
                           "remediated_before_verdict": false},
                          {"id": "inc-5", "title": "Ok", "runbook": "ok.yaml", "status": "resolved",
                           "opened_at": at, "resolved_at": at, "recovered_seconds": 0.0,
                           "remediated_before_verdict": true}],
        }))
        .unwrap();
        let d = defects(&report);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].contains("\"web available\" did not hold"));
        assert!(d[1].contains("rollback back failed: timed out"));
        assert!(d[2].contains("inc-4 (WebDown) was not resolved by runbook web.yaml"));
    }

    #[test]
    fn junit_has_one_case_per_run_and_fails_what_did_not_pass() {
        let at = "2026-11-27T10:00:00Z";
        let runs: Vec<RunReport> = serde_json::from_value(json!([
            {"experiment": "kill", "run": "2-kill", "outcome": "deviated",
             "started_at": at, "ended_at": "2026-11-27T10:01:30Z",
             "after": [{"name": "web <available>", "ok": false, "value": {"availableReplicas": 1}, "at": at}]},
            {"experiment": "kill", "run": "1-kill", "outcome": "passed", "started_at": at, "ended_at": at},
            {"experiment": "delay", "run": "3-delay", "outcome": "dry-run", "started_at": at, "ended_at": at},
        ]))
        .unwrap();
        let x = junit(&runs);
        assert!(x.contains("tests=\"3\" failures=\"1\""), "{x}");
        assert!(x.contains("name=\"2-kill\" time=\"90.000\""), "{x}");
        assert!(x.contains("<failure message=\"deviated\">web &lt;available&gt;: {&quot;availableReplicas&quot;:1}</failure>"), "{x}");
        assert!(x.contains("<skipped message=\"dry-run\"/>"), "{x}");
    }
}
