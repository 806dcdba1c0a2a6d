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

use serde::Deserialize as _;
use serde_json::Value;

pub mod argocd;
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
pub mod perf_node;
pub mod perf_record;
pub mod pprof_capture;
pub mod promql;
pub mod trace_capture;
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
    /// The other side refused the request for good (HTTP 4xx other than
    /// 429); a retry would be refused too.
    #[error("refused: {0}")]
    Refused(String),
    /// Something this build or this client cannot do (exec through a
    /// client without WebSocket support, say).
    #[error("{0} is not available")]
    Unavailable(&'static str),
}

/// A step's rendered parameters as its params struct.
pub(crate) fn params<T: serde::de::DeserializeOwned>(with: &Value) -> Result<T, StepError> {
    serde_json::from_value(with.clone()).map_err(|e| StepError::Params(e.to_string()))
}

/// Deserialises an optional number written as a number or, because
/// templates render to strings, as a string holding one: `port:
/// "{{alert.labels.pprof_port}}"` renders to `"6060"`.
pub(crate) fn opt_number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + std::str::FromStr,
    T::Err: fmt::Display,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum NumOrText<T> {
        Num(T),
        Text(String),
    }
    match Option::<NumOrText<T>>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrText::Num(n)) => Ok(Some(n)),
        Some(NumOrText::Text(t)) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{t:?} is not a number: {e}"))),
    }
}

/// A number written as a number or as a string holding one (see
/// [`opt_number`]).
pub(crate) fn number<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + std::str::FromStr,
    T::Err: fmt::Display,
{
    opt_number(d)?.ok_or_else(|| serde::de::Error::custom("a number is required"))
}

/// Refuses anything but an http:// or https:// URL.
pub(crate) fn check_http_url(url: &str) -> Result<(), StepError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(StepError::Params(format!(
            "url {url:?} must be http:// or https://"
        )))
    }
}

/// A Go service to read from: a base URL, or a pod's port reached through
/// the API server's pod proxy (so quench needs no route to pod IPs, and the
/// API server's RBAC decides who may read it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    /// `http(s)://host:port`, where `/debug/pprof/` is served.
    Url(String),
    /// A pod's port, through `pods/{pod}:{port}/proxy/`.
    Pod {
        /// Its namespace.
        namespace: String,
        /// Its name.
        pod: String,
        /// The port the service listens on.
        port: u16,
    },
}

impl Target {
    /// Checks the target fields every Go evidence step shares: exactly one
    /// of `url` and `pod`; a pod needs a valid namespace and a port.
    pub(crate) fn new(
        url: &Option<String>,
        pod: &Option<String>,
        namespace: &Option<String>,
        port: Option<u16>,
    ) -> Result<Target, StepError> {
        match (url, pod) {
            (Some(u), None) => {
                if namespace.is_some() || port.is_some() {
                    return Err(StepError::Params(
                        "namespace and port go with pod, not with url".into(),
                    ));
                }
                check_http_url(u)?;
                Ok(Target::Url(u.trim_end_matches('/').to_string()))
            }
            (None, Some(pod)) => {
                let namespace = namespace.as_deref().unwrap_or("default");
                crate::k8s::names::label("namespace", namespace)?;
                crate::k8s::names::subdomain("pod", pod)?;
                let port = match port {
                    Some(p) if p > 0 => p,
                    _ => {
                        return Err(StepError::Params(
                            "a pod target needs the port its service listens on".into(),
                        ));
                    }
                };
                Ok(Target::Pod {
                    namespace: namespace.to_string(),
                    pod: pod.clone(),
                    port,
                })
            }
            _ => Err(StepError::Params(
                "give url, or pod with namespace and port".into(),
            )),
        }
    }

    /// How the target reads in titles, errors and artifact metadata:
    /// the URL, or `pod/NAMESPACE/NAME:PORT`.
    pub(crate) fn label(&self) -> String {
        match self {
            Target::Url(u) => u.clone(),
            Target::Pod {
                namespace,
                pod,
                port,
            } => format!("pod/{namespace}/{pod}:{port}"),
        }
    }

    /// GETs `path` (with its query, relative to the service's root) within
    /// `timeout`, reading at most `max` bytes.
    pub(crate) async fn get(
        &self,
        http: &reqwest::Client,
        kube: Option<&dyn crate::k8s::Kube>,
        path: &str,
        timeout: std::time::Duration,
        max: usize,
    ) -> Result<Vec<u8>, StepError> {
        let path = path.trim_start_matches('/');
        match self {
            Target::Url(base) => {
                let url = if path.is_empty() {
                    base.clone()
                } else {
                    format!("{base}/{path}")
                };
                let resp = http.get(&url).timeout(timeout).send().await.map_err(|e| {
                    if e.is_timeout() {
                        StepError::Failed(format!("{url}: no answer within {}s", timeout.as_secs()))
                    } else {
                        StepError::Failed(format!("{url}: {e}"))
                    }
                })?;
                if !resp.status().is_success() {
                    return Err(StepError::Failed(format!("{url}: HTTP {}", resp.status())));
                }
                read_capped(resp, max)
                    .await
                    .map_err(|e| StepError::Failed(format!("{url}: {e}")))
            }
            Target::Pod {
                namespace,
                pod,
                port,
            } => {
                let kube = kube.ok_or_else(|| {
                    StepError::Failed(format!(
                        "{}: no Kubernetes client is configured",
                        self.label()
                    ))
                })?;
                let proxy = crate::k8s::pod_proxy_path(namespace, pod, *port, path);
                kube.get(&proxy, max, timeout).await
            }
        }
    }
}

/// Reads at most `max` bytes of a response body.
pub(crate) async fn read_capped(resp: reqwest::Response, max: usize) -> Result<Vec<u8>, StepError> {
    let mut resp = resp;
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| StepError::Failed(e.to_string()))?
    {
        if body.len() + chunk.len() > max {
            return Err(StepError::Failed(format!(
                "response larger than {max} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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

/// What an [`Artifacts`] call returns: async, so a store never blocks the
/// step's task (and the async worker under it).
pub type ArtifactFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, String>> + Send + 'a>>;

/// Where steps keep evidence bytes (profiles, flame graphs, traces). The
/// engine hands in the knowledge store; without one, steps still report
/// their summaries and say that nothing was kept.
pub trait Artifacts: Send + Sync {
    /// Stores bytes durably; returns their id (`sha256:<hex>`).
    fn put<'a>(
        &'a self,
        kind: &'a str,
        media_type: &'a str,
        bytes: &'a [u8],
        about: &'a Captured<'a>,
    ) -> ArtifactFuture<'a, String>;
    /// Reads an artifact back (a baseline profile, for a diff).
    fn get<'a>(&'a self, id: &'a str) -> ArtifactFuture<'a, Option<Vec<u8>>>;
    /// Makes the stored profile `id` the healthy baseline of `service` for
    /// profiles of `kind`.
    fn set_baseline<'a>(
        &'a self,
        service: &'a str,
        kind: &'a str,
        id: &'a str,
    ) -> ArtifactFuture<'a, ()> {
        let _ = (service, kind, id);
        Box::pin(async { Err("this artifact store keeps no baselines".into()) })
    }
    /// The id of the baseline of `service` for `kind`, if one was saved.
    fn baseline<'a>(
        &'a self,
        service: &'a str,
        kind: &'a str,
    ) -> ArtifactFuture<'a, Option<String>> {
        let _ = (service, kind);
        Box::pin(async { Ok(None) })
    }
}

/// Where and when evidence was captured, kept with its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Captured<'a> {
    /// What it was captured from: a URL, `pod/NAMESPACE/NAME:PORT`, a pid.
    pub target: Option<&'a str>,
    /// The capture window, UTC.
    pub window: Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>,
}

/// The real steps of this build.
#[derive(Default)]
pub struct Builtin {
    http: reqwest::Client,
    captures: pprof_capture::InFlight,
    artifacts: Option<std::sync::Arc<dyn Artifacts>>,
    kube: Option<std::sync::Arc<dyn crate::k8s::Kube>>,
}

impl Builtin {
    /// Steps that keep their evidence in `store`.
    pub fn with_artifacts(store: std::sync::Arc<dyn Artifacts>) -> Builtin {
        Builtin {
            artifacts: Some(store),
            ..Builtin::default()
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
    fn run<'a>(&'a self, step: StepType, with: &'a Value) -> StepFuture<'a> {
        Box::pin(async move {
            let kube = self.kube.as_deref();
            match step {
                StepType::Wait => wait::run(with).await,
                StepType::HttpRequest => http_request::run(&self.http, with).await,
                StepType::NotifySlack => notify_slack::run(&self.http, with).await,
                StepType::PagerdutyEvent => pagerduty_event::run(&self.http, with).await,
                StepType::GoroutineDump => goroutine_dump::run(&self.http, kube, with).await,
                StepType::PprofCapture => {
                    pprof_capture::run(
                        &self.http,
                        kube,
                        &self.captures,
                        self.artifacts.as_deref(),
                        with,
                    )
                    .await
                }
                StepType::TraceCapture => {
                    trace_capture::run(&self.http, kube, self.artifacts.as_deref(), with).await
                }
                StepType::MetricsScrape => metrics_scrape::run(&self.http, kube, with).await,
                StepType::K8sLogs => k8s_logs::run(need_kube(kube)?, with).await,
                StepType::K8sEvents => k8s_events::run(need_kube(kube)?, with).await,
                StepType::K8sScale => k8s_scale::run(need_kube(kube)?, with).await,
                StepType::K8sDeletePod => k8s_delete_pod::run(need_kube(kube)?, with).await,
                StepType::K8sRollback => k8s_rollback::run(need_kube(kube)?, with).await,
                StepType::K8sCordon => k8s_cordon::run(need_kube(kube)?, with, true).await,
                StepType::K8sUncordon => k8s_cordon::run(need_kube(kube)?, with, false).await,
                StepType::K8sPatch => k8s_patch::run(need_kube(kube)?, with).await,
                StepType::K8sRevert => k8s_revert::run(need_kube(kube)?, with).await,
                StepType::K8sWait => k8s_wait::run(need_kube(kube)?, with).await,
                StepType::K8sDrain => k8s_drain::run(need_kube(kube)?, with).await,
                StepType::K8sExec => k8s_exec::run(need_kube(kube)?, with).await,
                StepType::ArgocdSync => argocd_sync::run(&self.http, with).await,
                StepType::ArgocdRollback => argocd_rollback::run(&self.http, with).await,
                StepType::K8sApply => k8s_apply::run(need_kube(kube)?, with).await,
                StepType::K8sRolloutRestart => {
                    k8s_rollout_restart::run(need_kube(kube)?, with).await
                }
                StepType::PerfRecord => {
                    perf_record::run(kube, self.artifacts.as_deref(), with).await
                }
                StepType::PromqlQuery => promql::query(&self.http, with).await,
                StepType::PromqlRange => promql::range(&self.http, with).await,
                StepType::PromqlVerify => promql::verify(&self.http, with).await,
            }
        })
    }
}

/// The Kubernetes client, or why a Kubernetes step cannot run.
fn need_kube(kube: Option<&dyn crate::k8s::Kube>) -> Result<&dyn crate::k8s::Kube, StepError> {
    kube.ok_or_else(|| StepError::Failed("no Kubernetes client is configured".into()))
}

/// A secret read from the environment or a file, never written in a runbook.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// An environment variable holding it.
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding it (trailing whitespace dropped).
    #[serde(default)]
    pub file: Option<String>,
}

impl Secret {
    /// Reads the secret.
    pub fn read(&self) -> Result<String, StepError> {
        match (&self.env, &self.file) {
            (Some(v), None) => std::env::var(v)
                .map_err(|_| StepError::Params(format!("environment variable {v} is not set"))),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|s| s.trim_end().to_string())
                .map_err(|e| StepError::Params(format!("cannot read secret file {f}: {e}"))),
            _ => Err(StepError::Params(
                "a secret needs exactly one of env or file".into(),
            )),
        }
    }
}

/// Sends a request and sorts the answer: 2xx is success, 429 and 5xx and
/// network errors may be retried, other 4xx are refused for good.
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    what: &str,
) -> Result<(u16, String), StepError> {
    let resp = req
        .send()
        .await
        .map_err(|e| StepError::Failed(format!("{what}: {e}")))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let short: String = body.chars().take(500).collect();
    match status {
        200..=299 => Ok((status, body)),
        429 | 500..=599 => Err(StepError::Failed(format!("{what}: HTTP {status}: {short}"))),
        _ => Err(StepError::Refused(format!(
            "{what}: HTTP {status}: {short}"
        ))),
    }
}

/// A one-shot HTTP receiver on loopback for tests: answers each request
/// with the next scripted status and keeps what it received.
#[cfg(test)]
pub(crate) mod receiver {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One received request.
    #[derive(Debug, Clone)]
    pub struct Received {
        pub head: String,
        pub body: Vec<u8>,
    }

    impl Received {
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).expect("JSON body")
        }
        pub fn header(&self, name: &str) -> Option<String> {
            self.head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        }
    }

    /// Starts a receiver; returns its URL and what it got.
    pub async fn start(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<Received>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        tokio::spawn(async move {
            let mut statuses = statuses.into_iter();
            loop {
                let Ok((mut sock, _)) = l.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let (head, body) = loop {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        break (String::from_utf8_lossy(&buf).into_owned(), Vec::new());
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).into_owned();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        let mut body = buf[i + 4..].to_vec();
                        while body.len() < len {
                            let n = sock.read(&mut tmp).await.unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            body.extend_from_slice(&tmp[..n]);
                        }
                        break (head, body);
                    }
                };
                g.lock().unwrap().push(Received { head, body });
                let status = statuses.next().unwrap_or(200);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            }
        });
        (url, got)
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

            /// Whether the step can ask its server what it would do
            /// without doing it (`dry_run: true`, Kubernetes' `dryRun=All`).
            pub fn server_dry_run(self) -> bool {
                matches!(
                    self,
                    StepType::K8sDeletePod
                        | StepType::K8sRolloutRestart
                        | StepType::K8sScale
                        | StepType::K8sRollback
                        | StepType::K8sCordon
                        | StepType::K8sUncordon
                        | StepType::K8sPatch
                        | StepType::K8sRevert
                        | StepType::K8sApply
                        | StepType::K8sDrain
                )
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
    /// Puts back what an earlier step changed, from its revert record.
    K8sRevert = "k8s.revert", destructive: true;
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

/// Whether `key` is a parameter of `T`: serde says "unknown field" for a
/// name the struct does not have, and something else (a missing or
/// mistyped field) for one it does. Values are not checked: in a runbook
/// they may be templates, rendered only when the step runs.
fn probe<T: serde::de::DeserializeOwned>(key: &str) -> Option<String> {
    let mut one = serde_json::Map::new();
    one.insert(key.to_string(), Value::Null);
    match serde_json::from_value::<T>(Value::Object(one)) {
        Err(e) if e.to_string().starts_with("unknown field") => Some(e.to_string()),
        _ => None,
    }
}

impl StepType {
    /// Why `key` is not a parameter of this step type (serde's message,
    /// which lists the known ones), or `None` if it is one.
    pub fn unknown_param(self, key: &str) -> Option<String> {
        match self {
            StepType::Wait => probe::<wait::Params>(key),
            StepType::HttpRequest => probe::<http_request::Params>(key),
            StepType::NotifySlack => probe::<notify_slack::Params>(key),
            StepType::PagerdutyEvent => probe::<pagerduty_event::Params>(key),
            StepType::GoroutineDump => probe::<goroutine_dump::Params>(key),
            StepType::PprofCapture => probe::<pprof_capture::Params>(key),
            StepType::TraceCapture => probe::<trace_capture::Params>(key),
            StepType::MetricsScrape => probe::<metrics_scrape::Params>(key),
            StepType::PerfRecord => probe::<perf_record::Params>(key),
            StepType::PromqlQuery => probe::<promql::QueryParams>(key),
            StepType::PromqlRange => probe::<promql::RangeParams>(key),
            StepType::PromqlVerify => probe::<promql::VerifyParams>(key),
            StepType::K8sLogs => probe::<k8s_logs::Params>(key),
            StepType::K8sEvents => probe::<k8s_events::Params>(key),
            StepType::K8sScale => probe::<k8s_scale::Params>(key),
            StepType::K8sDeletePod => probe::<k8s_delete_pod::Params>(key),
            StepType::K8sRollback => probe::<k8s_rollback::Params>(key),
            StepType::K8sCordon | StepType::K8sUncordon => probe::<k8s_cordon::Params>(key),
            StepType::K8sPatch => probe::<k8s_patch::Params>(key),
            StepType::K8sRevert => probe::<k8s_revert::Params>(key),
            StepType::K8sWait => probe::<k8s_wait::Params>(key),
            StepType::K8sDrain => probe::<k8s_drain::Params>(key),
            StepType::K8sExec => probe::<k8s_exec::Params>(key),
            StepType::ArgocdSync => probe::<argocd_sync::Params>(key),
            StepType::ArgocdRollback => probe::<argocd_rollback::Params>(key),
            StepType::K8sApply => probe::<k8s_apply::Params>(key),
            StepType::K8sRolloutRestart => probe::<k8s_rollout_restart::Params>(key),
        }
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
}
