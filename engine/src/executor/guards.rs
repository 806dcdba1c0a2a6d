//! The guards every step passes through before it acts, in one ordered
//! list ([`GUARDS`]): each a small function that lets the step go on, ends
//! it (skipped, dry-run, approved-then-skipped), or stops it with the
//! reason. Steps implement none of this themselves.

use quench_knowledge::AuditAction;
use std::time::Duration;

use quench_connectors::Alert;
use quench_connectors::steps::{Acts, Call, StepType};
use quench_knowledge::{AlertState, IncidentStatus, StepState};
use quench_runbooks::Runbook;
use quench_runbooks::runbook::Step;
use serde_json::Value;
use tokio::time::Instant;
use tracing::warn;

use super::{Executor, Stop};

/// Why a step's parameters cannot run: refused before the step starts,
/// and never retried.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unrunnable {
    /// `with` does not render.
    #[error(transparent)]
    Template(#[from] quench_runbooks::template::TemplateError),
    /// The rendered parameters do not fit the step type.
    #[error(transparent)]
    Params(#[from] quench_connectors::steps::StepError),
    /// A URL on a host outside `allowed_hosts`.
    #[error(transparent)]
    Host(#[from] quench_connectors::hosts::HostError),
}

/// A step on its way through the guards.
pub(super) struct Pending<'a> {
    /// The incident it runs for.
    pub incident: &'a str,
    /// Its position in the incident's step records.
    pub idx: usize,
    /// The step.
    pub step: &'a Step,
    /// The template context (alert, runbook, earlier outputs, env).
    pub ctx: Value,
    /// Its parameters, rendered (set by [`Guard::Render`]).
    pub rendered: Value,
    /// What it acts on, `namespace/name` (set by [`Guard::Render`]).
    pub target: String,
    /// The namespace of what it acts on, for the budget.
    pub namespace: String,
    /// The per-target lock, held from [`Guard::Lock`] until the step ends.
    pub lock: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<'a> Pending<'a> {
    pub(super) fn new(
        ex: &Executor,
        incident: &'a str,
        runbook: &Runbook,
        alert: &Alert,
        idx: usize,
        step: &'a Step,
        outputs: &serde_json::Map<String, Value>,
    ) -> Pending<'a> {
        Pending {
            incident,
            idx,
            step,
            ctx: quench_runbooks::template::context(
                alert,
                runbook.info(),
                incident,
                outputs,
                &ex.env,
            ),
            rendered: Value::Null,
            target: "-/-".into(),
            namespace: "-".into(),
            lock: None,
        }
    }

    pub(super) fn id(&self) -> &str {
        &self.step.id
    }

    pub(super) fn kind(&self) -> StepType {
        self.step.kind
    }
}

/// What a guard decided.
pub(super) enum Flow {
    /// On to the next guard.
    Next,
    /// The step is over: `Ok` when it ended normally without acting
    /// (skipped, dry run), `Err` when it was stopped.
    Done(Result<(), Stop>),
}

/// One guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Guard {
    /// `when:` false skips the step.
    When,
    /// Strict rendering, the step type's parameters, the host allowlist.
    Render,
    /// The kill switch and a still-firing alert, before anything else.
    Preflight,
    /// A human approves (and the preflight holds again afterwards).
    Approval,
    /// The namespace's blast-radius budget and the target's rate limit.
    Budget,
    /// With `executor.dry_run`, report (asking the server where it can)
    /// and stop.
    DryRun,
    /// One action per target at a time.
    Lock,
    /// With high availability: this replica still holds the Lease within
    /// its renew deadline, checked last, right before the step acts.
    Fence,
}

/// The order every step goes through. The destructive-only guards do
/// nothing for steps that only read.
pub(super) const GUARDS: [Guard; 8] = [
    Guard::When,
    Guard::Render,
    Guard::Preflight,
    Guard::Approval,
    Guard::Budget,
    Guard::DryRun,
    Guard::Lock,
    Guard::Fence,
];

impl Guard {
    /// Whether this guard applies to steps that change nothing.
    fn for_evidence(self) -> bool {
        matches!(self, Guard::When | Guard::Render)
    }
}

impl Executor {
    /// Runs `p` through one guard.
    pub(super) async fn guard(&self, g: Guard, p: &mut Pending<'_>) -> Flow {
        if !g.for_evidence() && !p.kind().is_destructive() {
            return Flow::Next;
        }
        match g {
            Guard::When => self.guard_when(p).await,
            Guard::Render => self.guard_render(p).await,
            Guard::Preflight => {
                self.status(p.incident, IncidentStatus::Remediating).await;
                self.guard_preflight(p, "before this step").await
            }
            Guard::Approval => self.guard_approval(p).await,
            Guard::Budget => self.guard_budget(p).await,
            Guard::DryRun => self.guard_dry_run(p).await,
            Guard::Lock => {
                let lock = self.lock_for(&p.target);
                p.lock = Some(lock.lock_owned().await);
                Flow::Next
            }
            Guard::Fence => {
                let Some(ha) = &self.ha else {
                    return Flow::Next;
                };
                match ha.may_act() {
                    Ok(_) => Flow::Next,
                    Err(why) => Flow::Done(Err(self
                        .block(
                            p.incident,
                            p.idx,
                            p.id(),
                            &p.target,
                            format!("fenced: {why}; the next leader decides"),
                            false,
                        )
                        .await)),
                }
            }
        }
    }

    async fn guard_when(&self, p: &mut Pending<'_>) -> Flow {
        let Some(when) = &p.step.when else {
            return Flow::Next;
        };
        match self.templates.eval_when(when, &p.ctx) {
            Ok(true) => Flow::Next,
            Ok(false) => {
                self.set_step(p.incident, p.idx, |s| {
                    s.state = StepState::Skipped;
                    s.reason = "when is false".into();
                })
                .await;
                Flow::Done(Ok(()))
            }
            Err(e) => Flow::Done(Err(self
                .fail(p.incident, p.idx, p.id(), format!("when: {e}"))
                .await)),
        }
    }

    async fn guard_render(&self, p: &mut Pending<'_>) -> Flow {
        let with = Value::Object(p.step.with.clone());
        let rendered = self
            .templates
            .render_value(&with, &p.ctx, &format!("{}.with", p.id()))
            .map_err(Unrunnable::from)
            .and_then(|mut v| Ok((self.check_step(p.kind(), &mut v)?, v)));
        match rendered {
            Ok((acts, v)) => {
                p.rendered = v;
                p.namespace = acts.namespace.clone().unwrap_or_else(|| "-".into());
                p.target = acts.key();
                Flow::Next
            }
            Err(e) => Flow::Done(Err(self
                .fail(p.incident, p.idx, p.id(), e.to_string())
                .await)),
        }
    }

    pub(super) async fn guard_preflight(&self, p: &Pending<'_>, when: &str) -> Flow {
        match self
            .preflight(p.incident, p.idx, p.id(), &p.target, when)
            .await
        {
            Ok(()) => Flow::Next,
            Err(stop) => Flow::Done(Err(stop)),
        }
    }

    async fn guard_budget(&self, p: &Pending<'_>) -> Flow {
        // A dry run changes nothing, so it spends nothing; it is still
        // refused where a real run would be.
        let refused = self.take_window(
            !self.config.dry_run,
            [
                (
                    &format!("ns\u{1f}{}", p.namespace),
                    self.config.budget_per_namespace_per_hour,
                ),
                (
                    &format!("target\u{1f}{}", p.target),
                    self.config.max_actions_per_target_per_hour,
                ),
            ],
        );
        let reason = match refused {
            None => return Flow::Next,
            Some(0) => format!(
                "blast-radius budget spent: {} destructive actions in namespace {} within the hour",
                self.config.budget_per_namespace_per_hour, p.namespace
            ),
            Some(_) => format!(
                "rate limit: {} actions on {} within the hour",
                self.config.max_actions_per_target_per_hour, p.target
            ),
        };
        Flow::Done(Err(self
            .block(p.incident, p.idx, p.id(), &p.target, reason, false)
            .await))
    }

    async fn guard_dry_run(&self, p: &Pending<'_>) -> Flow {
        if !self.config.dry_run {
            return Flow::Next;
        }
        let kind = p.kind();
        // Kubernetes and Argo CD steps ask their server, which checks
        // everything a real call would and says what would change; other
        // steps only report their parameters.
        let (output, reason) = if kind.server_dry_run() {
            let call = Call {
                incident: p.incident,
                step: p.id(),
                dry_run: true,
            };
            let run = self.runner.run(kind, call, &p.rendered);
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
                p.incident,
                Some(p.id()),
                Some(&p.target),
                AuditAction::StepDryRun,
                "quench",
                format!("{} would run with {}: {reason}", kind.name(), p.rendered),
            )
            .await;
        let rendered = p.rendered.clone();
        let clock = self.clock.clone();
        self.set_step(p.incident, p.idx, move |s| {
            s.rendered = rendered;
            s.state = StepState::DryRun;
            s.output = output;
            s.reason = reason;
            s.ended_at = Some(clock.now());
        })
        .await;
        Flow::Done(Ok(()))
    }

    /// Parses rendered parameters as the step type's: what the step acts
    /// on. Parameters that do not fit, and a URL on a host outside
    /// `allowed_hosts`, are refused before the step runs.
    pub(super) fn check_step(
        &self,
        kind: StepType,
        rendered: &mut Value,
    ) -> Result<Acts, Unrunnable> {
        if let Value::Object(with) = rendered {
            kind.fill_defaults(with, &self.config.step_defaults);
        }
        let checked = self.runner.check(kind, rendered)?;
        if let Some(hosts) = &self.config.allowed_hosts {
            for url in &checked.urls {
                hosts.check_url(url)?;
            }
        }
        Ok(checked.target)
    }

    /// The step failed: recorded, and the run decides what follows.
    pub(super) async fn fail(&self, incident: &str, idx: usize, id: &str, reason: String) -> Stop {
        warn!(incident_id = incident, step = id, reason = %reason, "step failed");
        let r = reason.clone();
        let clock = self.clock.clone();
        self.set_step(incident, idx, move |s| {
            s.state = StepState::Failed;
            s.reason = r;
            s.ended_at = Some(clock.now());
        })
        .await;
        Stop::Failed(reason)
    }

    /// A guard refused the step. `cancel` ends the run (resolved alert,
    /// rejection); otherwise it counts as a failure and escalates.
    pub(super) async fn block(
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
                AuditAction::StepBlocked,
                "quench",
                reason.clone(),
            )
            .await;
        let r = reason.clone();
        let clock = self.clock.clone();
        self.set_step(incident, idx, move |s| {
            s.state = StepState::Blocked;
            s.reason = r;
            s.ended_at = Some(clock.now());
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

    /// Whether one more action fits both sliding one-hour windows (a
    /// namespace's budget, a target's rate): `None`, or the index of the
    /// one that is full. Both are checked before either is spent, so a
    /// refusal costs nothing; with `spend`, a fitting action is counted in
    /// both.
    pub(super) fn take_window(&self, spend: bool, keys: [(&str, usize); 2]) -> Option<usize> {
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        let mut windows = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= super::PRUNE_ABOVE {
            windows.retain(|_, used| used.back().is_some_and(|t| now.duration_since(*t) <= hour));
        }
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

    pub(super) fn lock_for(&self, target: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.len() >= super::PRUNE_ABOVE {
            // A lock only the map holds guards nothing right now.
            locks.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
        }
        locks.entry(target.to_string()).or_default().clone()
    }
}
