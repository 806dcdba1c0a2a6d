//! The alert storm, measured: the highest rate quench sustains when every
//! alert opens its own incident and starts a run, then two minutes at that
//! rate while people search, annotate and list incidents. Prints the
//! sustained rate, the worst `/healthz` latency, the largest lags and the
//! peak RSS of the server.
//!
//! Run it with `scripts/bench-storm.sh` (a release build). Arguments:
//! `--seconds N` for the main phase (default 120), `--rate N` to skip the
//! probe (and the retries 500 alerts/s lower when the main phase falls
//! short), `--probe-seconds N` (default 20).
//!
//! A rate is sustained when every delivery got a 2xx and, half a second
//! after the senders stopped, the pipeline had caught up (every stored
//! alert in an incident, every run finished).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quench_tests::{Quench, http, probe_healthz};
use serde_json::{Value, json};

/// Alerts per delivery (Alertmanager batches too); each its own incident.
const BATCH: usize = 5;

struct Outcome {
    acked: usize,
    failed: usize,
    worst_healthz_ms: u64,
    max_pipeline_lag: u64,
    max_index_lag: u64,
    caught_up_after_s: Option<f64>,
    searches: usize,
    annotations: usize,
    listings: usize,
    worst_query_ms: u64,
    peak_rss_mb: f64,
}

fn runbooks(dir: &std::path::Path) {
    std::fs::write(
        dir.join("storm.yaml"),
        "version: 1\nname: storm\nmatch:\n  matchers: ['alertname=\"Storm\"']\ngroup_by: [alertname, n]\nsteps:\n  - id: noop\n    uses: wait\n    with: {seconds: 0}\n",
    )
    .expect("runbook");
}

async fn run(rb: &std::path::Path, rate: u64, seconds: u64, people: bool) -> Outcome {
    let q = Quench::start("{}\n", rb);
    let url = q.url.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let worst_query = Arc::new(AtomicU64::new(0));
    let max_pipe = Arc::new(AtomicU64::new(0));
    let max_index = Arc::new(AtomicU64::new(0));
    let counts = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    // Senders: 32 of them share the rate.
    let senders = 32usize;
    let period = Duration::from_secs_f64(senders as f64 * BATCH as f64 / rate as f64);
    for _ in 0..senders {
        let (url, stop, acked, failed, next) = (
            url.clone(),
            stop.clone(),
            acked.clone(),
            failed.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = http();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !stop.load(Ordering::Acquire) {
                tick.tick().await;
                let first = next.fetch_add(BATCH, Ordering::SeqCst);
                let alerts: Vec<Value> = (first..first + BATCH)
                    .map(|n| json!({"status": "firing", "startsAt": "2026-11-27T10:00:00Z",
                        "labels": {"alertname": "Storm", "n": n.to_string(), "service": format!("svc-{}", n % 50)},
                        "annotations": {"summary": format!("storm alert {n} redis latency")},
                        "fingerprint": format!("s{n:09}")}))
                    .collect();
                let body = json!({"version": "4", "groupKey": format!("g{first}"), "status": "firing",
                                  "receiver": "quench", "alerts": alerts});
                match client
                    .post(format!("{url}/hooks/alertmanager"))
                    .timeout(Duration::from_secs(10))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        acked.fetch_add(BATCH, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // /healthz every 250 ms from a thread of its own (as a kubelet probes);
    // /readyz every second for the lags.
    let probe = probe_healthz(&url, Duration::from_millis(250));
    {
        let (url, stop, max_pipe, max_index) = (
            url.clone(),
            stop.clone(),
            max_pipe.clone(),
            max_index.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = http();
            while !stop.load(Ordering::Acquire) {
                if let Ok(r) = client.get(format!("{url}/readyz")).send().await
                    && let Ok(v) = r.json::<Value>().await
                {
                    max_pipe.fetch_max(
                        v["pipeline_lag_alerts"].as_u64().unwrap_or(0),
                        Ordering::Relaxed,
                    );
                    max_index.fetch_max(
                        v["index_lag_changes"].as_u64().unwrap_or(0),
                        Ordering::Relaxed,
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    // People: a search, an annotation and a listing, each twice a second.
    if people {
        for kind in 0..3usize {
            let (url, stop, counts, worst, next) = (
                url.clone(),
                stop.clone(),
                counts.clone(),
                worst_query.clone(),
                next.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let client = http();
                let mut i = 0usize;
                while !stop.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    i += 1;
                    let t = Instant::now();
                    let r = match kind {
                        0 => {
                            client
                                .get(format!("{url}/api/v1/search"))
                                .query(&[("q", format!("redis service:svc-{}", i % 50))])
                                .send()
                                .await
                        }
                        1 => {
                            let n = (next.load(Ordering::Relaxed) / BATCH / 2).max(1);
                            client
                                .post(format!("{url}/api/v1/incidents/inc-{n}/annotations"))
                                .json(&json!({"root_cause": format!("redis failover {i}"), "tags": ["storm"]}))
                                .send()
                                .await
                        }
                        _ => {
                            client
                                .get(format!("{url}/api/v1/incidents?limit=50"))
                                .send()
                                .await
                        }
                    };
                    if r.is_ok_and(|r| r.status().is_success() || r.status().as_u16() == 404) {
                        counts[kind].fetch_add(1, Ordering::Relaxed);
                    }
                    worst.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
            }));
        }
    }
    let mut peak_rss: f64 = 0.0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak_rss = peak_rss.max(q.memory_mb("VmRSS").unwrap_or(0.0));
    }
    stop.store(true, Ordering::Release);
    for t in tasks {
        let _ = t.await;
    }
    // How long until the pipeline holds every acknowledged alert.
    let client = http();
    let drained = Instant::now();
    let mut caught_up = None;
    while drained.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = client.get(format!("{url}/readyz")).send().await
            && let Ok(v) = r.json::<Value>().await
        {
            max_pipe.fetch_max(
                v["pipeline_lag_alerts"].as_u64().unwrap_or(0),
                Ordering::Relaxed,
            );
            max_index.fetch_max(
                v["index_lag_changes"].as_u64().unwrap_or(0),
                Ordering::Relaxed,
            );
            if v["pipeline_lag_alerts"] == 0 && v["runs_active"] == 0 {
                caught_up = Some(drained.elapsed().as_secs_f64());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    peak_rss = peak_rss.max(q.memory_mb("VmHWM").unwrap_or(0.0));
    Outcome {
        acked: acked.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        worst_healthz_ms: probe.worst(),
        max_pipeline_lag: max_pipe.load(Ordering::Relaxed),
        max_index_lag: max_index.load(Ordering::Relaxed),
        caught_up_after_s: caught_up,
        searches: counts[0].load(Ordering::Relaxed),
        annotations: counts[1].load(Ordering::Relaxed),
        listings: counts[2].load(Ordering::Relaxed),
        worst_query_ms: worst_query.load(Ordering::Relaxed),
        peak_rss_mb: peak_rss,
    }
}

fn sustained(o: &Outcome) -> bool {
    o.failed == 0 && o.caught_up_after_s.is_some_and(|s| s <= 0.5)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse::<u64>().ok())
    };
    let seconds = arg("--seconds").unwrap_or(120);
    let probe = arg("--probe-seconds").unwrap_or(20);
    let rb = tempfile::tempdir().expect("tempdir");
    runbooks(rb.path());
    let rate = match arg("--rate") {
        Some(r) => r,
        None => {
            let mut best = 0;
            for rate in [500u64, 1000, 2000, 3000, 4000, 5000, 6000, 8000] {
                let o = run(rb.path(), rate, probe, false).await;
                let ok = sustained(&o);
                println!(
                    "probe {rate:>5} alerts/s for {probe} s: {} acknowledged, {} failed, caught up after {}, worst /healthz {} ms -> {}",
                    o.acked,
                    o.failed,
                    o.caught_up_after_s
                        .map(|s| format!("{s:.1} s"))
                        .unwrap_or_else(|| "never (60 s)".into()),
                    o.worst_healthz_ms,
                    if ok { "sustained" } else { "not sustained" }
                );
                if !ok {
                    break;
                }
                best = rate;
            }
            best.max(500)
        }
    };
    // The probes run without people; with their searches and listings on
    // top, the main phase may fall short at the probed rate. Then it is
    // run again 500 alerts/s lower (twice at most), so the figure printed
    // is a rate sustained for the whole phase.
    let given = arg("--rate").is_some();
    let mut rate = rate;
    let mut tries = 0;
    let o = loop {
        println!(
            "storm: {rate} alerts/s for {seconds} s, one incident per alert, with searches, annotations and listings"
        );
        let o = run(rb.path(), rate, seconds, true).await;
        tries += 1;
        if sustained(&o) || given || tries == 3 || rate <= 500 {
            break o;
        }
        println!(
            "  not sustained ({} failed, caught up after {}): again 500 alerts/s lower",
            o.failed,
            o.caught_up_after_s
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "never (60 s)".into())
        );
        rate -= 500;
    };
    println!(
        "rate                  {:.0} alerts/s ({} acknowledged, {} failed deliveries): {}",
        o.acked as f64 / seconds as f64,
        o.acked,
        o.failed,
        if sustained(&o) {
            "sustained"
        } else {
            "NOT sustained (a failed delivery, or not caught up within 0.5 s)"
        }
    );
    println!(
        "worst /healthz        {} ms (target: under 10 ms at any load; the CI test fails over 2000 ms)",
        o.worst_healthz_ms
    );
    println!("largest pipeline lag  {} alerts", o.max_pipeline_lag);
    println!("largest index lag     {} changes", o.max_index_lag);
    println!(
        "caught up             {}",
        o.caught_up_after_s
            .map(|s| format!("{s:.1} s after the senders stopped"))
            .unwrap_or_else(|| "not within 60 s".into())
    );
    println!(
        "people                {} searches, {} annotations, {} listings; slowest {} ms",
        o.searches, o.annotations, o.listings, o.worst_query_ms
    );
    println!("peak RSS              {:.0} MB", o.peak_rss_mb);
}
