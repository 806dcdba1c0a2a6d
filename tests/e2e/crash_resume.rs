//! Kill -9 while a destructive step is running: after the restart the step
//! is not run again (it may have taken effect), the incident is marked
//! interrupted with the reason, and the evidence step before it did not
//! run twice either.

use std::time::Duration;

use quench_tests::{Quench, http};
use serde_json::{Value, json};

/// A receiver that answers each request after 30 s; its log counts them.
async fn slow_receiver() -> (String, quench_tests::SeenLog) {
    quench_tests::stub_with(|_| {
        quench_tests::Reply::After(
            Duration::from_secs(30),
            Box::new(quench_tests::Reply::Json(200, json!({}))),
        )
    })
    .await
}

#[tokio::test]
async fn a_destructive_step_cut_by_kill_9_is_not_run_again() {
    let (url, hits) = slow_receiver().await;
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("hold.yaml"),
        format!(
            "version: 1\nname: hold-deploys\nmatch:\n  matchers: ['alertname=\"DeployBroken\"']\nsteps:\n  - id: settle\n    uses: wait\n    with: {{seconds: 0}}\n  - id: hold\n    uses: http.request\n    timeout: 2m\n    with:\n      url: {url}/hold\n      body: {{service: \"{{{{alert.labels.service}}}}\"}}\n"
        ),
    )
    .unwrap();
    let mut q = Quench::start("{}\n", rb.path());
    let alert = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing", "labels": {"alertname": "DeployBroken", "service": "cart"}, "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "deploy"}]});
    let r = http()
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Wait until the destructive step is running (the receiver holds it).
    let running = q
        .wait_for("/api/v1/incidents/inc-1", Duration::from_secs(20), |d| {
            (d["steps"][1]["state"] == "running").then(|| d.clone())
        })
        .await;
    assert_eq!(running["steps"][0]["state"], "succeeded");
    // The request is on its way once the step is recorded as running.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hits.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hits.lock().unwrap().len(), 1);
    q.kill9();

    let q2 = Quench::spawn(&q.config, &q.data, rb.path(), None);
    let after: Value = q2
        .wait_for("/api/v1/incidents/inc-1", Duration::from_secs(20), |d| {
            (d["status"] == "interrupted").then(|| d.clone())
        })
        .await;
    assert_eq!(after["steps"][1]["state"], "interrupted", "{after:#}");
    assert!(
        after["steps"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("not run again")
    );
    assert_eq!(
        after["steps"][0]["attempts"], 1,
        "the evidence step ran once"
    );
    // Give a wrongly resumed step the time to reach the receiver.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        hits.lock().unwrap().len(),
        1,
        "the destructive step ran exactly once"
    );
    let audit = q2.get_json("/api/v1/audit?incident=inc-1").await;
    assert!(
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "run.interrupted")
    );
}
