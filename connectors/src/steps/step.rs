//! What a step type is: the [`Step`] trait, and the [`StepCtx`] every run
//! gets. A step type is one file that implements [`Step`] and one line in
//! the registry (`steps/mod.rs`); the registry derives everything else
//! (the `StepType` enum, dispatch, the flags, the lint check of `with`
//! keys, the schema).

use std::future::Future;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Artifacts, Captured, StepError};
use crate::hosts::HostAllowlist;
use crate::k8s::Kube;

/// One step type.
pub trait Step {
    /// The name written after `uses:`.
    const NAME: &'static str;
    /// Whether it changes something outside quench. The executor, not the
    /// step, decides whether a destructive step may run (dry-run,
    /// approvals, budgets, kill switch).
    const DESTRUCTIVE: bool;
    /// Whether it can ask its server what it would do without doing it
    /// (Kubernetes' `dryRun=All`, Argo CD's `dryRun`). Such a step reads
    /// [`StepCtx::dry_run`].
    const SERVER_DRY_RUN: bool = false;
    /// What its output holds (`steps.<id>.output`), for `quench steps`.
    const OUTPUT: &'static str = "";
    /// Whether a missing `url` is the configuration's `prometheus.url`.
    const URL_IS_PROMETHEUS: bool = false;
    /// Whether `image` is the configuration's `executor.perf_image`.
    const IMAGE_IS_PERF: bool = false;
    /// Its `with:`, as a struct that refuses unknown fields.
    type Params: DeserializeOwned + schemars::JsonSchema + Send + 'static;

    /// The object it acts on (for locks, budgets and the audit log).
    fn target(p: &Self::Params) -> Acts {
        let _ = p;
        Acts::default()
    }

    /// The URLs it will call, checked against `executor.allowed_hosts`
    /// before it runs.
    fn urls(p: &Self::Params) -> Vec<&str> {
        let _ = p;
        Vec::new()
    }

    /// What the types alone cannot say (a range, one of two fields): run
    /// by the lint, by `quench test` and before every run.
    fn validate(p: &Self::Params) -> Result<(), ParamError> {
        let _ = p;
        Ok(())
    }

    /// Does the work.
    fn run(
        ctx: &StepCtx<'_>,
        p: Self::Params,
    ) -> impl Future<Output = Result<Value, StepError>> + Send;
}

/// Parameters the configuration gives every step that leaves them out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepDefaults {
    /// `prometheus.url`: the `url` of the PromQL steps.
    pub prometheus_url: Option<String>,
    /// `executor.perf_image`: the image of `perf.record`'s Job. When set,
    /// it replaces whatever a runbook names (a privileged Job's image is
    /// the operator's choice, not a runbook's).
    pub perf_image: Option<String>,
}

/// Why a step's parameters do not fit its type, and which one (the
/// top-level `with` key) when one is to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ParamError {
    /// The `with` key, when the problem is in one.
    pub field: Option<String>,
    /// What is wrong, and what is expected.
    pub message: String,
}

impl ParamError {
    /// A problem with one field.
    pub fn field(field: &str, message: impl Into<String>) -> ParamError {
        ParamError {
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}

impl From<ParamError> for StepError {
    fn from(e: ParamError) -> StepError {
        StepError::Params(e.to_string())
    }
}

/// Parses `with` as `T`, naming the field a problem is in.
pub fn parse_params<T: DeserializeOwned>(with: &Value) -> Result<T, ParamError> {
    serde_path_to_error::deserialize(with.clone()).map_err(|e| {
        let field = e.path().iter().next().and_then(|seg| match seg {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        });
        ParamError {
            field,
            message: in_words(&e.into_inner().to_string()),
        }
    })
}

/// serde's type names as a runbook author reads them.
fn in_words(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, words) in [
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        out = out.replace(rust, words);
    }
    out
}

/// The object a step acts on: a namespace and a name, either unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acts {
    /// Its namespace.
    pub namespace: Option<String>,
    /// Its name (a Deployment, a pod, a node, an application).
    pub name: Option<String>,
}

impl Acts {
    /// `namespace/name`.
    pub fn new(namespace: Option<&str>, name: &str) -> Acts {
        Acts {
            namespace: namespace.map(str::to_string),
            name: Some(name.to_string()),
        }
    }

    /// Either part may be unknown.
    pub fn maybe(namespace: Option<&str>, name: Option<&str>) -> Acts {
        Acts {
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
        }
    }

    /// `namespace/name`, with `-` for what is unknown: the key of locks and
    /// budgets, and the target in the audit log.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.namespace.as_deref().unwrap_or("-"),
            self.name.as_deref().unwrap_or("-")
        )
    }
}

/// Everything a run may use besides its parameters.
#[derive(Clone, Copy)]
pub struct StepCtx<'a> {
    /// The HTTP client (no redirects to unchecked hosts).
    pub http: &'a reqwest::Client,
    /// The Kubernetes client, if one is configured.
    pub kube: Option<&'a dyn Kube>,
    /// Where evidence bytes are kept, if anywhere.
    pub artifacts: Option<&'a dyn Artifacts>,
    /// CPU captures in flight (Go serves one at a time per process).
    pub captures: &'a super::pprof_capture::InFlight,
    /// `executor.allowed_hosts`, if set.
    pub hosts: Option<&'a HostAllowlist>,
    /// Ask the server what would happen; change nothing.
    pub dry_run: bool,
    /// The incident the step runs for (empty outside a run).
    pub incident: &'a str,
    /// The step's id in its runbook (empty outside a run).
    pub step: &'a str,
}

impl<'a> StepCtx<'a> {
    /// The Kubernetes client, or why a Kubernetes step cannot run.
    pub fn kube(&self) -> Result<&'a dyn Kube, StepError> {
        self.kube
            .ok_or_else(|| StepError::Failed("no Kubernetes client is configured".into()))
    }

    /// Where and when evidence was captured, tagged with this run.
    pub fn captured(
        &self,
        target: Option<&'a str>,
        window: Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>,
    ) -> Captured<'a> {
        Captured {
            target,
            window,
            incident: (!self.incident.is_empty()).then_some(self.incident),
            step: (!self.step.is_empty()).then_some(self.step),
        }
    }
}

/// The keys a params struct accepts, aliases included, straight from
/// serde's derive (the `fields` it hands to `deserialize_struct`): no
/// parsing of error messages.
pub fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldNames) {
        Err(Found(fields)) => fields,
        Ok(_) => &[],
    }
}

/// A deserializer that only asks a struct for its field names.
struct FieldNames;

/// The "error" [`FieldNames`] ends with: the names it found.
#[derive(Debug)]
struct Found(&'static [&'static str]);

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fields {:?}", self.0)
    }
}

impl std::error::Error for Found {}

impl serde::de::Error for Found {
    fn custom<M: std::fmt::Display>(_: M) -> Found {
        Found(&[])
    }
}

impl<'de> serde::Deserializer<'de> for FieldNames {
    type Error = Found;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
        Err(Found(&[]))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Found> {
        Err(Found(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Parses `with` as `S`'s parameters and runs it.
pub(crate) async fn dispatch<S: Step>(ctx: &StepCtx<'_>, with: &Value) -> Result<Value, StepError> {
    let p: S::Params = super::params(with)?;
    S::validate(&p)?;
    for url in S::urls(&p) {
        match ctx.hosts {
            Some(hosts) => hosts.check_url(url),
            None => crate::hosts::check_literal(url),
        }
        .map_err(|e| StepError::Refused(e.to_string()))?;
    }
    S::run(ctx, p).await
}

/// What the executor learns from `with` before it runs a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The object it acts on.
    pub target: Acts,
    /// The URLs it will call.
    pub urls: Vec<String>,
}

/// Parses `with` as `S`'s parameters: its target and URLs.
pub(crate) fn check<S: Step>(with: &Value) -> Result<Checked, StepError> {
    let p: S::Params = parse_params(with)?;
    S::validate(&p)?;
    Ok(Checked {
        target: S::target(&p),
        urls: S::urls(&p).into_iter().map(str::to_string).collect(),
    })
}

/// Checks `with` as `S`'s parameters: types, required fields, enums,
/// and [`Step::validate`].
pub(crate) fn lint<S: Step>(with: &Value) -> Result<(), ParamError> {
    let p: S::Params = parse_params(with)?;
    S::validate(&p)
}

/// The JSON schema of `S`'s `with`, with nothing referenced (every
/// step's params struct is called `Params`; inlined, their names never
/// meet).
pub(crate) fn schema<S: Step>() -> schemars::Schema {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.inline_subschemas = true;
    settings.meta_schema = None;
    settings
        .into_generator()
        .into_root_schema_for::<S::Params>()
}

#[cfg(test)]
mod tests {
    //! Adding a step type, the way `steps/mod.rs` does it: a params struct,
    //! an `impl Step`, and the registry's generic functions do the rest.

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct EchoParams {
        /// What to say.
        text: String,
        /// Where it would go.
        #[serde(default)]
        url: Option<String>,
        #[serde(default, alias = "ns")]
        namespace: Option<String>,
    }

    struct Echo;

    impl Step for Echo {
        const NAME: &'static str = "test.echo";
        const DESTRUCTIVE: bool = false;
        type Params = EchoParams;

        fn target(p: &EchoParams) -> Acts {
            Acts::new(p.namespace.as_deref(), "echo")
        }

        fn urls(p: &EchoParams) -> Vec<&str> {
            p.url.as_deref().into_iter().collect()
        }

        async fn run(ctx: &StepCtx<'_>, p: EchoParams) -> Result<Value, StepError> {
            Ok(json!({"said": p.text, "for": ctx.incident, "dry_run": ctx.dry_run}))
        }
    }

    fn ctx<'a>(
        http: &'a reqwest::Client,
        captures: &'a super::super::pprof_capture::InFlight,
        hosts: Option<&'a HostAllowlist>,
    ) -> StepCtx<'a> {
        StepCtx {
            http,
            kube: None,
            artifacts: None,
            captures,
            hosts,
            dry_run: false,
            incident: "inc-1",
            step: "echo",
        }
    }

    #[tokio::test]
    async fn a_new_step_gets_dispatch_checks_fields_and_schema_from_its_impl() {
        assert_eq!(fields::<EchoParams>(), ["text", "url", "namespace", "ns"]);
        let c = check::<Echo>(&json!({"text": "hi", "ns": "shop", "url": "http://a:1/"})).unwrap();
        assert_eq!(c.target.key(), "shop/echo");
        assert_eq!(c.urls, ["http://a:1/"]);
        assert!(matches!(
            check::<Echo>(&json!({"txt": "hi"})),
            Err(StepError::Params(m)) if m.contains("unknown field `txt`")
        ));
        let schema = schema::<Echo>().to_value();
        assert_eq!(schema["required"], json!(["text"]));
        assert_eq!(schema["properties"]["text"]["description"], "What to say.");

        let _ = rustls::crypto::ring::default_provider().install_default();
        let (http, captures) = (reqwest::Client::new(), Default::default());
        let out = dispatch::<Echo>(&ctx(&http, &captures, None), &json!({"text": "hi"}))
            .await
            .unwrap();
        assert_eq!(out, json!({"said": "hi", "for": "inc-1", "dry_run": false}));
        // The URLs it declares are checked against the host list first.
        let hosts = HostAllowlist::parse(&["prometheus".to_string()]).unwrap();
        let e = dispatch::<Echo>(
            &ctx(&http, &captures, Some(&hosts)),
            &json!({"text": "hi", "url": "http://169.254.169.254/"}),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, StepError::Refused(m) if m.contains("not in executor.allowed_hosts")),
            "{e}"
        );
    }
}
