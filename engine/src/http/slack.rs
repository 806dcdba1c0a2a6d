//! `POST /hooks/slack/interactive`: approvals from the Approve and Reject
//! buttons `notify.slack` posts (`approve_step`).
//!
//! Each request is checked as Slack documents: `X-Slack-Signature` is
//! `v0=` and HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}`
//! with the app's signing secret (compared in constant time), and a
//! timestamp more than 5 minutes away is refused; a request seen before
//! (same signature) is refused as a replay. The Slack user must be in
//! `hooks.slack.approvers`, which names them in quench; anyone else is told
//! so. A gate is answered once: a second click finds nothing waiting. Slack
//! gets its answer at once (it wants one within 3 s); the message's
//! buttons are replaced with the outcome through `response_url` afterwards.
//! Every click is in the audit log with the Slack user.

use super::*;
use hmac::{KeyInit, Mac};
use quench_knowledge::AuditAction;
use std::collections::HashMap;
use std::sync::Mutex;

/// How far a request's timestamp may be from now.
const MAX_SKEW_SECS: i64 = 300;
/// The largest interaction payload read.
const MAX_BODY: usize = 64 * 1024;

/// Signatures seen in the last [`MAX_SKEW_SECS`] (twice, for both sides):
/// a replayed request is refused.
#[derive(Default)]
pub struct Seen(Mutex<HashMap<String, i64>>);

impl Seen {
    /// Whether `sig` is new (and remembers it).
    fn first_time(&self, sig: &str, now: i64) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, at| now - *at <= 2 * MAX_SKEW_SECS);
        m.insert(sig.to_string(), now).is_none()
    }
}

fn refuse(m: impl Into<String>) -> Response {
    error(StatusCode::UNAUTHORIZED, "unauthorized", m, Value::Null)
}

/// `application/x-www-form-urlencoded` decoding of one value.
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(x) => {
                        out.push(x);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            x => out.push(x),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks Slack's signature and timestamp over the raw body.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<String, String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ts = get("x-slack-request-timestamp").ok_or("missing X-Slack-Request-Timestamp")?;
    let at: i64 = ts
        .parse()
        .map_err(|_| "X-Slack-Request-Timestamp is not a number".to_string())?;
    if (now - at).abs() > MAX_SKEW_SECS {
        return Err(format!(
            "X-Slack-Request-Timestamp is {}s from now (at most {MAX_SKEW_SECS}s): a replay or a wrong clock",
            now - at
        ));
    }
    let sig = get("x-slack-signature").ok_or("missing X-Slack-Signature")?;
    let hex_sig = sig
        .strip_prefix("v0=")
        .ok_or("X-Slack-Signature is not v0=<hex>")?;
    let given = (0..hex_sig.len() / 2)
        .map(|i| u8::from_str_radix(hex_sig.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .ok()
        .filter(|v| v.len() * 2 == hex_sig.len())
        .ok_or("X-Slack-Signature is not hex")?;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| "X-Slack-Signature does not match the signing secret".to_string())?;
    Ok(sig.to_string())
}

/// Posts to the click's `response_url` (when it is Slack's), off the
/// request: Slack has had its answer already.
fn respond(s: &AppState, url: &str, body: Value) {
    let prefix = &s.config.hooks.slack.response_url_prefix;
    if !url.starts_with(prefix.as_str()) {
        tracing::warn!(url_prefix = %prefix, "a Slack response_url outside hooks.slack.response_url_prefix: not answered there");
        return;
    }
    let url = url.to_string();
    tokio::spawn(async move {
        let client = quench_connectors::hosts::client(None);
        let sent = client
            .post(&url)
            .timeout(std::time::Duration::from_secs(10))
            .json(&body)
            .send()
            .await;
        if let Err(e) = sent {
            // Without the URL: a response_url is a credential for a while.
            tracing::warn!(error = %e.without_url(), "answering Slack's response_url failed");
        }
    });
}

/// `POST /hooks/slack/interactive`.
pub(super) async fn interactive(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(secret) = s.config.hooks.slack.signing_secret.clone() else {
        return refuse(
            "hooks.slack.signing_secret is not configured: every Slack click is refused",
        );
    };
    let bytes = match read_body(&headers, body, MAX_BODY).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = s.clock.now().timestamp();
    let sig = match verify(&secret, &headers, &bytes, now) {
        Ok(sig) => sig,
        Err(m) => {
            s.metrics.add(
                "quench_webhook_rejected_total",
                &[("source", "slack"), ("reason", "signature")],
                1,
            );
            return refuse(m);
        }
    };
    if !s.slack_seen.first_time(&sig, now) {
        return refuse("this request was seen before: a replay");
    }
    let text = String::from_utf8_lossy(&bytes);
    let payload = text
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "payload")
        .map(|(_, v)| form_decode(v));
    let Some(payload) = payload else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_shape",
            "no payload= field (Slack sends the interaction as payload=<JSON>)",
            Value::Null,
        );
    };
    let p: Value = match serde_json::from_str(&payload) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("payload: {e}"),
                Value::Null,
            );
        }
    };
    let user = p["user"]["id"].as_str().unwrap_or("").to_string();
    let response_url = p["response_url"].as_str().unwrap_or("").to_string();
    let action = &p["actions"][0];
    let (kind, value) = (
        action["action_id"].as_str().unwrap_or(""),
        action["value"].as_str().unwrap_or(""),
    );
    let decision = match kind {
        "quench_approve" => "approve",
        "quench_reject" => "reject",
        other => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_shape",
                format!("action_id {other:?}: quench_approve or quench_reject"),
                json!({"field": "actions[0].action_id"}),
            );
        }
    };
    let Some((incident, step)) = value.split_once(':') else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_shape",
            "the button's value is not INCIDENT:STEP",
            json!({"field": "actions[0].value"}),
        );
    };
    let who = s.config.hooks.slack.approvers.get(&user).cloned();
    let slack_user = format!("slack:{user}");
    let Some(name) = who else {
        audit_slack(
            &s,
            &slack_user,
            incident,
            step,
            format!("{decision} refused: Slack user {user} is not in hooks.slack.approvers"),
        )
        .await;
        respond(
            &s,
            &response_url,
            json!({"response_type": "ephemeral", "replace_original": false,
            "text": format!("You ({user}) are not on quench's approver list (hooks.slack.approvers): nothing was done.")}),
        );
        return axum::Json(json!({"ok": true})).into_response();
    };
    let by = format!("{name} (Slack {user})");
    let verdict = if decision == "approve" {
        Verdict::Approve { by: by.clone() }
    } else {
        Verdict::Reject {
            by: by.clone(),
            reason: "rejected in Slack".into(),
        }
    };
    let answered = s.executor.approvals.answer(incident, step, verdict);
    let outcome = if answered {
        format!("{step} of {incident}: {}d by {by}", decision)
    } else {
        format!(
            "{step} of {incident}: nothing waits for an answer (already decided, or the gate expired); {by}'s {decision} did nothing"
        )
    };
    audit_slack(&s, &by, incident, step, outcome.clone()).await;
    respond(
        &s,
        &response_url,
        json!({"replace_original": answered, "response_type": if answered { "in_channel" } else { "ephemeral" }, "text": outcome}),
    );
    axum::Json(json!({"ok": true})).into_response()
}

async fn audit_slack(s: &AppState, actor: &str, incident: &str, step: &str, detail: String) {
    audit(
        s,
        quench_knowledge::AuditEntry {
            seq: 0,
            at: s.clock.now(),
            actor: actor.to_string(),
            action: AuditAction::SlackClick,
            incident: Some(incident.to_string()),
            step: Some(step.to_string()),
            target: None,
            detail,
            prev: None,
            lease_epoch: None,
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_decode() {
        assert_eq!(form_decode("a+b%20c%7B%22x%22%7D"), "a b c{\"x\"}");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz"), "%zz");
    }

    #[test]
    fn signatures_as_slack_computes_them() {
        // Slack's documented example (api.slack.com/authentication/verifying-requests-from-slack).
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let mut h = HeaderMap::new();
        h.insert(
            "x-slack-request-timestamp",
            HeaderValue::from_static("1531420618"),
        );
        h.insert(
            "x-slack-signature",
            HeaderValue::from_static(
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
        );
        assert!(verify(secret, &h, body, 1531420618 + 10).is_ok());
        assert!(
            verify(secret, &h, body, 1531420618 + 301)
                .unwrap_err()
                .contains("from now")
        );
        assert!(
            verify("other", &h, body, 1531420618)
                .unwrap_err()
                .contains("does not match")
        );
        let mut tampered = body.to_vec();
        tampered[0] = b'T';
        assert!(verify(secret, &h, &tampered, 1531420618).is_err());
    }
}
