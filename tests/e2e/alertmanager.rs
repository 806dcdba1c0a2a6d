//! A real Alertmanager delivers a firing and then a resolved notification.

use std::time::Duration;

use chrono::Utc;
use quench_tests::{Alertmanager, Quench, repo_root};
use serde_json::{Value, json};

fn incident_with<'a>(doc: &'a Value, fingerprint: &str) -> Option<&'a Value> {
    doc["incidents"].as_array()?.iter().find(|i| {
        i["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["fingerprint"] == fingerprint))
    })
}

#[tokio::test]
async fn firing_then_resolved_opens_and_resolves_an_incident() {
    let q = Quench::start(
        "hooks:\n  alertmanager:\n    bearer_token: am-token\n",
        &repo_root().join("runbooks/examples"),
    );
    // Alertmanager's webhook sends the token as a bearer credential.
    let am_url = format!("{}/hooks/alertmanager", q.url);
    let am = Alertmanager::start_with_token(&am_url, "am-token").await;

    let labels = json!({"alertname": "HighCPU", "service": "checkout", "severity": "page"});
    let started = Utc::now() - chrono::Duration::minutes(1);
    am.post_alerts(&json!([{
        "labels": labels,
        "annotations": {"summary": "checkout burns CPU"},
        "startsAt": started.to_rfc3339(),
    }]))
    .await;

    // Alertmanager's own fingerprint for the alert: quench must keep it.
    let am_alerts: Value = quench_tests::http()
        .get(format!("{}/api/v2/alerts", am.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fingerprint = am_alerts[0]["fingerprint"].as_str().unwrap().to_string();

    let incident = q
        .wait_for("/api/v1/incidents", Duration::from_secs(30), |d| {
            incident_with(d, &fingerprint).cloned()
        })
        .await;
    assert_eq!(incident["runbook"]["name"], "go-high-cpu");
    // The runbook runs at once. The alert names neither a pod nor an
    // instance: the pod's capture is skipped, the instance's cannot render,
    // and with no on_failure the run fails; the incident stays open for its
    // alerts.
    let id = incident["id"].as_str().unwrap().to_string();
    let failed = q
        .wait_for(
            &format!("/api/v1/incidents/{id}"),
            Duration::from_secs(30),
            |d| (d["status"] == "failed").then(|| d.clone()),
        )
        .await;
    assert_eq!(failed["steps"][0]["id"], "cpu");
    assert_eq!(failed["steps"][0]["state"], "skipped");
    assert_eq!(failed["steps"][1]["id"], "cpu_instance");
    assert_eq!(failed["steps"][1]["state"], "failed");
    assert!(
        failed["steps"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("alert.labels.instance is not defined"),
        "{failed:#}"
    );
    assert_eq!(failed["run"]["outcome"], "failed");
    assert_eq!(incident["title"], "checkout burns CPU");
    let alert = &incident["alerts"][0];
    assert_eq!(alert["labels"]["service"], "checkout");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["source"], "alertmanager");
    // The why of the match is kept with the incident.
    let why = incident["match_explanation"].as_array().unwrap();
    let decision = |name: &str| why.iter().find(|d| d["runbook"] == name).unwrap().clone();
    assert_eq!(decision("go-high-cpu")["matched"], true);
    assert_eq!(decision("goroutine-leak")["matched"], false);
    assert_eq!(
        decision("goroutine-leak")["reason"],
        "not tried: go-high-cpu matched first without continue"
    );

    // What was stored: the alert with Alertmanager's envelope facts and a
    // reference to the raw payload.
    let stored = q
        .get_json(&format!("/api/v1/alerts?fingerprint={fingerprint}"))
        .await;
    let a = &stored["alerts"][0]["alert"];
    assert_eq!(a["status"], "firing");
    assert_eq!(a["meta"]["receiver"], "quench");
    assert!(a["meta"]["groupKey"].as_str().unwrap().contains("HighCPU"));
    assert!(a["raw_ref"].as_str().unwrap().starts_with("sha256:"));

    // Resolve it the way Alertmanager users do: same labels, endsAt = now.
    am.post_alerts(&json!([{
        "labels": labels,
        "annotations": {"summary": "checkout burns CPU"},
        "startsAt": started.to_rfc3339(),
        "endsAt": Utc::now().to_rfc3339(),
    }]))
    .await;
    let resolved = q
        .wait_for(
            &format!("/api/v1/incidents/{id}"),
            Duration::from_secs(30),
            |d| (d["status"] == "resolved").then(|| d.clone()),
        )
        .await;
    assert_eq!(resolved["alerts"][0]["state"], "resolved");
    assert!(resolved["resolved_at"].is_string());
    let kinds: Vec<&str> = resolved["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"opened"));
    assert_eq!(kinds.last(), Some(&"resolved"));

    // The CLI reads the same thing through the API.
    let out = std::process::Command::new(quench_tests::quench_bin())
        .args(["incidents", "list", "--server", &q.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&id) && text.contains("resolved") && text.contains("go-high-cpu"),
        "{text}"
    );
    let out = std::process::Command::new(quench_tests::quench_bin())
        .args(["incidents", "show", &id, "--json", "--server", &q.url])
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["alerts"][0]["fingerprint"], fingerprint.as_str());
    // The human view lists the steps with their state and reason.
    let out = std::process::Command::new(quench_tests::quench_bin())
        .args(["incidents", "show", &id, "--server", &q.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let step = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} step line in\n{text}"))
            .to_string()
    };
    let cpu = step("cpu");
    assert!(
        cpu.contains("pprof.capture") && cpu.contains("skipped") && cpu.contains("when is false"),
        "{cpu}"
    );
    let instance = step("cpu_instance");
    assert!(
        instance.contains("failed") && instance.contains("alert.labels.instance is not defined"),
        "{instance}"
    );
    assert!(text.contains("\nrun: failed ("), "{text}");
    let out = std::process::Command::new(quench_tests::quench_bin())
        .args(["incidents", "show", "inc-999", "--server", &q.url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}

#[tokio::test]
async fn alertmanager_without_the_token_is_refused_and_retries() {
    let q = Quench::start(
        "hooks:\n  alertmanager:\n    bearer_token: right\n",
        &repo_root().join("runbooks/examples"),
    );
    let am =
        Alertmanager::start_with_token(&format!("{}/hooks/alertmanager", q.url), "wrong").await;
    am.post_alerts(&json!([{"labels": {"alertname": "HighCPU", "service": "x"}}]))
        .await;
    // Alertmanager delivers, and since no delivery succeeds it delivers
    // again at each group interval (1 s here); every delivery is refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let series = "quench_webhook_rejected_total{source=\"alertmanager\",reason=\"unauthorized\"}";
    loop {
        let text = q.get_text("/metrics").await;
        let refused: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        if refused >= 2.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Alertmanager did not deliver again after a refusal:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = q.get_json("/api/v1/alerts").await;
    assert_eq!(stored["alerts"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn truncated_groups_are_recorded() {
    let q = Quench::start("{}\n", &repo_root().join("runbooks/examples"));
    let am = Alertmanager::start_truncating(&format!("{}/hooks/alertmanager", q.url), 1).await;
    // Three alerts in one group (group_by: alertname); Alertmanager sends one
    // and reports the other two as truncated.
    let alerts: Vec<Value> = (0..3)
        .map(|i| json!({"labels": {"alertname": "GoroutineLeak", "service": "api", "pod": format!("api-{i}")}}))
        .collect();
    am.post_alerts(&Value::Array(alerts)).await;
    let stored = q
        .wait_for("/api/v1/alerts", Duration::from_secs(30), |d| {
            d["alerts"].as_array().and_then(|a| a.first()).cloned()
        })
        .await;
    assert_eq!(
        stored["alert"]["meta"]["truncatedAlerts"], "2",
        "{stored:#}"
    );
    assert_eq!(stored["alert"]["labels"]["alertname"], "GoroutineLeak");
    // Counted, so a max_alerts set too low can be alerted on.
    let metrics = q.get_text("/metrics").await;
    let truncated = quench_tests::sample(
        &metrics,
        "quench_alerts_truncated_total{source=\"alertmanager\"}",
    );
    assert!(truncated >= Some(2.0), "{truncated:?} in\n{metrics}");
}
