//! `http.request`: a generic HTTP call, with a templated body and headers,
//! and secrets from the environment or files (never in the runbook).
//!
//! ```yaml
//! - id: notify_deployer
//!   uses: http.request
//!   with:
//!     method: POST
//!     url: https://deployer.internal/api/hold
//!     headers: {X-Service: "{{alert.labels.service}}"}
//!     secret_headers: {Authorization: {env: DEPLOYER_TOKEN}}
//!     body: {service: "{{alert.labels.service}}"}
//! ```

use super::{Step, StepCtx};
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Secret, StepError, send};

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// GET, POST, PUT, PATCH or DELETE (default POST).
    #[serde(default = "post")]
    pub method: String,
    /// `http://` or `https://`.
    pub url: String,
    /// Plain headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are secrets.
    #[serde(default)]
    pub secret_headers: BTreeMap<String, Secret>,
    /// A JSON body.
    #[serde(default)]
    pub body: Option<Value>,
}

fn post() -> String {
    "POST".into()
}

/// Sends the request; the output holds the status and the body (parsed as
/// JSON when it is JSON).
pub async fn run(http: &reqwest::Client, p: Params) -> Result<Value, StepError> {
    super::check_http_url(&p.url)?;
    let method = reqwest::Method::from_bytes(p.method.to_ascii_uppercase().as_bytes())
        .ok()
        .filter(|m| ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()))
        .ok_or_else(|| {
            StepError::Params(format!(
                "method {:?}: GET, POST, PUT, PATCH or DELETE",
                p.method
            ))
        })?;
    let mut req = http.request(method, &p.url);
    for (k, v) in &p.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    for (k, s) in &p.secret_headers {
        req = req.header(k.as_str(), s.read()?);
    }
    if let Some(b) = &p.body {
        req = req.json(b);
    }
    let (status, body) = send(req, &p.url).await?;
    let body = serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body));
    Ok(json!({"status": status, "body": body}))
}

/// The `http.request` step type.
pub struct HttpRequest;

impl Step for HttpRequest {
    const NAME: &'static str = "http.request";
    const OUTPUT: &'static str =
        "`status` (the HTTP status) and `body` (the answer, JSON when it is JSON).";
    const DESTRUCTIVE: bool = true;
    type Params = Params;

    fn urls(p: &Params) -> Vec<&str> {
        vec![p.url.as_str()]
    }

    async fn run(ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
        run(ctx.http, p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run_json(http: &reqwest::Client, with: &Value) -> Result<Value, StepError> {
        run(http, crate::steps::params(with)?).await
    }
    use crate::steps::receiver;

    #[tokio::test]
    async fn sends_headers_secrets_and_body_and_sorts_statuses() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let (url, got) = receiver::start(vec![200, 503, 404]).await;
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "s3cret\n").unwrap();
        let with = json!({
            "url": format!("{url}/hold"), "headers": {"X-Service": "cart"},
            "secret_headers": {"Authorization": {"file": secret.path()}},
            "body": {"service": "cart"}
        });
        let out = run_json(&http, &with).await.unwrap();
        assert_eq!(out["status"], 200);
        let r = got.lock().unwrap()[0].clone();
        assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/hold"));
        assert_eq!(r.header("x-service").as_deref(), Some("cart"));
        assert_eq!(r.header("authorization").as_deref(), Some("s3cret"));
        assert_eq!(r.json(), json!({"service": "cart"}));
        assert!(
            matches!(run_json(&http, &with).await, Err(StepError::Failed(e)) if e.contains("503"))
        );
        assert!(
            matches!(run_json(&http, &with).await, Err(StepError::Refused(e)) if e.contains("404"))
        );
        for bad in [
            json!({"url": "ftp://x"}),
            json!({"url": "http://x", "method": "TRACE"}),
            json!({"url": "http://x", "secret_headers": {"A": {}}}),
        ] {
            assert!(
                matches!(run_json(&http, &bad).await, Err(StepError::Params(_))),
                "{bad}"
            );
        }
    }
}
