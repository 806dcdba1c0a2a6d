//! A real history at scale, end to end: N synthetic incidents (default
//! 1,000,000) written as JSON Lines, imported into a fresh `quench serve`
//! (release) with `quench import`, timed until the import is answered and
//! until every incident is searchable; then the query mix (the new
//! operators included) and the knowledge graph's walks over HTTP against
//! that server, and its peak RSS.
//!
//! Run it with `scripts/bench-import.sh [--incidents N] [--queries N]
//! [--config YAML]`.

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use quench_tests::{Quench, quench_bin};
use serde_json::json;

#[path = "corpus.rs"]
mod corpus;
use corpus::*;

fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let n = arg("--incidents", 1_000_000);
    let m = arg("--queries", 1000);
    let now: DateTime<Utc> = chrono::Utc::now();
    let dir = tempfile::tempdir().expect("tempdir");

    // The history as JSON Lines, the import format.
    let path = dir.path().join("history.jsonl");
    let t = Instant::now();
    {
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
        let mut rng = Lcg(42);
        for i in 0..n {
            let r = generate(i, &mut rng, now).record;
            let a = &r.alerts[0];
            let line = json!({
                "id": format!("H-{}", i + 1),
                "title": r.title,
                "service": r.service(),
                "severity": a.labels.get("severity"),
                "status": r.status.as_str(),
                "first_alert_at": r.first_alert_at,
                "opened_at": r.opened_at,
                "resolved_at": r.resolved_at,
                "runbook": r.runbook.as_ref().map(|b| b.name.clone()),
                "alerts": [{"labels": a.labels, "annotations": a.annotations}],
                "root_cause": r.notes.root_cause,
                "resolution": r.notes.resolution,
                "tags": r.notes.tags,
            });
            serde_json::to_writer(&mut w, &line).unwrap();
            w.write_all(b"\n").unwrap();
        }
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    println!(
        "generated {n} incidents as JSON Lines: {:.0} MB in {:.1} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let rb = tempfile::tempdir().expect("tempdir");
    // One runbook named as the corpus' RedisDown runs are, for its page.
    std::fs::write(
        rb.path().join("redisdown.yaml"),
        "version: 1\nname: redisdown\nmatch:\n  matchers: ['alertname=\"RedisDown\"']\nsteps:\n  - id: look\n    uses: wait\n    with: {seconds: 0}\n",
    )
    .expect("runbook");
    // `--config YAML`: the server's configuration (default: its defaults).
    let config = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "{}".into());
    let q = Quench::start(&format!("{config}\n"), rb.path());
    let rss_before = q.memory_mb("VmRSS").unwrap_or(0.0);
    let t = Instant::now();
    let out = std::process::Command::new(quench_bin())
        .args(["import", "--server", &q.url])
        .arg(&path)
        .output()
        .expect("quench import");
    let imported = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "import failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = quench_tests::http();
    let get = |path: String| {
        let (client, url) = (client.clone(), format!("{}{path}", q.url));
        async move {
            let r = client.get(&url).send().await.expect("GET");
            assert!(r.status().is_success(), "{url}: {}", r.status());
            r.json::<serde_json::Value>().await.expect("JSON")
        }
    };
    // Searchable: every incident counted by a query that matches all.
    let searchable = rt.block_on(async {
        loop {
            let v = get("/api/v1/search?q=NOT+zzzzzz&limit=1".into()).await;
            if v["total"].as_u64() == Some(n as u64) {
                break t.elapsed().as_secs_f64();
            }
            assert!(
                t.elapsed() < Duration::from_secs(1800),
                "not searchable after 30 min: {v}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let peak = q.memory_mb("VmHWM").unwrap_or(0.0);
    let after = q.memory_mb("VmRSS").unwrap_or(0.0);

    // The query mix over HTTP (keep-alive), warm.
    let qs = queries(m, &mut Lcg(7), now);
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let (qtimes, hits) = rt.block_on(async {
        for x in qs.iter().take(50) {
            get(format!("/api/v1/search?limit=10&q={}", enc(&x.text))).await;
        }
        let mut times = Vec::new();
        let mut hits = 0u64;
        for x in &qs {
            let t = Instant::now();
            let v = get(format!("/api/v1/search?limit=10&q={}", enc(&x.text))).await;
            times.push(t.elapsed());
            hits += v["hits"].as_array().map_or(0, |h| h.len() as u64);
        }
        (times, hits)
    });
    // The graph's walks.
    let mut walks: Vec<String> = SERVICES.iter().map(|s| format!("service/{s}")).collect();
    walks.extend(CAUSES.iter().take(6).map(|c| format!("cause/{}", enc(c))));
    walks.extend(["cause/redis", "cause/disk"].map(String::from));
    walks.extend(
        ALERTS
            .iter()
            .take(8)
            .map(|a| format!("runbook/{}", a.to_lowercase())),
    );
    let gtimes = rt.block_on(async {
        for w in &walks {
            get(format!("/api/v1/graph/{w}")).await;
        }
        let mut times = Vec::new();
        for _ in 0..5 {
            for w in &walks {
                let t = Instant::now();
                get(format!("/api/v1/graph/{w}")).await;
                times.push(t.elapsed());
            }
        }
        times
    });
    // The console's pages, rendered with the whole history in the store
    // (the server is open: a session comes with the first page).
    let pages = [
        "/incidents".to_string(),
        "/incidents?status=resolved&page=3".to_string(),
        format!("/incidents/inc-{}", n / 2),
        "/approvals".to_string(),
        "/search?q=redis+OR+kafka+service%3Acart".to_string(),
        "/stats?since=30d&by=service".to_string(),
        "/stats?since=3650d&by=runbook".to_string(),
        "/runbooks".to_string(),
        "/runbooks/redisdown".to_string(),
        "/chaos".to_string(),
    ];
    let ptimes: Vec<(String, f64, f64)> = rt.block_on(async {
        let mut out = Vec::new();
        for p in &pages {
            let mut times = Vec::new();
            for i in 0..21 {
                let t = Instant::now();
                let r = client
                    .get(format!("{}{p}", q.url))
                    .send()
                    .await
                    .expect("page");
                assert!(r.status().is_success(), "{p}: {}", r.status());
                let _ = r.text().await;
                if i > 0 {
                    times.push(t.elapsed());
                }
            }
            out.push((p.clone(), pct(times.clone(), 0.5), pct(times, 0.99)));
        }
        out
    });
    let (qp50, qp99) = (pct(qtimes.clone(), 0.5), pct(qtimes, 0.99));
    let (gp50, gp99) = (pct(gtimes.clone(), 0.5), pct(gtimes.clone(), 0.99));
    println!(
        "\n{n} incidents ({:.0} MB of JSON Lines) into a fresh quench serve, on this machine:",
        bytes as f64 / 1e6
    );
    println!("  import answered (checked, written)  {imported:>8.1} s");
    println!(
        "  every incident searchable           {searchable:>8.1} s   (target < 60 s: {})",
        if searchable < 60.0 { "met" } else { "NOT met" }
    );
    println!("  server RSS: {rss_before:.0} MB before, peak {peak:.0} MB, {after:.0} MB after");
    println!(
        "  query mix over HTTP ({m} queries, top 10; {hits} hits): p50 {qp50:.2} ms, p99 {qp99:.2} ms   (target p99 < 20 ms: {})",
        if qp99 < 20.0 { "met" } else { "NOT met" }
    );
    println!(
        "  graph walks over HTTP ({} walks: services, causes, runbooks): p50 {gp50:.2} ms, p99 {gp99:.2} ms   (target p99 < 50 ms: {})",
        gtimes.len(),
        if gp99 < 50.0 { "met" } else { "NOT met" }
    );
    for (p, p50, p99) in &ptimes {
        println!(
            "  console page {p:<40} p50 {p50:>7.2} ms, p99 {p99:>7.2} ms   (target < 50 ms: {})",
            if *p99 < 50.0 { "met" } else { "NOT met" }
        );
    }
    println!(
        "import: {n} incidents, searchable in {searchable:.1} s, peak RSS {peak:.0} MB, query p99 {qp99:.2} ms, graph p99 {gp99:.2} ms"
    );
}
