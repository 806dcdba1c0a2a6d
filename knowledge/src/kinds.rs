//! The stable names quench writes into its records: audit actions and
//! timeline event kinds. Each is an enum in code and its dotted or plain
//! name on disk and in the API; a name this build does not know (an
//! imported history, a newer quench) is kept as it is in `Other`.

/// Declares a string-backed enum: `as_str`, `Display`, conversions from
/// and to `String`, and serde as that string.
macro_rules! named {
    ($(#[$doc:meta])* $name:ident { $( $(#[$vdoc:meta])* $variant:ident = $text:literal, )* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )*
            /// A name this build does not know, kept as written.
            Other(String),
        }

        impl $name {
            /// The name as stored and shown.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )*
                    $name::Other(s) => s,
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> $name {
                match s.as_str() {
                    $( $text => $name::$variant, )*
                    _ => $name::Other(s),
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name::from(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(k: $name) -> String {
                match k {
                    $name::Other(s) => s,
                    known => known.as_str().to_string(),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named! {
    /// What an audit entry records.
    AuditAction {
        /// A destructive step is about to act (written durably first).
        StepStart = "step.start",
        /// A step succeeded.
        StepRun = "step.run",
        /// A step failed and will be tried again.
        StepRetry = "step.retry",
        /// A step failed for good.
        StepFailed = "step.failed",
        /// A guard refused a step.
        StepBlocked = "step.blocked",
        /// A step ran as a dry run.
        StepDryRun = "step.dry_run",
        /// A step waits for approval.
        ApprovalRequested = "approval.requested",
        /// Someone approved.
        ApprovalApproved = "approval.approved",
        /// Someone rejected.
        ApprovalRejected = "approval.rejected",
        /// Nobody answered in time.
        ApprovalTimeout = "approval.timeout",
        /// An approval button clicked in Slack (whoever clicked, whatever
        /// came of it).
        SlackClick = "slack.click",
        /// The check after the steps held.
        VerifyPassed = "verify.passed",
        /// The check after the steps did not hold in time.
        VerifyFailed = "verify.failed",
        /// A run did not start: the runbook's cooldown.
        RunCooldown = "run.cooldown",
        /// A run resumed after a restart.
        RunResumed = "run.resumed",
        /// A run was interrupted by a restart.
        RunInterrupted = "run.interrupted",
        /// A human ran the current runbook again for an open incident.
        RunRerun = "run.rerun",
        /// Someone acknowledged an incident.
        IncidentAck = "incident.ack",
        /// Someone annotated an incident.
        IncidentAnnotate = "incident.annotate",
        /// Incidents were imported.
        IncidentImport = "incident.import",
        /// The kill switch was turned on.
        ControlPause = "control.pause",
        /// The kill switch was turned off.
        ControlResume = "control.resume",
        /// A chaos run started.
        ChaosStart = "chaos.start",
        /// A chaos run was aborted.
        ChaosAbort = "chaos.abort",
        /// A chaos run ended with a verdict.
        ChaosVerdict = "chaos.verdict",
        /// A fault left by an earlier run was cleaned up.
        ChaosReconcile = "chaos.reconcile",
        /// A profile baseline was set.
        BaselineSet = "baseline.set",
        /// The search index was rebuilt.
        SearchReindex = "search.reindex",
    }
}

named! {
    /// What a timeline event is about.
    EventKind {
        /// The incident opened.
        Opened = "opened",
        /// An alert arrived or repeated.
        Alert = "alert",
        /// Every alert of the incident resolved.
        AlertsResolved = "alerts_resolved",
        /// The incident's status changed.
        Status = "status",
        /// A step failed and the run went on.
        Step = "step",
        /// An approval was given.
        Approval = "approval",
        /// A step failed and `on_failure` ran, or the check failed.
        Escalation = "escalation",
        /// The runbook's cooldown kept it from running.
        Cooldown = "cooldown",
        /// The run resumed after a restart.
        Resumed = "resumed",
        /// The run was interrupted by a restart.
        Interrupted = "interrupted",
        /// A human ran the runbook again.
        Rerun = "rerun",
        /// Someone acknowledged it.
        Acknowledged = "acknowledged",
        /// Someone annotated it.
        Annotated = "annotated",
        /// A chaos run opened or touched it.
        Chaos = "chaos",
        /// It came from an import.
        Imported = "imported",
        /// A note.
        Note = "note",
        /// A profile was captured.
        Pprof = "pprof",
        /// It resolved.
        Resolved = "resolved",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_kept() {
        for a in [AuditAction::StepDryRun, AuditAction::ApprovalApproved] {
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<AuditAction>(&json).unwrap(), a);
        }
        assert_eq!(
            serde_json::to_string(&AuditAction::StepDryRun).unwrap(),
            "\"step.dry_run\""
        );
        let other: EventKind = serde_json::from_str("\"deploy\"").unwrap();
        assert_eq!(other, EventKind::Other("deploy".into()));
        assert_eq!(serde_json::to_string(&other).unwrap(), "\"deploy\"");
        assert_eq!(
            EventKind::from("alerts_resolved"),
            EventKind::AlertsResolved
        );
        assert_eq!(EventKind::Cooldown.to_string(), "cooldown");
    }
}
