//! The human side of the knowledge store through the binary: acknowledge,
//! annotate (root cause, resolution, commits, tags), each audited; the
//! KPIs over the API, the CLI and `/metrics`.

use std::process::Command;
use std::time::Duration;

use quench_tests::{Quench, http, quench_bin};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_annotate_and_stats() {
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("w.yaml"),
        "version: 1\nname: w\nmatch:\n  matchers: ['alertname=\"RedisDown\"']\nsteps:\n  - id: look\n    uses: wait\n    with: {seconds: 0}\n",
    )
    .unwrap();
    let q = Quench::start("{}\n", rb.path());
    let client = http();
    let alert = |status: &str| {
        json!({"version": "4", "groupKey": "g", "status": status, "receiver": "quench",
               "alerts": [{"status": status, "labels": {"alertname": "RedisDown", "service": "cart", "severity": "critical"},
                           "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "redis"}]})
    };
    let r = client
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert("firing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    q.wait_for("/api/v1/incidents/inc-1", Duration::from_secs(30), |d| {
        (d["steps"][0]["state"] == "succeeded").then_some(())
    })
    .await;
    let cli = |args: &[&str]| {
        let out = Command::new(quench_bin())
            .args(args)
            .args(["--server", &q.url])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&["ack", "inc-1"]);
    assert!(ok, "{err}");
    assert!(out.contains("inc-1: acknowledged by"), "{out}");
    let (ok, _, err) = cli(&[
        "annotate",
        "inc-1",
        "--root-cause",
        "redis sentinel failover took 40s",
        "--resolution",
        "raised the failover timeout",
        "--commit",
        "a7f3b9c@shop/infra",
        "--tag",
        "redis",
        "--tag",
        "failover",
    ]);
    assert!(ok, "{err}");
    // A second edit adds, never duplicates.
    let (ok, _, err) = cli(&[
        "annotate",
        "inc-1",
        "--tag",
        "redis",
        "--commit",
        "A7F3B9C@shop/infra",
    ]);
    assert!(ok, "{err}");
    let inc = q.get_json("/api/v1/incidents/inc-1").await;
    assert_eq!(
        inc["notes"]["root_cause"],
        "redis sentinel failover took 40s"
    );
    assert_eq!(inc["notes"]["resolution"], "raised the failover timeout");
    assert_eq!(
        inc["notes"]["commits"],
        json!([{"sha": "a7f3b9c", "repo": "shop/infra"}])
    );
    assert_eq!(inc["notes"]["tags"], json!(["redis", "failover"]));
    assert!(inc["acknowledged"]["at"].is_string());
    let kinds: Vec<&str> = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"acknowledged") && kinds.contains(&"annotated"),
        "{kinds:?}"
    );
    let audit = q.get_json("/api/v1/audit?incident=inc-1").await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"incident.ack"), "{actions:?}");
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "incident.annotate")
            .count(),
        2
    );

    // Bad edits: a clear 422 each, nothing changed.
    for (body, code) in [
        (json!({"commits": ["not-a-sha"]}), "invalid_commit"),
        (json!({"tags": ["has space"]}), "invalid_tag"),
        (json!({"rootcause": "typo"}), "invalid_shape"),
    ] {
        let r = client
            .post(format!("{}/api/v1/incidents/inc-1/annotations", q.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
            code
        );
    }
    let r = client
        .post(format!("{}/api/v1/incidents/inc-404/ack", q.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Resolve; then the KPIs have a value for each measure.
    client
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert("resolved"))
        .send()
        .await
        .unwrap();
    q.wait_for("/api/v1/incidents/inc-1", Duration::from_secs(30), |d| {
        (d["status"] == "resolved").then_some(())
    })
    .await;
    let stats = q.get_json("/api/v1/stats?since=3650d&by=service").await;
    let cart = &stats["groups"]["cart"];
    assert_eq!(cart["incidents"], 1, "{stats:#}");
    assert!(cart["mttd_seconds"].as_f64().unwrap() > 0.0, "{stats:#}");
    assert!(cart["mttr_seconds"].as_f64().unwrap() > cart["mttd_seconds"].as_f64().unwrap());
    assert_eq!(
        cart["auto_closure_rate"], 0.0,
        "a human acknowledged before it resolved"
    );
    assert_eq!(cart["human_intervention_rate"], 1.0);
    assert_eq!(cart["runbook_success_rate"], 1.0);
    let (ok, out, err) = cli(&["stats", "--since", "3650d", "--by", "service"]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("cart ") && l.contains("100%")),
        "{out}"
    );
    let (ok, page, err) = cli(&["postmortem", "inc-1"]);
    assert!(ok, "{err}");
    assert!(page.starts_with("# Postmortem: "), "{page}");
    assert!(
        page.contains("## Root cause\n\nredis sentinel failover took 40s"),
        "{page}"
    );
    assert!(page.contains("- `a7f3b9c` in shop/infra"), "{page}");
    let metrics = q.get_text("/metrics").await;
    assert!(
        metrics.contains("# TYPE quench_mtta_seconds gauge"),
        "{metrics}"
    );
    let r = client
        .get(format!("{}/api/v1/stats?by=team", q.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// An import that fails on record 7 writes nothing; the fixed file imports
/// all ten, which then count in the KPIs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_is_all_or_nothing() {
    let rb = tempfile::tempdir().unwrap();
    let q = Quench::start("{}\n", rb.path());
    let dir = tempfile::tempdir().unwrap();
    let record = |i: usize, resolved: &str| {
        format!(
            "  - id: PD-{i}\n    title: Redis failover {i}\n    service: cart\n    status: resolved\n    first_alert_at: 2026-11-01T10:00:00Z\n    opened_at: 2026-11-01T10:01:00Z\n    resolved_at: {resolved}\n    root_cause: sentinel failover\n    tags: [redis]\n"
        )
    };
    let file = |bad: Option<usize>| {
        let mut s = String::from("version: 1\nincidents:\n");
        for i in 1..=10 {
            let resolved = if Some(i) == bad {
                "2026-11-01T09:00:00Z"
            } else {
                "2026-11-01T10:31:00Z"
            };
            s.push_str(&record(i, resolved));
        }
        s
    };
    let bad = dir.path().join("history.yaml");
    std::fs::write(&bad, file(Some(7))).unwrap();
    let out = Command::new(quench_bin())
        .args(["import", "--server", &q.url])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("history.yaml:57:5: record 7: resolved_at is before opened_at"),
        "{err}"
    );
    assert!(err.contains("nothing was imported"), "{err}");
    let list = q.get_json("/api/v1/incidents").await;
    assert_eq!(
        list["incidents"].as_array().unwrap().len(),
        0,
        "no partial data: {list}"
    );

    std::fs::write(&bad, file(None)).unwrap();
    let out = Command::new(quench_bin())
        .args(["import", "--server", &q.url])
        .arg(&bad)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("imported 10 incidents: inc-1 to inc-10"),
        "{text}"
    );
    let one = q.get_json("/api/v1/incidents/inc-7").await;
    assert_eq!(one["external_id"], "PD-7");
    assert_eq!(one["notes"]["root_cause"], "sentinel failover");
    let stats = q.get_json("/api/v1/stats?since=3650d").await;
    assert_eq!(stats["groups"]["all"]["incidents"], 10);
    assert_eq!(stats["groups"]["all"]["mttr_seconds"], 1860.0, "{stats:#}");
}
