//! The knowledge store at scale: 100,000 synthetic incidents (varied alert
//! names, services, labels, root causes, resolutions, tags and profile
//! function names) written to sled, indexed, then a mix of queries (words,
//! two words, phrases, prefixes, filters) timed one by one. The same corpus
//! and the same queries run through SQLite FTS5 (Python's sqlite3, bm25
//! ranking) in the same run. Prints index build time, sizes on disk, RSS
//! and query latency p50/p99 for both, with the ratios.
//!
//! Run it with `scripts/bench-knowledge.sh`. Arguments: `--incidents N`
//! (default 100000), `--queries N` (default 1000).

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use quench_knowledge::search::SearchIndex;
use quench_knowledge::*;
use serde_json::json;

#[path = "corpus.rs"]
mod corpus;
use corpus::*;
fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    total
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0
}

/// The query phase, in its own process: opens the records (sled, as the
/// engine configures it) and the index, warms up, times each query, and
/// prints the figures as JSON.
fn query_phase(dir: &std::path::Path, m: usize, now: DateTime<Utc>) {
    let db = sled::Config::new()
        .path(dir.join("db"))
        .mode(sled::Mode::HighThroughput)
        .open()
        .expect("sled");
    let writer = quench_knowledge::Writer::start(db.clone(), None).expect("writer");
    let _store = IncidentStore::open(&db, writer).expect("store");
    let (index, _) = SearchIndex::open(&dir.join("index")).expect("index");
    let qs = queries(m, &mut Lcg(7), now);
    // Warm up once, as the peer's page cache is warm too.
    for q in qs.iter().take(50) {
        let _ = index.search(&q.text, 10, now);
    }
    let mut times = Vec::with_capacity(qs.len());
    let mut hits = 0;
    for q in &qs {
        let t = Instant::now();
        let h = index.search(&q.text, 10, now).expect("search");
        times.push(t.elapsed());
        hits += h.len();
    }
    println!(
        "{}",
        json!({"p50_ms": pct(times.clone(), 0.5), "p99_ms": pct(times, 0.99), "rss_mb": rss_mb(), "hits": hits})
    );
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
    let n = arg("--incidents", 100_000);
    let m = arg("--queries", 1000);
    let now: DateTime<Utc> = "2026-11-27T12:00:00Z".parse().unwrap();
    if let Some(i) = args.iter().position(|a| a == "--query-phase") {
        query_phase(std::path::Path::new(&args[i + 1]), m, now);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Lcg(42);
    println!("generating {n} incidents ...");
    let corpus: Vec<Generated> = (0..n).map(|i| generate(i, &mut rng, now)).collect();

    // The records in sled, as quench keeps them.
    let t = Instant::now();
    let db = sled::open(dir.path().join("db")).expect("sled");
    let writer = quench_knowledge::Writer::start(db.clone(), None).expect("writer");
    let store = IncidentStore::open(&db, writer).expect("store");
    for chunk in corpus.chunks(2000) {
        store
            .import_blocking(chunk.iter().map(|g| g.record.clone()).collect())
            .expect("import");
    }
    let store_secs = t.elapsed().as_secs_f64();
    let store_bytes = dir_size(&dir.path().join("db"));
    let records: Vec<IncidentRecord> = corpus.iter().map(|g| g.record.clone()).collect();

    let t = Instant::now();
    let (index, _) = SearchIndex::open(&dir.path().join("index")).expect("index");
    index.rebuild(&records).expect("rebuild");
    let build_secs = t.elapsed().as_secs_f64();
    let index_bytes = dir_size(&dir.path().join("index"));

    let build_rss = rss_mb();
    drop(index);
    drop(store);
    drop(db);
    // The writer thread lets go of the database as it stops: wait for the
    // lock to be free before the query phase takes it.
    let t = Instant::now();
    while sled::Config::new()
        .path(dir.path().join("db"))
        .open()
        .is_err()
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the database stays locked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The queries run in a fresh process that opens the store and the index
    // the way `quench serve` does, so its RSS is what a server answering
    // searches holds, not the generator's copy of the corpus.
    let qs = queries(m, &mut Lcg(7), now);
    let out = std::process::Command::new(std::env::current_exe().expect("current_exe"))
        .arg("--query-phase")
        .arg(dir.path())
        .arg("--queries")
        .arg(m.to_string())
        .output()
        .expect("query phase");
    assert!(
        out.status.success(),
        "query phase: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours: serde_json::Value = serde_json::from_slice(&out.stdout).expect("query phase JSON");
    let (p50, p99, rss, hits) = (
        ours["p50_ms"].as_f64().unwrap(),
        ours["p99_ms"].as_f64().unwrap(),
        ours["rss_mb"].as_f64().unwrap(),
        ours["hits"].as_u64().unwrap(),
    );
    drop(records);

    // The peer, on the same corpus and queries.
    let corpus_path = dir.path().join("corpus.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&corpus_path).unwrap());
    for g in &corpus {
        let r = &g.record;
        writeln!(
            w,
            "{}",
            json!({"id": r.id, "title": r.title, "body": g.body, "root_cause": r.notes.root_cause,
            "resolution": r.notes.resolution, "service": r.service(), "status": r.status.as_str(),
            "opened": r.opened_at.timestamp()})
        )
        .unwrap();
    }
    drop(w);
    let queries_path = dir.path().join("queries.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&queries_path).unwrap());
    for q in &qs {
        writeln!(w, "{}", q.peer).unwrap();
    }
    drop(w);
    println!("running the SQLite FTS5 peer ...");
    let script = quench_tests::repo_root().join("tests/bench/fts5_peer.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&corpus_path)
        .arg(&queries_path)
        .arg(dir.path().join("fts5.db"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("peer JSON");

    println!(
        "\n{n} incidents, {m} queries (a third one word, 1/6 two words, 1/12 each phrase, prefix, a OR b, a NOT b, word with service, word with status and since), top 10 each\n"
    );
    println!(
        "{:<22} {:>14} {:>14} {:>9}",
        "", "quench", "SQLite FTS5", "ratio"
    );
    let row = |name: &str, ours: f64, theirs: f64, unit: &str| {
        println!(
            "{name:<22} {:>11.2} {unit:<2} {:>11.2} {unit:<2} {:>8.2}x",
            ours,
            theirs,
            theirs / ours
        );
    };
    row(
        "index build",
        build_secs,
        peer["build_s"].as_f64().unwrap(),
        "s",
    );
    row("query p50", p50, peer["p50_ms"].as_f64().unwrap(), "ms");
    row("query p99", p99, peer["p99_ms"].as_f64().unwrap(), "ms");
    println!(
        "{:<22} {:>11.1} MB {:>11.1} MB   (quench: index; sled records {:.1} MB, written in {:.1} s)",
        "size on disk",
        index_bytes as f64 / 1e6,
        peer["size_bytes"].as_f64().unwrap() / 1e6,
        store_bytes as f64 / 1e6,
        store_secs
    );
    println!(
        "{:<22} {:>11.1} MB {:>11.1} MB   (each answering the queries in its own process; the generating process held {:.0} MB)",
        "RSS",
        rss,
        peer["rss_mb"].as_f64().unwrap(),
        build_rss
    );
    println!("{:<22} {:>14} {:>14}", "hits returned", hits, peer["hits"]);
    println!(
        "\ntargets: p99 < 10 ms {}; p99 at or below FTS5's {}; RSS < 300 MB {}",
        if p99 < 10.0 { "met" } else { "NOT met" },
        if p99 <= peer["p99_ms"].as_f64().unwrap() {
            "met"
        } else {
            "NOT met"
        },
        if rss < 300.0 { "met" } else { "NOT met" }
    );
}
