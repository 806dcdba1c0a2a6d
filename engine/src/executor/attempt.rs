//! One step's attempts: its start recorded (durably, with its audit line,
//! for a destructive step) before it acts, the step type's timeout, and
//! retries with exponential backoff and jitter.

use quench_knowledge::AuditAction;
use std::time::Duration;

use quench_connectors::steps::{Call, StepError};
use quench_knowledge::{StepRecord, StepState};
use serde_json::Value;
use tracing::info;

use super::guards::Pending;
use super::{Executor, Stop};

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
    /// Runs the step that passed its guards, with its retries.
    pub(super) async fn attempt(
        &self,
        p: &Pending<'_>,
        outputs: &mut serde_json::Map<String, Value>,
    ) -> Result<(), Stop> {
        let (incident, idx, id, kind) = (p.incident, p.idx, p.id(), p.kind());
        let (rendered, target) = (&p.rendered, &p.target);
        let timeout = p.step.timeout.unwrap_or(self.config.default_timeout);
        let retries = p.step.retry.attempts;
        let mut backoff = p.step.retry.backoff;
        let started = self.clock.now();
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
            let clock = self.clock.clone();
            // they skip the fdatasync.
            if kind.is_destructive() {
                let durable = self
                    .incidents
                    .update_durable(incident, move |rec| {
                        if let Some(s) = rec.steps.get_mut(idx) {
                            running(s);
                        }
                        rec.updated_at = clock.now();
                    })
                    .await;
                // And so is its audit line: no action without a record.
                let audited = match durable {
                    Ok(_) => {
                        self.audit(
                            incident,
                            Some(id),
                            Some(target),
                            AuditAction::StepStart,
                            "quench",
                            format!("{} attempt {attempt}", kind.name()),
                        )
                        .await
                    }
                    Err(e) => Err(e),
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
                // With a standby: it holds the "running" record and the
                // audit line before the step acts, so a takeover never runs
                // it again (sync mode; a standby that does not confirm in
                // time degrades it).
                if let Some(rep) = &self.replication {
                    rep.wait_changes(self.incidents.last_change(), self.audit.last_seq())
                        .await;
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
                rendered,
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
                            Some(target),
                            AuditAction::StepRun,
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
                    let now = self.clock.now();
                    self.set_step(incident, idx, move |s| {
                        s.state = StepState::Succeeded;
                        s.output = output;
                        s.ended_at = Some(now);
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
                            Some(target),
                            AuditAction::StepRetry,
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
                            Some(target),
                            AuditAction::StepFailed,
                            "quench",
                            format!("attempt {attempt}: {e}"),
                        )
                        .await;
                    return Err(self.fail(incident, idx, id, e.to_string()).await);
                }
            }
        }
    }
}
