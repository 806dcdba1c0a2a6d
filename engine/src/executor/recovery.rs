//! After a restart: every incident whose run did not finish resumes,
//! or is marked interrupted when a destructive step may have acted.

use quench_knowledge::{AuditAction, EventKind};
use std::collections::BTreeMap;
use std::sync::Arc;

use quench_connectors::Alert;
use quench_knowledge::{AlertState, IncidentStatus, StepRecord, StepState, TimelineEvent};
use serde_json::Value;
use tracing::{info, warn};

use super::Executor;

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
pub(crate) fn alert_of(r: &quench_knowledge::AlertRecord) -> Alert {
    let source = r
        .source
        .parse()
        .unwrap_or_else(|e: quench_connectors::alert::UnknownSource| {
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
                EventKind::Resumed,
                format!("resuming at step {step_id} after a restart"),
            )
            .await;
            let _ = self
                .audit(
                    &r.id,
                    Some(&step_id),
                    None,
                    AuditAction::RunResumed,
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
        let clock = self.clock.clone();
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
            rec.run = Some(quench_knowledge::RunResult {
                outcome: quench_knowledge::RunOutcome::Interrupted,
                at: clock.now(),
                detail: why.clone(),
            });
            rec.timeline.push(TimelineEvent {
                at: clock.now(),
                kind: EventKind::Interrupted,
                detail: why,
            });
        })
        .await;
        let _ = self
            .audit(
                id,
                None,
                None,
                AuditAction::RunInterrupted,
                "quench",
                reason.clone(),
            )
            .await;
        Recovery::Interrupted(reason)
    }
}

/// A step that had not finished when the engine stopped.
fn unfinished(s: &StepRecord) -> bool {
    matches!(
        s.state,
        StepState::Pending | StepState::Running | StepState::AwaitingApproval
    )
}
