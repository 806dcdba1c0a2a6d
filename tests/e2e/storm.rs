//! The alert storm: every alert opens its own incident and starts a run,
//! while `/healthz` is polled. quench must keep answering everything, and
//! afterwards every acknowledged alert is in an incident and every
//! incident in the search index. Then `kill -9` in the middle of storms,
//! cycle after cycle, on the same data directory.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use quench_tests::{Quench, http, probe_healthz};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Alerts per delivery; each has its own `n`, so its own incident.
const BATCH: usize = 4;

fn runbooks(dir: &Path) {
    std::fs::write(
        dir.join("storm.yaml"),
        "version: 1\nname: storm\nmatch:\n  matchers: ['alertname=\"Storm\"']\ngroup_by: [alertname, n]\nsteps:\n  - id: noop\n    uses: wait\n    with: {seconds: 0}\n",
    )
    .unwrap();
}

fn delivery(tag: &str, first: usize) -> Value {
    let alerts: Vec<Value> = (first..first + BATCH)
        .map(|n| {
            json!({"status": "firing",
                   "labels": {"alertname": "Storm", "n": format!("{tag}-{n}"), "service": "storm"},
                   "startsAt": "2026-11-27T10:00:00Z",
                   "fingerprint": format!("{tag}-{n:07}")})
        })
        .collect();
    json!({"version": "4", "groupKey": format!("{tag}-{first}"), "status": "firing",
           "receiver": "quench", "alerts": alerts})
}

/// Sends deliveries at `rate` alerts/s from `senders` tasks until `stop`;
/// returns the fingerprints acknowledged and the number of failed requests.
async fn storm(
    url: &str,
    tag: &str,
    rate: u64,
    senders: usize,
    stop: Arc<AtomicBool>,
) -> (BTreeSet<String>, usize) {
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let client = http();
    let per_sender = Duration::from_secs_f64(senders as f64 * BATCH as f64 / rate as f64);
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (acked, failed, next, client, stop) = (
            acked.clone(),
            failed.clone(),
            next.clone(),
            client.clone(),
            stop.clone(),
        );
        let (url, tag) = (url.to_string(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(per_sender);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Acquire) {
                tick.tick().await;
                let first = next.fetch_add(BATCH, Ordering::SeqCst);
                let r = client
                    .post(format!("{url}/hooks/alertmanager"))
                    .timeout(Duration::from_secs(10))
                    .json(&delivery(&tag, first))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let mut a = acked.lock().await;
                        for n in first..first + BATCH {
                            a.insert(format!("{tag}-{n:07}"));
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    (acked, failed.load(Ordering::SeqCst))
}

/// Every stored alert's fingerprint.
async fn stored(q: &Quench) -> BTreeSet<String> {
    let r = http()
        .get(format!("{}/api/v1/alerts?limit=100000", q.url))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(
        status.is_success(),
        "{status}: {text}\nlog:\n{}",
        q.log_text()
    );
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alert"]["fingerprint"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the pipeline and the index report no lag, at least
/// `at_least` incidents are stored and the index holds every one of them;
/// returns (incidents, index documents) as last seen. "No lag" alone is
/// not enough: the pipeline counts an alert as done once its incident is
/// handed to the knowledge writer, a moment before the write commits and
/// the change feed (and so the index) sees it.
async fn caught_up(q: &Quench, timeout: Duration, at_least: u64) -> (u64, u64) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let ready = q.get_json("/readyz").await;
        let idle = ready["pipeline_lag_alerts"] == 0 && ready["index_lag_changes"] == 0;
        let incidents = q.get_json("/api/v1/incidents?limit=100000").await["incidents"]
            .as_array()
            .unwrap()
            .len() as u64;
        let docs = q.get_json("/readyz").await["index_docs"].as_u64().unwrap();
        if idle && incidents >= at_least && docs == incidents {
            return (incidents, docs);
        }
        if std::time::Instant::now() > deadline {
            // What the caller's assertion will not say: where it stopped.
            let log = q.log_text();
            let mut from = log.len().saturating_sub(4000);
            while !log.is_char_boundary(from) {
                from += 1;
            }
            let tail = &log[from..];
            eprintln!("not caught up after {timeout:?}: {ready}\nthe log's end:\n{tail}");
            return (incidents, docs);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_within_2s_through_a_storm_of_new_incidents() {
    let rb = tempfile::tempdir().unwrap();
    runbooks(rb.path());
    let q = Quench::start("{}\n", rb.path());
    let stop = Arc::new(AtomicBool::new(false));
    // A failed probe counts as 10 s.
    let probe = probe_healthz(&q.url, Duration::from_millis(250));
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.store(true, Ordering::Release);
        })
    };
    let (acked, failed) = storm(&q.url, "storm", 800, 32, stop.clone()).await;
    timer.await.unwrap();
    let worst = probe.worst();
    drop(probe);
    assert_eq!(failed, 0, "requests failed during the storm");
    assert!(worst <= 2000, "/healthz took {worst} ms during the storm");
    assert!(
        acked.len() >= 2000,
        "only {} alerts acknowledged",
        acked.len()
    );
    let (incidents, docs) = caught_up(&q, Duration::from_secs(120), acked.len() as u64).await;
    assert_eq!(incidents, acked.len() as u64, "one incident per alert");
    assert_eq!(docs, incidents, "every incident is in the search index");
    let metrics = q.get_text("/metrics").await;
    assert!(
        metrics.contains("quench_steps_total{type=\"wait\",state=\"succeeded\"}"),
        "{metrics}"
    );
    // Every acknowledged delivery was answered by a group commit, and a
    // commit answers one delivery or more, each after a write and a sync.
    let counter = |name: &str| -> f64 {
        quench_tests::sample(&metrics, name).unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    let (commits, answered) = (
        counter("quench_log_commits_total"),
        counter("quench_log_commit_requests_total"),
    );
    assert!(
        answered >= (acked.len() / BATCH) as f64,
        "{answered} answered"
    );
    assert!(commits >= 1.0 && commits <= answered, "{commits} commits");
    assert!(counter("quench_log_sync_seconds_total") > 0.0);
    eprintln!(
        "storm: {} alerts acknowledged in 10 s, worst /healthz {worst} ms",
        acked.len()
    );
}

/// `kill -9` in the middle of a storm, `QUENCH_CRASH_CYCLES` times (10 by
/// default; `scripts/crash-cycles.sh 100`): after each restart every
/// acknowledged alert is stored, and once caught up every incident is in
/// the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_storms_loses_nothing_acknowledged() {
    let cycles: usize = std::env::var("QUENCH_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rb = tempfile::tempdir().unwrap();
    runbooks(rb.path());
    // The data directory outlives every process (Quench::start would
    // delete its own when the first process is replaced).
    let tmp = tempfile::tempdir().unwrap();
    let (config, data) = (tmp.path().join("quench.yaml"), tmp.path().join("data"));
    std::fs::write(&config, "{}\n").unwrap();
    let mut q = Quench::spawn(&config, &data, rb.path(), None);
    let port = q.port();
    let mut all_acked = BTreeSet::new();
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let url = q.url.clone();
        let sender = {
            let stop = stop.clone();
            let tag = format!("c{cycle}");
            tokio::spawn(async move { storm(&url, &tag, 600, 16, stop).await })
        };
        // Kill at a different point of each storm.
        tokio::time::sleep(Duration::from_millis(300 + (cycle as u64 * 137) % 700)).await;
        q.kill9();
        stop.store(true, Ordering::Release);
        let (acked, _) = sender.await.unwrap();
        all_acked.extend(acked);
        q = Quench::spawn(&config, &data, rb.path(), Some(port));
        let have = stored(&q).await;
        let missing: Vec<_> = all_acked.difference(&have).take(10).collect();
        assert!(
            missing.is_empty(),
            "cycle {cycle}: acknowledged alerts missing after kill -9: {missing:?}\nlog:\n{}",
            q.log_text()
        );
    }
    let (incidents, docs) = caught_up(&q, Duration::from_secs(120), all_acked.len() as u64).await;
    assert!(
        incidents >= all_acked.len() as u64,
        "{incidents} incidents for {} acknowledged alerts",
        all_acked.len()
    );
    if docs != incidents {
        // Keep what the next person needs to find out which incident the
        // index holds twice or lacks.
        q.kill9();
        let kept = tmp.keep();
        panic!(
            "every incident is in the search index: {docs} documents for {incidents} incidents; data directory kept at {}",
            kept.display()
        );
    }
    let repaired = q.log_text().matches("alert log repaired").count();
    eprintln!(
        "{cycles} kill -9 cycles: {} acknowledged alerts, all stored; {incidents} incidents, all indexed; {repaired} torn tails repaired on open",
        all_acked.len()
    );
}

/// `quench serve` runs with the allocator settings that keep its memory
/// small (it re-executes itself with them, keeping its pid), and its
/// pipeline threads yield the cores to intake and probes (nice 5), the
/// indexer's even more (nice 10).
#[tokio::test]
async fn serve_runs_with_small_host_allocator_settings_and_a_lower_priority_pipeline() {
    let rb = tempfile::tempdir().unwrap();
    runbooks(rb.path());
    let q = Quench::start("{}\n", rb.path());
    let pid = q.pid().expect("a running server");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    for want in [
        &b"MIMALLOC_PURGE_DELAY=10"[..],
        &b"MIMALLOC_ARENA_EAGER_COMMIT=0"[..],
    ] {
        assert!(
            vars.contains(&want),
            "{} is not in the server's environment",
            String::from_utf8_lossy(want)
        );
    }
    // Field 19 of /proc/PID/task/TID/stat is the nice value.
    let mut nice_of = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let nice: i32 = quench_tests::stat_fields(dir.join("stat"))
            .and_then(|f| f.get(16)?.parse().ok())
            .unwrap_or(99);
        nice_of.insert(comm.trim().to_string(), nice);
    }
    assert_eq!(nice_of.get("quench-runs"), Some(&5), "{nice_of:?}");
    assert_eq!(nice_of.get("quench-indexer"), Some(&10), "{nice_of:?}");
    assert_eq!(nice_of.get("quench"), Some(&0), "{nice_of:?}");
}
