//! Verification: the runbook's check, polled until it holds or its time
//! is up.

use quench_connectors::Alert;
use quench_connectors::steps::Call;
use quench_knowledge::AuditAction;
use quench_knowledge::StepState;
use quench_runbooks::Runbook;
use quench_runbooks::template::context;
use serde_json::Value;
use tokio::time::Instant;

use super::Executor;

impl Executor {
    /// Polls the runbook's check until it succeeds or its time is up.
    pub(super) async fn verify(
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
            .map_err(super::guards::Unrunnable::from)
            .and_then(|mut v| self.check_step(kind, &mut v).map(|_| v))
        {
            Ok(v) => v,
            Err(e) => {
                let e = e.to_string();
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
            let clock = self.clock.clone();
            self.set_step(incident, idx, move |s| {
                s.state = StepState::Running;
                s.rendered = r;
                s.attempts = attempt;
                s.started_at.get_or_insert_with(|| clock.now());
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
                            AuditAction::VerifyPassed,
                            "quench",
                            format!("after {attempt} check(s)"),
                        )
                        .await;
                    let now = self.clock.now();
                    self.set_step(incident, idx, move |s| {
                        s.state = StepState::Succeeded;
                        s.output = out;
                        s.ended_at = Some(now);
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
                        AuditAction::VerifyFailed,
                        "quench",
                        reason.clone(),
                    )
                    .await;
                let (r, now) = (reason.clone(), self.clock.now());
                self.set_step(incident, idx, move |s| {
                    s.state = StepState::Failed;
                    s.reason = r;
                    s.ended_at = Some(now);
                })
                .await;
                return Err(reason);
            }
            tokio::time::sleep(every).await;
        }
    }
}
