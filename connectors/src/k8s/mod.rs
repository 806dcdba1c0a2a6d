//! The Kubernetes side of the steps.
//!
//! Steps talk to the API server through one small trait, [`Kube`], so the
//! executor's guards and the tests see one seam. [`KubeClient`] is the real
//! implementation, over kube-rs's `Client` (kubeconfig or in-cluster
//! credentials, TLS with ring). It connects lazily: an engine with no
//! cluster runs every other step, and a Kubernetes step says plainly why it
//! cannot run.

pub mod names;
pub mod objects;
pub mod perf_job;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::sync::OnceCell;

/// Why a Kubernetes call failed. Steps turn it into their own error
/// (`StepError`) with `?`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KubeError {
    /// A name, namespace or argument that cannot be sent. Retrying cannot
    /// help.
    #[error("invalid parameters: {0}")]
    Invalid(String),
    /// The call failed; a retry may succeed.
    #[error("{0}")]
    Failed(String),
    /// The API server refused it for good (4xx other than 429).
    #[error("refused: {0}")]
    Refused(String),
    /// Something this client cannot do.
    #[error("{0} is not available")]
    Unavailable(&'static str),
}

/// Why there is no Kubernetes client. Kept (shared) after the first
/// attempt: every step that needs the client gets the same answer.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The kubeconfig named in the configuration (or the default one, for
    /// a `context`) could not be read or used.
    #[error("kubeconfig{}: {source}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Kubeconfig {
        /// The file, when the configuration names one.
        path: Option<PathBuf>,
        /// What kube-rs said.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Nothing to infer credentials from.
    #[error(
        "no Kubernetes credentials (set kubernetes.kubeconfig, KUBECONFIG, or run in a pod): {0}"
    )]
    NoCredentials(#[source] kube::config::InferConfigError),
    /// The configuration was read but the client could not be built.
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A boxed future of the client.
pub type KubeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KubeError>> + Send + 'a>>;

/// What the steps need from an API server.
pub trait Kube: Send + Sync {
    /// Sends `method` to `path` (with its query), with a JSON body if one
    /// is given, and returns the response body. A body over `max` bytes,
    /// an answer later than `timeout` and a non-2xx status are errors; the
    /// status error carries the server's own message.
    fn request<'a>(
        &'a self,
        method: http::Method,
        path: &'a str,
        body: Option<Body>,
        max: usize,
        timeout: Duration,
    ) -> KubeFuture<'a, Vec<u8>>;

    /// GETs `path`; see [`Kube::request`].
    fn get<'a>(&'a self, path: &'a str, max: usize, timeout: Duration) -> KubeFuture<'a, Vec<u8>> {
        self.request(http::Method::GET, path, None, max, timeout)
    }

    /// Which namespaces steps may act in.
    fn scope(&self) -> &Scope;

    /// Runs `argv` in a pod's container (the exec subresource, over a
    /// WebSocket) and collects stdout and stderr (each up to `max` bytes)
    /// and the exit code, within `timeout`. Names are checked by the
    /// caller.
    fn exec<'a>(&'a self, call: ExecCall<'a>) -> KubeFuture<'a, ExecOutput> {
        let _ = call;
        Box::pin(async { Err(KubeError::Unavailable("k8s.exec with this client")) })
    }
}

/// One exec.
#[derive(Debug, Clone, Copy)]
pub struct ExecCall<'a> {
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod.
    pub pod: &'a str,
    /// The container (needed when the pod has several).
    pub container: Option<&'a str>,
    /// The command, one argument per element; never through a shell.
    pub argv: &'a [String],
    /// The most bytes kept of stdout, and of stderr.
    pub max: usize,
    /// The deadline for the whole exec.
    pub timeout: Duration,
}

/// What an exec produced.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExecOutput {
    /// Standard output (lossy UTF-8, cut at the limit).
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The exit code, when the server reported one.
    pub exit_code: Option<i32>,
    /// Whether either stream was cut at the limit.
    pub truncated: bool,
}

/// The exit code in an exec's final `metav1.Status`: 0 on `Success`, the
/// `ExitCode` cause otherwise.
pub fn exit_code(status: &serde_json::Value) -> Option<i32> {
    if status["status"] == "Success" {
        return Some(0);
    }
    status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["reason"] == "ExitCode")
        .and_then(|c| c["message"].as_str())
        .and_then(|m| m.trim().parse().ok())
}

/// A request body: JSON, sent with its content type (plain JSON, or one of
/// the patch types).
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    /// The document.
    pub json: serde_json::Value,
    /// `application/json`, `application/merge-patch+json`, ...
    pub content_type: &'static str,
}

impl Body {
    /// A plain JSON body.
    pub fn json(json: serde_json::Value) -> Body {
        Body {
            json,
            content_type: "application/json",
        }
    }
}

/// The namespaces steps may act in: an allowlist (empty: any) and a
/// denylist, `kube-system` by default. Checked before any request; the
/// RBAC of quench's service account is the second line, on the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    /// Only these namespaces, when not empty.
    pub allow_namespaces: Vec<String>,
    /// Never these.
    pub deny_namespaces: Vec<String>,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            allow_namespaces: Vec::new(),
            deny_namespaces: vec!["kube-system".into()],
        }
    }
}

/// The namespace an API path is in (`/api/v1/namespaces/NS/...`,
/// `/apis/GROUP/VERSION/namespaces/NS/...`), if any.
pub fn namespace_of(path: &str) -> Option<&str> {
    let path = path.split('?').next().unwrap_or(path);
    let mut parts = path.split('/').skip_while(|p| p.is_empty());
    let rest: Vec<&str> = match parts.next()? {
        "api" => parts.skip(1).collect(),
        "apis" => parts.skip(2).collect(),
        _ => return None,
    };
    match rest.as_slice() {
        ["namespaces", ns, _, ..] => Some(ns),
        _ => None,
    }
}

impl Scope {
    /// Refuses a namespace outside the scope, saying which rule.
    pub fn check(&self, namespace: &str) -> Result<(), KubeError> {
        if self.deny_namespaces.iter().any(|n| n == namespace) {
            return Err(KubeError::Refused(format!(
                "namespace {namespace} is denied to quench (kubernetes.deny_namespaces)"
            )));
        }
        if !self.allow_namespaces.is_empty()
            && !self.allow_namespaces.iter().any(|n| n == namespace)
        {
            return Err(KubeError::Refused(format!(
                "namespace {namespace} is not in kubernetes.allow_namespaces"
            )));
        }
        Ok(())
    }
}

/// The path of the API server's proxy to a pod's port.
pub fn pod_proxy_path(namespace: &str, pod: &str, port: u16, rest: &str) -> String {
    format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{}",
        rest.trim_start_matches('/')
    )
}

/// Where the client's credentials come from.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSource {
    /// A kubeconfig file. Without one: `KUBECONFIG`, `~/.kube/config`,
    /// then the in-cluster service account, as kubectl looks.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[serde(default)]
    pub context: Option<String>,
    /// Only these namespaces, when not empty.
    #[serde(default)]
    pub allow_namespaces: Vec<String>,
    /// Never these (default: `kube-system`).
    #[serde(default = "default_deny")]
    pub deny_namespaces: Vec<String>,
}

fn default_deny() -> Vec<String> {
    vec!["kube-system".into()]
}

impl Default for KubeSource {
    fn default() -> Self {
        KubeSource {
            kubeconfig: None,
            context: None,
            allow_namespaces: Vec::new(),
            deny_namespaces: default_deny(),
        }
    }
}

/// The real client: kube-rs, connected on first use.
pub struct KubeClient {
    scope: Scope,
    source: KubeSource,
    client: OnceCell<Result<kube::Client, Arc<ConnectError>>>,
}

impl KubeClient {
    /// A client that will read its credentials from `source` when a step
    /// first needs it.
    pub fn new(source: KubeSource) -> KubeClient {
        KubeClient {
            scope: Scope {
                allow_namespaces: source.allow_namespaces.clone(),
                deny_namespaces: source.deny_namespaces.clone(),
            },
            source,
            client: OnceCell::new(),
        }
    }

    async fn connect(source: &KubeSource) -> Result<kube::Client, Arc<ConnectError>> {
        let options = kube::config::KubeConfigOptions {
            context: source.context.clone(),
            ..Default::default()
        };
        let config = match &source.kubeconfig {
            Some(path) => {
                let file = |source| ConnectError::Kubeconfig {
                    path: Some(path.clone()),
                    source,
                };
                let kc = kube::config::Kubeconfig::read_from(path).map_err(file)?;
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(file)?
            }
            None if source.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|source| ConnectError::Kubeconfig { path: None, source })?,
            None => kube::Config::infer()
                .await
                .map_err(ConnectError::NoCredentials)?,
        };
        let mut config = config;
        // kube retries 429, 503 and 504 by itself by default. quench's
        // executor owns retries (the runbook's policy, within the step's
        // timeout), and a 429 is an answer a step must see: it is how a
        // PodDisruptionBudget refuses an eviction.
        config.default_retry = false;
        Ok(kube::Client::try_from(config).map_err(ConnectError::Client)?)
    }

    /// The connected client, or why there is none.
    pub async fn client(&self) -> Result<&kube::Client, KubeError> {
        self.client
            .get_or_init(|| Self::connect(&self.source))
            .await
            .as_ref()
            .map_err(|e| KubeError::Failed(e.to_string()))
    }
}

/// The message of a `metav1.Status` body, or the start of any other body.
fn status_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(m) = v.get("message").and_then(|m| m.as_str())
    {
        return m.to_string();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

impl Kube for KubeClient {
    fn scope(&self) -> &Scope {
        &self.scope
    }

    fn exec<'a>(&'a self, call: ExecCall<'a>) -> KubeFuture<'a, ExecOutput> {
        Box::pin(async move {
            use k8s_openapi::api::core::v1::Pod;
            use kube::api::AttachParams;
            use tokio::io::AsyncReadExt;

            self.scope.check(call.namespace)?;
            let client = self.client().await?;
            let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), call.namespace);
            let mut ap = AttachParams::default()
                .stdin(false)
                .stdout(true)
                .stderr(true)
                .tty(false);
            if let Some(c) = call.container {
                ap = ap.container(c);
            }
            let what = format!("exec in pod {}/{}", call.namespace, call.pod);
            let work = async {
                let mut proc = api
                    .exec(call.pod, call.argv.to_vec(), &ap)
                    .await
                    .map_err(|e| match &e {
                        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 429 => {
                            KubeError::Refused(format!("{what}: HTTP {}: {}", s.code, s.message))
                        }
                        kube::Error::Api(s) => {
                            KubeError::Failed(format!("{what}: HTTP {}: {}", s.code, s.message))
                        }
                        _ => KubeError::Failed(format!("{what}: {e}")),
                    })?;
                let status = proc.take_status();
                let read = |r: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>| async move {
                    let mut buf = Vec::new();
                    let mut truncated = false;
                    if let Some(mut r) = r {
                        let mut chunk = [0u8; 8192];
                        loop {
                            match r.read(&mut chunk).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    let room = call.max.saturating_sub(buf.len());
                                    if n > room {
                                        truncated = true;
                                    }
                                    buf.extend_from_slice(&chunk[..n.min(room)]);
                                }
                            }
                        }
                    }
                    (buf, truncated)
                };
                let ((out, t1), (err, t2)) = tokio::join!(read(proc.stdout()), read(proc.stderr()));
                let status = match status {
                    Some(s) => s.await,
                    None => None,
                };
                let _ = proc.join().await;
                let status = status
                    .map(|s| serde_json::to_value(s).unwrap_or_default())
                    .unwrap_or_default();
                Ok(ExecOutput {
                    stdout: String::from_utf8_lossy(&out).into_owned(),
                    stderr: String::from_utf8_lossy(&err).into_owned(),
                    exit_code: exit_code(&status),
                    truncated: t1 || t2,
                })
            };
            tokio::time::timeout(call.timeout, work)
                .await
                .map_err(|_| {
                    KubeError::Failed(format!(
                        "{what}: not finished within {}s",
                        call.timeout.as_secs()
                    ))
                })?
        })
    }

    fn request<'a>(
        &'a self,
        method: http::Method,
        path: &'a str,
        body: Option<Body>,
        max: usize,
        timeout: Duration,
    ) -> KubeFuture<'a, Vec<u8>> {
        Box::pin(async move {
            // Every request, reads included (logs, events, the pod proxy),
            // is held to the namespace rules.
            if let Some(ns) = namespace_of(path) {
                self.scope.check(ns)?;
            }
            let client = self.client().await?;
            let builder = http::Request::builder().method(method).uri(path);
            let request = match body {
                Some(b) => builder
                    .header(http::header::CONTENT_TYPE, b.content_type)
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&b.json).expect("a JSON value serialises"),
                    )),
                None => builder.body(kube::client::Body::empty()),
            }
            .map_err(|e| KubeError::Invalid(format!("{path}: {e}")))?;
            let work = async {
                let resp = client
                    .send(request)
                    .await
                    .map_err(|e| KubeError::Failed(format!("API server: {e}")))?;
                let status = resp.status();
                let mut body = resp.into_body();
                let mut bytes = Vec::new();
                // Error bodies are short; read at most 64 KiB of one.
                let cap = if status.is_success() { max } else { 64 << 10 };
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| KubeError::Failed(format!("API server: {e}")))?;
                    if let Ok(data) = frame.into_data() {
                        if bytes.len() + data.len() > cap {
                            if status.is_success() {
                                return Err(KubeError::Failed(format!(
                                    "{path}: response larger than {max} bytes"
                                )));
                            }
                            break;
                        }
                        bytes.extend_from_slice(&data);
                    }
                }
                if status.is_success() {
                    return Ok(bytes);
                }
                let message = format!("{path}: HTTP {status}: {}", status_message(&bytes));
                if status.is_client_error() && status.as_u16() != 429 {
                    Err(KubeError::Refused(message))
                } else {
                    Err(KubeError::Failed(message))
                }
            };
            tokio::time::timeout(timeout, work).await.map_err(|_| {
                KubeError::Failed(format!(
                    "{path}: no answer from the API server within {}s",
                    timeout.as_secs()
                ))
            })?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_denies_kube_system_by_default_and_honours_an_allowlist() {
        let s = Scope::default();
        assert!(s.check("shop").is_ok());
        let e = s.check("kube-system").unwrap_err();
        assert!(
            matches!(&e, KubeError::Refused(m) if m.contains("deny_namespaces")),
            "{e}"
        );
        let s = Scope {
            allow_namespaces: vec!["shop".into()],
            ..Scope::default()
        };
        assert!(s.check("shop").is_ok());
        assert!(
            s.check("billing")
                .unwrap_err()
                .to_string()
                .contains("allow_namespaces")
        );
    }

    #[test]
    fn proxy_path_names_pod_and_port() {
        assert_eq!(
            pod_proxy_path("shop", "web-1", 6060, "/debug/pprof/heap"),
            "/api/v1/namespaces/shop/pods/web-1:6060/proxy/debug/pprof/heap"
        );
    }

    #[test]
    fn status_messages_are_read_from_status_bodies() {
        let body =
            br#"{"kind":"Status","status":"Failure","message":"pods \"x\" not found","code":404}"#;
        assert_eq!(status_message(body), "pods \"x\" not found");
        assert_eq!(status_message(b"  plain error\n"), "plain error");
        assert!(status_message("é".repeat(500).as_bytes()).ends_with("..."));
    }

    #[test]
    fn the_namespace_of_an_api_path() {
        assert_eq!(
            namespace_of("/api/v1/namespaces/shop/pods/web-1/log?x=1"),
            Some("shop")
        );
        assert_eq!(
            namespace_of("/apis/apps/v1/namespaces/kube-system/deployments/dns"),
            Some("kube-system")
        );
        assert_eq!(namespace_of("/api/v1/namespaces/shop/events"), Some("shop"));
        // The namespace object itself, and cluster-scoped kinds: none.
        assert_eq!(namespace_of("/api/v1/namespaces/shop"), None);
        assert_eq!(namespace_of("/api/v1/nodes/n1"), None);
        assert_eq!(namespace_of("/version"), None);
    }
}
