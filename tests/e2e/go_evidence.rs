//! Evidence steps against a real Go service: a goroutine leak shows up as
//! the first line of the dump, and the runtime series are scraped.

use quench_connectors::steps::{goroutine_dump, metrics_scrape};
use quench_tests::{GoService, http};
use serde_json::json;

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

    let out = goroutine_dump::run(&client, &json!({"url": svc.url}))
        .await
        .unwrap();
    assert!(out["total"].as_u64().unwrap() >= 250, "{out}");
    assert_eq!(
        out["summary"][0], "250 goroutines blocked in main.leakyWorker (chan receive)",
        "{out:#}"
    );
    assert_eq!(out["groups"][0]["count"], 250);

    let out = metrics_scrape::run(&client, &json!({"url": format!("{}/metrics", svc.url)}))
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

    let err = goroutine_dump::run(&client, &json!({"url": "http://127.0.0.1:1"}))
        .await
        .unwrap_err();
    assert!(err.is_retryable());
}
