//! The executor: runs an incident's runbook, step by step, and wraps every
//! step in the same guards from the outside. No step implements any of
//! them itself:
//!
//! - `when` (skip), rendering in strict mode (fail);
//! - for destructive steps only: the kill switch, a still-firing check,
//!   the approval gate, the blast-radius budget, dry-run, and a lock per
//!   target so two incidents never act on the same object at once;
//! - timeout, and retries with exponential backoff and jitter;
//! - an audit entry for every action, and the step's record on the incident.
//!
//! A failed step (without `continue_on_error`) runs `on_failure` and ends
//! the run as escalated.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use quench_connectors::Alert;
use quench_connectors::steps::{Acts, Call, StepError, StepRunner, StepType};
use quench_knowledge::{
    AlertState, AuditEntry, AuditLog, Control, IncidentRecord, IncidentStatus, IncidentStore,
    StepRecord, StepState, TimelineEvent,
};
use quench_runbooks::Runbook;
use quench_runbooks::model::OnTimeout;
use quench_runbooks::runbook::Step;
use quench_runbooks::template::{Templates, context};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// How runs behave.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Destructive steps report what they would do and change nothing.
    pub dry_run: bool,
    /// At most this many destructive actions per namespace per hour.
    pub budget_per_namespace_per_hour: usize,
    /// At most this many destructive actions on one object per hour.
    pub max_actions_per_target_per_hour: usize,
    /// How long a step may take when the runbook does not say.
    pub default_timeout: Duration,
    /// How long an approval waits when the runbook does not say.
    pub default_approval_timeout: Duration,
    /// The hosts steps may contact; None: any.
    pub allowed_hosts: Option<quench_connectors::hosts::HostAllowlist>,
    /// Runs in progress at most. Past it, new incidents wait for a slot
    /// (and the pipeline with them: the alerts are safe in the log, and the
    /// lag shows in `/readyz`), so a storm cannot pile up unbounded runs.
    pub max_concurrent_runs: usize,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            dry_run: false,
            budget_per_namespace_per_hour: 10,
            max_actions_per_target_per_hour: 3,
            default_timeout: Duration::from_secs(300),
            default_approval_timeout: Duration::from_secs(900),
            allowed_hosts: None,
            max_concurrent_runs: 512,
        }
    }
}

/// A human's answer to an approval gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Approve {
        /// Who.
        by: String,
    },
    /// Do not.
    Reject {
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
}

/// Approval gates waiting for an answer, by incident and step.
#[derive(Default)]
pub struct Approvals {
    waiting: Mutex<HashMap<(String, String), oneshot::Sender<Verdict>>>,
}

impl Approvals {
    fn wait(&self, incident: &str, step: &str) -> oneshot::Receiver<Verdict> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((incident.to_string(), step.to_string()), tx);
        rx
    }

    /// Answers a waiting gate. Returns false when nothing waits there.
    pub fn answer(&self, incident: &str, step: &str, verdict: Verdict) -> bool {
        let tx = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(incident.to_string(), step.to_string()));
        tx.is_some_and(|tx| tx.send(verdict).is_ok())
    }

    /// The gates waiting now.
    pub fn pending(&self) -> Vec<(String, String)> {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

/// Runs runbooks.
pub struct Executor {
    /// Incident records.
    pub incidents: IncidentStore,
    /// The audit log.
    pub audit: AuditLog,
    /// The kill switch.
    pub control: Control,
    /// Approval gates.
    pub approvals: Arc<Approvals>,
    /// The steps.
    pub runner: Arc<dyn StepRunner>,
    /// Behaviour.
    pub config: ExecConfig,
    /// Environment variables templates may read (`env.NAME`).
    pub env: BTreeMap<String, String>,
    /// Where runs and steps are counted (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// A slot per run in progress (`max_concurrent_runs`).
    runs: Arc<tokio::sync::Semaphore>,
    budget: Mutex<HashMap<String, VecDeque<Instant>>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cooldowns: Mutex<HashMap<String, Instant>>,
    templates: Templates,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Every step ran (or was skipped).
    Completed,
    /// A step failed; `on_failure` ran and reached someone.
    Escalated,
    /// A step failed, and there was no `on_failure` or it failed too.
    Failed,
    /// A guard stopped it (resolved alert, rejected approval).
    Cancelled,
}

fn jitter(base: Duration) -> Duration {
    // Up to a quarter more, from the clock's low bits: enough to keep
    // retries of many incidents from marching in step.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

impl Executor {
    /// An executor over the given stores.
    pub fn new(
        incidents: IncidentStore,
        audit: AuditLog,
        control: Control,
        runner: Arc<dyn StepRunner>,
        config: ExecConfig,
    ) -> Executor {
        let slots = config.max_concurrent_runs.max(1);
        Executor {
            incidents,
            audit,
            control,
            approvals: Arc::new(Approvals::default()),
            runner,
            config,
            env: BTreeMap::new(),
            metrics: Arc::default(),
            runs: Arc::new(tokio::sync::Semaphore::new(slots)),
            budget: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            cooldowns: Mutex::new(HashMap::new()),
            templates: Templates::new(),
        }
    }

    /// Appends to the audit log and waits until it is fdatasync'd. An
    /// error is logged and returned: a caller about to act must not (fail
    /// closed); one recording what already happened carries on.
    async fn audit(
        &self,
        incident: &str,
        step: Option<&str>,
        target: Option<&str>,
        action: &str,
        actor: &str,
        detail: String,
    ) -> Result<(), String> {
        self.audit_as(true, incident, step, target, action, actor, detail)
            .await
    }

    /// [`Executor::audit`], durable or not: the outcome of a step that
    /// changes nothing (evidence, checks) gates nothing, so it need not wait
    /// for an fdatasync.
    #[allow(clippy::too_many_arguments)]
    async fn audit_as(
        &self,
        durable: bool,
        incident: &str,
        step: Option<&str>,
        target: Option<&str>,
        action: &str,
        actor: &str,
        detail: String,
    ) -> Result<(), String> {
        let entry = AuditEntry {
            seq: 0,
            at: Utc::now(),
            actor: actor.to_string(),
            action: action.to_string(),
            incident: Some(incident.to_string()),
            step: step.map(str::to_string),
            target: target.map(str::to_string),
            detail,
        };
        let appended = if durable {
            self.audit.append(entry).await
        } else {
            self.audit.note(entry).await
        };
        appended.map(|_| ()).map_err(|e| {
            error!(incident_id = incident, error = %e, "audit append failed");
            e.to_string()
        })
    }

    async fn record(
        &self,
        incident: &str,
        f: impl FnOnce(&mut IncidentRecord) + Send + 'static,
    ) -> Option<IncidentRecord> {
        match self
            .incidents
            .update(incident, move |r| {
                f(r);
                r.updated_at = Utc::now();
            })
            .await
        {
            Ok(r) => r.map(|(r, ())| r),
            Err(e) => {
                warn!(incident_id = incident, error = %e, "incident update failed");
                None
            }
        }
    }

    async fn set_step(
        &self,
        incident: &str,
        idx: usize,
        f: impl FnOnce(&mut StepRecord) + Send + 'static,
    ) -> Option<IncidentRecord> {
        self.record(incident, move |r| {
            if let Some(s) = r.steps.get_mut(idx) {
                f(s);
            }
        })
        .await
    }

    async fn event(&self, incident: &str, kind: &str, detail: String) {
        let kind = kind.to_string();
        self.record(incident, move |r| {
            r.timeline.push(TimelineEvent {
                at: Utc::now(),
                kind,
                detail,
            })
        })
        .await;
    }

    async fn status(&self, incident: &str, status: IncidentStatus) {
        self.record(incident, move |r| set_status(r, status)).await;
    }

    /// Starts the runbook for a new incident in its own task, unless the
    /// runbook's cooldown for this group has not passed; that is recorded
    /// on the incident instead. Waits for a run slot when
    /// `max_concurrent_runs` are going on.
    pub async fn start(
        self: &Arc<Self>,
        incident: String,
        runbook: Runbook,
        group_key: String,
        alert: Alert,
    ) {
        if let Some(cooldown) = runbook.cooldown {
            let now = Instant::now();
            let key = format!("{}\u{1f}{group_key}", runbook.name());
            let mut c = self.cooldowns.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(last) = c.get(&key)
                && now.duration_since(*last) < cooldown
            {
                let left = cooldown - now.duration_since(*last);
                drop(c);
                let me = self.clone();
                tokio::spawn(async move {
                    me.event(&incident, "cooldown", format!("{} ran for this group {}s ago; its cooldown has {}s left, so it does not run", runbook.name(), (cooldown - left).as_secs(), left.as_secs())).await;
                    let _ = me
                        .audit(
                            &incident,
                            None,
                            None,
                            "run.cooldown",
                            "quench",
                            format!("{} in cooldown", runbook.name()),
                        )
                        .await;
                });
                return;
            }
            c.insert(key, now);
        }
        let Ok(slot) = self.runs.clone().acquire_owned().await else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let end = me.run(&incident, &runbook, &alert).await;
            info!(incident_id = %incident, runbook = runbook.name(), end = ?end, "run ended");
        });
    }

    /// Runs the runbook for an incident to its end. The incident record
    /// holds every step's state, so the run can be watched (and, after a
    /// crash, told apart from a finished one).
    pub async fn run(&self, incident: &str, runbook: &Runbook, alert: &Alert) -> RunEnd {
        let records: Vec<StepRecord> = runbook
            .steps
            .iter()
            .chain(runbook.on_failure.iter())
            .map(|s| StepRecord {
                id: s.id.clone(),
                uses: s.kind.name().to_string(),
                destructive: s.kind.is_destructive(),
                state: StepState::Pending,
                attempts: 0,
                attempt_key: String::new(),
                rendered: Value::Null,
                output: Value::Null,
                reason: String::new(),
                started_at: None,
                ended_at: None,
            })
            .collect();
        let mut records = records;
        if let Some(v) = &runbook.verify {
            records.push(StepRecord {
                id: "verify".into(),
                uses: v.kind.name().to_string(),
                destructive: false,
                state: StepState::Pending,
                attempts: 0,
                attempt_key: String::new(),
                rendered: Value::Null,
                output: Value::Null,
                reason: String::new(),
                started_at: None,
                ended_at: None,
            });
        }
        // One write: the steps and the first status change together.
        self.record(incident, move |r| {
            r.steps = records;
            if !r.status.is_closed() && r.status != IncidentStatus::Diagnosing {
                r.timeline.push(TimelineEvent {
                    at: Utc::now(),
                    kind: "status".into(),
                    detail: format!("{} -> diagnosing", r.status.as_str()),
                });
                r.status = IncidentStatus::Diagnosing;
            }
        })
        .await;
        self.run_from(incident, runbook, alert, 0, serde_json::Map::new())
            .await
    }

    /// Runs the main steps from `first` on, with the outputs of the steps
    /// before it.
    async fn run_from(
        &self,
        incident: &str,
        runbook: &Runbook,
        alert: &Alert,
        first: usize,
        mut outputs: serde_json::Map<String, Value>,
    ) -> RunEnd {
        /// Counts the run as active until it ends, however it ends.
        struct Active<'a>(&'a crate::metrics::Metrics);
        impl Drop for Active<'_> {
            fn drop(&mut self) {
                self.0
                    .runs_active
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.metrics
            .runs_active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _active = Active(&self.metrics);
        let steps = &runbook.steps;
        for (idx, step) in steps.iter().enumerate().skip(first) {
            match self
                .step(incident, runbook, alert, idx, step, &mut outputs)
                .await
            {
                Ok(()) => {}
                Err(Stop::Failed(reason)) if step.continue_on_error => {
                    // Later steps can branch on it: `{{not steps.x.output.ok}}`.
                    outputs.insert(
                        step.id.clone(),
                        serde_json::json!({"ok": false, "error": reason}),
                    );
                    self.event(
                        incident,
                        "step",
                        format!("{} failed, continuing: {reason}", step.id),
                    )
                    .await;
                }
                Err(Stop::Failed(reason)) => {
                    self.event(
                        incident,
                        "escalation",
                        format!("{} failed: {reason}", step.id),
                    )
                    .await;
                    let base = steps.len();
                    let mut escalated = false;
                    for (j, f) in runbook.on_failure.iter().enumerate() {
                        escalated |= self
                            .step(incident, runbook, alert, base + j, f, &mut outputs)
                            .await
                            .is_ok();
                    }
                    self.skip_rest(incident, idx + 1, steps.len(), "an earlier step failed")
                        .await;
                    // Escalated when on_failure reached someone; failed when
                    // there was nothing to run or all of it failed too.
                    if escalated {
                        self.status(incident, IncidentStatus::Escalated).await;
                        return RunEnd::Escalated;
                    }
                    self.status(incident, IncidentStatus::Failed).await;
                    return RunEnd::Failed;
                }
                Err(Stop::Cancelled(reason)) => {
                    self.skip_rest(incident, idx + 1, steps.len(), &reason)
                        .await;
                    self.status(incident, IncidentStatus::Cancelled).await;
                    return RunEnd::Cancelled;
                }
            }
        }
        // One write: on_failure skipped, and on to verifying.
        let (from, to) = (steps.len(), steps.len() + runbook.on_failure.len());
        self.record(incident, move |r| {
            skip_pending(r, from, to, "no step failed");
            set_status(r, IncidentStatus::Verifying);
        })
        .await;
        let Some(v) = &runbook.verify else {
            return RunEnd::Completed;
        };
        let idx = steps.len() + runbook.on_failure.len();
        match self
            .verify(incident, runbook, alert, idx, v, &outputs)
            .await
        {
            Ok(()) => {
                self.status(incident, IncidentStatus::Resolved).await;
                self.record(incident, |r| {
                    r.resolved_at.get_or_insert_with(Utc::now);
                })
                .await;
                RunEnd::Completed
            }
            Err(reason) => {
                self.event(incident, "escalation", format!("not verified: {reason}"))
                    .await;
                let base = steps.len();
                let mut escalated = false;
                for (j, f) in runbook.on_failure.iter().enumerate() {
                    escalated |= self
                        .step(incident, runbook, alert, base + j, f, &mut outputs)
                        .await
                        .is_ok();
                }
                if escalated {
                    self.status(incident, IncidentStatus::Escalated).await;
                    RunEnd::Escalated
                } else {
                    self.status(incident, IncidentStatus::Failed).await;
                    RunEnd::Failed
                }
            }
        }
    }

    /// Polls the runbook's check until it succeeds or its time is up.
    async fn verify(
        &self,
        incident: &str,
        runbook: &Runbook,
        alert: &Alert,
        idx: usize,
        v: &quench_runbooks::runbook::Verify,
        outputs: &serde_json::Map<String, Value>,
    ) -> Result<(), String> {
        let (every, timeout, kind) = (v.every, v.timeout, v.kind);
        let ctx = context(alert, runbook.info(), incident, outputs, &self.env);
        let with = Value::Object(v.with.clone());
        let rendered = match self
            .templates
            .render_value(&with, &ctx, "verify.with")
            .and_then(|v| self.check_step(kind, v))
        {
            Ok((v, _)) => v,
            Err(e) => {
                let reason = e.clone();
                self.set_step(incident, idx, move |s| {
                    s.state = StepState::Failed;
                    s.reason = reason;
                })
                .await;
                return Err(e);
            }
        };
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = rendered.clone();
            self.set_step(incident, idx, move |s| {
                s.state = StepState::Running;
                s.rendered = r;
                s.attempts = attempt;
                s.started_at.get_or_insert_with(Utc::now);
            })
            .await;
            let last = match tokio::time::timeout(
                every,
                self.runner.run(
                    kind,
                    Call {
                        incident,
                        step: "verify",
                        dry_run: false,
                    },
                    &rendered,
                ),
            )
            .await
            {
                Ok(Ok(out)) => {
                    let _ = self
                        .audit_as(
                            false,
                            incident,
                            Some("verify"),
                            None,
                            "verify.passed",
                            "quench",
                            format!("after {attempt} check(s)"),
                        )
                        .await;
                    self.set_step(incident, idx, move |s| {
                        s.state = StepState::Succeeded;
                        s.output = out;
                        s.ended_at = Some(Utc::now());
                    })
                    .await;
                    return Ok(());
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("check took longer than {}s", every.as_secs_f64()),
            };
            if Instant::now() + every > deadline {
                let reason = format!(
                    "still failing after {}s ({attempt} checks): {last}",
                    timeout.as_secs()
                );
                let _ = self
                    .audit_as(
                        false,
                        incident,
                        Some("verify"),
                        None,
                        "verify.failed",
                        "quench",
                        reason.clone(),
                    )
                    .await;
                let r = reason.clone();
                self.set_step(incident, idx, move |s| {
                    s.state = StepState::Failed;
                    s.reason = r;
                    s.ended_at = Some(Utc::now());
                })
                .await;
                return Err(reason);
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn skip_rest(&self, incident: &str, from: usize, to: usize, reason: &str) {
        if from >= to {
            return;
        }
        let reason = reason.to_string();
        self.record(incident, move |r| skip_pending(r, from, to, &reason))
            .await;
    }

    /// Runs one step inside its guards, and counts it.
    async fn step(
        &self,
        incident: &str,
        runbook: &Runbook,
        alert: &Alert,
        idx: usize,
        step: &Step,
        outputs: &mut serde_json::Map<String, Value>,
    ) -> Result<(), Stop> {
        let started = Instant::now();
        let out = self
            .step_guarded(incident, runbook, alert, idx, step, outputs)
            .await;
        let state = match &out {
            Ok(()) => "succeeded",
            Err(Stop::Failed(_)) => "failed",
            Err(Stop::Cancelled(_)) => "cancelled",
        };
        self.metrics
            .observe_step(step.kind.name(), state, started.elapsed());
        out
    }

    async fn step_guarded(
        &self,
        incident: &str,
        runbook: &Runbook,
        alert: &Alert,
        idx: usize,
        step: &Step,
        outputs: &mut serde_json::Map<String, Value>,
    ) -> Result<(), Stop> {
        let (id, kind) = (step.id.as_str(), step.kind);
        let ctx = context(alert, runbook.info(), incident, outputs, &self.env);
        if let Some(when) = &step.when {
            match self.templates.eval_when(when, &ctx) {
                Ok(true) => {}
                Ok(false) => {
                    self.set_step(incident, idx, |s| {
                        s.state = StepState::Skipped;
                        s.reason = "when is false".into();
                    })
                    .await;
                    return Ok(());
                }
                Err(e) => return Err(self.fail(incident, idx, id, format!("when: {e}")).await),
            }
        }
        let with = Value::Object(step.with.clone());
        let rendered = match self
            .templates
            .render_value(&with, &ctx, &format!("{id}.with"))
            .and_then(|v| self.check_step(kind, v))
        {
            Ok(v) => v,
            Err(e) => return Err(self.fail(incident, idx, id, e).await),
        };
        let (rendered, acts) = rendered;
        let namespace = acts.namespace.clone().unwrap_or_else(|| "-".into());
        let target = acts.key();

        let _guard;
        if kind.is_destructive() {
            self.status(incident, IncidentStatus::Remediating).await;
            self.preflight(incident, idx, id, &target, "before this step")
                .await?;
            if let Some(approval) = &step.approval {
                let timeout = approval
                    .timeout
                    .unwrap_or(self.config.default_approval_timeout);
                self.set_step(incident, idx, |s| s.state = StepState::AwaitingApproval)
                    .await;
                let _ = self
                    .audit(
                        incident,
                        Some(id),
                        Some(&target),
                        "approval.requested",
                        "quench",
                        format!("waiting up to {}s", timeout.as_secs()),
                    )
                    .await;
                let rx = self.approvals.wait(incident, id);
                match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(Verdict::Approve { by })) => {
                        let _ = self
                            .audit(
                                incident,
                                Some(id),
                                Some(&target),
                                "approval.approved",
                                &by,
                                "approved".into(),
                            )
                            .await;
                        self.event(incident, "approval", format!("{id} approved by {by}"))
                            .await;
                    }
                    Ok(Ok(Verdict::Reject { by, reason })) => {
                        let _ = self
                            .audit(
                                incident,
                                Some(id),
                                Some(&target),
                                "approval.rejected",
                                &by,
                                reason.clone(),
                            )
                            .await;
                        return Err(self
                            .block(
                                incident,
                                idx,
                                id,
                                &target,
                                format!("rejected by {by}: {reason}"),
                                true,
                            )
                            .await);
                    }
                    Ok(Err(_)) | Err(_) => match approval.on_timeout {
                        OnTimeout::Proceed => {
                            let _ = self
                                .audit(
                                    incident,
                                    Some(id),
                                    Some(&target),
                                    "approval.timeout",
                                    "quench",
                                    "no answer; proceeding as the runbook says".into(),
                                )
                                .await;
                        }
                        OnTimeout::Skip => {
                            let _ = self
                                .audit(
                                    incident,
                                    Some(id),
                                    Some(&target),
                                    "approval.timeout",
                                    "quench",
                                    "no answer; skipping as the runbook says".into(),
                                )
                                .await;
                            self.set_step(incident, idx, |s| {
                                s.state = StepState::Skipped;
                                s.reason = "approval timed out".into();
                            })
                            .await;
                            return Ok(());
                        }
                        OnTimeout::Fail => {
                            let _ = self
                                .audit(
                                    incident,
                                    Some(id),
                                    Some(&target),
                                    "approval.timeout",
                                    "quench",
                                    "no answer; failing as the runbook says".into(),
                                )
                                .await;
                            return Err(self
                                .fail(incident, idx, id, "approval timed out".into())
                                .await);
                        }
                    },
                }
                // Time passed while waiting: check again.
                self.preflight(incident, idx, id, &target, "while waiting for approval")
                    .await?;
            }
            // A dry run changes nothing, so it spends nothing; it is
            // still refused where a real run would be.
            let refused = self.take_window(
                !self.config.dry_run,
                [
                    (
                        &format!("ns\u{1f}{namespace}"),
                        self.config.budget_per_namespace_per_hour,
                    ),
                    (
                        &format!("target\u{1f}{target}"),
                        self.config.max_actions_per_target_per_hour,
                    ),
                ],
            );
            match refused {
                None => {}
                Some(0) => {
                    return Err(self
                        .block(
                            incident,
                            idx,
                            id,
                            &target,
                            format!(
                                "blast-radius budget spent: {} destructive actions in namespace {namespace} within the hour",
                                self.config.budget_per_namespace_per_hour
                            ),
                            false,
                        )
                        .await);
                }
                Some(_) => {
                    return Err(self
                        .block(
                            incident,
                            idx,
                            id,
                            &target,
                            format!(
                                "rate limit: {} actions on {target} within the hour",
                                self.config.max_actions_per_target_per_hour
                            ),
                            false,
                        )
                        .await);
                }
            }
            if self.config.dry_run {
                // Kubernetes steps ask the API server (`dryRun=All`), which
                // checks everything a real call would and says what would
                // change; other steps only report their parameters.
                let (output, reason) = if kind.server_dry_run() {
                    let run = self.runner.run(
                        kind,
                        Call {
                            incident,
                            step: id,
                            dry_run: true,
                        },
                        &rendered,
                    );
                    match tokio::time::timeout(self.config.default_timeout, run).await {
                        Ok(Ok(out)) => (
                            out,
                            "dry-run: the API server checked it; nothing was changed".to_string(),
                        ),
                        Ok(Err(e)) => (
                            serde_json::json!({"ok": false, "error": e.to_string()}),
                            format!("dry-run: the API server refused it: {e}"),
                        ),
                        Err(_) => (
                            serde_json::json!({"ok": false, "error": "timed out"}),
                            "dry-run: no answer in time".to_string(),
                        ),
                    }
                } else {
                    (Value::Null, "dry-run: nothing was changed".to_string())
                };
                let _ = self
                    .audit(
                        incident,
                        Some(id),
                        Some(&target),
                        "step.dry_run",
                        "quench",
                        format!("{} would run with {rendered}: {reason}", kind.name()),
                    )
                    .await;
                self.set_step(incident, idx, move |s| {
                    s.rendered = rendered;
                    s.state = StepState::DryRun;
                    s.output = output;
                    s.reason = reason;
                    s.ended_at = Some(Utc::now());
                })
                .await;
                return Ok(());
            }
            let lock = self.lock_for(&target);
            _guard = lock.lock_owned().await;
        }

        let timeout = step.timeout.unwrap_or(self.config.default_timeout);
        let retries = step.retry.attempts;
        let mut backoff = step.retry.backoff;
        let started = Utc::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (r, key) = (rendered.clone(), format!("{incident}/{id}/{attempt}"));
            let running = move |s: &mut StepRecord| {
                s.state = StepState::Running;
                s.rendered = r;
                s.attempts = attempt;
                s.attempt_key = key;
                s.started_at.get_or_insert(started);
            };
            // A destructive step's start is durable before it acts: after a
            // crash, one recorded as running may have taken effect and is
            // not run again, one still pending did not. Evidence steps only
            // read, so running one twice after a crash is harmless, and
            // they skip the fdatasync.
            if kind.is_destructive() {
                let durable = self
                    .incidents
                    .update_durable(incident, move |rec| {
                        if let Some(s) = rec.steps.get_mut(idx) {
                            running(s);
                        }
                        rec.updated_at = Utc::now();
                    })
                    .await;
                // And so is its audit line: no action without a record.
                let audited = match durable {
                    Ok(_) => {
                        self.audit(
                            incident,
                            Some(id),
                            Some(&target),
                            "step.start",
                            "quench",
                            format!("{} attempt {attempt}", kind.name()),
                        )
                        .await
                    }
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = audited {
                    return Err(self
                        .fail(
                            incident,
                            idx,
                            id,
                            format!("cannot record the step durably before running it, so it does not run: {e}"),
                        )
                        .await);
                }
            } else {
                self.set_step(incident, idx, running).await;
            }
            info!(incident_id = incident, step = id, attempt, "step started");
            let run = self.runner.run(
                kind,
                Call {
                    incident,
                    step: id,
                    dry_run: false,
                },
                &rendered,
            );
            let result = match tokio::time::timeout(timeout, run).await {
                Ok(r) => r,
                Err(_) => Err(StepError::Failed(format!(
                    "timed out after {}s",
                    timeout.as_secs_f64()
                ))),
            };
            match result {
                Ok(output) => {
                    let _ = self
                        .audit_as(
                            kind.is_destructive(),
                            incident,
                            Some(id),
                            Some(&target),
                            "step.run",
                            "quench",
                            format!("{} succeeded (attempt {attempt})", kind.name()),
                        )
                        .await;
                    // Every output says whether the step worked, so
                    // templates can test `steps.x.output.ok` either way.
                    let mut output = output;
                    if let Value::Object(m) = &mut output {
                        m.entry("ok").or_insert(Value::Bool(true));
                    }
                    outputs.insert(id.to_string(), output.clone());
                    self.set_step(incident, idx, move |s| {
                        s.state = StepState::Succeeded;
                        s.output = output;
                        s.ended_at = Some(Utc::now());
                    })
                    .await;
                    return Ok(());
                }
                Err(e) if e.is_retryable() && attempt <= retries => {
                    let _ = self
                        .audit_as(
                            kind.is_destructive(),
                            incident,
                            Some(id),
                            Some(&target),
                            "step.retry",
                            "quench",
                            format!("attempt {attempt} failed: {e}"),
                        )
                        .await;
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = backoff.saturating_mul(2);
                }
                Err(e) => {
                    let _ = self
                        .audit_as(
                            kind.is_destructive(),
                            incident,
                            Some(id),
                            Some(&target),
                            "step.failed",
                            "quench",
                            format!("attempt {attempt}: {e}"),
                        )
                        .await;
                    return Err(self.fail(incident, idx, id, e.to_string()).await);
                }
            }
        }
    }

    /// Parses rendered parameters as the step type's: what the step acts
    /// on. Parameters that do not fit, and a URL on a host outside
    /// `allowed_hosts`, are refused before the step runs.
    fn check_step(&self, kind: StepType, rendered: Value) -> Result<(Value, Acts), String> {
        let checked = self
            .runner
            .check(kind, &rendered)
            .map_err(|e| e.to_string())?;
        if let Some(hosts) = &self.config.allowed_hosts {
            for url in &checked.urls {
                hosts.check_url(url)?;
            }
        }
        Ok((rendered, checked.target))
    }

    async fn fail(&self, incident: &str, idx: usize, id: &str, reason: String) -> Stop {
        warn!(incident_id = incident, step = id, reason = %reason, "step failed");
        let r = reason.clone();
        self.set_step(incident, idx, move |s| {
            s.state = StepState::Failed;
            s.reason = r;
            s.ended_at = Some(Utc::now());
        })
        .await;
        Stop::Failed(reason)
    }

    /// A guard refused the step. `cancel` ends the run (resolved alert,
    /// rejection); otherwise it counts as a failure and escalates.
    async fn block(
        &self,
        incident: &str,
        idx: usize,
        id: &str,
        target: &str,
        reason: String,
        cancel: bool,
    ) -> Stop {
        warn!(incident_id = incident, step = id, reason = %reason, "step blocked");
        let _ = self
            .audit(
                incident,
                Some(id),
                Some(target),
                "step.blocked",
                "quench",
                reason.clone(),
            )
            .await;
        let r = reason.clone();
        self.set_step(incident, idx, move |s| {
            s.state = StepState::Blocked;
            s.reason = r;
            s.ended_at = Some(Utc::now());
        })
        .await;
        if cancel {
            Stop::Cancelled(reason)
        } else {
            Stop::Failed(reason)
        }
    }

    /// The checks right before a destructive step acts: the kill switch,
    /// and an alert of the incident still firing. `when` says when the
    /// alert resolved, for the record.
    async fn preflight(
        &self,
        incident: &str,
        idx: usize,
        id: &str,
        target: &str,
        when: &str,
    ) -> Result<(), Stop> {
        if self.control.is_paused() {
            return Err(self
                .block(
                    incident,
                    idx,
                    id,
                    target,
                    "automation is paused (kill switch)".into(),
                    false,
                )
                .await);
        }
        if !self.still_firing(incident).await {
            return Err(self
                .block(
                    incident,
                    idx,
                    id,
                    target,
                    format!("the alert resolved {when}"),
                    true,
                )
                .await);
        }
        Ok(())
    }

    async fn still_firing(&self, incident: &str) -> bool {
        match self.incidents.fetch(incident).await {
            Ok(Some(r)) => r.alerts.iter().any(|a| a.state == AlertState::Firing),
            // Unknown state: do not act.
            _ => false,
        }
    }

    /// Takes one action from a sliding one-hour window of `limit` for
    /// `key` (a namespace's budget, a target's rate), or says no. Both are
    /// checked before either is spent, so a refusal costs nothing.
    /// Whether one more action fits both hourly windows (`None`), or the
    /// index of the one that is full. With `spend`, a fitting action is
    /// counted in both.
    fn take_window(&self, spend: bool, keys: [(&str, usize); 2]) -> Option<usize> {
        let now = Instant::now();
        let mut windows = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        for (i, (key, limit)) in keys.iter().enumerate() {
            let used = windows.entry(key.to_string()).or_default();
            while used
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(3600))
            {
                used.pop_front();
            }
            if used.len() >= *limit {
                return Some(i);
            }
        }
        if !spend {
            return None;
        }
        for (key, _) in keys {
            windows.entry(key.to_string()).or_default().push_back(now);
        }
        None
    }

    fn lock_for(&self, target: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(target.to_string())
            .or_default()
            .clone()
    }
}

enum Stop {
    Failed(String),
    Cancelled(String),
}

/// What recovery decided for one incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The run resumes at this step.
    Resumed(String),
    /// The run never started; it starts now.
    Started,
    /// Marked interrupted, for this reason.
    Interrupted(String),
}

/// Rebuilds an alert from the record an incident keeps of it. Records
/// hold the source as `Source` wrote it; one that does not parse (written
/// by hand, or by an older quench) is named in the log and read as
/// Alertmanager's, whose runbooks are the default.
fn alert_of(r: &quench_knowledge::AlertRecord) -> Alert {
    let source = r.source.parse().unwrap_or_else(|e: String| {
        warn!(fingerprint = %r.fingerprint, error = %e, "stored alert with an unknown source");
        quench_connectors::Source::Alertmanager
    });
    Alert {
        source,
        fingerprint: r.fingerprint.clone(),
        status: match r.state {
            AlertState::Firing => quench_connectors::AlertStatus::Firing,
            AlertState::Resolved => quench_connectors::AlertStatus::Resolved,
        },
        labels: r.labels.clone(),
        annotations: r.annotations.clone(),
        starts_at: r.starts_at,
        ends_at: r.ends_at,
        meta: BTreeMap::new(),
        idempotency_key: String::new(),
        raw_ref: String::new(),
    }
}

impl Executor {
    /// After a restart, every incident whose run had not finished either
    /// resumes or is marked interrupted, never forgotten:
    ///
    /// - a run that never started, starts;
    /// - a step that was pending, waiting for approval, or running but not
    ///   destructive (evidence), resumes there;
    /// - a destructive step that was running is NOT run again: it may have
    ///   taken effect, and running it twice (a scale to N+1) could do
    ///   harm. The incident is marked interrupted for a human;
    /// - so is a run whose runbook is gone, or changed since it started
    ///   (the run is pinned to its commit).
    pub async fn recover(
        self: &Arc<Self>,
        set: &quench_runbooks::RunbookSet,
        commit: Option<&str>,
    ) -> Vec<(String, Recovery)> {
        let open = match self
            .incidents
            .query(quench_knowledge::IncidentFilter {
                open_only: true,
                ..Default::default()
            })
            .await
        {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "cannot list incidents to recover");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for r in open {
            let n_main = r.steps.len();
            let in_flight = matches!(
                r.status,
                IncidentStatus::Open | IncidentStatus::Diagnosing | IncidentStatus::Remediating
            );
            if !in_flight {
                continue;
            }
            let Some(rb_ref) = &r.runbook else { continue };
            let Some(runbook) = set.by_name(&rb_ref.name) else {
                let why = format!("runbook {} is no longer loaded", rb_ref.name);
                out.push((r.id.clone(), self.interrupt(&r.id, why).await));
                continue;
            };
            if rb_ref.commit.as_deref() != commit {
                let why = format!(
                    "runbook {} changed since the run started ({} then, {} now)",
                    rb_ref.name,
                    rb_ref.commit.as_deref().unwrap_or("local"),
                    commit.unwrap_or("local")
                );
                out.push((r.id.clone(), self.interrupt(&r.id, why).await));
                continue;
            }
            let Some(first_alert) = r.alerts.first() else {
                continue;
            };
            let alert = alert_of(first_alert);
            if n_main == 0 {
                self.start(r.id.clone(), runbook.clone(), r.group_key.clone(), alert)
                    .await;
                out.push((r.id.clone(), Recovery::Started));
                continue;
            }
            let main = runbook.steps.len().min(n_main);
            let Some(k) = r.steps[..main].iter().position(unfinished) else {
                // Only on_failure steps were left: a human takes it from here.
                let why = "the engine stopped during on_failure".to_string();
                out.push((r.id.clone(), self.interrupt(&r.id, why).await));
                continue;
            };
            let s = &r.steps[k];
            if s.state == StepState::Running && s.destructive {
                let why = format!(
                    "the engine stopped while {} ({}) was running; it may have taken effect, so it is not run again",
                    s.id, s.uses
                );
                out.push((r.id.clone(), self.interrupt(&r.id, why).await));
                continue;
            }
            let outputs: serde_json::Map<String, Value> = r.steps[..k]
                .iter()
                .filter(|s| s.state == StepState::Succeeded)
                .map(|s| (s.id.clone(), s.output.clone()))
                .collect();
            let step_id = s.id.clone();
            self.event(
                &r.id,
                "resumed",
                format!("resuming at step {step_id} after a restart"),
            )
            .await;
            let _ = self
                .audit(
                    &r.id,
                    Some(&step_id),
                    None,
                    "run.resumed",
                    "quench",
                    "after a restart".into(),
                )
                .await;
            let (me, rb, id) = (self.clone(), runbook.clone(), r.id.clone());
            tokio::spawn(async move {
                let Ok(_slot) = me.runs.clone().acquire_owned().await else {
                    return;
                };
                let end = me.run_from(&id, &rb, &alert, k, outputs).await;
                info!(incident_id = %id, end = ?end, "resumed run ended");
            });
            out.push((r.id.clone(), Recovery::Resumed(step_id)));
        }
        out
    }

    /// Marks an unfinished run interrupted, for a human.
    async fn interrupt(&self, id: &str, reason: String) -> Recovery {
        let why = reason.clone();
        self.record(id, move |rec| {
            for s in rec.steps.iter_mut().filter(|s| unfinished(s)) {
                s.state = if s.state == StepState::Running {
                    StepState::Interrupted
                } else {
                    StepState::Skipped
                };
                s.reason.clone_from(&why);
            }
            rec.status = IncidentStatus::Interrupted;
            rec.timeline.push(TimelineEvent {
                at: Utc::now(),
                kind: "interrupted".into(),
                detail: why,
            });
        })
        .await;
        let _ = self
            .audit(id, None, None, "run.interrupted", "quench", reason.clone())
            .await;
        Recovery::Interrupted(reason)
    }
}

/// Moves an open incident to `status`, with a timeline event.
fn set_status(r: &mut IncidentRecord, status: IncidentStatus) {
    if !r.status.is_closed() && r.status != status {
        r.timeline.push(TimelineEvent {
            at: Utc::now(),
            kind: "status".into(),
            detail: format!("{} -> {}", r.status.as_str(), status.as_str()),
        });
        r.status = status;
    }
}

/// Marks the pending steps `from..to` skipped, saying why.
fn skip_pending(r: &mut IncidentRecord, from: usize, to: usize, reason: &str) {
    for s in r.steps.iter_mut().take(to).skip(from) {
        if s.state == StepState::Pending {
            s.state = StepState::Skipped;
            s.reason = reason.to_string();
        }
    }
}

/// A step that had not finished when the engine stopped.
fn unfinished(s: &StepRecord) -> bool {
    matches!(
        s.state,
        StepState::Pending | StepState::Running | StepState::AwaitingApproval
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use quench_connectors::steps::StepFuture;
    use quench_connectors::{AlertStatus, Source};
    use quench_knowledge::{AlertRecord, Attach, Opening};
    use serde_json::json;

    use super::*;

    /// Steps in these tests use `k8s.wait` (read-only) and
    /// `k8s.rollout_restart` (destructive); see [`runbook`] for how the
    /// fake's own parameters (`key`, `fail`, `sleep`) get past lint.
    /// Behaves as its parameters say: `sleep` seconds, then fail the first
    /// `fail` attempts (counted per `key`). Records concurrency per target.
    #[derive(Default)]
    struct Fake {
        attempts: Mutex<HashMap<String, u32>>,
        calls: AtomicUsize,
        dry_runs: AtomicUsize,
        running: Mutex<HashMap<String, usize>>,
        max_running: AtomicUsize,
    }

    /// The object a step acts on, for locks, budgets and the audit log:
    /// `namespace/name` from the rendered parameters.
    fn target_of(with: &Value) -> (String, String) {
        let ns = with["namespace"].as_str().unwrap_or("-").to_string();
        let name = ["name", "deployment", "pod", "node"]
            .iter()
            .find_map(|k| with[*k].as_str())
            .unwrap_or("-");
        (ns.clone(), format!("{ns}/{name}"))
    }

    impl StepRunner for Fake {
        /// Fake steps take fake parameters: the target is `namespace` and
        /// `name` (or `deployment`, `pod`, `node`), as the real ones read.
        fn check(
            &self,
            _step: StepType,
            with: &Value,
        ) -> Result<quench_connectors::steps::Checked, StepError> {
            let (namespace, _) = target_of(with);
            let name = ["name", "deployment", "pod", "node"]
                .iter()
                .find_map(|k| with[*k].as_str());
            Ok(quench_connectors::steps::Checked {
                target: Acts::maybe(Some(namespace.as_str()).filter(|n| *n != "-"), name),
                urls: ["url", "server"]
                    .iter()
                    .filter_map(|k| with[*k].as_str().map(str::to_string))
                    .collect(),
            })
        }

        fn run<'a>(&'a self, _step: StepType, call: Call<'a>, with: &'a Value) -> StepFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if call.dry_run {
                    self.dry_runs.fetch_add(1, Ordering::SeqCst);
                }
                let key = with["key"].as_str().unwrap_or("k").to_string();
                let target = target_of(with).1;
                {
                    let mut r = self.running.lock().unwrap();
                    let n = r.entry(target.clone()).or_default();
                    *n += 1;
                    self.max_running.fetch_max(*n, Ordering::SeqCst);
                }
                if let Some(s) = with["sleep"].as_f64() {
                    tokio::time::sleep(Duration::from_secs_f64(s)).await;
                }
                *self.running.lock().unwrap().get_mut(&target).unwrap() -= 1;
                let n = {
                    let mut a = self.attempts.lock().unwrap();
                    let n = a.entry(key).or_default();
                    *n += 1;
                    *n
                };
                if u64::from(n) <= with["fail"].as_u64().unwrap_or(0) {
                    Err(StepError::Failed(format!("fake failure {n}")))
                } else {
                    Ok(json!({"ok": true, "attempt": n}))
                }
            })
        }
    }

    struct World {
        _dir: tempfile::TempDir,
        exec: Arc<Executor>,
        fake: Arc<Fake>,
    }

    fn world(config: ExecConfig) -> World {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let fake = Arc::new(Fake::default());
        // Tests here pause tokio's clock: writes run inline (see there).
        let writer = quench_knowledge::Writer::inline(db.clone());
        let exec = Executor::new(
            IncidentStore::open(&db, writer.clone()).unwrap(),
            AuditLog::open(&db, writer.clone()).unwrap(),
            Control::open(&db, writer).unwrap(),
            fake.clone(),
            config,
        );
        World {
            _dir: dir,
            exec: Arc::new(exec),
            fake,
        }
    }

    /// Parses a runbook whose steps may carry the fake's script (`key`,
    /// `fail`, `sleep`) in `with`. Lint would refuse those names for real
    /// step types, so they are taken out before parsing and put back into
    /// the parsed steps, where only the fake reads them.
    fn runbook(yaml: &str) -> Runbook {
        const SCRIPT: [&str; 3] = ["key", "fail", "sleep"];
        let mut doc: Value = serde_saphyr::from_str(yaml).unwrap();
        let mut scripts: HashMap<String, serde_json::Map<String, Value>> = HashMap::new();
        let mut take = |slot: String, with: &mut Value| {
            if let Some(w) = with.as_object_mut() {
                let script: serde_json::Map<String, Value> = SCRIPT
                    .iter()
                    .filter_map(|k| w.remove(*k).map(|v| (k.to_string(), v)))
                    .collect();
                scripts.insert(slot, script);
            }
        };
        // `get_mut`, not indexing: indexing would add the missing keys.
        for section in ["steps", "on_failure"] {
            let steps = doc.get_mut(section).and_then(Value::as_array_mut);
            for step in steps.into_iter().flatten() {
                let id = step["id"].as_str().unwrap_or("").to_string();
                if let Some(with) = step.get_mut("with") {
                    take(format!("{section}/{id}"), with);
                }
            }
        }
        if let Some(with) = doc.get_mut("verify").and_then(|v| v.get_mut("with")) {
            take("verify".into(), with);
        }
        let text = serde_saphyr::to_string(&doc).unwrap();
        let mut rb = quench_runbooks::parse_runbook(Path::new("t.yaml"), "t.yaml", &text)
            .unwrap_or_else(|e| panic!("{e:#?}"));
        let put = |slot: String, with: &mut serde_json::Map<String, Value>| {
            if let Some(script) = scripts.get(&slot) {
                with.extend(script.clone());
            }
        };
        for s in &mut rb.steps {
            put(format!("steps/{}", s.id), &mut s.with);
        }
        for s in &mut rb.on_failure {
            put(format!("on_failure/{}", s.id), &mut s.with);
        }
        if let Some(v) = rb.verify.as_mut() {
            put("verify".into(), &mut v.with);
        }
        rb
    }

    fn alert(service: &str) -> Alert {
        Alert {
            source: Source::Alertmanager,
            fingerprint: format!("fp-{service}"),
            status: AlertStatus::Firing,
            labels: BTreeMap::from([
                ("alertname".to_string(), "X".to_string()),
                ("service".to_string(), service.to_string()),
                ("namespace".to_string(), "shop".to_string()),
            ]),
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            meta: BTreeMap::new(),
            idempotency_key: String::new(),
            raw_ref: String::new(),
        }
    }

    fn open_incident(w: &World, a: &Alert, seq: u64) -> String {
        let rec = AlertRecord {
            seq,
            source: "alertmanager".into(),
            fingerprint: a.fingerprint.clone(),
            state: AlertState::Firing,
            labels: a.labels.clone(),
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            first_received_at: Utc::now(),
            notifications: 1,
        };
        match w
            .exec
            .incidents
            .attach_blocking(
                &a.fingerprint,
                &Opening {
                    title: "t".into(),
                    ..Default::default()
                },
                rec,
                Utc::now(),
            )
            .unwrap()
        {
            Attach::Opened(r) => r.id,
            other => panic!("{other:?}"),
        }
    }

    fn steps(w: &World, id: &str) -> Vec<StepRecord> {
        w.exec.incidents.get(id).unwrap().unwrap().steps
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_exponentially() {
        let w = world(ExecConfig::default());
        let rb = runbook(
            "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: flaky\n    uses: k8s.wait\n    retries: {attempts: 3, backoff: 2s}\n    with: {fail: 2}\n",
        );
        let a = alert("a");
        let id = open_incident(&w, &a, 1);
        let t = Instant::now();
        assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
        let s = &steps(&w, &id)[0];
        assert_eq!((s.state, s.attempts), (StepState::Succeeded, 3));
        // 2 s then 4 s, each plus at most a quarter of jitter.
        let e = t.elapsed();
        assert!(
            e >= Duration::from_secs(6) && e <= Duration::from_millis(7500),
            "{e:?}"
        );
        assert_eq!(
            w.exec.incidents.get(&id).unwrap().unwrap().status,
            IncidentStatus::Verifying
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_fails_the_step_and_runs_on_failure() {
        let w = world(ExecConfig::default());
        let rb = runbook(
            "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: slow\n    uses: k8s.wait\n    timeout: 5s\n    with: {sleep: 60}\n  - id: never\n    uses: k8s.wait\non_failure:\n  - id: page\n    uses: k8s.wait\n    with: {key: page}\n",
        );
        let a = alert("a");
        let id = open_incident(&w, &a, 1);
        let t = Instant::now();
        assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Escalated);
        assert_eq!(t.elapsed(), Duration::from_secs(5));
        let s = steps(&w, &id);
        assert_eq!(s[0].state, StepState::Failed);
        assert!(
            s[0].reason.contains("timed out after 5s"),
            "{}",
            s[0].reason
        );
        assert_eq!(s[1].state, StepState::Skipped);
        assert_eq!(s[2].state, StepState::Succeeded, "on_failure ran");
        assert_eq!(
            w.exec.incidents.get(&id).unwrap().unwrap().status,
            IncidentStatus::Escalated
        );
    }

    /// A URL built from an alert label names a host outside the allowlist:
    /// the step fails before it runs, saying why.
    #[tokio::test(start_paused = true)]
    async fn a_host_outside_allowed_hosts_is_never_contacted() {
        let w = world(ExecConfig {
            allowed_hosts: Some(
                quench_connectors::hosts::HostAllowlist::parse(&["127.0.0.1".to_string()]).unwrap(),
            ),
            ..ExecConfig::default()
        });
        let rb = runbook(
            "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: scrape\n    uses: metrics.scrape\n    with: {url: 'http://{{alert.labels.instance}}/metrics'}\n",
        );
        let mut a = alert("a");
        a.labels.insert("instance".into(), "169.254.169.254".into());
        let id = open_incident(&w, &a, 1);
        assert_ne!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
        let s = &steps(&w, &id)[0];
        assert_eq!(s.state, StepState::Failed);
        assert!(
            s.reason
                .contains("host 169.254.169.254 is not in executor.allowed_hosts"),
            "{}",
            s.reason
        );
        assert_eq!(w.fake.calls.load(Ordering::SeqCst), 0);

        let mut a = alert("b");
        a.labels.insert("instance".into(), "127.0.0.1:6060".into());
        let id = open_incident(&w, &a, 2);
        assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
        assert_eq!(w.fake.calls.load(Ordering::SeqCst), 1);
    }

    const DESTRUCTIVE: &str = "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: evidence\n    uses: k8s.wait\n    with: {key: ev}\n  - id: restart\n    uses: k8s.rollout_restart\n    with: {namespace: shop, name: '{{alert.labels.service}}', key: '{{alert.labels.service}}'}\n";

    #[tokio::test(start_paused = true)]
    async fn the_kill_switch_blocks_destructive_steps_only() {
        let w = world(ExecConfig::default());
        w.exec
            .control
            .set_blocking(true, "alice", "freeze")
            .unwrap();
        let rb = runbook(DESTRUCTIVE);
        let a = alert("cart");
        let id = open_incident(&w, &a, 1);
        assert_eq!(
            w.exec.run(&id, &rb, &a).await,
            RunEnd::Failed,
            "no on_failure to escalate to"
        );
        let s = steps(&w, &id);
        assert_eq!(
            s[0].state,
            StepState::Succeeded,
            "evidence is still gathered"
        );
        assert_eq!(s[1].state, StepState::Blocked);
        assert!(s[1].reason.contains("kill switch"));
        assert_eq!(w.fake.calls.load(Ordering::SeqCst), 1);
        let audit = w.exec.audit.list(10, Some(&id)).unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.action == "step.blocked" && e.target.as_deref() == Some("shop/cart"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dry_run_reports_and_changes_nothing() {
        let w = world(ExecConfig {
            dry_run: true,
            ..Default::default()
        });
        let rb = runbook(DESTRUCTIVE);
        let a = alert("cart");
        let id = open_incident(&w, &a, 1);
        assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
        let s = steps(&w, &id);
        assert_eq!(s[1].state, StepState::DryRun);
        assert_eq!(s[1].rendered["name"], "cart");
        // A Kubernetes step is asked to dry-run itself on the server
        // (`Call::dry_run`); it answers, and nothing is marked as done.
        assert_eq!(
            w.fake.calls.load(Ordering::SeqCst),
            2,
            "the evidence step, and the restart's dry-run"
        );
        assert_eq!(
            w.fake.dry_runs.load(Ordering::SeqCst),
            1,
            "only the restart"
        );
        assert!(
            s[1].reason.contains("API server checked it"),
            "{}",
            s[1].reason
        );
        assert_eq!(s[1].output["ok"], true);
    }

    #[tokio::test(start_paused = true)]
    async fn a_resolved_alert_cancels_the_pending_destructive_step() {
        let w = world(ExecConfig::default());
        let rb = runbook(
            "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: evidence\n    uses: k8s.wait\n    with: {sleep: 30, key: ev}\n  - id: restart\n    uses: k8s.rollout_restart\n    with: {namespace: shop, name: cart}\n",
        );
        let a = alert("cart");
        let id = open_incident(&w, &a, 1);
        let exec = w.exec.clone();
        let (id2, a2) = (id.clone(), a.clone());
        let run = tokio::spawn(async move { exec.run(&id2, &rb, &a2).await });
        tokio::time::sleep(Duration::from_secs(10)).await;
        // The alert resolves while evidence is being gathered.
        w.exec
            .incidents
            .update_blocking(&id, |r| r.alerts[0].state = AlertState::Resolved)
            .unwrap();
        assert_eq!(run.await.unwrap(), RunEnd::Cancelled);
        let s = steps(&w, &id);
        assert_eq!(s[1].state, StepState::Blocked);
        assert!(s[1].reason.contains("resolved"));
        assert_eq!(w.fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn approvals_approve_reject_and_time_out() {
        let gate = |on_timeout: &str| {
            format!(
                "version: 1\nname: r\nmatch: {{}}\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    approval: {{required: true, timeout: 15m, on_timeout: {on_timeout}}}\n    with: {{namespace: shop, name: cart}}\n"
            )
        };
        // approve
        let w = world(ExecConfig::default());
        let a = alert("cart");
        let id = open_incident(&w, &a, 1);
        let rb = runbook(&gate("fail"));
        let (exec, id2, a2) = (w.exec.clone(), id.clone(), a.clone());
        let run = tokio::spawn(async move { exec.run(&id2, &rb, &a2).await });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(steps(&w, &id)[0].state, StepState::AwaitingApproval);
        assert_eq!(
            w.exec.approvals.pending(),
            [(id.clone(), "restart".to_string())]
        );
        assert!(
            w.exec
                .approvals
                .answer(&id, "restart", Verdict::Approve { by: "alice".into() })
        );
        assert_eq!(run.await.unwrap(), RunEnd::Completed);
        assert_eq!(steps(&w, &id)[0].state, StepState::Succeeded);
        let audit = w.exec.audit.list(20, Some(&id)).unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.action == "approval.approved" && e.actor == "alice")
        );

        // reject
        let w = world(ExecConfig::default());
        let id = open_incident(&w, &a, 1);
        let rb = runbook(&gate("fail"));
        let (exec, id2, a2) = (w.exec.clone(), id.clone(), a.clone());
        let run = tokio::spawn(async move { exec.run(&id2, &rb, &a2).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.exec.approvals.answer(
            &id,
            "restart",
            Verdict::Reject {
                by: "bob".into(),
                reason: "not now".into(),
            },
        );
        assert_eq!(run.await.unwrap(), RunEnd::Cancelled);
        assert!(
            steps(&w, &id)[0]
                .reason
                .contains("rejected by bob: not now")
        );
        assert_eq!(w.fake.calls.load(Ordering::SeqCst), 0);

        // time out: fail, skip, proceed
        for (policy, state, end) in [
            ("fail", StepState::Failed, RunEnd::Failed),
            ("skip", StepState::Skipped, RunEnd::Completed),
            ("proceed", StepState::Succeeded, RunEnd::Completed),
        ] {
            let w = world(ExecConfig::default());
            let id = open_incident(&w, &a, 1);
            let t = Instant::now();
            assert_eq!(
                w.exec.run(&id, &runbook(&gate(policy)), &a).await,
                end,
                "{policy}"
            );
            assert!(t.elapsed() >= Duration::from_secs(900), "{policy}");
            assert_eq!(steps(&w, &id)[0].state, state, "{policy}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn two_incidents_on_one_deployment_are_serialised() {
        let w = world(ExecConfig::default());
        let rb = Arc::new(runbook(
            "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    with: {namespace: shop, name: cart, sleep: 10, key: '{{alert.labels.service}}'}\n",
        ));
        let mut runs = Vec::new();
        for svc in ["one", "two"] {
            let a = alert(svc);
            let id = open_incident(&w, &a, 1);
            let (exec, rb) = (w.exec.clone(), rb.clone());
            runs.push(tokio::spawn(async move { exec.run(&id, &rb, &a).await }));
        }
        let t = Instant::now();
        for r in runs {
            assert_eq!(r.await.unwrap(), RunEnd::Completed);
        }
        assert_eq!(
            w.fake.max_running.load(Ordering::SeqCst),
            1,
            "never two at once on shop/cart"
        );
        assert_eq!(t.elapsed(), Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_stops_the_next_destructive_action_and_escalates() {
        let w = world(ExecConfig {
            budget_per_namespace_per_hour: 2,
            ..Default::default()
        });
        let rb = runbook(&format!(
            "{DESTRUCTIVE}on_failure:\n  - id: page\n    uses: k8s.wait\n    with: {{key: page}}\n"
        ));
        let mut ends = Vec::new();
        for (i, svc) in ["a", "b", "c"].iter().enumerate() {
            let a = alert(svc);
            let id = open_incident(&w, &a, i as u64 + 1);
            ends.push((id.clone(), w.exec.run(&id, &rb, &a).await));
        }
        assert_eq!(ends[0].1, RunEnd::Completed);
        assert_eq!(ends[1].1, RunEnd::Completed);
        assert_eq!(ends[2].1, RunEnd::Escalated);
        let s = steps(&w, &ends[2].0);
        assert!(
            s[1].reason.contains("blast-radius budget"),
            "{}",
            s[1].reason
        );
        // An hour later the budget is back.
        tokio::time::sleep(Duration::from_secs(3601)).await;
        let a = alert("d");
        let id = open_incident(&w, &a, 9);
        assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
    }

    #[tokio::test(start_paused = true)]
    async fn when_and_strict_rendering() {
        let w = world(ExecConfig::default());
        let rb = runbook(
            "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: first\n    uses: k8s.wait\n    with: {key: first}\n  - id: only_if_failed\n    uses: k8s.wait\n    when: '{{not steps.first.output.ok}}'\n  - id: missing\n    uses: k8s.wait\n    with: {pod: '{{alert.labels.pod}}'}\n",
        );
        let a = alert("a");
        let id = open_incident(&w, &a, 1);
        assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Failed);
        let s = steps(&w, &id);
        assert_eq!(s[0].state, StepState::Succeeded);
        assert_eq!(
            (s[1].state, s[1].reason.as_str()),
            (StepState::Skipped, "when is false")
        );
        assert_eq!(s[2].state, StepState::Failed);
        assert!(
            s[2].reason.contains("alert.labels.pod is not defined"),
            "{}",
            s[2].reason
        );
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_resumes_evidence_and_interrupts_a_running_destructive_step() {
        let w = world(ExecConfig::default());
        let rb = runbook(DESTRUCTIVE);
        let set = quench_runbooks::RunbookSet {
            runbooks: vec![rb.clone()],
            ..Default::default()
        };
        let running = |idx: usize| {
            let mut records: Vec<StepRecord> = rb
                .steps
                .iter()
                .map(|s| StepRecord {
                    id: s.id.clone(),
                    uses: s.kind.name().to_string(),
                    destructive: s.kind.is_destructive(),
                    state: StepState::Pending,
                    attempts: 0,
                    attempt_key: String::new(),
                    rendered: Value::Null,
                    output: Value::Null,
                    reason: String::new(),
                    started_at: None,
                    ended_at: None,
                })
                .collect();
            for r in records.iter_mut().take(idx) {
                r.state = StepState::Succeeded;
                r.output = json!({"ok": true});
            }
            records[idx].state = StepState::Running;
            records[idx].attempts = 1;
            records
        };
        let with_runbook = |w: &World, id: &str, steps: Vec<StepRecord>, commit: Option<&str>| {
            let commit = commit.map(str::to_string);
            w.exec
                .incidents
                .update_blocking(id, move |r| {
                    r.steps = steps;
                    r.status = IncidentStatus::Remediating;
                    r.runbook = Some(quench_knowledge::RunbookRef {
                        name: "r".into(),
                        path: "t.yaml".into(),
                        commit,
                    });
                })
                .unwrap();
        };
        // The engine died during the destructive restart.
        let a = alert("cart");
        let destructive = open_incident(&w, &a, 1);
        with_runbook(&w, &destructive, running(1), None);
        // ... and during the evidence step of another incident.
        let b = alert("shelf");
        let evidence = open_incident(&w, &b, 2);
        with_runbook(&w, &evidence, running(0), None);
        // ... and a third ran a runbook from another commit.
        let c = alert("till");
        let moved = open_incident(&w, &c, 3);
        with_runbook(&w, &moved, running(0), Some("abc123"));

        let got = w.exec.recover(&set, None).await;
        assert_eq!(got.len(), 3);
        assert!(
            got.contains(&(evidence.clone(), Recovery::Resumed("evidence".into()))),
            "{got:?}"
        );
        let get = |id: &str| w.exec.incidents.get(id).unwrap().unwrap();
        let d = get(&destructive);
        assert_eq!(d.status, IncidentStatus::Interrupted);
        assert_eq!(d.steps[1].state, StepState::Interrupted);
        assert!(
            d.steps[1].reason.contains("not run again"),
            "{}",
            d.steps[1].reason
        );
        assert!(
            get(&moved)
                .timeline
                .iter()
                .any(|e| e.detail.contains("changed since the run started"))
        );
        // The evidence run resumes and finishes; the destructive step of the
        // first incident never ran.
        for _ in 0..100 {
            if get(&evidence).status == IncidentStatus::Verifying {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let e = get(&evidence);
        assert_eq!(e.status, IncidentStatus::Verifying, "{:#?}", e.steps);
        assert_eq!(e.steps[1].state, StepState::Succeeded);
        assert_eq!(
            w.fake.attempts.lock().unwrap().get("cart"),
            None,
            "the interrupted restart did not run again"
        );
        let audit = w.exec.audit.list(50, None).unwrap();
        assert!(audit.iter().any(|x| x.action == "run.interrupted"));
        assert!(audit.iter().any(|x| x.action == "run.resumed"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cooldown_keeps_the_runbook_from_running_again_for_the_group() {
        let w = world(ExecConfig::default());
        let rb = runbook(
            "version: 1\nname: r\nmatch: {}\ncooldown: 30m\nsteps:\n  - id: s\n    uses: k8s.wait\n    with: {key: s}\n",
        );
        let a = alert("a");
        let first = open_incident(&w, &a, 1);
        w.exec
            .start(first.clone(), rb.clone(), "g".into(), a.clone())
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(w.fake.calls.load(Ordering::SeqCst), 1);
        // Ten minutes later the same group opens again: no run, a note.
        tokio::time::sleep(Duration::from_secs(600)).await;
        let b = alert("b");
        let second = open_incident(&w, &b, 2);
        w.exec
            .start(second.clone(), rb.clone(), "g".into(), b.clone())
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(w.fake.calls.load(Ordering::SeqCst), 1);
        let r = w.exec.incidents.get(&second).unwrap().unwrap();
        assert!(
            r.timeline
                .iter()
                .any(|e| e.kind == "cooldown" && e.detail.contains("s left")),
            "{:#?}",
            r.timeline
        );
        // Another group is not held back.
        let c = alert("c");
        let third = open_incident(&w, &c, 3);
        w.exec.start(third, rb.clone(), "other".into(), c).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(w.fake.calls.load(Ordering::SeqCst), 2);
        // After the cooldown, the group runs again.
        tokio::time::sleep(Duration::from_secs(1800)).await;
        let d = alert("d");
        let fourth = open_incident(&w, &d, 4);
        w.exec.start(fourth, rb, "g".into(), d).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(w.fake.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn one_target_is_rate_limited_before_the_namespace_budget() {
        let w = world(ExecConfig {
            max_actions_per_target_per_hour: 1,
            ..Default::default()
        });
        let rb = runbook(
            "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    with: {namespace: shop, name: cart}\n",
        );
        let a = alert("a");
        let first = open_incident(&w, &a, 1);
        assert_eq!(w.exec.run(&first, &rb, &a).await, RunEnd::Completed);
        let b = alert("b");
        let second = open_incident(&w, &b, 2);
        assert_eq!(w.exec.run(&second, &rb, &b).await, RunEnd::Failed);
        assert!(
            steps(&w, &second)[0]
                .reason
                .contains("rate limit: 1 actions on shop/cart")
        );
        // The refusal spent nothing: another target in the namespace runs.
        let other = runbook(
            "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    with: {namespace: shop, name: till}\n",
        );
        let c = alert("c");
        let third = open_incident(&w, &c, 3);
        assert_eq!(w.exec.run(&third, &other, &c).await, RunEnd::Completed);
    }

    #[tokio::test(start_paused = true)]
    async fn dry_runs_spend_neither_the_budget_nor_the_rate_limit() {
        let w = world(ExecConfig {
            dry_run: true,
            max_actions_per_target_per_hour: 2,
            budget_per_namespace_per_hour: 2,
            ..Default::default()
        });
        let rb = runbook(
            "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    with: {namespace: shop, name: cart}\n",
        );
        for n in 1..=5 {
            let a = alert(&format!("a{n}"));
            let id = open_incident(&w, &a, n);
            assert_eq!(
                w.exec.run(&id, &rb, &a).await,
                RunEnd::Completed,
                "dry run {n}"
            );
            assert_eq!(steps(&w, &id)[0].state, StepState::DryRun, "dry run {n}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn verify_polls_until_the_fix_shows_or_time_runs_out() {
        // Fails twice, then holds: resolved after the third check, 20 s in.
        let w = world(ExecConfig::default());
        let rb = runbook(
            "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: fix\n    uses: k8s.wait\n    with: {key: fix}\nverify:\n  uses: k8s.wait\n  every: 10s\n  timeout: 1m\n  with: {key: check, fail: 2}\n",
        );
        let a = alert("a");
        let id = open_incident(&w, &a, 1);
        let t = Instant::now();
        assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
        assert_eq!(t.elapsed(), Duration::from_secs(20));
        let r = w.exec.incidents.get(&id).unwrap().unwrap();
        assert_eq!(r.status, IncidentStatus::Resolved);
        let v = r.steps.last().unwrap();
        assert_eq!(
            (v.id.as_str(), v.state, v.attempts),
            ("verify", StepState::Succeeded, 3)
        );

        // Never holds: on_failure after the timeout.
        let w = world(ExecConfig::default());
        let rb = runbook(
            "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: fix\n    uses: k8s.wait\n    with: {key: fix}\non_failure:\n  - id: page\n    uses: k8s.wait\n    with: {key: page}\nverify:\n  uses: k8s.wait\n  every: 10s\n  timeout: 1m\n  with: {key: check, fail: 100}\n",
        );
        let id = open_incident(&w, &a, 1);
        assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Escalated);
        let r = w.exec.incidents.get(&id).unwrap().unwrap();
        let v = r.steps.last().unwrap();
        assert_eq!(v.state, StepState::Failed);
        assert!(v.reason.contains("still failing after 60s"), "{}", v.reason);
        assert_eq!(r.steps[1].state, StepState::Succeeded, "on_failure ran");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_step_that_continues_leaves_ok_false_for_later_steps() {
        let w = world(ExecConfig::default());
        let rb = runbook(
            "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: check\n    uses: k8s.wait\n    continue_on_error: true\n    with: {key: check, fail: 9}\n  - id: fallback\n    uses: k8s.wait\n    when: '{{not steps.check.output.ok}}'\n    with: {key: fallback}\n  - id: skipped_when_fine\n    uses: k8s.wait\n    when: '{{not steps.fallback.output.ok}}'\n",
        );
        let a = alert("a");
        let id = open_incident(&w, &a, 1);
        assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
        let s = steps(&w, &id);
        assert_eq!(s[0].state, StepState::Failed);
        assert_eq!(s[1].state, StepState::Succeeded, "ran because check failed");
        assert_eq!(s[2].state, StepState::Skipped, "fallback.output.ok is true");
    }
}
