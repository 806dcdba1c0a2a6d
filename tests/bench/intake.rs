//! Durable ingest rate: quench's `POST /hooks/alertmanager` (acknowledged
//! only after the sled flush) against Alertmanager's own
//! `POST /api/v2/alerts`, on this machine, in one run, with the same batches.
//!
//! Run it with `scripts/bench-intake.sh` (a release build). Arguments:
//! `--seconds N` per cell (default 3), `--quick` (fewer cells), `--cell 1x8`
//! (one batch size and concurrency only, e.g. to profile it), `--repeat N`
//! (the grid N times over; each cell's ratio is then its median).
//!
//! Every alert is distinct (its own labels and fingerprint), so neither side
//! can take a de-duplication shortcut. quench runs with an empty runbook
//! directory, so no alert opens an incident: this measures intake.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use quench_tests::{Alertmanager, Quench, cpu_time};

#[derive(Clone, Copy, PartialEq)]
enum Peer {
    Quench,
    Alertmanager,
}

struct Cell {
    alerts_per_sec: f64,
    p50: Duration,
    p99: Duration,
    requests: usize,
}

/// Builds a request body by plain string formatting: the load generator
/// shares the machine with the server under test, so it must be cheap, or
/// it caps both peers and flattens the ratio.
fn body(peer: Peer, run: u64, first: u64, batch: usize, now: &str) -> String {
    let mut out = String::with_capacity(64 + batch * 300);
    match peer {
        Peer::Quench => out.push_str(
            r#"{"version":"4","groupKey":"{}:{alertname=\"BenchAlert\"}","truncatedAlerts":0,"status":"firing","receiver":"quench","groupLabels":{"alertname":"BenchAlert"},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://bench","alerts":["#,
        ),
        Peer::Alertmanager => out.push('['),
    }
    for k in 0..batch as u64 {
        let n = first + k;
        if k > 0 {
            out.push(',');
        }
        let labels =
            format!(r#"{{"alertname":"BenchAlert","instance":"host-{run}-{n}","job":"bench"}}"#);
        match peer {
            Peer::Quench => out.push_str(&format!(
                r#"{{"status":"firing","labels":{labels},"annotations":{{"summary":"bench"}},"startsAt":"{now}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://bench/","fingerprint":"{run:04x}{n:012x}"}}"#
            )),
            Peer::Alertmanager => out.push_str(&format!(
                r#"{{"labels":{labels},"annotations":{{"summary":"bench"}},"startsAt":"{now}","generatorURL":"http://bench/"}}"#
            )),
        }
    }
    out.push_str(match peer {
        Peer::Quench => "]}",
        Peer::Alertmanager => "]",
    });
    out
}

/// A keep-alive HTTP/1.1 connection that posts JSON bodies and reads the
/// status and the body by its Content-Length: far less work per request
/// than a general client, so the load generator takes little of the CPU
/// the two servers compete for, and the same for both.
struct Conn {
    stream: tokio::net::TcpStream,
    head: String,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(endpoint: &str) -> Conn {
        let rest = endpoint.strip_prefix("http://").expect("an http:// URL");
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let stream = tokio::net::TcpStream::connect(host)
            .await
            .unwrap_or_else(|e| panic!("connect {host}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            head: format!(
                "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: "
            ),
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends one request and reads its whole answer; returns the status.
    async fn post(&mut self, body: &str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut req = Vec::with_capacity(self.head.len() + 16 + body.len());
        req.extend_from_slice(self.head.as_bytes());
        req.extend_from_slice(format!("{}\r\n\r\n", body.len()).as_bytes());
        req.extend_from_slice(body.as_bytes());
        self.stream.write_all(&req).await.expect("send");
        self.buf.clear();
        let header_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.expect("receive");
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..header_end]).expect("an ASCII head");
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no content-length in {head:?}"));
        let mut have = self.buf.len() - header_end;
        while have < length {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.expect("receive");
            assert!(n > 0, "the server closed the connection mid-answer");
            have += n;
        }
        status
    }
}

async fn measure(
    peer: Peer,
    url: &str,
    run: u64,
    batch: usize,
    concurrency: usize,
    secs: f64,
) -> Cell {
    let endpoint = match peer {
        Peer::Quench => format!("{url}/hooks/alertmanager"),
        Peer::Alertmanager => format!("{url}/api/v2/alerts"),
    };
    let counter = Arc::new(AtomicU64::new(0));
    let now = Utc::now().to_rfc3339();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (endpoint, counter, now) = (endpoint.clone(), counter.clone(), now.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&endpoint).await;
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let first = counter.fetch_add(batch as u64, Ordering::Relaxed);
                let b = body(peer, run, first, batch, &now);
                let t = Instant::now();
                let status = conn.post(&b).await;
                assert!((200..300).contains(&status), "{endpoint} answered {status}");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("worker"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Cell {
        alerts_per_sec: (lat.len() * batch) as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        requests: lat.len(),
    }
}

/// quench's group commits over a cell (its `/metrics` counters): how many
/// requests each answered and how long its write and fdatasync took.
struct Commits {
    commits: f64,
    requests: f64,
    seconds: f64,
}

impl Commits {
    fn of(metrics: &str) -> Commits {
        let value = |name: &str| quench_tests::sample(metrics, name).unwrap_or(0.0);
        Commits {
            commits: value("quench_log_commits_total"),
            requests: value("quench_log_commit_requests_total"),
            seconds: value("quench_log_sync_seconds_total"),
        }
    }
}

/// The durability floor on this disk: the median time of writing one
/// delivery-sized record (600 bytes) and `fdatasync`ing it, in a temporary
/// directory on the same filesystem quench's data directory is on. Measured
/// two ways, growing the file (`append`) and overwriting zeros written and
/// synced beforehand (`preallocated`, what quench's log does); the floor is
/// the cheaper of the two.
fn fdatasync_floor() -> (Duration, Duration) {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let median = |preallocate: bool| {
        let path = dir.path().join(format!("probe-{preallocate}"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .expect("probe file");
        if preallocate {
            f.write_all_at(&vec![0; 2000 * 600], 0).expect("zeros");
            f.sync_all().expect("fsync");
        }
        let mut times: Vec<Duration> = (0..2000u64)
            .map(|i| {
                let t = Instant::now();
                f.write_all_at(&[b'x'; 600], i * 600).expect("write");
                f.sync_data().expect("fdatasync");
                t.elapsed()
            })
            .collect();
        times.sort();
        times[times.len() / 2]
    };
    (median(false), median(true))
}

/// Microseconds of CPU per request between two readings, or `?`.
fn cpu_per_request(before: Option<Duration>, after: Option<Duration>, requests: usize) -> String {
    match (before, after) {
        (Some(b), Some(a)) if requests > 0 => {
            format!("{:.0}", (a - b).as_secs_f64() * 1e6 / requests as f64)
        }
        _ => "?".to_string(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let quick = args.iter().any(|a| a == "--quick");
    // `--repeat N`: the whole grid N times over, the ratios' median per
    // cell (a slow minute of the disk then hits one round of every cell,
    // not every round of one).
    let repeat: usize = args
        .iter()
        .position(|a| a == "--repeat")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    // `--cell 1x8`: only that batch and concurrency (to profile one cell).
    let cell: Option<(usize, usize)> = args
        .iter()
        .position(|a| a == "--cell")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.split_once('x'))
        .and_then(|(b, c)| Some((b.parse().ok()?, c.parse().ok()?)));

    println!(
        "each peer runs alone: a fresh quench (empty data dir) and a fresh Alertmanager per cell,"
    );
    println!(
        "the other stopped, so neither's background work (Alertmanager's dispatcher walks every"
    );
    println!("alert it holds each group_interval) slows the other down");
    println!(
        "{secs} s per cell; every alert distinct; quench acknowledges after the fdatasync of its log"
    );
    let (append, preallocated) = fdatasync_floor();
    let floor = append.min(preallocated);
    println!(
        "durability floor on this disk: writing 600 bytes + fdatasync takes {} ms when it grows\n\
         the file and {} ms over zeros synced beforehand (medians of 2000); the floor is {} ms.",
        ms(append),
        ms(preallocated),
        ms(floor)
    );
    println!(
        "At concurrency 1 every request of a server that syncs before answering pays one fdatasync:\n\
         `floor a/s` is the rate of one that takes Alertmanager's time plus that sync, `of floor`\n\
         quench's rate against it (over 100 % where quench's own time is shorter than Alertmanager's).\n\
         `req/cmt`: the webhook requests each of quench's group commits answered; `sync ms`: the\n\
         mean time of a commit's write and fdatasync (both from quench's /metrics, warm-up included).\n\
         `q cpu`, `AM cpu`: the CPU time each server used per request (µs, user and system, all\n\
         threads, from /proc), over the measured seconds only; `q gen`, `AM gen`: the same for this\n\
         load generator while it drove each (it shares the two cores with the server).\n"
    );
    println!(
        "{:>5} {:>4} | {:>12} {:>8} {:>8} | {:>12} {:>8} {:>8} | {:>6} | {:>10} {:>8} | {:>7} {:>7} | {:>6} {:>6} | {:>6} {:>6}",
        "batch",
        "conc",
        "quench a/s",
        "p50 ms",
        "p99 ms",
        "AM a/s",
        "p50 ms",
        "p99 ms",
        "ratio",
        "floor a/s",
        "of floor",
        "req/cmt",
        "sync ms",
        "q cpu",
        "AM cpu",
        "q gen",
        "AM gen"
    );
    let (batches, concs): (Vec<usize>, Vec<usize>) = match (cell, quick) {
        (Some((b, c)), _) => (vec![b], vec![c]),
        (None, true) => (vec![1, 100], vec![1, 16]),
        (None, false) => (vec![1, 10, 100], vec![1, 8, 32]),
    };
    // No runbooks: the alerts open no incidents, so this measures intake.
    let no_runbooks = tempfile::tempdir().expect("tempdir");
    let examples = no_runbooks.path().to_path_buf();
    // (batch, concurrency) -> the ratio of each round.
    let mut rounds: Vec<((usize, usize), Vec<f64>)> = Vec::new();
    for round in 0..repeat {
        if repeat > 1 {
            println!("round {} of {repeat}", round + 1);
        }
        for &batch in &batches {
            for &conc in &concs {
                let q = Quench::start("{}\n", &examples);
                measure(Peer::Quench, &q.url, 0, 10, 4, 0.3).await; // warm-up
                let pid = q.pid().expect("quench runs");
                let (before, me) = (cpu_time(pid), cpu_time(std::process::id()));
                let qc = measure(Peer::Quench, &q.url, 1, batch, conc, secs).await;
                let q_cpu = cpu_per_request(before, cpu_time(pid), qc.requests);
                let q_load = cpu_per_request(me, cpu_time(std::process::id()), qc.requests);
                let stored = q.get_json("/healthz").await["alerts_stored"]
                    .as_u64()
                    .unwrap_or(0);
                let commits = Commits::of(&q.get_text("/metrics").await);
                drop(q);
                let am = Alertmanager::start_silent().await;
                measure(Peer::Alertmanager, &am.url, 0, 10, 4, 0.3).await;
                let (before, me) = (cpu_time(am.pid()), cpu_time(std::process::id()));
                let ac = measure(Peer::Alertmanager, &am.url, 1, batch, conc, secs).await;
                let am_cpu = cpu_per_request(before, cpu_time(am.pid()), ac.requests);
                let am_load = cpu_per_request(me, cpu_time(std::process::id()), ac.requests);
                drop(am);
                let ratio = qc.alerts_per_sec / ac.alerts_per_sec;
                match rounds.iter_mut().find(|(k, _)| *k == (batch, conc)) {
                    Some((_, rs)) => rs.push(ratio),
                    None => rounds.push(((batch, conc), vec![ratio])),
                }
                // One request at a time: each pays Alertmanager's time plus a sync.
                let (floor_rate, of_floor) = if conc == 1 {
                    let rate = batch as f64 / (ac.p50 + floor).as_secs_f64();
                    (
                        format!("{rate:.0}"),
                        format!("{:.0}%", 100.0 * qc.alerts_per_sec / rate),
                    )
                } else {
                    ("-".to_string(), "-".to_string())
                };
                println!(
                    "{batch:>5} {conc:>4} | {:>12.0} {:>8} {:>8} | {:>12.0} {:>8} {:>8} | {:>5.2}x | {floor_rate:>10} {of_floor:>8} | {:>7.1} {:>7.3} | {q_cpu:>6} {am_cpu:>6} | {q_load:>6} {am_load:>6}   ({} / {} requests, quench stored {stored})",
                    qc.alerts_per_sec,
                    ms(qc.p50),
                    ms(qc.p99),
                    ac.alerts_per_sec,
                    ms(ac.p50),
                    ms(ac.p99),
                    ratio,
                    commits.requests / commits.commits.max(1.0),
                    1e3 * commits.seconds / commits.commits.max(1.0),
                    qc.requests,
                    ac.requests
                );
            }
        }
    }
    // One ratio per cell: its median over the rounds.
    let ratios: Vec<(usize, f64)> = rounds
        .iter()
        .map(|((_, conc), rs)| {
            let mut rs = rs.clone();
            rs.sort_by(f64::total_cmp);
            let mid = rs.len() / 2;
            let median = if rs.len() % 2 == 1 {
                rs[mid]
            } else {
                (rs[mid - 1] + rs[mid]) / 2.0
            };
            (*conc, median)
        })
        .collect();
    if repeat > 1 {
        println!("\nmedian ratio per cell over {repeat} rounds:");
        for (((batch, conc), rs), (_, median)) in rounds.iter().zip(&ratios) {
            let each: Vec<String> = rs.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "{batch:>5} {conc:>4} | {median:>5.2}x   (rounds: {})",
                each.join(", ")
            );
        }
    }
    let geo = |rs: Vec<f64>| (rs.iter().map(|r| r.ln()).sum::<f64>() / rs.len() as f64).exp();
    println!(
        "\ngeometric mean ratio quench/alertmanager{}: {:.2}x",
        if repeat > 1 { " (of the medians)" } else { "" },
        geo(ratios.iter().map(|(_, r)| *r).collect())
    );
    // At concurrency 1 every request waits for a sync of its own (the
    // floor above); from concurrency 2 on, commits are shared.
    let shared: Vec<f64> = ratios
        .iter()
        .filter(|(c, _)| *c > 1)
        .map(|(_, r)| *r)
        .collect();
    if !shared.is_empty() && shared.len() < ratios.len() {
        println!(
            "geometric mean over the cells not bound by one fdatasync per request (concurrency > 1): {:.2}x",
            geo(shared)
        );
    }
}
