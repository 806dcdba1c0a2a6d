//! The human side of the knowledge store through the binary: acknowledge,
//! annotate (root cause, resolution, commits, tags), each audited; the
//! KPIs over the API, the CLI and `/metrics`.

use std::process::Command;
use std::time::Duration;

use quench_tests::{Quench, http, quench_bin};
use serde_json::{Value, json};

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
        .json(&serde_json::json!({}))
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

/// Through the binary: a run whose only step failed is `failed` (not
/// `verifying`, not `escalated`: there was nobody to escalate to); when its
/// alert resolves, the incident resolves but the KPIs count neither an
/// auto-closure nor a runbook success. Every documented status filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_stays_failed_when_its_alert_resolves() {
    let rb = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the request is refused at once.
    std::fs::write(
        rb.path().join("f.yaml"),
        "version: 1\nname: f\nmatch:\n  matchers: ['alertname=\"Broken\"']\nsteps:\n  - id: call\n    uses: http.request\n    with: {url: 'http://127.0.0.1:1/fix', method: POST}\n",
    )
    .unwrap();
    let q = Quench::start("{}\n", rb.path());
    let client = http();
    let alert = |status: &str| {
        json!({"version": "4", "groupKey": "g", "status": status, "receiver": "quench",
               "alerts": [{"status": status, "labels": {"alertname": "Broken", "service": "pay"},
                           "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "broken"}]})
    };
    let post = |body: serde_json::Value| {
        let (client, url) = (client.clone(), format!("{}/hooks/alertmanager", q.url));
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    post(alert("firing")).await;
    let inc = q
        .wait_for("/api/v1/incidents/inc-1", Duration::from_secs(30), |d| {
            d["run"].is_object().then(|| d.clone())
        })
        .await;
    assert_eq!(inc["status"], "failed", "{inc:#}");
    assert_eq!(inc["run"]["outcome"], "failed", "{inc:#}");
    assert!(
        inc["run"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("call failed"),
        "{inc:#}"
    );
    assert!(
        !inc["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "escalation"),
        "{inc:#}"
    );
    let ids = |status: &str| {
        let q = &q;
        let status = status.to_string();
        async move {
            let v = q
                .get_json(&format!("/api/v1/incidents?status={status}"))
                .await;
            v["incidents"]
                .as_array()
                .unwrap_or_else(|| panic!("{status}: {v}"))
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("failed").await, ["inc-1"]);
    assert_eq!(ids("unresolved").await, ["inc-1"]);
    assert!(
        ids("open").await.is_empty(),
        "a failed incident is not `open`"
    );
    for status in ["interrupted", "verifying", "escalated", "cancelled"] {
        assert!(ids(status).await.is_empty(), "{status}");
    }

    post(alert("resolved")).await;
    q.wait_for("/api/v1/incidents/inc-1", Duration::from_secs(30), |d| {
        (d["status"] == "resolved").then_some(())
    })
    .await;
    let inc = q.get_json("/api/v1/incidents/inc-1").await;
    assert_eq!(
        inc["run"]["outcome"], "failed",
        "the alert resolving is not the runbook succeeding"
    );
    let stats = q.get_json("/api/v1/stats?since=3650d").await;
    let all = &stats["groups"]["all"];
    assert_eq!(all["incidents"], 1, "{stats:#}");
    assert_eq!(all["closed"], 1, "{stats:#}");
    assert_eq!(all["auto_closure_rate"], 0.0, "{stats:#}");
    assert_eq!(all["runbook_success_rate"], 0.0, "{stats:#}");
    assert_eq!(all["runs"], 1, "{stats:#}");
    assert_eq!(all["escalations"], 0, "{stats:#}");
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
        err.contains("history.yaml:63:18: record 7: resolved_at is before opened_at"),
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

    // The same file again: the external ids identify the incidents, so
    // nothing is duplicated.
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
    assert!(text.contains("imported nothing new"), "{text}");
    assert!(text.contains("10 already imported"), "{text}");
    assert!(text.contains("PD-1 = inc-1"), "{text}");
    let list = q.get_json("/api/v1/incidents?limit=100").await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 10, "{list}");
    // Searching an external id finds its incident.
    let found = q
        .wait_for("/api/v1/search?q=PD-7", Duration::from_secs(30), |v| {
            (!v["hits"].as_array().unwrap().is_empty()).then(|| v.clone())
        })
        .await;
    assert_eq!(found["hits"][0]["id"], "inc-7", "{found:#}");
}

/// JSON Lines through the binary: streamed, all or nothing by default
/// (a bad line names its line and nothing is written), `--batch N` writes
/// the good batches and says which were not, a line over the limit names
/// the limit, and a second import of the same lines adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_import_streams_and_batches() {
    let rb = tempfile::tempdir().unwrap();
    let q = Quench::start("{}\n", rb.path());
    let dir = tempfile::tempdir().unwrap();
    let line = |i: usize, resolved: &str| {
        json!({"id": format!("JL-{i}"), "title": format!("Queue backlog {i}"), "service": "orders",
               "status": "resolved", "first_alert_at": "2026-11-01T10:00:00Z",
               "opened_at": "2026-11-01T10:01:00Z", "resolved_at": resolved,
               "root_cause": "consumer stuck on a poison message", "tags": ["kafka"]})
        .to_string()
    };
    let file = |n: usize, bad: &[usize]| {
        let mut s = String::new();
        for i in 1..=n {
            let resolved = if bad.contains(&i) {
                "2026-11-01T09:00:00Z"
            } else {
                "2026-11-01T10:31:00Z"
            };
            s.push_str(&line(i, resolved));
            s.push('\n');
            if i == 3 {
                s.push('\n'); // blank lines are skipped, and still counted
            }
        }
        s
    };
    let run = |path: &std::path::Path, extra: &[&str]| {
        let out = Command::new(quench_bin())
            .args(["import", "--server", &q.url])
            .args(extra)
            .arg(path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let count = || async {
        q.get_json("/api/v1/incidents?limit=1000").await["incidents"]
            .as_array()
            .unwrap()
            .len()
    };

    // One bad record: its line is named (line 8: record 7, after the blank
    // line), and nothing is written.
    let bad = dir.path().join("history.jsonl");
    std::fs::write(&bad, file(10, &[7])).unwrap();
    let (ok, _, err) = run(&bad, &[]);
    assert!(!ok);
    assert!(
        err.contains("history.jsonl:8: resolved_at is before opened_at"),
        "{err}"
    );
    assert!(err.contains("nothing was imported"), "{err}");
    assert_eq!(count().await, 0);
    // A line that is not JSON: line and column.
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(
        &broken,
        format!("{}\n{{\"id\": \n", line(1, "2026-11-01T10:31:00Z")),
    )
    .unwrap();
    let (ok, _, err) = run(&broken, &[]);
    assert!(!ok);
    assert!(err.contains("broken.jsonl:2:"), "{err}");
    assert_eq!(count().await, 0);

    // --batch 4 (incidents; lines are the file's): records 1-4 (lines
    // 1-5, with the blank one) and 9-10 written; 5-8, with the bad one, not.
    let (ok, out, err) = run(&bad, &["--batch", "4"]);
    assert!(ok, "{err}");
    assert!(out.contains("lines 1-5: written, 4 new incidents"), "{out}");
    assert!(
        out.contains("lines 6-9: NOT written, 1 problem(s):"),
        "{out}"
    );
    assert!(
        out.contains("history.jsonl:8: resolved_at is before opened_at"),
        "{out}"
    );
    assert!(
        out.contains("lines 10-11: written, 2 new incidents"),
        "{out}"
    );
    assert_eq!(count().await, 6);

    // All good now: only the four that were missing are new.
    std::fs::write(&bad, file(10, &[])).unwrap();
    let (ok, out, err) = run(&bad, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("imported 4 incidents"), "{out}");
    assert!(out.contains("6 already imported"), "{out}");
    assert_eq!(count().await, 10);
    let found = q
        .wait_for(
            "/api/v1/search?q=poison+service:orders",
            Duration::from_secs(30),
            |v| (v["total"] == 10).then(|| v.clone()),
        )
        .await;
    assert_eq!(found["total"], 10, "{found}");

    // A line over 1 MiB: the limit is named, nothing is written.
    let huge = dir.path().join("huge.jsonl");
    let long = json!({"id": "JL-big", "title": "x".repeat(1_100_000)}).to_string();
    std::fs::write(
        &huge,
        format!("{}\n{long}\n", line(50, "2026-11-01T10:31:00Z")),
    )
    .unwrap();
    let (ok, _, err) = run(&huge, &[]);
    assert!(!ok);
    assert!(
        err.contains("huge.jsonl:2: a line is over 1 MiB (MAX_LINE_BYTES)"),
        "{err}"
    );
    assert_eq!(count().await, 10);
    // A line that is not UTF-8: named, nothing written.
    let latin = dir.path().join("latin.jsonl");
    let mut bytes = format!("{}\n", line(60, "2026-11-01T10:31:00Z")).into_bytes();
    bytes.extend_from_slice(b"{\"id\": \"JL-\xe9\"}\n");
    std::fs::write(&latin, bytes).unwrap();
    let (ok, _, err) = run(&latin, &[]);
    assert!(!ok);
    assert!(
        err.contains("latin.jsonl:2: the line is not UTF-8"),
        "{err}"
    );
    assert_eq!(count().await, 10);
    // --batch with a YAML file is refused by the CLI, saying why.
    let yaml = dir.path().join("h.yaml");
    std::fs::write(&yaml, "version: 1\nincidents: []\n").unwrap();
    let (ok, _, err) = run(&yaml, &["--batch", "2"]);
    assert!(!ok);
    assert!(err.contains("--batch works with JSON Lines"), "{err}");
}

/// Search and similar incidents through the binary: an imported history is
/// searchable at once (every write path is indexed), a new alert gets the
/// past incident it resembles with its root cause, annotations become
/// searchable, and a corrupt index is rebuilt at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_similar_and_a_rebuilt_index() {
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("redis.yaml"),
        "version: 1\nname: redis-down\nmatch:\n  matchers: ['alertname=\"RedisDown\"']\nsteps:\n  - id: look\n    uses: wait\n    with: {seconds: 0}\n",
    )
    .unwrap();
    let mut q = Quench::start("{}\n", rb.path());
    let history = r#"version: 1
incidents:
  - id: PD-1
    title: RedisDown
    service: cart
    status: resolved
    first_alert_at: 2026-10-01T10:00:00Z
    opened_at: 2026-10-01T10:01:00Z
    resolved_at: 2026-10-01T10:30:00Z
    alerts: [{labels: {alertname: RedisDown, service: cart}, annotations: {summary: redis master unreachable}}]
    root_cause: redis sentinel failover took 40s
    resolution: raised the sentinel failover timeout
    tags: [redis]
  - id: PD-2
    title: DiskFull
    service: search
    status: resolved
    first_alert_at: 2026-10-05T10:00:00Z
    opened_at: 2026-10-05T10:01:00Z
    resolved_at: 2026-10-05T11:00:00Z
    alerts: [{labels: {alertname: DiskFull, service: search}}]
    root_cause: logs were not rotated
  - id: PD-3
    title: HighLatency
    service: cart
    status: resolved
    first_alert_at: 2026-10-09T10:00:00Z
    opened_at: 2026-10-09T10:01:00Z
    resolved_at: 2026-10-09T10:20:00Z
    alerts: [{labels: {alertname: HighLatency, service: cart}}]
    root_cause: a slow query after the index was dropped
"#;
    let client = http();
    let r = client
        .post(format!("{}/api/v1/import?name=history.yaml", q.url))
        .body(history)
        .header("content-type", "application/yaml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let found = q
        .wait_for("/api/v1/search?q=sentinel", Duration::from_secs(10), |v| {
            (!v["hits"].as_array().unwrap().is_empty()).then(|| v.clone())
        })
        .await;
    assert_eq!(found["hits"][0]["title"], "RedisDown");
    assert!(
        found["hits"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("<b>sentinel</b>"),
        "{found}"
    );
    let cart = q.get_json("/api/v1/search?q=service:cart").await;
    assert_eq!(cart["hits"].as_array().unwrap().len(), 2, "{cart}");
    assert_eq!(cart["total"], 2, "{cart}");
    let r = client
        .get(format!("{}/api/v1/search?q=commit:xyz", q.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The query language over HTTP: OR, NOT, fields, date ranges, a total
    // and pages.
    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["title"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let get = |query: &str| {
        let url = format!("/api/v1/search?{}", query_pair("q", query));
        let q = &q;
        async move { q.get_json(&url).await }
    };
    assert_eq!(
        ids(&get("sentinel OR rotated").await),
        ["DiskFull", "RedisDown"]
    );
    assert_eq!(
        ids(&get("service:cart NOT sentinel").await),
        ["HighLatency"]
    );
    assert_eq!(
        ids(&get("service:cart -root_cause:sentinel").await),
        ["HighLatency"]
    );
    assert_eq!(ids(&get("resolution:timeout").await), ["RedisDown"]);
    assert_eq!(
        ids(&get("service:cart after:2026-10-02 before:2026-11-01").await),
        ["HighLatency"]
    );
    let page = q
        .get_json("/api/v1/search?q=NOT+nothing&limit=2&offset=2")
        .await;
    assert_eq!(
        (
            page["total"].as_u64(),
            page["hits"].as_array().unwrap().len()
        ),
        (Some(3), 1),
        "{page}"
    );
    assert_eq!(
        (page["offset"].as_u64(), page["limit"].as_u64()),
        (Some(2), Some(2))
    );
    let r = client
        .get(format!("{}/api/v1/search?q=redis+OR", q.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["column"], 7, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("OR needs"),
        "{e}"
    );

    // The graph, over HTTP and through the CLI.
    let cart = q.get_json("/api/v1/graph/service/cart").await;
    assert_eq!(cart["incidents"], 2, "{cart:#}");
    let causes: Vec<&str> = cart["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        causes.contains(&"redis sentinel failover took 40s"),
        "{cart:#}"
    );
    assert_eq!(
        cart["resolutions"][0]["name"],
        "raised the sentinel failover timeout"
    );
    let out = Command::new(quench_bin())
        .args(["graph", "cause:sentinel failover", "--server", &q.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("cause sentinel failover: 1 incident, 0 with a human step"),
        "{text}"
    );
    assert!(text.contains("cart"), "{text}");
    assert!(
        text.contains("raised the sentinel failover timeout"),
        "{text}"
    );
    let r = client
        .get(format!("{}/api/v1/graph/team/core", q.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A new alert like PD-1: its incident gets PD-1 as the first suggestion.
    let alert = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing", "labels": {"alertname": "RedisDown", "service": "cart"},
                    "annotations": {"summary": "redis master unreachable"},
                    "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "redis-new"}]});
    client
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert)
        .send()
        .await
        .unwrap();
    let inc = q
        .wait_for("/api/v1/incidents/inc-4", Duration::from_secs(20), |d| {
            d["similar"].is_array().then(|| d.clone())
        })
        .await;
    let top = &inc["similar"][0];
    assert_eq!(top["id"], "inc-1", "{inc:#}");
    assert_eq!(top["root_cause"], "redis sentinel failover took 40s");
    let matched: Vec<&str> = top["matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        matched.contains(&"alertname") && matched.contains(&"service"),
        "{matched:?}"
    );
    // Its likely root cause is PD-1's, with PD-1's fix; the CLI shows it.
    let h = q.get_json("/api/v1/incidents/inc-4/hypotheses").await;
    assert_eq!(
        h["hypotheses"][0]["cause"], "redis sentinel failover took 40s",
        "{h:#}"
    );
    assert_eq!(h["hypotheses"][0]["support"][0], "inc-1", "{h:#}");
    assert_eq!(
        h["hypotheses"][0]["resolution"],
        "raised the sentinel failover timeout"
    );
    let out = Command::new(quench_bin())
        .args(["incidents", "show", "inc-4", "--server", &q.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("likely root causes (from similar past incidents):"),
        "{text}"
    );
    assert!(
        text.contains("redis sentinel failover took 40s  (like inc-1)"),
        "{text}"
    );

    // Annotations are indexed as they are written.
    client
        .post(format!("{}/api/v1/incidents/inc-4/annotations", q.url))
        .json(&json!({"root_cause": "quorum lost during a zone outage"}))
        .send()
        .await
        .unwrap();
    q.wait_for("/api/v1/search?q=quorum", Duration::from_secs(10), |v| {
        (v["hits"][0]["id"] == "inc-4").then_some(())
    })
    .await;
    let out = Command::new(quench_bin())
        .args(["search", "redis*", "--server", &q.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("inc-1") && text.contains("inc-4"),
        "{text}"
    );

    // A corrupt index is rebuilt from the records at start-up.
    q.kill9();
    std::fs::write(q.data.join("index").join("meta.json"), b"{ not json").unwrap();
    let q2 = Quench::spawn(&q.config, &q.data, rb.path(), None);
    let again = q2.get_json("/api/v1/search?q=sentinel").await;
    assert_eq!(again["hits"][0]["id"], "inc-1", "{again}");
    let out = Command::new(quench_bin())
        .args(["reindex", "--server", &q2.url])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("reindexed 4 incidents"));
}

/// kill -9 in the middle of a storm of new incidents: after the restart
/// the index holds exactly the records sled kept (rebuilt if it fell
/// behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_write_storm_leaves_the_index_consistent() {
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("storm.yaml"),
        "version: 1\nname: storm\nmatch:\n  matchers: ['alertname=\"Storm\"']\ngroup_by: [alertname, instance]\nsteps:\n  - id: look\n    uses: wait\n    with: {seconds: 0}\n",
    )
    .unwrap();
    let mut q = Quench::start("{}\n", rb.path());
    let url = q.url.clone();
    let storm = tokio::spawn(async move {
        let client = http();
        let mut acknowledged = 0;
        // At most 150 incidents: one search page (200) holds them all.
        for i in 0..150 {
            let alert = json!({"version": "4", "groupKey": format!("g{i}"), "status": "firing", "receiver": "quench",
                "alerts": [{"status": "firing", "labels": {"alertname": "Storm", "instance": format!("host-{i}"), "service": "storm"},
                            "startsAt": "2026-11-27T10:00:00Z", "fingerprint": format!("storm-{i}")}]});
            match client
                .post(format!("{url}/hooks/alertmanager"))
                .json(&alert)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => acknowledged += 1,
                _ => break,
            }
        }
        acknowledged
    });
    // Wait until the storm is well under way, then crash.
    q.wait_for(
        "/api/v1/incidents?limit=1000",
        Duration::from_secs(30),
        |v| (v["incidents"].as_array().unwrap().len() >= 40).then_some(()),
    )
    .await;
    q.kill9();
    let acknowledged = storm.await.unwrap();
    let q2 = Quench::spawn(&q.config, &q.data, rb.path(), None);
    // The pipeline may still be opening incidents for alerts it had
    // accepted: wait until it has caught up with the log (a count that
    // stood still for 300 ms was not enough on a busy machine).
    q2.wait_for("/readyz", Duration::from_secs(60), |v| {
        (v["pipeline_lag_alerts"] == 0).then_some(())
    })
    .await;
    // The same incidents, by id, in the list and in the index.
    let ids = |v: &serde_json::Value, key: &str| -> std::collections::BTreeSet<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    let listed = ids(
        &q2.get_json("/api/v1/incidents?limit=1000").await,
        "incidents",
    );
    // Each acknowledged alert opened its own incident (one whose answer
    // the crash cut off may have too).
    assert!(
        listed.len() >= acknowledged.max(40),
        "{} incidents after the restart for {acknowledged} acknowledged alerts",
        listed.len()
    );
    let indexed = q2
        .wait_for(
            "/api/v1/search?q=service:storm&limit=200",
            Duration::from_secs(20),
            |v| {
                let found = ids(v, "hits");
                (found == listed).then_some(found)
            },
        )
        .await;
    assert_eq!(indexed, listed);
}

/// After a fix to its runbook, a responder runs it again for the open
/// incident: the local directory reloaded on its own, a broken edit was
/// refused with the last good set kept, SIGHUP reloads too, and the rerun
/// is audited and on the timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_runbook_reloads_and_reruns_for_the_open_incident() {
    let rb = tempfile::tempdir().unwrap();
    let file = rb.path().join("f.yaml");
    let runbook = |step: &str| {
        format!(
            "version: 1\nname: f\nmatch:\n  matchers: ['alertname=\"Broken\"']\nsteps:\n  - id: call\n{step}"
        )
    };
    std::fs::write(
        &file,
        runbook(
            "    uses: http.request\n    with: {url: 'http://127.0.0.1:1/fix', method: POST}\n",
        ),
    )
    .unwrap();
    let q = Quench::start("{}\n", rb.path());
    let client = http();
    let r = client
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(
            &json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
               "alerts": [{"status": "firing", "labels": {"alertname": "Broken", "service": "pay"},
                           "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "broken"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    q.wait_for("/api/v1/incidents/inc-1", Duration::from_secs(30), |d| {
        (d["run"]["outcome"] == "failed").then_some(())
    })
    .await;

    // A broken edit: refused, said why, the set in force stays.
    std::fs::write(&file, "version: 1\nname: f\nsteps: [").unwrap();
    let st = q
        .wait_for("/api/v1/status", Duration::from_secs(20), |v| {
            v["runbooks"]["last_error"].is_array().then(|| v.clone())
        })
        .await;
    assert!(
        st["runbooks"]["last_error"][0]
            .as_str()
            .unwrap()
            .contains("f.yaml"),
        "{st:#}"
    );
    assert_eq!(st["runbooks"]["count"], 1);
    let rb_now = q.get_json("/api/v1/runbooks").await;
    assert_eq!(rb_now["runbooks"][0]["steps"], json!(["http.request"]));

    // The fix: picked up without a restart.
    std::fs::write(&file, runbook("    uses: wait\n    with: {seconds: 0}\n")).unwrap();
    q.wait_for("/api/v1/runbooks", Duration::from_secs(20), |v| {
        (v["runbooks"][0]["steps"] == json!(["wait"])).then_some(())
    })
    .await;
    assert!(q.get_json("/api/v1/status").await["runbooks"]["last_error"].is_null());

    // SIGHUP reloads at once, too.
    let before = q.get_json("/api/v1/runbooks").await["loaded_at"].clone();
    let pid = q.pid().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    q.wait_for("/api/v1/runbooks", Duration::from_secs(20), |v| {
        (v["loaded_at"] != before).then_some(())
    })
    .await;

    let out = Command::new(quench_bin())
        .args([
            "incidents",
            "rerun",
            "inc-1",
            "--reason",
            "fixed the runbook",
            "--server",
            &q.url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("inc-1: f runs again"));
    let inc = q
        .wait_for("/api/v1/incidents/inc-1", Duration::from_secs(30), |d| {
            (d["run"]["outcome"] == "succeeded").then(|| d.clone())
        })
        .await;
    assert_eq!(inc["status"], "open", "{inc:#}");
    assert_eq!(inc["steps"][0]["uses"], "wait");
    assert!(
        inc["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "rerun"
                && e["detail"].as_str().unwrap().contains("fixed the runbook")),
        "{inc:#}"
    );
    let audit = q.get_json("/api/v1/audit?incident=inc-1").await;
    assert!(
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "run.rerun"),
        "{audit:#}"
    );
    // A closed incident, or one unknown, is not rerun.
    let r = client
        .post(format!("{}/api/v1/incidents/inc-9/rerun", q.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// `key=value`, percent-encoded for a query string.
fn query_pair(key: &str, value: &str) -> String {
    let enc: String = value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{key}={enc}")
}
