//! PagerDuty, Datadog and generic hooks, end to end through the binary.
//!
//! PagerDuty signatures are computed with `openssl dgst -hmac`, not with the
//! code under test, so a shared bug cannot make both sides agree.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use quench_tests::{Quench, http, require};
use serde_json::{Value, json};

fn openssl_hmac(secret: &str, body: &[u8]) -> String {
    let openssl = require("openssl", "openssl");
    let mut child = Command::new(openssl)
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // "HMAC-SHA2-256(stdin)= <hex>"
    let hex = text.trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(hex.len(), 64, "unexpected openssl output {text:?}");
    hex
}

fn runbook_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

const PD_BODY: &str = r#"{"event":{"id":"01DEN1HWXM5W5X3KO4VQGGGHIK","event_type":"incident.triggered","resource_type":"incident","occurred_at":"2026-11-27T10:00:00.000Z","agent":{"html_url":"https://acme.pagerduty.com/users/PLH1HKV","id":"PLH1HKV","self":"https://api.pagerduty.com/users/PLH1HKV","summary":"Tenex Engineer","type":"user_reference"},"client":null,"data":{"id":"PGR0VU2","type":"incident","self":"https://api.pagerduty.com/incidents/PGR0VU2","html_url":"https://acme.pagerduty.com/incidents/PGR0VU2","number":2,"status":"triggered","incident_key":"d3640fbd41094207a1c11e58e46b1662","created_at":"2026-11-27T09:59:58Z","title":"Checkout latency high","service":{"html_url":"https://acme.pagerduty.com/services/PF9KMXH","id":"PF9KMXH","self":"https://api.pagerduty.com/services/PF9KMXH","summary":"checkout","type":"service_reference"},"assignees":[],"escalation_policy":{"id":"PUS0KTE","type":"escalation_policy_reference","summary":"Default"},"teams":[],"priority":{"id":"PSO75BM","type":"priority_reference","summary":"P1"},"urgency":"high","conference_bridge":null,"resolve_reason":null}}}"#;

async fn post_pd(
    q: &Quench,
    body: &str,
    signature: Option<String>,
    webhook_id: &str,
) -> (u16, Value) {
    let mut req = http()
        .post(format!("{}/hooks/pagerduty", q.url))
        .header("content-type", "application/json")
        .header("x-webhook-id", webhook_id)
        .body(body.to_string());
    if let Some(sig) = signature {
        req = req.header("x-pagerduty-signature", sig);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn pagerduty_signatures_rotation_and_replay() {
    let rb = runbook_dir(&[(
        "pd.yaml",
        "version: 1\nname: pd-checkout\nmatch: {matchers: ['service=\"checkout\"']}\ngroup_by: [pd_incident_id]\n",
    )]);
    let q = Quench::start(
        "hooks:\n  pagerduty:\n    secrets: [current-secret, next-secret]\n",
        rb.path(),
    );

    // The recorded delivery, as if it happened now (older ones are stale).
    let pd = PD_BODY.replace(
        "2026-11-27T10:00:00.000Z",
        &chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    // No signature, a forged one, one under a retired secret: all 401.
    let (status, body) = post_pd(&q, &pd, None, "wh-0").await;
    assert_eq!(status, 401, "{body}");
    let forged = openssl_hmac("attacker", pd.as_bytes());
    let (status, _) = post_pd(&q, &pd, Some(format!("v1={forged}")), "wh-0").await;
    assert_eq!(status, 401);
    let retired = openssl_hmac("retired-secret", pd.as_bytes());
    let (status, body) = post_pd(&q, &pd, Some(format!("v1={retired}")), "wh-0").await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("none of the configured secrets")
    );
    // A valid signature over another body is refused too.
    let (status, _) = post_pd(
        &q,
        &pd.replace("Checkout latency high", "Something else"),
        Some(format!(
            "v1={}",
            openssl_hmac("current-secret", pd.as_bytes())
        )),
        "wh-0",
    )
    .await;
    assert_eq!(status, 401);

    // During rotation PagerDuty sends several signatures; one match is enough.
    let next = openssl_hmac("next-secret", pd.as_bytes());
    let (status, body) = post_pd(&q, &pd, Some(format!("v1={retired},v1={next}")), "wh-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1);

    // A redelivery is acknowledged, not stored again, whatever its
    // X-Webhook-Id says (the header is not signed; the event id is).
    for webhook_id in ["wh-1", "wh-forged-anew"] {
        let (status, body) = post_pd(&q, &pd, Some(format!("v1={next}")), webhook_id).await;
        assert_eq!(status, 200);
        assert_eq!(body["accepted"], 0, "{webhook_id}");
        assert_eq!(body["duplicates"], 1, "{webhook_id}");
    }
    // The recorded delivery itself, days old: refused as stale.
    let old = openssl_hmac("current-secret", PD_BODY.as_bytes());
    let (status, body) = post_pd(&q, PD_BODY, Some(format!("v1={old}")), "wh-9").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "stale", "{body}");

    let stored = q.get_json("/api/v1/alerts").await;
    let alerts = stored["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{stored:#}");
    assert_eq!(alerts[0]["alert"]["labels"]["service"], "checkout");
    assert_eq!(
        alerts[0]["alert"]["meta"]["event_type"],
        "incident.triggered"
    );

    let inc = q
        .wait_for("/api/v1/incidents", Duration::from_secs(10), |d| {
            d["incidents"].as_array().and_then(|l| l.first()).cloned()
        })
        .await;
    assert_eq!(inc["runbook"]["name"], "pd-checkout");
    assert_eq!(inc["alerts"][0]["fingerprint"], "pagerduty:PGR0VU2");

    // incident.resolved (a new delivery) resolves it.
    let resolved = pd
        .replace("01DEN1HWXM5W5X3KO4VQGGGHIK", "01DEN1HWXM5W5X3KO4VQGGGHIL")
        .replace("incident.triggered", "incident.resolved")
        .replace("\"status\":\"triggered\"", "\"status\":\"resolved\"");
    let sig = openssl_hmac("current-secret", resolved.as_bytes());
    let (status, _) = post_pd(&q, &resolved, Some(format!("v1={sig}")), "wh-2").await;
    assert_eq!(status, 200);
    let id = inc["id"].as_str().unwrap().to_string();
    q.wait_for(
        &format!("/api/v1/incidents/{id}"),
        Duration::from_secs(10),
        |d| (d["status"] == "resolved").then_some(()),
    )
    .await;
}

#[tokio::test]
async fn datadog_template_and_generic_mapping() {
    let rb = runbook_dir(&[(
        "cpu.yaml",
        "version: 1\nname: cpu\nmatch: {matchers: ['alertname=\"High CPU\"']}\ngroup_by: [alertname, host]\n",
    )]);
    let q = Quench::start(
        "hooks:\n  datadog:\n    secret: dd-secret\n  generic:\n    grafana:\n      token: gr-token\n      alerts: /alerts\n      fingerprint: /fp\n      status: /state\n      labels: /labels\n      starts_at: /since\n",
        rb.path(),
    );
    // The body the README's Datadog template produces.
    let dd = json!({
        "id": "1234", "transition": "Triggered", "priority": "P2",
        "title": "[Triggered on {host:web-1}] High CPU", "tags": "env:prod,team:web",
        "link": "https://app.datadoghq.com/monitors/1234", "date": "1795768800000",
        "message": "CPU above 90% for 5m", "scope": "host:web-1"
    });
    let r = http()
        .post(format!("{}/hooks/datadog", q.url))
        .json(&dd)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the shared secret is required");
    let r = http()
        .post(format!("{}/hooks/datadog", q.url))
        .header("x-quench-token", "dd-secret")
        .json(&dd)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inc = q
        .wait_for("/api/v1/incidents", Duration::from_secs(10), |d| {
            d["incidents"].as_array().and_then(|l| l.first()).cloned()
        })
        .await;
    assert_eq!(inc["runbook"]["name"], "cpu");
    assert_eq!(inc["alerts"][0]["labels"]["host"], "web-1");
    assert_eq!(inc["alerts"][0]["labels"]["team"], "web");

    let mut recovered = dd.clone();
    recovered["transition"] = json!("Recovered");
    recovered["date"] = json!("1795769100000");
    let r = http()
        .post(format!("{}/hooks/datadog", q.url))
        .header("x-quench-token", "dd-secret")
        .json(&recovered)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = inc["id"].as_str().unwrap().to_string();
    q.wait_for(
        &format!("/api/v1/incidents/{id}"),
        Duration::from_secs(10),
        |d| (d["status"] == "resolved").then_some(()),
    )
    .await;

    // Generic: two alerts in one body, mapped by JSON pointers.
    let body = json!({"alerts": [
        {"fp": "g-1", "state": "alerting", "labels": {"alertname": "DiskFull", "node": "n1"}, "since": "2026-11-27T10:00:00Z"},
        {"fp": "g-2", "state": "ok", "labels": {"alertname": "DiskFull", "node": "n2"}}
    ]});
    let r = http()
        .post(format!("{}/hooks/generic/grafana", q.url))
        .bearer_auth("gr-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["accepted"], 2);
    let stored = q.get_json("/api/v1/alerts?fingerprint=g-2").await;
    assert_eq!(stored["alerts"][0]["alert"]["status"], "resolved");
    assert_eq!(
        stored["alerts"][0]["alert"]["source"],
        json!({"kind": "generic", "name": "grafana"})
    );
    let r = http()
        .post(format!("{}/hooks/generic/grafana", q.url))
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
