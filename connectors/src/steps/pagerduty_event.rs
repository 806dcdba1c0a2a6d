//! `pagerduty.event`: PagerDuty Events API v2 (trigger, acknowledge,
//! resolve), with a `dedup_key` derived from the incident so the three
//! actions land on one PagerDuty incident.
//!
//! ```yaml
//! - id: page
//!   uses: pagerduty.event
//!   with:
//!     routing_key: {env: PD_ROUTING_KEY}
//!     action: trigger
//!     dedup_key: "quench-{{incident.id}}"
//!     summary: "{{alert.labels.alertname}} on {{alert.labels.service}}: runbook escalated"
//!     source: "{{alert.labels.service}}"
//!     severity: critical
//! ```
//!
//! Documented limits: `summary` at most 1024 characters, `dedup_key` at
//! most 255. 202 is success; 429 and 5xx are retried; 400 is not.

use super::{Step, StepCtx};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Secret, StepError, send};

/// Where events go unless `url` says otherwise.
pub const EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The integration's routing key: a secret.
    pub routing_key: Secret,
    /// `trigger`, `acknowledge` or `resolve`.
    pub action: String,
    /// Ties the events of one incident together (at most 255 characters).
    pub dedup_key: String,
    /// For `trigger`: the summary (cut to 1024 characters).
    #[serde(default)]
    pub summary: String,
    /// For `trigger`: the affected system.
    #[serde(default)]
    pub source: String,
    /// For `trigger`: critical, error, warning or info.
    #[serde(default = "critical")]
    pub severity: String,
    /// Extra details.
    #[serde(default)]
    pub details: Option<Value>,
    /// The Events API endpoint (tests point it at a local receiver).
    #[serde(default)]
    pub url: Option<String>,
}

fn critical() -> String {
    "critical".into()
}

/// The event body, built apart from sending it so its shape can be tested.
pub fn event(p: &Params, routing_key: &str) -> Result<Value, StepError> {
    if !["trigger", "acknowledge", "resolve"].contains(&p.action.as_str()) {
        return Err(StepError::Params(format!(
            "action {:?}: trigger, acknowledge or resolve",
            p.action
        )));
    }
    if p.dedup_key.is_empty() || p.dedup_key.chars().count() > 255 {
        return Err(StepError::Params(
            "dedup_key must be 1 to 255 characters".into(),
        ));
    }
    let mut e =
        json!({"routing_key": routing_key, "event_action": p.action, "dedup_key": p.dedup_key});
    if p.action == "trigger" {
        if !["critical", "error", "warning", "info"].contains(&p.severity.as_str()) {
            return Err(StepError::Params(format!(
                "severity {:?}: critical, error, warning or info",
                p.severity
            )));
        }
        if p.summary.is_empty() || p.source.is_empty() {
            return Err(StepError::Params(
                "trigger needs a summary and a source".into(),
            ));
        }
        let summary: String = p.summary.chars().take(1024).collect();
        let mut payload = json!({"summary": summary, "source": p.source, "severity": p.severity});
        if let Some(d) = &p.details {
            payload["custom_details"] = d.clone();
        }
        e["payload"] = payload;
    }
    Ok(e)
}

/// Sends the event.
pub async fn run(http: &reqwest::Client, p: Params) -> Result<Value, StepError> {
    let body = event(&p, &p.routing_key.read()?)?;
    let url = p.url.as_deref().unwrap_or(EVENTS_URL);
    let (status, _) = send(http.post(url).json(&body), "pagerduty events").await?;
    Ok(json!({"status": status, "dedup_key": p.dedup_key, "action": p.action}))
}

/// The `pagerduty.event` step type.
pub struct PagerdutyEvent;

impl Step for PagerdutyEvent {
    const NAME: &'static str = "pagerduty.event";
    const OUTPUT: &'static str = "`status`, `dedup_key` and `event_action`.";
    const DESTRUCTIVE: bool = false;
    type Params = Params;

    fn urls(p: &Params) -> Vec<&str> {
        p.url.as_deref().into_iter().collect()
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
    async fn follows_the_events_v2_contract() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let (url, got) = receiver::start(vec![202, 429, 400, 202]).await;
        let key = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(key.path(), "R0UTINGKEY").unwrap();
        let with = |action: &str| {
            json!({"routing_key": {"file": key.path()}, "action": action, "dedup_key": "quench-inc-7",
                   "summary": "y".repeat(2000), "source": "checkout", "url": format!("{url}/v2/enqueue"),
                   "details": {"runbook": "go-high-cpu"}})
        };
        let out = run_json(&http, &with("trigger")).await.unwrap();
        assert_eq!(out["status"], 202);
        let e = got.lock().unwrap()[0].json();
        assert_eq!(e["routing_key"], "R0UTINGKEY");
        assert_eq!(e["event_action"], "trigger");
        assert_eq!(e["dedup_key"], "quench-inc-7");
        assert_eq!(
            e["payload"]["summary"].as_str().unwrap().chars().count(),
            1024
        );
        assert_eq!(e["payload"]["severity"], "critical");
        assert_eq!(e["payload"]["custom_details"]["runbook"], "go-high-cpu");
        // 429: retryable; 400: not.
        assert!(matches!(
            run_json(&http, &with("trigger")).await,
            Err(StepError::Failed(_))
        ));
        assert!(matches!(
            run_json(&http, &with("trigger")).await,
            Err(StepError::Refused(_))
        ));
        // resolve carries no payload.
        run_json(&http, &with("resolve")).await.unwrap();
        let e = got.lock().unwrap()[3].json();
        assert_eq!(e["event_action"], "resolve");
        assert!(e.get("payload").is_none());
        let mut bad = with("trigger");
        bad["dedup_key"] = json!("k".repeat(256));
        assert!(matches!(
            run_json(&http, &bad).await,
            Err(StepError::Params(_))
        ));
        bad = with("snooze");
        assert!(matches!(
            run_json(&http, &bad).await,
            Err(StepError::Params(_))
        ));
    }
}
