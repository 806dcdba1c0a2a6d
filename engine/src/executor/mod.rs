//! The executor: runs an incident's runbook, step by step, and puts every
//! step through the same guards from the outside. No step implements any
//! of them itself. By file:
//!
//! - `guards.rs`: the ordered list every step passes (`when`, strict
//!   rendering and the host allowlist; for destructive steps only the kill
//!   switch and a still-firing check, the approval gate, the blast-radius
//!   budget and rate limit, dry-run, and a lock per target so two
//!   incidents never act on the same object at once);
//! - `approval.rs`: the approval gate and the answers to it;
//! - `attempt.rs`: the durable start of a destructive step, timeout, and
//!   retries with exponential backoff and jitter;
//! - `verify.rs`: the runbook's check, polled;
//! - `recovery.rs`: what happens to unfinished runs after a restart;
//! - here: the run itself, the step records and the audit entries.
//!
//! A failed step (without `continue_on_error`) runs `on_failure` and ends
//! the run as escalated.

use quench_knowledge::{AuditAction, EventKind, RunOutcome, RunResult, StoreError};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use quench_connectors::Alert;
use quench_connectors::steps::StepRunner;
use quench_knowledge::{
    AuditEntry, AuditLog, Control, IncidentRecord, IncidentStatus, IncidentStore, StepRecord,
    StepState, TimelineEvent,
};
use quench_runbooks::Runbook;
use quench_runbooks::runbook::Step;
use quench_runbooks::template::Templates;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{error, info, warn};

mod approval;
mod attempt;
mod guards;
mod recovery;
#[cfg(test)]
mod tests;
mod verify;

pub use approval::{Approvals, Verdict};
pub use recovery::Recovery;
pub(crate) use recovery::alert_of;

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
    /// What steps take from the configuration (`prometheus.url`).
    pub step_defaults: quench_connectors::steps::StepDefaults,
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
            step_defaults: Default::default(),
        }
    }
}

/// The per-key maps (cooldowns, budgets, locks) drop what no longer
/// matters once they hold this many keys: the keys come from alert labels.
pub(crate) const PRUNE_ABOVE: usize = 1024;

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
    /// The wall clock for every timestamp the run writes.
    pub clock: Arc<dyn quench_knowledge::Clock>,
    /// A slot per run in progress (`max_concurrent_runs`).
    runs: Arc<tokio::sync::Semaphore>,
    budget: Mutex<HashMap<String, VecDeque<Instant>>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When each runbook last ran for a group, and its cooldown.
    cooldowns: Mutex<HashMap<String, (Instant, Duration)>>,
    templates: Templates,
    /// With high availability: the Lease this replica acts under (fencing
    /// and the epoch every audit entry records).
    pub ha: Option<Arc<crate::ha::Ha>>,
    /// With high availability: the standby's acknowledgements, waited for
    /// before a destructive step acts.
    pub replication: Option<Arc<crate::replication::Replication>>,
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
            clock: quench_knowledge::clock::system(),
            runs: Arc::new(tokio::sync::Semaphore::new(slots)),
            budget: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            cooldowns: Mutex::new(HashMap::new()),
            templates: Templates::new(),
            ha: None,
            replication: None,
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
        action: AuditAction,
        actor: &str,
        detail: String,
    ) -> Result<(), StoreError> {
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
        action: AuditAction,
        actor: &str,
        detail: String,
    ) -> Result<(), StoreError> {
        let entry = AuditEntry {
            seq: 0,
            at: self.clock.now(),
            actor: actor.to_string(),
            action,
            incident: Some(incident.to_string()),
            step: step.map(str::to_string),
            target: target.map(str::to_string),
            detail,
            prev: None,
            lease_epoch: self.ha.as_ref().map(|h| h.epoch()),
        };
        let appended = if durable {
            self.audit.append(entry).await
        } else {
            self.audit.note(entry).await
        };
        appended.map(|_| ()).inspect_err(|e| {
            error!(incident_id = incident, error = %e, "audit append failed");
        })
    }

    async fn record(
        &self,
        incident: &str,
        f: impl FnOnce(&mut IncidentRecord) + Send + 'static,
    ) -> Option<IncidentRecord> {
        let clock = self.clock.clone();
        match self
            .incidents
            .update(incident, move |r| {
                f(r);
                r.updated_at = clock.now();
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

    async fn event(&self, incident: &str, kind: EventKind, detail: String) {
        let clock = self.clock.clone();
        self.record(incident, move |r| {
            r.timeline.push(TimelineEvent {
                at: clock.now(),
                kind,
                detail,
            })
        })
        .await;
    }

    async fn status(&self, incident: &str, status: IncidentStatus) {
        let now = self.clock.now();
        self.record(incident, move |r| set_status(r, status, now))
            .await;
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
            if let Some((last, _)) = c.get(&key)
                && now.duration_since(*last) < cooldown
            {
                let left = cooldown - now.duration_since(*last);
                drop(c);
                let me = self.clone();
                tokio::spawn(async move {
                    me.event(&incident, EventKind::Cooldown, format!("{} ran for this group {}s ago; its cooldown has {}s left, so it does not run", runbook.name(), (cooldown - left).as_secs(), left.as_secs())).await;
                    let _ = me
                        .audit(
                            &incident,
                            None,
                            None,
                            AuditAction::RunCooldown,
                            "quench",
                            format!("{} in cooldown", runbook.name()),
                        )
                        .await;
                });
                return;
            }
            // Group keys come from alert labels: forget the cooldowns that
            // are over, so whoever sends alerts cannot grow this forever.
            if c.len() >= PRUNE_ABOVE {
                c.retain(|_, (at, d)| now.duration_since(*at) < *d);
            }
            c.insert(key, (now, cooldown));
        }
        self.spawn_run(incident, runbook, alert).await;
    }

    /// Runs `runbook` again for an open incident, now, whatever its
    /// cooldown says (a human asked). Waits for a run slot.
    pub async fn rerun(self: &Arc<Self>, incident: String, runbook: Runbook, alert: Alert) {
        self.spawn_run(incident, runbook, alert).await;
    }

    /// Takes a run slot (waiting while `max_concurrent_runs` go on) and
    /// runs in a task of its own.
    async fn spawn_run(self: &Arc<Self>, incident: String, runbook: Runbook, alert: Alert) {
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
        let mut records: Vec<StepRecord> = runbook
            .steps
            .iter()
            .chain(runbook.on_failure.iter())
            .map(|s| StepRecord::pending(&s.id, s.kind.name(), s.kind.is_destructive()))
            .collect();
        if let Some(v) = &runbook.verify {
            records.push(StepRecord::pending("verify", v.kind.name(), false));
        }
        // One write: the steps and the first status change together.
        let clock = self.clock.clone();
        self.record(incident, move |r| {
            r.steps = records;
            // A run is going on: the last one's end no longer holds.
            r.run = None;
            if !r.status.is_closed() && r.status != IncidentStatus::Diagnosing {
                r.timeline.push(TimelineEvent {
                    at: clock.now(),
                    kind: EventKind::Status,
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
        // Steps that failed and let the run go on, and whether one of
        // them is the last step that ran: a failure no later step made up
        // for (a triage run whose every step failed, say).
        let mut continued: Vec<String> = Vec::new();
        let mut ended_on_failure = false;
        for (idx, step) in steps.iter().enumerate().skip(first) {
            match self
                .step(incident, runbook, alert, idx, step, &mut outputs)
                .await
            {
                Ok(()) => {
                    // A step that ran leaves its output; one its `when`
                    // skipped (or a dry run) leaves none.
                    if outputs.contains_key(&step.id) {
                        ended_on_failure = false;
                    }
                }
                Err(Stop::Failed(reason)) if step.continue_on_error => {
                    // Later steps can branch on it: `{{not steps.x.output.ok}}`.
                    outputs.insert(
                        step.id.clone(),
                        serde_json::json!({"ok": false, "error": reason}),
                    );
                    self.event(
                        incident,
                        EventKind::Step,
                        format!("{} failed, continuing: {reason}", step.id),
                    )
                    .await;
                    continued.push(step.id.clone());
                    ended_on_failure = true;
                }
                Err(Stop::Failed(reason)) => {
                    let why = format!("{} failed: {reason}", step.id);
                    self.event(incident, EventKind::Step, why.clone()).await;
                    let escalated = self
                        .on_failure(incident, runbook, alert, &mut outputs)
                        .await;
                    self.skip_rest(incident, idx + 1, steps.len(), "an earlier step failed")
                        .await;
                    return self.failed(incident, escalated, why).await;
                }
                Err(Stop::Cancelled(reason)) => {
                    self.skip_rest(incident, idx + 1, steps.len(), &reason)
                        .await;
                    self.finish(
                        incident,
                        RunOutcome::Cancelled,
                        IncidentStatus::Cancelled,
                        reason,
                    )
                    .await;
                    return RunEnd::Cancelled;
                }
            }
        }
        // One write: on_failure skipped, and on to verifying when there is
        // something to verify.
        let (from, to) = (steps.len(), steps.len() + runbook.on_failure.len());
        let now = self.clock.now();
        let verifying = runbook.verify.is_some();
        self.record(incident, move |r| {
            skip_pending(r, from, to, "no step failed");
            if verifying {
                set_status(r, IncidentStatus::Verifying, now);
            }
        })
        .await;
        let Some(v) = &runbook.verify else {
            // Nothing to verify: the run is over. The incident stays open
            // until its alerts resolve.
            let failed = continued.join(", ");
            if ended_on_failure {
                let why = format!("{failed} failed, and no later step succeeded");
                self.finish(incident, RunOutcome::Failed, IncidentStatus::Failed, why)
                    .await;
                return RunEnd::Failed;
            }
            let detail = if continued.is_empty() {
                String::new()
            } else {
                format!("{failed} failed; a later step succeeded")
            };
            self.finish(
                incident,
                RunOutcome::Succeeded,
                IncidentStatus::Open,
                detail,
            )
            .await;
            return RunEnd::Completed;
        };
        let idx = steps.len() + runbook.on_failure.len();
        match self
            .verify(incident, runbook, alert, idx, v, &outputs)
            .await
        {
            Ok(()) => {
                let now = self.clock.now();
                self.record(incident, move |r| {
                    r.resolved_at.get_or_insert(now);
                })
                .await;
                self.finish(
                    incident,
                    RunOutcome::Succeeded,
                    IncidentStatus::Resolved,
                    "verified".into(),
                )
                .await;
                RunEnd::Completed
            }
            Err(reason) => {
                let why = format!("not verified: {reason}");
                self.event(incident, EventKind::Step, why.clone()).await;
                let escalated = self
                    .on_failure(incident, runbook, alert, &mut outputs)
                    .await;
                self.failed(incident, escalated, why).await
            }
        }
    }

    /// Runs `on_failure`; true when any of it reached someone (ran
    /// without failing).
    async fn on_failure(
        &self,
        incident: &str,
        runbook: &Runbook,
        alert: &Alert,
        outputs: &mut serde_json::Map<String, Value>,
    ) -> bool {
        let base = runbook.steps.len();
        let mut escalated = false;
        for (j, f) in runbook.on_failure.iter().enumerate() {
            escalated |= self
                .step(incident, runbook, alert, base + j, f, outputs)
                .await
                .is_ok();
        }
        if escalated {
            self.event(
                incident,
                EventKind::Escalation,
                "on_failure reached someone".into(),
            )
            .await;
        }
        escalated
    }

    /// The run failed: escalated when `on_failure` reached someone, failed
    /// when there was nothing to run or all of it failed too.
    async fn failed(&self, incident: &str, escalated: bool, why: String) -> RunEnd {
        if escalated {
            self.finish(
                incident,
                RunOutcome::Escalated,
                IncidentStatus::Escalated,
                why,
            )
            .await;
            RunEnd::Escalated
        } else {
            self.finish(incident, RunOutcome::Failed, IncidentStatus::Failed, why)
                .await;
            RunEnd::Failed
        }
    }

    /// Records how the run ended, and the incident's status after it, in
    /// one write. A run whose destructive steps were only reported
    /// (`executor.dry_run`) ended as a dry run, not a success.
    async fn finish(
        &self,
        incident: &str,
        outcome: RunOutcome,
        status: IncidentStatus,
        detail: String,
    ) {
        let now = self.clock.now();
        self.record(incident, move |r| {
            let dry = r.steps.iter().any(|s| s.state == StepState::DryRun);
            let outcome = match outcome {
                RunOutcome::Succeeded if dry => RunOutcome::DryRun,
                o => o,
            };
            r.run = Some(RunResult {
                outcome,
                at: now,
                detail,
            });
            set_status(r, status, now);
        })
        .await;
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

    /// Runs one step through [`guards::GUARDS`], in order, then its
    /// attempts.
    async fn step_guarded(
        &self,
        incident: &str,
        runbook: &Runbook,
        alert: &Alert,
        idx: usize,
        step: &Step,
        outputs: &mut serde_json::Map<String, Value>,
    ) -> Result<(), Stop> {
        let mut p = guards::Pending::new(self, incident, runbook, alert, idx, step, outputs);
        for g in guards::GUARDS {
            if let guards::Flow::Done(end) = self.guard(g, &mut p).await {
                return end;
            }
        }
        self.attempt(&p, outputs).await
    }
}

enum Stop {
    Failed(String),
    Cancelled(String),
}

/// Moves an open incident to `status`, with a timeline event.
fn set_status(r: &mut IncidentRecord, status: IncidentStatus, now: chrono::DateTime<Utc>) {
    if !r.status.is_closed() && r.status != status {
        r.timeline.push(TimelineEvent {
            at: now,
            kind: EventKind::Status,
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

/// The executor's guards around steps that run outside a runbook (chaos
/// experiments' method and rollback steps): a destructive step is refused
/// while the kill switch is on, only reported under `executor.dry_run`,
/// spends the namespace's budget and the target's rate like any runbook
/// step, holds the target's lock, and is audited durably before it runs.
pub struct Guarded {
    exec: Arc<Executor>,
    /// Who the audit log names (`chaos`).
    actor: &'static str,
}

impl Guarded {
    /// `exec`'s guards around its own step runner.
    pub fn new(exec: Arc<Executor>, actor: &'static str) -> Guarded {
        Guarded { exec, actor }
    }
}

impl quench_connectors::steps::StepRunner for Guarded {
    fn run<'a>(
        &'a self,
        step: quench_connectors::steps::StepType,
        call: quench_connectors::steps::Call<'a>,
        with: &'a Value,
    ) -> quench_connectors::steps::StepFuture<'a> {
        use quench_connectors::steps::StepError;
        Box::pin(async move {
            let exec = &self.exec;
            if !step.is_destructive() {
                return exec.runner.run(step, call, with).await;
            }
            let checked = exec.runner.check(step, with)?;
            let target = checked.target.key();
            let namespace = checked
                .target
                .namespace
                .clone()
                .unwrap_or_else(|| "-".into());
            if exec.control.is_paused() {
                return Err(StepError::Refused(format!(
                    "{step} on {target}: the kill switch is on (quench pause)"
                )));
            }
            if exec.config.dry_run {
                return Ok(serde_json::json!({
                    "dry_run": true,
                    "would_run": step.name(),
                    "target": target,
                }));
            }
            let refused = exec.take_window(
                true,
                [
                    (
                        &format!("ns\u{1f}{namespace}"),
                        exec.config.budget_per_namespace_per_hour,
                    ),
                    (
                        &format!("target\u{1f}{target}"),
                        exec.config.max_actions_per_target_per_hour,
                    ),
                ],
            );
            if let Some(which) = refused {
                return Err(StepError::Refused(if which == 0 {
                    format!("blast-radius budget spent in namespace {namespace} within the hour")
                } else {
                    format!("rate limit: too many actions on {target} within the hour")
                }));
            }
            let entry = AuditEntry {
                seq: 0,
                at: exec.clock.now(),
                actor: self.actor.to_string(),
                action: AuditAction::StepStart,
                incident: None,
                step: Some(call.step.to_string()),
                target: Some(target.clone()),
                detail: format!("{step} for a chaos experiment"),
                prev: None,
                lease_epoch: None,
            };
            exec.audit
                .append(entry)
                .await
                .map_err(|e| StepError::Failed(format!("not audited, so not run: {e}")))?;
            let lock = exec.lock_for(&target);
            let _held = lock.lock().await;
            exec.runner.run(step, call, with).await
        })
    }

    fn check(
        &self,
        step: quench_connectors::steps::StepType,
        with: &Value,
    ) -> Result<quench_connectors::steps::Checked, quench_connectors::steps::StepError> {
        self.exec.runner.check(step, with)
    }
}
