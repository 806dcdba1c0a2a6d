//! What `argocd.sync` and `argocd.rollback` share: Argo CD's REST API
//! (`/api/v1/applications/...`) with a bearer token, reading an
//! Application, and waiting for its operation to finish.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::k8s::names;
use crate::steps::{Secret, StepError};

/// Where the application is, and how to reach Argo CD.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRef {
    /// Argo CD's base URL (`https://argocd.example.com`).
    pub server: String,
    /// The application.
    pub app: String,
    /// Its namespace, for applications outside Argo CD's own namespace.
    #[serde(default)]
    pub app_namespace: Option<String>,
    /// The API token (a project or account token).
    pub token: Secret,
}

impl AppRef {
    /// Checks the URL and names, reads the token.
    pub fn check(&self) -> Result<String, StepError> {
        crate::steps::check_http_url(&self.server)?;
        names::subdomain("app", &self.app)?;
        if let Some(ns) = &self.app_namespace {
            names::label("app_namespace", ns)?;
        }
        self.token.read()
    }

    /// `/api/v1/applications/NAME` plus `suffix`, with `appNamespace`.
    pub fn url(&self, suffix: &str) -> String {
        let mut u = format!(
            "{}/api/v1/applications/{}{suffix}",
            self.server.trim_end_matches('/'),
            self.app
        );
        if let Some(ns) = &self.app_namespace {
            u.push_str(&format!("?appNamespace={ns}"));
        }
        u
    }
}

/// Sends a request and reads the JSON answer; Argo CD's `{"message"}`
/// errors keep their words.
pub async fn call(
    http: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, StepError> {
    let mut req = http
        .request(method, url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(30));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let (_, text) = crate::steps::send(req, url).await.map_err(|e| match e {
        // Argo CD errors are {"error", "code", "message"}: keep the message.
        StepError::Refused(m) | StepError::Failed(m) if m.contains("\"message\"") => {
            let short = m
                .split_once(": {")
                .and_then(|(head, rest)| {
                    serde_json::from_str::<Value>(&format!("{{{rest}"))
                        .ok()
                        .and_then(|v| v["message"].as_str().map(|msg| format!("{head}: {msg}")))
                })
                .unwrap_or(m.clone());
            if m.contains("HTTP 5") || m.contains("HTTP 429") {
                StepError::Failed(short)
            } else {
                StepError::Refused(short)
            }
        }
        other => other,
    })?;
    serde_json::from_str(&text).map_err(|e| StepError::Failed(format!("{url}: not JSON: {e}")))
}

/// What an application looks like now: revision, sync and health status.
pub fn state(app: &Value) -> Value {
    json!({
        "revision": app["status"]["sync"]["revision"],
        "sync": app["status"]["sync"]["status"],
        "health": app["status"]["health"]["status"],
        "operation": app["status"]["operationState"]["phase"],
    })
}

/// Waits until the application's operation has finished and it runs
/// `revision` (any, when None) healthy.
pub async fn wait(
    http: &reqwest::Client,
    token: &str,
    app: &AppRef,
    revision: Option<&str>,
    timeout: Duration,
) -> Result<Value, StepError> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = call(http, token, reqwest::Method::GET, &app.url(""), None).await?;
        let op = &now["status"]["operationState"];
        match op["phase"].as_str() {
            Some("Failed") | Some("Error") => {
                return Err(StepError::Failed(format!(
                    "Argo CD application {}: operation {}: {}",
                    app.app,
                    op["phase"].as_str().unwrap_or(""),
                    op["message"].as_str().unwrap_or("")
                )));
            }
            Some("Succeeded")
                if now["status"]["health"]["status"] == "Healthy"
                    && revision.is_none_or(|r| now["status"]["sync"]["revision"] == r) =>
            {
                return Ok(now);
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(StepError::Failed(format!(
                "Argo CD application {}: not done within {}s (now {})",
                app.app,
                timeout.as_secs(),
                state(&now)
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
