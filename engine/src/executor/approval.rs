//! The approval gate: a destructive step waits for a human (the API, the
//! CLI) until its gate's timeout, then does what the runbook says.

use quench_knowledge::{AuditAction, EventKind};
use std::collections::HashMap;
use std::sync::Mutex;

use quench_knowledge::StepState;
use quench_runbooks::model::OnTimeout;
use tokio::sync::oneshot;

use super::Executor;
use super::guards::{Flow, Pending};

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
    pub(super) fn wait(&self, incident: &str, step: &str) -> oneshot::Receiver<Verdict> {
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

impl Executor {
    /// Waits for the step's approval, if it has a gate.
    pub(super) async fn guard_approval(&self, p: &Pending<'_>) -> Flow {
        let Some(approval) = &p.step.approval else {
            return Flow::Next;
        };
        let timeout = approval
            .timeout
            .unwrap_or(self.config.default_approval_timeout);
        // The approver sees what the step will get: its parameters as
        // rendered for this alert.
        let rendered = p.rendered.clone();
        self.set_step(p.incident, p.idx, |s| {
            s.state = StepState::AwaitingApproval;
            s.rendered = rendered;
        })
        .await;
        let _ = self
            .audit(
                p.incident,
                Some(p.id()),
                Some(&p.target),
                AuditAction::ApprovalRequested,
                "quench",
                format!("waiting up to {}s", timeout.as_secs()),
            )
            .await;
        let rx = self.approvals.wait(p.incident, p.id());
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Verdict::Approve { by })) => {
                let _ = self
                    .audit(
                        p.incident,
                        Some(p.id()),
                        Some(&p.target),
                        AuditAction::ApprovalApproved,
                        &by,
                        "approved".into(),
                    )
                    .await;
                self.event(
                    p.incident,
                    EventKind::Approval,
                    format!("{} approved by {by}", p.id()),
                )
                .await;
            }
            Ok(Ok(Verdict::Reject { by, reason })) => {
                let _ = self
                    .audit(
                        p.incident,
                        Some(p.id()),
                        Some(&p.target),
                        AuditAction::ApprovalRejected,
                        &by,
                        reason.clone(),
                    )
                    .await;
                return Flow::Done(Err(self
                    .block(
                        p.incident,
                        p.idx,
                        p.id(),
                        &p.target,
                        format!("rejected by {by}: {reason}"),
                        true,
                    )
                    .await));
            }
            Ok(Err(_)) | Err(_) => {
                let what = match approval.on_timeout {
                    OnTimeout::Proceed => "proceeding",
                    OnTimeout::Skip => "skipping",
                    OnTimeout::Fail => "failing",
                };
                let _ = self
                    .audit(
                        p.incident,
                        Some(p.id()),
                        Some(&p.target),
                        AuditAction::ApprovalTimeout,
                        "quench",
                        format!("no answer; {what} as the runbook says"),
                    )
                    .await;
                match approval.on_timeout {
                    OnTimeout::Proceed => {}
                    OnTimeout::Skip => {
                        self.set_step(p.incident, p.idx, |s| {
                            s.state = StepState::Skipped;
                            s.reason = "approval timed out".into();
                        })
                        .await;
                        return Flow::Done(Ok(()));
                    }
                    OnTimeout::Fail => {
                        return Flow::Done(Err(self
                            .fail(p.incident, p.idx, p.id(), "approval timed out".into())
                            .await));
                    }
                }
            }
        }
        // Time passed while waiting: check again.
        self.guard_preflight(p, "while waiting for approval").await
    }
}
