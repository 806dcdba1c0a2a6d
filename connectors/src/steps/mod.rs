//! The step types: a registry.
//!
//! A step type is one file here that implements [`Step`] (its name, its
//! flags, its typed parameters, the object it acts on, the URLs it calls,
//! and `run`) and one line in the `registry!` below. The registry makes the
//! closed [`StepType`] enum and everything derived from the trait: dispatch,
//! the destructive and server-dry-run flags, the check of `with` keys, the
//! schema of each step's `with`. An unknown `uses:` in a runbook gets an
//! error that lists the valid names. docs/ARCHITECTURE.md walks through
//! adding one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

mod artifacts;
mod common;
mod step;

pub use artifacts::{ArtifactFuture, Artifacts, ArtifactsError, Captured};
#[cfg(test)]
pub(crate) use common::receiver;
pub use common::{MAX_ANSWER, Secret, StepError, read_capped};
pub(crate) use common::{Target, check_http_url, number, number_schema, opt_number, params, send};
pub use step::{Acts, Checked, ParamError, Step, StepCtx, StepDefaults, fields, parse_params};

pub mod argocd_rollback;
pub mod argocd_sync;
pub mod goroutine_dump;
pub mod http_request;
pub mod k8s_apply;
pub mod k8s_cordon;
pub mod k8s_delete_pod;
pub mod k8s_drain;
pub mod k8s_events;
pub mod k8s_exec;
pub mod k8s_logs;
pub mod k8s_patch;
pub mod k8s_revert;
pub mod k8s_rollback;
pub mod k8s_rollout_restart;
pub mod k8s_scale;
pub mod k8s_wait;
pub mod metrics_scrape;
pub mod notify_slack;
pub mod pagerduty_event;
pub mod perf_record;
pub mod pprof_capture;
pub mod promql;
pub mod trace_capture;
pub mod wait;

/// A boxed step future.
pub type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, StepError>> + Send + 'a>>;

/// Which run a step call belongs to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Call<'a> {
    /// The incident.
    pub incident: &'a str,
    /// The step's id in its runbook.
    pub step: &'a str,
    /// Ask the server what would happen; change nothing (only for steps
    /// whose type has [`StepType::server_dry_run`]).
    pub dry_run: bool,
}

/// Runs steps. The executor holds one and wraps every call in its guards
/// (timeout, retry, dry-run, approval, locks, budget, audit); an
/// implementation only does the work.
pub trait StepRunner: Send + Sync {
    /// Runs one step with its rendered parameters.
    fn run<'a>(&'a self, step: StepType, call: Call<'a>, with: &'a Value) -> StepFuture<'a>;

    /// Parses rendered parameters before the guards: the object the step
    /// acts on and the URLs it calls (the step type's own, by default).
    fn check(&self, step: StepType, with: &Value) -> Result<Checked, StepError> {
        step.check(with)
    }
}

/// The real steps of this build.
pub struct Builtin {
    http: reqwest::Client,
    captures: pprof_capture::InFlight,
    artifacts: Option<std::sync::Arc<dyn Artifacts>>,
    kube: Option<std::sync::Arc<dyn crate::k8s::Kube>>,
    hosts: Option<crate::hosts::HostAllowlist>,
}

impl Default for Builtin {
    fn default() -> Builtin {
        Builtin {
            http: crate::hosts::client(None),
            captures: Default::default(),
            artifacts: None,
            kube: None,
            hosts: None,
        }
    }
}

impl Builtin {
    /// Steps that keep their evidence in `store`.
    pub fn with_artifacts(store: std::sync::Arc<dyn Artifacts>) -> Builtin {
        Builtin {
            artifacts: Some(store),
            ..Builtin::default()
        }
    }

    /// The same steps, refusing URLs on hosts outside `hosts`.
    pub fn with_hosts(self, hosts: Option<crate::hosts::HostAllowlist>) -> Builtin {
        Builtin {
            http: crate::hosts::client(hosts.clone()),
            hosts,
            ..self
        }
    }

    /// The same steps, reaching Kubernetes through `kube`.
    pub fn with_kube(self, kube: std::sync::Arc<dyn crate::k8s::Kube>) -> Builtin {
        Builtin {
            kube: Some(kube),
            ..self
        }
    }
}

impl StepRunner for Builtin {
    fn run<'a>(&'a self, step: StepType, call: Call<'a>, with: &'a Value) -> StepFuture<'a> {
        Box::pin(async move {
            let ctx = StepCtx {
                http: &self.http,
                kube: self.kube.as_deref(),
                artifacts: self.artifacts.as_deref(),
                captures: &self.captures,
                hosts: self.hosts.as_ref(),
                dry_run: call.dry_run && step.server_dry_run(),
                incident: call.incident,
                step: call.step,
            };
            step.run(&ctx, with).await
        })
    }
}

macro_rules! registry {
    ($( $(#[doc = $doc:literal])* $variant:ident => $step:ty; )*) => {
        /// Every step type a runbook can `use`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum StepType {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl StepType {
            /// All of them, in the order of the documentation.
            pub const ALL: &'static [StepType] = &[ $( StepType::$variant, )* ];

            /// The name written after `uses:`.
            pub fn name(self) -> &'static str {
                match self { $( StepType::$variant => <$step as Step>::NAME, )* }
            }

            /// Whether the step changes something outside quench. The
            /// executor, not the step, decides whether a destructive step
            /// may run (dry-run, approvals, budgets, kill switch).
            pub fn is_destructive(self) -> bool {
                match self { $( StepType::$variant => <$step as Step>::DESTRUCTIVE, )* }
            }

            /// Whether the step can ask its server what it would do
            /// without doing it.
            pub fn server_dry_run(self) -> bool {
                match self { $( StepType::$variant => <$step as Step>::SERVER_DRY_RUN, )* }
            }

            /// What it does, in a line (its registry entry's doc).
            pub fn describe(self) -> &'static str {
                match self { $( StepType::$variant => concat!($($doc),*).trim_ascii(), )* }
            }

            /// What its output holds.
            pub fn output(self) -> &'static str {
                match self { $( StepType::$variant => <$step as Step>::OUTPUT, )* }
            }

            /// The keys its `with` accepts (aliases included).
            pub fn params(self) -> &'static [&'static str] {
                match self { $( StepType::$variant => fields::<<$step as Step>::Params>(), )* }
            }

            /// Parses rendered parameters: the object the step acts on and
            /// the URLs it will call, or why they do not fit.
            pub fn check(self, with: &Value) -> Result<Checked, StepError> {
                match self { $( StepType::$variant => step::check::<$step>(with), )* }
            }

            /// Fills in what `with` leaves out and the configuration gives
            /// (`prometheus.url` for a PromQL step's `url`).
            pub fn fill_defaults(self, with: &mut serde_json::Map<String, Value>, d: &StepDefaults) {
                let prometheus = match self { $( StepType::$variant => <$step as Step>::URL_IS_PROMETHEUS, )* };
                if prometheus
                    && !with.contains_key("url")
                    && let Some(url) = &d.prometheus_url
                {
                    with.insert("url".into(), Value::String(url.clone()));
                }
                let perf = match self { $( StepType::$variant => <$step as Step>::IMAGE_IS_PERF, )* };
                if perf && let Some(image) = &d.perf_image {
                    with.insert("image".into(), Value::String(image.clone()));
                }
            }

            /// Checks parameters (rendered, or as written with templates
            /// standing in for strings) without running anything.
            pub fn lint(self, with: &Value) -> Result<(), ParamError> {
                match self { $( StepType::$variant => step::lint::<$step>(with), )* }
            }

            /// The JSON schema of its `with`.
            pub fn with_schema(self) -> schemars::Schema {
                match self { $( StepType::$variant => step::schema::<$step>(), )* }
            }

            /// Parses rendered parameters and runs the step.
            pub fn run<'a>(self, ctx: &'a StepCtx<'a>, with: &'a Value) -> StepFuture<'a> {
                match self { $( StepType::$variant => Box::pin(step::dispatch::<$step>(ctx, with)), )* }
            }
        }
    };
}

registry! {
    /// A pprof profile (cpu, heap, allocs, goroutine, mutex, block, threadcreate).
    PprofCapture => pprof_capture::PprofCapture;
    /// A Go execution trace.
    TraceCapture => trace_capture::TraceCapture;
    /// A goroutine dump, grouped by stack.
    GoroutineDump => goroutine_dump::GoroutineDump;
    /// `perf record` on a local process or, through a Job, on a pod's node.
    PerfRecord => perf_record::PerfRecord;
    /// An instant PromQL query.
    PromqlQuery => promql::Query;
    /// A range PromQL query.
    PromqlRange => promql::Range;
    /// Polls a PromQL condition until it holds or times out.
    PromqlVerify => promql::Verify;
    /// Scrapes a `/metrics` endpoint for Go runtime series.
    MetricsScrape => metrics_scrape::MetricsScrape;
    /// Tails a pod's logs.
    K8sLogs => k8s_logs::K8sLogs;
    /// Reads recent events.
    K8sEvents => k8s_events::K8sEvents;
    /// Deletes pods by name or selector.
    K8sDeletePod => k8s_delete_pod::K8sDeletePod;
    /// Restarts a rollout.
    K8sRolloutRestart => k8s_rollout_restart::K8sRolloutRestart;
    /// Scales through the scale subresource.
    K8sScale => k8s_scale::K8sScale;
    /// Rolls a Deployment back to a previous revision.
    K8sRollback => k8s_rollback::K8sRollback;
    /// Marks a node unschedulable.
    K8sCordon => k8s_cordon::K8sCordon;
    /// Marks a node schedulable again.
    K8sUncordon => k8s_cordon::K8sUncordon;
    /// Evicts a node's pods, respecting disruption budgets.
    K8sDrain => k8s_drain::K8sDrain;
    /// Patches any object.
    K8sPatch => k8s_patch::K8sPatch;
    /// Puts back what an earlier step changed, from its revert record.
    K8sRevert => k8s_revert::K8sRevert;
    /// Server-side applies a manifest.
    K8sApply => k8s_apply::K8sApply;
    /// Runs an argv in a container.
    K8sExec => k8s_exec::K8sExec;
    /// Waits for a condition on an object.
    K8sWait => k8s_wait::K8sWait;
    /// Syncs an Argo CD application.
    ArgocdSync => argocd_sync::ArgocdSync;
    /// Rolls an Argo CD application back.
    ArgocdRollback => argocd_rollback::ArgocdRollback;
    /// An HTTP request.
    HttpRequest => http_request::HttpRequest;
    /// A Slack message.
    NotifySlack => notify_slack::NotifySlack;
    /// A PagerDuty Events v2 event.
    PagerdutyEvent => pagerduty_event::PagerdutyEvent;
    /// Waits a while.
    Wait => wait::Wait;
}

impl StepType {
    /// Why `key` is not a parameter of this step type (naming the ones it
    /// has, in serde's words), or `None` if it is one.
    pub fn unknown_param(self, key: &str) -> Option<String> {
        let known = self.params();
        if known.contains(&key) {
            return None;
        }
        let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
        Some(match list.as_slice() {
            [] => format!("unknown field `{key}`, there are no fields"),
            [one] => format!("unknown field `{key}`, expected {one}"),
            many => format!("unknown field `{key}`, expected one of {}", many.join(", ")),
        })
    }

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
        assert!(
            StepType::PerfRecord.is_destructive(),
            "a privileged hostPID Job is under the guards"
        );
        let e = StepType::PprofCapture.unknown_param("kindd").unwrap();
        assert!(e.contains("kindd") && e.contains("`kind`"), "{e}");
        assert_eq!(StepType::PprofCapture.unknown_param("kind"), None);
        assert_eq!(StepType::PprofCapture.unknown_param("url"), None);
        assert!(
            StepType::K8sExec
                .unknown_param("command")
                .unwrap()
                .contains("`argv`")
        );
        assert!(
            StepType::K8sScale
                .unknown_param("replica")
                .unwrap()
                .contains("`replicas`")
        );
        assert_eq!(
            StepType::K8sScale.unknown_param("deployment"),
            None,
            "an alias"
        );
        assert!(!StepType::PprofCapture.is_destructive());
    }

    #[test]
    fn the_flags_come_from_the_step_types() {
        // A step that takes `dry_run` can be asked to dry-run by the
        // executor, and only such a step: the two cannot drift apart.
        for t in StepType::ALL {
            assert_eq!(
                t.params().contains(&"dry_run"),
                t.server_dry_run(),
                "{t}: takes dry_run but is not asked (or the reverse)"
            );
            if t.server_dry_run() {
                assert!(t.is_destructive(), "{t}");
            }
        }
        assert!(StepType::ArgocdSync.server_dry_run());
        assert!(StepType::ArgocdRollback.server_dry_run());
        assert!(!StepType::HttpRequest.server_dry_run());
    }

    #[test]
    fn targets_and_urls_come_from_typed_parameters() {
        let c = StepType::K8sScale
            .check(&serde_json::json!({"deployment": "web", "namespace": "shop", "replicas": "+1"}))
            .unwrap();
        assert_eq!(c.target.key(), "shop/web");
        assert!(c.urls.is_empty());
        let c = StepType::K8sDrain
            .check(&serde_json::json!({"node": "n1"}))
            .unwrap();
        assert_eq!(c.target.key(), "-/n1");
        let c = StepType::ArgocdSync
            .check(&serde_json::json!({"server": "https://argo.example", "app": "cart", "token": {"env": "T"}}))
            .unwrap();
        assert_eq!(c.urls, ["https://argo.example"]);
        assert_eq!(c.target.key(), "-/cart");
        let c = StepType::PprofCapture
            .check(&serde_json::json!({"pod": "web-1", "namespace": "shop", "port": 6060, "kind": "heap"}))
            .unwrap();
        assert_eq!(c.target.key(), "shop/web-1");
        // A missing required parameter is found before the step runs.
        let e = StepType::PromqlQuery
            .check(&serde_json::json!({"url": "http://p"}))
            .unwrap_err();
        assert!(
            matches!(&e, StepError::Params(m) if m.contains("missing field `query`")),
            "{e}"
        );
        // A PromQL step's url comes from the configuration when it has none,
        // and only then.
        let e = StepType::PromqlQuery
            .check(&serde_json::json!({"query": "up"}))
            .unwrap_err();
        assert!(e.to_string().contains("prometheus.url"), "{e}");
        let defaults = StepDefaults {
            prometheus_url: Some("http://prometheus:9090".into()),
            ..Default::default()
        };
        let mut with = serde_json::Map::new();
        with.insert("query".into(), "up".into());
        StepType::PromqlQuery.fill_defaults(&mut with, &defaults);
        let c = StepType::PromqlQuery
            .check(&Value::Object(with.clone()))
            .unwrap();
        assert_eq!(c.urls, ["http://prometheus:9090"]);
        with.insert("url".into(), "http://other".into());
        StepType::PromqlQuery.fill_defaults(&mut with, &defaults);
        assert_eq!(with["url"], "http://other");
        let mut scrape = serde_json::Map::new();
        StepType::MetricsScrape.fill_defaults(&mut scrape, &defaults);
        assert!(scrape.is_empty(), "only PromQL steps take prometheus.url");
    }

    #[test]
    fn ports_may_be_rendered_templates() {
        let p: pprof_capture::Params =
            params(&serde_json::json!({"pod": "web-1", "port": "6060", "kind": "heap"})).unwrap();
        assert_eq!(p.port, Some(6060));
        let p: pprof_capture::Params =
            params(&serde_json::json!({"pod": "web-1", "port": 6061, "kind": "heap"})).unwrap();
        assert_eq!(p.port, Some(6061));
        let e = params::<pprof_capture::Params>(
            &serde_json::json!({"pod": "web-1", "port": "60x", "kind": "heap"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"60x\" is not a number"), "{e}");
        let e = params::<pprof_capture::Params>(
            &serde_json::json!({"pod": "web-1", "port": "70000", "kind": "heap"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a number"), "{e}");
    }

    #[test]
    fn go_targets_are_an_http_url_or_a_valid_pod_and_port() {
        let some = |u: &str| Some(u.to_string());
        let t = Target::new(&some("http://svc:6060/"), &None, &None, None).unwrap();
        assert_eq!(t, Target::Url("http://svc:6060".into()));
        assert_eq!(t.label(), "http://svc:6060");
        let e = Target::new(&some("file:///etc/passwd"), &None, &None, None).unwrap_err();
        assert!(
            matches!(&e, StepError::Params(m) if m.contains("must be http:// or https://")),
            "{e}"
        );
        let t = Target::new(&None, &some("web-1"), &some("shop"), Some(6060)).unwrap();
        assert_eq!(t.label(), "pod/shop/web-1:6060");
        let t = Target::new(&None, &some("web-1"), &None, Some(6060)).unwrap();
        assert_eq!(t.label(), "pod/default/web-1:6060");
        // Names come from alert labels: nothing that is not a Kubernetes
        // name reaches a path.
        for (pod, ns) in [
            ("web; rm -rf /", "shop"),
            ("web-1", "../x"),
            ("../x", "shop"),
        ] {
            let e = Target::new(&None, &some(pod), &some(ns), Some(6060)).unwrap_err();
            assert!(
                matches!(&e, StepError::Params(m) if m.contains("not a valid Kubernetes name")),
                "{e}"
            );
        }
        assert!(matches!(
            Target::new(&None, &some("web-1"), &None, None),
            Err(StepError::Params(m)) if m.contains("port")
        ));
        assert!(matches!(
            Target::new(&some("http://a"), &None, &None, Some(1)),
            Err(StepError::Params(m)) if m.contains("go with pod")
        ));
        for (u, p) in [(None, None), (some("http://a"), some("web-1"))] {
            assert!(matches!(
                Target::new(&u, &p, &None, None),
                Err(StepError::Params(m)) if m.contains("give url, or pod")
            ));
        }
    }

    /// A privileged Job's image is the operator's: `executor.perf_image`
    /// replaces what a runbook names.
    #[test]
    fn the_perf_image_comes_from_the_configuration() {
        let mut with = serde_json::Map::new();
        with.insert("image".into(), "attacker/anything:latest".into());
        StepType::PerfRecord.fill_defaults(&mut with, &StepDefaults::default());
        assert_eq!(
            with["image"], "attacker/anything:latest",
            "not configured: kept"
        );
        let d = StepDefaults {
            perf_image: Some("registry.example/perf:6.1".into()),
            ..Default::default()
        };
        StepType::PerfRecord.fill_defaults(&mut with, &d);
        assert_eq!(with["image"], "registry.example/perf:6.1");
        let mut other = serde_json::Map::new();
        StepType::PprofCapture.fill_defaults(&mut other, &d);
        assert!(!other.contains_key("image"));
    }
}
