//! What the step types share: their error, reading their parameters,
//! secrets, Go service targets, and sending a request.

use std::fmt;

use serde::Deserialize as _;
use serde_json::Value;

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
    Ok(super::step::parse_params(with)?)
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

/// The schema of a field read by [`number`] or [`opt_number`]: a number,
/// or a string (a template that renders to one).
pub(crate) fn number_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["integer", "string"],
        "description": "A number, or a template that renders to one.",
    })
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
                Ok(kube.get(&proxy, max, timeout).await?)
            }
        }
    }
}

/// The most a step reads of an answer it keeps as text or JSON (an API's
/// answer, a webhook's, Prometheus'): whoever answers cannot make quench
/// hold gigabytes until the step's timeout.
pub const MAX_ANSWER: usize = 16 << 20;

/// Reads at most `max` bytes of an answer, or fails saying it was larger.
pub async fn read_capped(resp: reqwest::Response, max: usize) -> Result<Vec<u8>, StepError> {
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

impl From<crate::k8s::KubeError> for StepError {
    fn from(e: crate::k8s::KubeError) -> StepError {
        use crate::k8s::KubeError;
        match e {
            KubeError::Invalid(m) => StepError::Params(m),
            KubeError::Failed(m) => StepError::Failed(m),
            KubeError::Refused(m) => StepError::Refused(m),
            KubeError::Unavailable(what) => StepError::Unavailable(what),
        }
    }
}

impl From<super::ArtifactsError> for StepError {
    fn from(e: super::ArtifactsError) -> StepError {
        match e {
            super::ArtifactsError::Refused(m) => StepError::Refused(m),
            super::ArtifactsError::Failed(m) => StepError::Failed(m),
        }
    }
}

impl StepError {
    /// Whether trying again may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StepError::Failed(_))
    }
}

/// A secret read from the environment or a file, never written in a
/// runbook: `{env: NAME}` or `{file: PATH}`, exactly one.
#[derive(Debug, Clone, schemars::JsonSchema)]
pub struct Secret {
    /// An environment variable holding it.
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding it (trailing whitespace dropped).
    #[serde(default)]
    pub file: Option<String>,
}

/// The shape a secret is written in, for the messages.
const SECRET_SHAPE: &str = "a secret is {env: NAME} or {file: PATH}, never the value itself";

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Written {
            #[serde(default)]
            env: Option<String>,
            #[serde(default)]
            file: Option<String>,
        }
        use serde::de::Error;
        let v = Value::deserialize(d)?;
        if !v.is_object() {
            let what = match &v {
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                Value::Array(_) => "a list",
                _ => "nothing",
            };
            return Err(D::Error::custom(format!("{what} where {SECRET_SHAPE}")));
        }
        let w: Written = serde_json::from_value(v)
            .map_err(|e| D::Error::custom(format!("{e}: {SECRET_SHAPE}")))?;
        match (&w.env, &w.file) {
            (Some(_), None) | (None, Some(_)) => Ok(Secret {
                env: w.env,
                file: w.file,
            }),
            _ => Err(D::Error::custom(format!(
                "exactly one of env or file: {SECRET_SHAPE}"
            ))),
        }
    }
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
        // Without the URL: it may be the secret (a Slack webhook); `what`
        // names the call.
        .map_err(|e| StepError::Failed(format!("{what}: {}", e.without_url())))?;
    let status = resp.status().as_u16();
    let body = read_capped(resp, MAX_ANSWER)
        .await
        .map_err(|e| StepError::Failed(format!("{what}: {e}")))?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let short: String = body.chars().take(500).collect();
    match status {
        200..=299 => Ok((status, body)),
        429 | 500..=599 => Err(StepError::Failed(format!("{what}: HTTP {status}: {short}"))),
        _ => Err(StepError::Refused(format!(
            "{what}: HTTP {status}: {short}"
        ))),
    }
}

/// An HTTP receiver on loopback for tests (axum, a real HTTP server):
/// answers each request with the next scripted status and keeps what it
/// received.
#[cfg(test)]
pub(crate) mod receiver {
    use std::sync::{Arc, Mutex};

    /// One received request.
    #[derive(Debug, Clone)]
    pub struct Received {
        pub method: http::Method,
        /// Path and query.
        pub target: String,
        pub headers: http::HeaderMap,
        pub body: Vec<u8>,
    }

    impl Received {
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).expect("JSON body")
        }
        pub fn header(&self, name: &str) -> Option<String> {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        }
    }

    /// Starts a receiver; returns its URL and what it got.
    pub async fn start(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<Received>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(statuses.into_iter()));
        let g = got.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (g, statuses) = (g.clone(), statuses.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                g.lock().unwrap().push(Received {
                    method: parts.method,
                    target: parts
                        .uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers: parts.headers,
                    body: body.to_vec(),
                });
                let status = statuses.lock().unwrap().next().unwrap_or(200);
                (
                    http::StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/json")],
                    "{}",
                )
            }
        });
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, got)
    }
}
