//! The engine's own overhead, from webhook receipt to the start of the
//! first step, at a steady 1,000 alerts/s, with a no-op step (`wait 0 s`).
//!
//! Every alert opens its own incident (its own group). Two figures:
//! - "server": from the moment the alert log took the alert (after the
//!   HTTP body was read and parsed) to the step's start, both stamped by
//!   quench;
//! - "client": from just before this process sent the request to the
//!   step's start (same machine, same clock), so it also covers HTTP, the
//!   durable append and its flush.
//!
//! Run it with `scripts/bench-executor.sh` (a release build). Arguments:
//! `--seconds N` (default 10), `--rate N` alerts per second (default 1000).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use quench_tests::{Quench, cpu_by_thread, http};
use serde_json::{Value, json};

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let seconds = arg("--seconds", 10.0);
    let rate = arg("--rate", 1000.0);

    let rb = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        rb.path().join("noop.yaml"),
        "version: 1\nname: noop\nmatch:\n  matchers: ['alertname=\"Bench\"']\ngroup_by: [alertname, n]\nsteps:\n  - id: noop\n    uses: wait\n    with: {seconds: 0}\n",
    )
    .expect("write runbook");
    let q = Quench::start("{}\n", rb.path());
    println!(
        "quench: {} — {rate} alerts/s for {seconds} s, one incident per alert, first step `wait 0s`",
        q.url
    );

    let client = http();
    let sent: Arc<Mutex<HashMap<String, DateTime<Utc>>>> = Arc::default();
    let total = (rate * seconds) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total);
    let pid = q.pid().expect("quench runs");
    let (cpu_before, load_started) = (cpu_by_thread(pid), std::time::Instant::now());
    for n in 0..total {
        tick.tick().await;
        let (client, url, sent) = (client.clone(), q.url.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let fp = format!("bench{n:08}");
            let body = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
                "alerts": [{"status": "firing", "labels": {"alertname": "Bench", "n": n.to_string()},
                            "startsAt": "2026-11-27T10:00:00Z", "fingerprint": fp}]});
            let at = Utc::now();
            let r = client.post(format!("{url}/hooks/alertmanager")).json(&body).send().await.expect("send");
            assert!(r.status().is_success(), "{}", r.status());
            sent.lock().unwrap().insert(fp, at);
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let load_seconds = load_started.elapsed().as_secs_f64();
    let cpu_after = cpu_by_thread(pid);
    // Let the last runs start.
    let mut incidents: Vec<Value> = Vec::new();
    for _ in 0..100 {
        let v: Value = client
            .get(format!("{}/api/v1/incidents?limit={total}", q.url))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        incidents = v["incidents"].as_array().cloned().unwrap_or_default();
        let started = incidents
            .iter()
            .filter(|i| i["steps"][0]["started_at"].is_string())
            .count();
        if started >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What the knowledge store's writer did for it (warm-up included).
    let metrics = q.get_text("/metrics").await;
    let sent = sent.lock().unwrap();
    let mut server = Vec::new();
    let mut client_side = Vec::new();
    for i in &incidents {
        let (Some(start), Some(recv)) = (
            i["steps"][0]["started_at"].as_str(),
            i["alerts"][0]["first_received_at"].as_str(),
        ) else {
            continue;
        };
        let start: DateTime<Utc> = start.parse().expect("time");
        let recv: DateTime<Utc> = recv.parse().expect("time");
        server.push((start - recv).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        if let Some(at) = i["alerts"][0]["fingerprint"]
            .as_str()
            .and_then(|f| sent.get(f))
        {
            client_side.push((start - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    server.sort_by(f64::total_cmp);
    client_side.sort_by(f64::total_cmp);
    println!("runs started: {} of {total}", server.len());
    if server.is_empty() {
        println!("no run started; see the quench log:\n{}", q.log_text());
        std::process::exit(1);
    }
    println!(
        "server  (log append -> step start): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        pct(&server, 0.5),
        pct(&server, 0.99),
        server[server.len() - 1]
    );
    println!(
        "client  (request sent -> step start): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        pct(&client_side, 0.5),
        pct(&client_side, 0.99),
        client_side[client_side.len() - 1]
    );
    println!("target: p99 under 5 ms");
    let counter = |name: &str| quench_tests::sample(&metrics, name).unwrap_or(0.0);
    println!(
        "knowledge store: {:.0} commits and {:.0} flushes per second of load",
        counter("quench_store_commits_total") / seconds,
        counter("quench_store_flushes_total") / seconds
    );
    // Threads that ended during the load are left out (tokio's blocking
    // pool): a lower bound.
    let mut used: Vec<(String, f64)> = cpu_after
        .iter()
        .map(|(name, t)| {
            let before = cpu_before.get(name).copied().unwrap_or_default();
            (
                name.clone(),
                t.saturating_sub(before).as_secs_f64() / load_seconds,
            )
        })
        .filter(|(_, c)| *c >= 0.005)
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    let all: f64 = used.iter().map(|(_, c)| c).sum();
    let each: Vec<String> = used
        .iter()
        .map(|(name, c)| format!("{name} {:.0}%", c * 100.0))
        .collect();
    println!(
        "quench's CPU while sending: {all:.2} cores ({})",
        each.join(", ")
    );
}
