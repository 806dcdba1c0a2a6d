//! Failovers under a steady alert stream: two release `quench serve`
//! replicas and a Lease on the real API server. Each run SIGKILLs the
//! leader, times until the standby leads, restarts the killed one as the
//! new standby and waits until it has caught up. The stream goes to
//! whichever replica answers (as a Service across both would), and a
//! refused or failed delivery is sent again, as Alertmanager does; every
//! alert ever acknowledged must be on the last leader. Then the intake
//! rate of the leader in sync mode against a single replica.
//!
//! Run it with `scripts/bench-failover.sh` (it starts the test control
//! plane). Arguments: `--runs N` (20), `--lease S` (Lease duration, 6 s;
//! renew deadline two thirds of it, retry 1 s), `--seconds S` per
//! throughput measurement (3).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quench_tests::kube::Cluster;
use quench_tests::{Quench, free_port, http};
use serde_json::Value;

const TOKEN: &str = "bench-failover-peer-token";

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Replica {
    port: u16,
    config: PathBuf,
    data: PathBuf,
}

fn replica(dir: &Path, name: &str, ns: &str, kubeconfig: &Path, lease: u64) -> Replica {
    let port = free_port();
    let config = dir.join(format!("{name}.yaml"));
    let renew = (lease * 2 / 3).max(2);
    std::fs::write(
        &config,
        format!(
            "kubernetes: {{kubeconfig: '{}'}}\nha:\n  enabled: true\n  namespace: {ns}\n  identity: {name}\n  advertise_url: http://127.0.0.1:{port}\n  peer_token: {TOKEN}\n  lease_duration_seconds: {lease}\n  renew_deadline_seconds: {renew}\n  retry_period_seconds: 1\n  replication: sync\n",
            kubeconfig.display()
        ),
    )
    .expect("config");
    Replica {
        port,
        config,
        data: dir.join(format!("{name}-data")),
    }
}

fn body(fp: &str) -> String {
    format!(
        r#"{{"version":"4","groupKey":"g","status":"firing","receiver":"quench","alerts":[{{"status":"firing","labels":{{"alertname":"Bench","instance":"{fp}"}},"startsAt":"2026-12-01T10:00:00Z","fingerprint":"{fp}"}}]}}"#
    )
}

async fn readyz(url: &str) -> Value {
    match http()
        .get(format!("{url}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn wait(url: &str, what: &str, within: Duration, ok: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let v = readyz(url).await;
        if ok(&v) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never {what}: {v:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Alerts per second for `secs` seconds, `conc` senders, one alert each.
async fn rate(url: &str, tag: &str, secs: u64, conc: usize) -> f64 {
    let n = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..conc {
        let (url, n, tag) = (url.to_string(), n.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let c = http();
            let mut i = 0u64;
            while Instant::now() < stop {
                let fp = format!("{tag}-{w}-{i}");
                i += 1;
                let r = c
                    .post(format!("{url}/hooks/alertmanager"))
                    .header("content-type", "application/json")
                    .body(body(&fp))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    n.load(Ordering::Relaxed) as f64 / secs as f64
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (runs, lease, secs) = (
        arg(&args, "--runs", 20) as usize,
        arg(&args, "--lease", 6),
        arg(&args, "--seconds", 3),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let cluster = Cluster::get().await;
        let ns = cluster.namespace("failover").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let rb = dir.path().join("runbooks");
        std::fs::create_dir_all(&rb).expect("runbooks");

        // Intake: a single replica, then the leader of two in sync mode.
        let single = {
            let cfg = dir.path().join("single.yaml");
            std::fs::write(&cfg, "{}\n").expect("config");
            let q = Quench::spawn(&cfg, &dir.path().join("single-data"), &rb, None);
            rate(&q.url, "single", secs, 8).await
        };
        let reps = [
            replica(dir.path(), "a", &ns, &cluster.kubeconfig, lease),
            replica(dir.path(), "b", &ns, &cluster.kubeconfig, lease),
        ];
        let url = |i: usize| format!("http://127.0.0.1:{}", reps[i].port);
        let spawn = |i: usize| Quench::spawn(&reps[i].config, &reps[i].data, &rb, Some(reps[i].port));
        let mut procs = [Some(spawn(0)), None];
        wait(&url(0), "led", Duration::from_secs(30), |v| v["ha"]["role"] == "leader").await;
        procs[1] = Some(spawn(1));
        wait(&url(1), "followed", Duration::from_secs(30), |v| v["ha"]["role"] == "standby").await;
        let synced = rate(&url(0), "sync", secs, 8).await;
        let ratio = synced / single;
        println!(
            "intake, 8 senders, one alert per request: single replica {single:.0} alerts/s, leader in sync mode {synced:.0} alerts/s ({ratio:.2}x)"
        );

        // The steady stream, to whichever replica takes it.
        let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let window = Arc::new(AtomicBool::new(false));
        let in_window = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for w in 0..2 {
            let (acked, stop, window, in_window) =
                (acked.clone(), stop.clone(), window.clone(), in_window.clone());
            let urls = [url(0), url(1)];
            senders.push(tokio::spawn(async move {
                let c = http();
                let (mut i, mut at) = (0u64, 0usize);
                while !stop.load(Ordering::Acquire) {
                    let fp = format!("stream-{w}-{i}");
                    // The same alert until someone takes it.
                    loop {
                        let r = c
                            .post(format!("{}/hooks/alertmanager", urls[at]))
                            .header("content-type", "application/json")
                            .timeout(Duration::from_secs(5))
                            .body(body(&fp))
                            .send()
                            .await;
                        if r.is_ok_and(|r| r.status().is_success()) {
                            acked.lock().expect("acked").insert(fp.clone());
                            if window.load(Ordering::Acquire) {
                                in_window.fetch_add(1, Ordering::Relaxed);
                            }
                            break;
                        }
                        at = 1 - at;
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }));
        }
        let mut leader = 0usize;
        let mut times = Vec::new();
        for run in 1..=runs {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let standby = 1 - leader;
            window.store(true, Ordering::Release);
            if let Some(mut q) = procs[leader].take() {
                q.kill9();
            }
            let killed = Instant::now();
            wait(&url(standby), "took over", Duration::from_secs(lease + 30), |v| {
                v["ha"]["role"] == "leader"
            })
            .await;
            let took = killed.elapsed().as_secs_f64();
            window.store(false, Ordering::Release);
            times.push(took);
            println!("run {run:>2}: replica {} leads after {took:.2} s", ["a", "b"][standby]);
            procs[leader] = Some(spawn(leader));
            let back = url(leader);
            wait(&back, "caught up", Duration::from_secs(60), |v| {
                v["ha"]["role"] == "standby" && v["ha"]["lag_alerts"] == 0
            })
            .await;
            leader = standby;
        }
        stop.store(true, Ordering::Release);
        for s in senders {
            let _ = s.await;
        }
        let on_leader: BTreeSet<String> = {
            let v: Value = http()
                .get(format!("{}/api/v1/alerts?limit=100000", url(leader)))
                .send()
                .await
                .expect("alerts")
                .json()
                .await
                .expect("json");
            v["alerts"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|a| a["alert"]["fingerprint"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let acked = acked.lock().expect("acked").clone();
        let lost = acked.difference(&on_leader).count();
        times.sort_by(f64::total_cmp);
        println!(
            "Lease {lease} s (renew deadline {} s, retry 1 s): a standby takes over once the last renewal it saw is {lease} s old on its clock; it saw it up to one retry after it was made, so the floor is {} to {lease} s after the kill.",
            (lease * 2 / 3).max(2),
            lease.saturating_sub(1)
        );
        println!(
            "failover: {runs} runs, new leader p50 {:.2} s p99 {:.2} s, acknowledged {}, lost {lost}, sync throughput {ratio:.2} x single",
            pct(&times, 0.5),
            pct(&times, 0.99),
            acked.len(),
        );
        println!(
            "(acknowledged while a failover went on: {}; lost must be 0 in sync mode)",
            in_window.load(Ordering::Relaxed)
        );
        drop(procs);
        if lost > 0 {
            std::process::exit(1);
        }
    });
}
