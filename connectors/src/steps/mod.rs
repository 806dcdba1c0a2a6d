//! The step types, as a closed list.
//!
//! Each step type gets its own file here (params struct, `run`, tests) as it
//! is built; registering one is one line in [`StepType`]. The list is
//! closed on purpose: an exhaustive `match` everywhere a step is handled,
//! and an unknown `uses:` in a runbook gets an error that lists the valid
//! names.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

pub mod wait;

/// Why a step failed. The executor decides what follows (retry, escalate);
/// the step only says what happened.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// The rendered parameters do not fit the step type. Retrying cannot help.
    #[error("invalid parameters: {0}")]
    Params(String),
    /// The step ran and failed; a retry may succeed.
    #[error("{0}")]
    Failed(String),
    /// This build does not carry the step type yet.
    #[error("step type {0} is not available in this build")]
    Unavailable(&'static str),
}

impl StepError {
    /// Whether trying again may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StepError::Failed(_))
    }
}

/// A boxed step future.
pub type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, StepError>> + Send + 'a>>;

/// Runs steps. The executor holds one and wraps every call in its guards
/// (timeout, retry, dry-run, approval, locks, budget, audit); an
/// implementation only does the work.
pub trait StepRunner: Send + Sync {
    /// Runs one step with its rendered parameters.
    fn run<'a>(&'a self, step: StepType, with: &'a Value) -> StepFuture<'a>;
}

/// The real steps of this build.
#[derive(Debug, Default, Clone)]
pub struct Builtin;

impl StepRunner for Builtin {
    fn run<'a>(&'a self, step: StepType, with: &'a Value) -> StepFuture<'a> {
        Box::pin(async move {
            match step {
                StepType::Wait => wait::run(with).await,
                other => Err(StepError::Unavailable(other.name())),
            }
        })
    }
}

macro_rules! step_types {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, destructive: $destructive:literal; )*) => {
        /// Every step type a runbook can `use`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum StepType {
            $( $(#[$doc])* $variant, )*
        }

        impl StepType {
            /// All of them, in the order of the documentation.
            pub const ALL: &'static [StepType] = &[ $( StepType::$variant, )* ];

            /// The name written after `uses:`.
            pub fn name(self) -> &'static str {
                match self { $( StepType::$variant => $name, )* }
            }

            /// Whether the step changes something outside quench. The
            /// executor, not the step, decides whether a destructive step
            /// may run (dry-run, approvals, budgets, kill switch).
            pub fn is_destructive(self) -> bool {
                match self { $( StepType::$variant => $destructive, )* }
            }
        }
    };
}

step_types! {
    /// A pprof profile (cpu, heap, allocs, goroutine, mutex, block, threadcreate).
    PprofCapture = "pprof.capture", destructive: false;
    /// A Go execution trace.
    TraceCapture = "trace.capture", destructive: false;
    /// A goroutine dump, grouped by stack.
    GoroutineDump = "goroutine.dump", destructive: false;
    /// `perf record` on a local process.
    PerfRecord = "perf.record", destructive: false;
    /// An instant PromQL query.
    PromqlQuery = "promql.query", destructive: false;
    /// A range PromQL query.
    PromqlRange = "promql.range", destructive: false;
    /// Polls a PromQL condition until it holds or times out.
    PromqlVerify = "promql.verify", destructive: false;
    /// Scrapes a `/metrics` endpoint for Go runtime series.
    MetricsScrape = "metrics.scrape", destructive: false;
    /// Tails a pod's logs.
    K8sLogs = "k8s.logs", destructive: false;
    /// Reads recent events.
    K8sEvents = "k8s.events", destructive: false;
    /// Deletes pods by name or selector.
    K8sDeletePod = "k8s.delete_pod", destructive: true;
    /// Restarts a rollout.
    K8sRolloutRestart = "k8s.rollout_restart", destructive: true;
    /// Scales through the scale subresource.
    K8sScale = "k8s.scale", destructive: true;
    /// Rolls a Deployment back to a previous revision.
    K8sRollback = "k8s.rollback", destructive: true;
    /// Marks a node unschedulable.
    K8sCordon = "k8s.cordon", destructive: true;
    /// Marks a node schedulable again.
    K8sUncordon = "k8s.uncordon", destructive: true;
    /// Evicts a node's pods, respecting disruption budgets.
    K8sDrain = "k8s.drain", destructive: true;
    /// Patches any object.
    K8sPatch = "k8s.patch", destructive: true;
    /// Server-side applies a manifest.
    K8sApply = "k8s.apply", destructive: true;
    /// Runs an argv in a container.
    K8sExec = "k8s.exec", destructive: true;
    /// Waits for a condition on an object.
    K8sWait = "k8s.wait", destructive: false;
    /// Syncs an Argo CD application.
    ArgocdSync = "argocd.sync", destructive: true;
    /// Rolls an Argo CD application back.
    ArgocdRollback = "argocd.rollback", destructive: true;
    /// An HTTP request.
    HttpRequest = "http.request", destructive: true;
    /// A Slack message.
    NotifySlack = "notify.slack", destructive: false;
    /// A PagerDuty Events v2 event.
    PagerdutyEvent = "pagerduty.event", destructive: false;
    /// Waits a while.
    Wait = "wait", destructive: false;
}

impl StepType {
    /// The step type called `name`.
    pub fn from_name(name: &str) -> Option<StepType> {
        StepType::ALL.iter().copied().find(|t| t.name() == name)
    }

    /// Every name, comma-separated, for error messages.
    pub fn names() -> String {
        StepType::ALL
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for StepType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for t in StepType::ALL {
            assert!(seen.insert(t.name()), "{t} listed twice");
            assert_eq!(StepType::from_name(t.name()), Some(*t));
        }
        assert_eq!(StepType::from_name("pprof.captur"), None);
        assert!(StepType::K8sDeletePod.is_destructive());
        assert!(!StepType::PprofCapture.is_destructive());
    }
}
