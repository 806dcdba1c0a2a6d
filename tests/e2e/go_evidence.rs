//! Evidence steps against a real Go service: a goroutine leak shows up as
//! the first line of the dump, and the runtime series are scraped.

use quench_connectors::steps::StepType;
use quench_tests::{GoService, http, run_step};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_goroutine_leak_is_the_first_line_and_runtime_metrics_are_read() {
    let svc = GoService::start();
    let client = http();
    let r = client
        .get(format!("{}/leak?n=250", svc.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let out = run_step(StepType::GoroutineDump, &json!({"url": svc.url}))
        .await
        .unwrap();
    assert!(out["total"].as_u64().unwrap() >= 250, "{out}");
    assert_eq!(
        out["summary"][0], "250 goroutines blocked in main.leakyWorker (chan receive)",
        "{out:#}"
    );
    assert_eq!(out["groups"][0]["count"], 250);

    let out = run_step(
        StepType::MetricsScrape,
        &json!({"url": format!("{}/metrics", svc.url)}),
    )
    .await
    .unwrap();
    assert!(
        out["values"]["go_goroutines"].as_f64().unwrap() >= 250.0,
        "{out}"
    );
    assert!(out["values"]["go_memstats_alloc_bytes"].as_f64().unwrap() > 0.0);
    assert!(
        out["values"].get("http_requests_total").is_none(),
        "only runtime series are kept"
    );
    assert_eq!(out["unparsed_lines"], 0);

    let err = run_step(
        StepType::GoroutineDump,
        &json!({"url": "http://127.0.0.1:1"}),
    )
    .await
    .unwrap_err();
    assert!(err.is_retryable());
}

/// The whole path: an alert opens an incident whose runbook captures a CPU
/// profile, a trace and a goroutine dump from the real service; the flame
/// graph and the trace are served back as artifacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbook_captures_evidence_end_to_end() {
    use std::time::Duration;

    use quench_tests::Quench;

    let svc = GoService::start();
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("cpu.yaml"),
        "version: 1\nname: cpu\nmatch:\n  matchers: ['alertname=\"HighCPU\"']\nsteps:\n  - id: cpu\n    uses: pprof.capture\n    with: {url: '{{alert.annotations.pprof}}', kind: cpu, seconds: 2, top: 3}\n  - id: trace\n    uses: trace.capture\n    with: {url: '{{alert.annotations.pprof}}', seconds: 1}\n  - id: goroutines\n    uses: goroutine.dump\n    with: {url: '{{alert.annotations.pprof}}'}\n",
    )
    .unwrap();
    let q = Quench::start("{}\n", rb.path());
    let client = http();
    let burn = format!("{}/burn?ms=6000", svc.url);
    let c = client.clone();
    tokio::spawn(async move { c.get(burn).send().await });
    let alert = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing", "labels": {"alertname": "HighCPU"}, "annotations": {"pprof": svc.url},
                    "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "cpu"}]});
    let r = client
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inc = q
        .wait_for("/api/v1/incidents/inc-1", Duration::from_secs(60), |d| {
            // No verify: the run ends, and the incident stays open.
            (d["run"]["outcome"] == "succeeded" && d["status"] == "open").then(|| d.clone())
        })
        .await;
    let cpu = &inc["steps"][0];
    assert_eq!(cpu["state"], "succeeded", "{inc:#}");
    assert_eq!(
        cpu["output"]["top"][0]["function"], "main.burnCPU",
        "{cpu:#}"
    );
    assert!(cpu["output"]["window"]["start"].is_string());
    let svg_id = cpu["output"]["artifacts"]["flamegraph"].as_str().unwrap();
    let r = client
        .get(format!("{}/api/v1/artifacts/{svg_id}", q.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    let svg = r.text().await.unwrap();
    assert!(
        svg.contains("main.burnCPU"),
        "the flame graph names the hot function"
    );

    let trace = &inc["steps"][1]["output"];
    assert!(
        trace["format"].as_str().unwrap().starts_with("go 1."),
        "{trace}"
    );
    let bytes = client
        .get(format!(
            "{}/api/v1/artifacts/{}",
            q.url,
            trace["artifact"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(bytes.starts_with(b"go 1."));
    assert!(inc["steps"][2]["output"]["total"].as_u64().unwrap() > 0);
    let r = client
        .get(format!("{}/api/v1/artifacts/sha256:nope", q.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// `perf record` against the running Go service finds the burning function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_record_finds_the_burning_function() {
    quench_tests::require("perf", "linux-perf");
    let svc = GoService::start();
    let client = http();
    let burn = format!("{}/burn?ms=5000", svc.url);
    let c = client.clone();
    tokio::spawn(async move { c.get(burn).send().await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let out = run_step(
        StepType::PerfRecord,
        &json!({"pid": svc.pid(), "seconds": 2, "hz": 199}),
    )
    .await
    .unwrap();
    assert!(out["samples"].as_u64().unwrap() > 50, "{out}");
    assert_eq!(out["top"][0]["function"], "main.burnCPU", "{out:#}");
    let bad = run_step(
        StepType::PerfRecord,
        &json!({"process": "no-such-process-here"}),
    )
    .await;
    assert!(bad.is_err());
    let bad = run_step(StepType::PerfRecord, &json!({"pid": 1, "process": "x"})).await;
    assert!(matches!(
        bad,
        Err(quench_connectors::steps::StepError::Params(_))
    ));
}

/// PromQL steps against a real Prometheus that scrapes the Go service, and
/// profiles from a real Alertmanager (a second Go program serving pprof).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_over_the_go_service_and_profiles_from_alertmanager() {
    use quench_connectors::steps::{Builtin, Call, StepRunner, StepType};
    use quench_tests::{Alertmanager, Prometheus};

    let svc = GoService::start();
    let client = http();
    client
        .get(format!("{}/leak?n=120", svc.url))
        .send()
        .await
        .unwrap();
    let target = svc.url.trim_start_matches("http://").to_string();
    let prom = Prometheus::scraping(&[&target]).await;
    let ok = run_step(StepType::PromqlVerify, &json!({"url": prom.url, "query": "go_goroutines{job=\"target\"}", "condition": ">= 120", "within": 30, "every": 1}),
    )
    .await
    .unwrap();
    assert_eq!(ok["samples"][0]["labels"]["job"], "target", "{ok}");

    let am = Alertmanager::start_silent().await;
    let runner = Builtin::default();
    for kind in [
        "heap",
        "goroutine",
        "allocs",
        "threadcreate",
        "block",
        "mutex",
    ] {
        let out = runner
            .run(
                StepType::PprofCapture,
                Call::default(),
                &json!({"url": am.url, "kind": kind, "top": 3}),
            )
            .await
            .unwrap_or_else(|e| panic!("{kind} from alertmanager: {e}"));
        assert_eq!(out["kind"], kind);
        assert!(out["bytes"].as_u64().unwrap() > 0);
    }
    let g = runner
        .run(
            StepType::PprofCapture,
            Call::default(),
            &json!({"url": am.url, "kind": "goroutine", "top": 50}),
        )
        .await
        .unwrap();
    assert!(
        g["total"].as_i64().unwrap() > 5,
        "alertmanager runs goroutines: {g}"
    );
}

/// A body far larger than any limit (1 GiB announced and streamed) is cut
/// at the limit with an error, and never fills memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_cut_at_the_limit() {
    let (url, _) = quench_tests::stub_with(|_| quench_tests::Reply::Endless(1 << 30)).await;
    let err = run_step(
        StepType::MetricsScrape,
        &json!({"url": format!("{url}/metrics")}),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    let err = run_step(StepType::GoroutineDump, &json!({"url": url}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    // So are the answers of APIs and webhooks (kept as text or JSON), and
    // Prometheus'.
    let err = run_step(
        StepType::HttpRequest,
        &json!({"url": url, "method": "POST"}),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("larger than 16777216 bytes"),
        "{err}"
    );
    let err = run_step(StepType::PromqlQuery, &json!({"url": url, "query": "up"}))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("larger than 16777216 bytes"),
        "{err}"
    );
}

/// The shipped examples, as a new team runs them: a Go service known only
/// by its `instance` (what Prometheus sends for most services), scraped by
/// a real Prometheus, with `prometheus.url` and `allowed_hosts` set once in
/// the configuration. Every step that runs succeeds: none fails for a
/// missing parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_examples_run_for_a_service_known_by_its_instance() {
    let svc = GoService::start();
    let instance = svc.url.trim_start_matches("http://").to_string();
    let prom = quench_tests::Prometheus::scraping(&[&instance]).await;
    let examples = quench_tests::repo_root().join("runbooks/examples");
    let config = format!(
        "triage_runbook: triage\nprometheus: {{url: '{}'}}\nexecutor: {{allowed_hosts: ['127.0.0.1']}}\nkubernetes: {{kubeconfig: /nonexistent/quench/kubeconfig}}\n",
        prom.url
    );
    let q = quench_tests::Quench::start(&config, &examples);
    // Prometheus has scraped the service before the alerts come.
    let client = http();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value = client
            .get(format!("{}/api/v1/query", prom.url))
            .query(&[("query", format!("up{{instance=\"{instance}\"}}"))])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["data"]["result"][0]["value"][1] == "1" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never scraped: {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let alert = |name: &str, fp: &str| {
        json!({"status": "firing", "labels": {"alertname": name, "severity": "warning", "job": "target", "instance": instance},
               "startsAt": "2026-11-27T10:00:00Z", "fingerprint": fp})
    };
    let r = client
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(
            &json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
                      "alerts": [alert("HighCPU", "cpu"), alert("SomethingOdd", "odd")]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for (id, runbook, ran) in [
        ("inc-1", "go-high-cpu", &["cpu_instance", "cpu_rate"][..]),
        ("inc-2", "triage", &["goroutines", "runtime"][..]),
    ] {
        let inc = q
            .wait_for(
                &format!("/api/v1/incidents/{id}"),
                Duration::from_secs(60),
                |d| d["run"].is_object().then(|| d.clone()),
            )
            .await;
        assert_eq!(inc["runbook"]["name"], runbook, "{inc:#}");
        assert_eq!(inc["run"]["outcome"], "succeeded", "{inc:#}");
        for s in inc["steps"].as_array().unwrap() {
            let id = s["id"].as_str().unwrap();
            let want = if ran.contains(&id) {
                "succeeded"
            } else {
                "skipped"
            };
            assert_eq!(s["state"], want, "{id}: {s:#}");
        }
    }
    let inc = q.get_json("/api/v1/incidents/inc-1").await;
    // The query reached Prometheus with the instance in it (the test
    // service exports no process_cpu_seconds_total, so no samples).
    let rate = &inc["steps"][2];
    assert_eq!(rate["output"]["result_type"], "vector", "{rate:#}");
    assert_eq!(
        rate["rendered"]["query"],
        format!("rate(process_cpu_seconds_total{{instance=\"{instance}\"}}[5m])"),
        "{rate:#}"
    );
    assert_eq!(
        rate["rendered"]["url"], prom.url,
        "prometheus.url filled it in"
    );
    assert_eq!(inc["steps"][1]["output"]["kind"], "cpu");
}
