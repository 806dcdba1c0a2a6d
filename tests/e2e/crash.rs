//! Crash safety: every alert that got a 2xx survives `kill -9`, and the
//! pipeline picks up where it stopped after the restart.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quench_tests::{Quench, http, repo_root};
use serde_json::json;
use tokio::sync::Mutex;

const ALERTS: usize = 600;
const CONCURRENCY: usize = 24;
const KILL_AFTER: usize = 150;

fn payload(i: usize) -> String {
    json!({
        "version": "4", "groupKey": format!("crash-{i}"), "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing",
                    "labels": {"alertname": "HighCPU", "severity": "critical", "service": format!("svc-{i}")},
                    "startsAt": "2026-11-27T10:00:00Z", "fingerprint": format!("crash-{i:04}")}]
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_alerts_survive_kill_9() {
    let examples = repo_root().join("runbooks/examples");
    let mut q = Quench::start("{}\n", &examples);
    let url = q.url.clone();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let ok_count = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let client = http();

    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (acked, ok_count, next, client, url) = (
            acked.clone(),
            ok_count.clone(),
            next.clone(),
            client.clone(),
            url.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= ALERTS {
                    return;
                }
                let r = client
                    .post(format!("{url}/hooks/alertmanager"))
                    .header("content-type", "application/json")
                    .body(payload(i))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        acked.lock().await.insert(format!("crash-{i:04}"));
                        ok_count.fetch_add(1, Ordering::SeqCst);
                    }
                    // The server died mid-request: no 2xx, no promise.
                    _ => {}
                }
            }
        }));
    }
    // Kill it mid-stream, while requests are in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ok_count.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            std::time::Instant::now() < deadline,
            "intake too slow to reach {KILL_AFTER} acks"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    q.kill9();
    for w in workers {
        w.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= KILL_AFTER);
    assert!(
        acked.len() < ALERTS,
        "the kill came too late to test anything"
    );

    // Restart on the same data directory.
    let q2 = Quench::spawn(&q.config, &q.data, &examples, None);
    let stored = q2.get_json("/api/v1/alerts?limit=100000").await;
    let stored: BTreeSet<String> = stored["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alert"]["fingerprint"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged alerts lost after kill -9: {lost:?}",
        lost.len()
    );

    // The pipeline resumes: every stored alert ends up in an incident.
    let want = stored.len();
    q2.wait_for(
        "/api/v1/incidents?limit=100000",
        Duration::from_secs(60),
        |d| {
            let covered: BTreeSet<&str> = d["incidents"]
                .as_array()?
                .iter()
                .flat_map(|i| i["alerts"].as_array().into_iter().flatten())
                .filter_map(|a| a["fingerprint"].as_str())
                .collect();
            (covered.len() == want).then_some(())
        },
    )
    .await;
}
