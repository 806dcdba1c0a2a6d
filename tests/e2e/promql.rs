//! The PromQL steps against a real Prometheus that scrapes itself.

use std::time::Duration;

use quench_connectors::steps::StepError;
use quench_connectors::steps::StepType;
use quench_tests::{Prometheus, run_step};
use serde_json::json;

#[tokio::test]
async fn query_range_and_verify_against_real_prometheus() {
    let p = Prometheus::start().await;
    // The first scrape takes a second or two.
    let q = json!({"url": p.url, "query": "up"});
    let mut out = json!(null);
    for _ in 0..60 {
        out = run_step(StepType::PromqlQuery, &q).await.unwrap();
        if !out["samples"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(out["result_type"], "vector");
    let s = &out["samples"][0];
    assert_eq!(s["labels"]["job"], "prometheus");
    assert_eq!(s["labels"]["__name__"], "up");
    assert_eq!(s["value"], 1.0);
    assert!(s["time"].as_f64().unwrap() > 1.7e9);

    // Scalars are samples too.
    let out = run_step(
        StepType::PromqlQuery,
        &json!({"url": p.url, "query": "scalar(up) * 2"}),
    )
    .await
    .unwrap();
    assert_eq!(out["samples"][0]["value"], 2.0);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = run_step(
        StepType::PromqlRange,
        &json!({"url": p.url, "query": "up", "seconds": 30, "step": 1}),
    )
    .await
    .unwrap();
    let series = &out["series"][0];
    assert_eq!(series["labels"]["job"], "prometheus");
    assert!(series["values"].as_array().unwrap().len() >= 2, "{out}");

    let ok = run_step(
        StepType::PromqlVerify,
        &json!({"url": p.url, "query": "up", "condition": "== 1", "within": 20, "every": 1}),
    )
    .await
    .unwrap();
    assert_eq!(ok["ok"], true);
    let err = run_step(
        StepType::PromqlVerify,
        &json!({"url": p.url, "query": "up", "condition": "> 5", "within": 2, "every": 1}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StepError::Failed(m) if m.contains("did not hold after")),
        "{err}"
    );

    // A bad query is Prometheus's bad_data, refused for good.
    let err = run_step(
        StepType::PromqlQuery,
        &json!({"url": p.url, "query": "up{"}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StepError::Refused(m) if m.contains("bad_data")),
        "{err}"
    );
    // An unreachable Prometheus is retryable.
    let err = run_step(
        StepType::PromqlQuery,
        &json!({"url": "http://127.0.0.1:1", "query": "up"}),
    )
    .await
    .unwrap_err();
    assert!(err.is_retryable(), "{err}");
}
