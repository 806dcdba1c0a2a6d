//! `notify.slack`: a message to a Slack incoming webhook, in Block Kit: a
//! header, the key labels as fields, and the incident link and state.
//!
//! ```yaml
//! - id: tell_the_channel
//!   uses: notify.slack
//!   with:
//!     webhook: {env: SLACK_WEBHOOK_URL}
//!     title: "{{alert.labels.alertname}} on {{alert.labels.service}}"
//!     state: remediating
//!     link: "https://quench.internal/incidents/{{incident.id}}"
//!     fields: {service: "{{alert.labels.service}}", severity: "{{alert.labels.severity}}"}
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
    /// The incoming webhook URL: a secret, from env or a file.
    pub webhook: Secret,
    /// The header line.
    pub title: String,
    /// The incident's state, shown with the link.
    #[serde(default)]
    pub state: String,
    /// The incident link.
    #[serde(default)]
    pub link: String,
    /// Key labels, shown as fields (Slack shows at most 10).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// A later step of this run with an approval gate: the message gets
    /// Approve and Reject buttons for it, answered through
    /// `POST /hooks/slack/interactive` by the users in
    /// `hooks.slack.approvers`.
    #[serde(default)]
    pub approve_step: Option<String>,
}

/// Slack's documented limits: a header's text is at most 150 characters, a
/// section at most 10 fields of at most 2000 characters.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// Text for Slack's mrkdwn: `&`, `<` and `>` escaped as Slack documents,
/// so a label value cannot make a link (`<https://evil|click>`) or a
/// mention (`<!channel>`).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The message body, built apart from sending it so its shape can be
/// tested; `incident` goes into the buttons' values.
pub fn message(p: &Params, incident: &str) -> Value {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&p.title, 150)}}),
    ];
    if !p.fields.is_empty() {
        let fields: Vec<Value> = p
            .fields
            .iter()
            .take(10)
            .map(|(k, v)| {
                json!({"type": "mrkdwn", "text": clip(&format!("*{}*\n{}", escape(k), escape(v)), 2000)})
            })
            .collect();
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    let mut line = Vec::new();
    if !p.link.is_empty() {
        // A link's own `|` and `>` would end it early.
        let link = p
            .link
            .replace('|', "%7C")
            .replace('>', "%3E")
            .replace('<', "%3C");
        line.push(format!("<{link}|Open the incident>"));
    }
    if !p.state.is_empty() {
        line.push(format!("state: *{}*", escape(&p.state)));
    }
    if !line.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&line.join(" · "), 3000)}}));
    }
    if let Some(step) = p.approve_step.as_deref().filter(|_| !incident.is_empty()) {
        // Slack's limits: a button's value at most 2000 characters, its
        // text 75.
        let value = clip(&format!("{incident}:{step}"), 2000);
        blocks.push(json!({"type": "actions", "block_id": "quench_approval", "elements": [
            {"type": "button", "action_id": "quench_approve", "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": clip(&format!("Approve {step}"), 75)}},
            {"type": "button", "action_id": "quench_reject", "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": clip(&format!("Reject {step}"), 75)}}
        ]}));
    }
    // `text` is the fallback for notifications and old clients.
    json!({"text": clip(&p.title, 3000), "blocks": blocks})
}

/// Posts the message.
pub async fn run(http: &reqwest::Client, p: Params, incident: &str) -> Result<Value, StepError> {
    let url = p.webhook.read()?;
    send(
        http.post(&url).json(&message(&p, incident)),
        "slack webhook",
    )
    .await?;
    Ok(json!({"posted": true}))
}

/// The `notify.slack` step type.
pub struct NotifySlack;

impl Step for NotifySlack {
    const NAME: &'static str = "notify.slack";
    const OUTPUT: &'static str = "`posted` (true) and `title`.";
    const DESTRUCTIVE: bool = false;
    type Params = Params;

    async fn run(ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
        run(ctx.http, p, ctx.incident).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run_json(http: &reqwest::Client, with: &Value) -> Result<Value, StepError> {
        run(http, crate::steps::params(with)?, "inc-1").await
    }
    use crate::steps::receiver;

    #[tokio::test]
    async fn posts_block_kit_within_slacks_limits() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (url, got) = receiver::start(vec![200]).await;
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), format!("{url}/services/T0/B0/x")).unwrap();
        let fields: serde_json::Map<String, Value> =
            (0..12).map(|i| (format!("l{i:02}"), json!("v"))).collect();
        let with = json!({"webhook": {"file": f.path()}, "title": "x".repeat(200), "state": "remediating",
                          "link": "https://quench/incidents/inc-1", "fields": fields});
        run_json(&reqwest::Client::new(), &with).await.unwrap();
        let body = got.lock().unwrap()[0].json();
        // The documented shape: text fallback, a header of plain_text <= 150
        // characters, a section of at most 10 mrkdwn fields, a link line.
        assert!(body["text"].is_string());
        let blocks = body["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(
            blocks[0]["text"]["text"].as_str().unwrap().chars().count(),
            150
        );
        assert_eq!(blocks[1]["fields"].as_array().unwrap().len(), 10);
        assert!(
            blocks[1]["fields"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with("*l00*")
        );
        assert_eq!(
            blocks[2]["text"]["text"],
            "<https://quench/incidents/inc-1|Open the incident> · state: *remediating*"
        );
        let r = got.lock().unwrap()[0].clone();
        assert_eq!(
            (r.method.as_str(), r.target.as_str()),
            ("POST", "/services/T0/B0/x")
        );
    }

    /// With `approve_step`, Approve and Reject buttons in Slack's
    /// documented shape, their value naming the incident and the step.
    #[test]
    fn approval_buttons() {
        let p: Params = serde_json::from_value(json!({
            "webhook": {"env": "X"}, "title": "t", "approve_step": "restart"
        }))
        .unwrap();
        let m = message(&p, "inc-7");
        let actions = m["blocks"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(actions["type"], "actions");
        let b = actions["elements"].as_array().unwrap();
        assert_eq!(
            (b[0]["action_id"].as_str(), b[0]["value"].as_str()),
            (Some("quench_approve"), Some("inc-7:restart"))
        );
        assert_eq!(
            (b[1]["action_id"].as_str(), b[1]["style"].as_str()),
            (Some("quench_reject"), Some("danger"))
        );
        assert_eq!(b[0]["text"]["type"], "plain_text");
        let plain: Params =
            serde_json::from_value(json!({"webhook": {"env": "X"}, "title": "t"})).unwrap();
        assert!(!message(&plain, "inc-7").to_string().contains("actions"));
    }

    /// Label values cannot add links or mentions to the message.
    #[test]
    fn label_values_are_escaped_for_mrkdwn() {
        let p: Params = serde_json::from_value(json!({
            "webhook": {"env": "X"}, "title": "t", "state": "<!channel>",
            "link": "https://quench/incidents/inc-1|x>",
            "fields": {"service": "<https://evil.example|click here>"}
        }))
        .unwrap();
        let m = message(&p, "inc-1").to_string();
        assert!(
            !m.contains("<!channel>") && m.contains("&lt;!channel&gt;"),
            "{m}"
        );
        assert!(!m.contains("<https://evil.example|"), "{m}");
        assert!(
            m.contains("<https://quench/incidents/inc-1%7Cx%3E|Open the incident>"),
            "{m}"
        );
    }

    /// The webhook URL is the secret: a failed post does not repeat it
    /// into the step's reason, the audit log or the logs.
    #[tokio::test]
    async fn a_failed_post_does_not_leak_the_webhook_url() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "http://127.0.0.1:1/services/T0/B0/SECRETPART").unwrap();
        let p: Params =
            serde_json::from_value(json!({"webhook": {"file": f.path()}, "title": "t"})).unwrap();
        let e = run(&crate::hosts::client(None), p, "inc-1")
            .await
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SECRETPART"), "{e}");
        assert!(e.contains("slack webhook"), "{e}");
    }
}
