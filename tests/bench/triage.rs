//! Triage quality: are the true root causes among quench's hypotheses?
//!
//! A generated history where each of `--causes` root causes leaves a
//! consistent trace (an alert and a service it usually fires on, three hot
//! functions in the CPU profile, three words in the logs), every part of
//! it missing or replaced now and then, among noise (common runtime
//! functions, words every incident logs, alerts and services of other
//! causes). Several causes share an alert and a service, so those alone do
//! not tell them apart. Then new incidents of known cause, made the same
//! way, ask `SearchIndex::hypotheses`: hit@1 is how often the true cause
//! comes first, hit@3 how often it is among the first three. Printed for
//! several history sizes; the generator is deterministic.
//!
//! `scripts/bench-knowledge.sh` runs it after the search benchmark;
//! alone: `cargo run --release -p quench-tests --bin bench-triage --
//! [--sizes 1000,10000,100000] [--causes 40] [--probes 500] [--drop 30]`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use quench_knowledge::search::SearchIndex;
use quench_knowledge::*;
use serde_json::json;

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() as usize) % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const ALERTS: &[&str] = &[
    "HighCPU",
    "HighLatency",
    "ErrorRate",
    "PodCrashLooping",
    "GoroutineLeak",
    "HighMemory",
    "QueueBacklog",
    "SlowQueries",
];
const SERVICES: &[&str] = &[
    "checkout", "cart", "search", "payments", "catalog", "auth", "orders", "gateway",
];
const PACKAGES: &[&str] = &[
    "cache", "pool", "retry", "codec", "ledger", "router", "session", "index", "queue", "shard",
    "lease", "quota", "tariff", "basket", "invoice", "token", "catalog", "ranker", "mailer",
    "fanout",
];
const FUNCS: &[&str] = &[
    "Get",
    "Put",
    "decode",
    "flush",
    "compact",
    "acquire",
    "rebalance",
    "marshal",
    "evict",
    "dial",
    "sweep",
    "lookup",
    "refresh",
    "merge",
    "score",
    "render",
    "split",
    "verify",
];
const LOG_WORDS: &[&str] = &[
    "timeout",
    "refused",
    "deadlock",
    "evicted",
    "throttled",
    "overflow",
    "backpressure",
    "checksum",
    "handshake",
    "reset",
    "stale",
    "fencing",
    "tombstone",
    "starvation",
    "saturated",
    "truncated",
    "rollover",
    "rehash",
    "watermark",
    "nack",
    "poisoned",
    "skew",
    "orphaned",
    "jitter",
];
/// What every incident has, whatever its cause.
const COMMON_FUNCS: &[&str] = &[
    "runtime.mallocgc",
    "runtime.scanobject",
    "syscall.Syscall",
    "net/http.(*conn).serve",
    "encoding/json.Unmarshal",
    "runtime.gcBgMarkWorker",
    "crypto/tls.(*Conn).Read",
];
const COMMON_WORDS: &[&str] = &[
    "request", "error", "failed", "retrying", "latency", "upstream",
];

/// A root cause's trace.
struct Cause {
    text: String,
    fix: String,
    alert: &'static str,
    service: &'static str,
    functions: Vec<String>,
    words: Vec<&'static str>,
}

fn causes(n: usize) -> Vec<Cause> {
    let mut rng = Lcg(99);
    (0..n)
        .map(|c| {
            // Neighbouring causes share alerts and services.
            let alert = ALERTS[(c / 2) % ALERTS.len()];
            let service = SERVICES[(c / 3) % SERVICES.len()];
            let functions = (0..3)
                .map(|_| {
                    format!(
                        "{service}/internal/{}.(*{}).{}",
                        PACKAGES[rng.below(PACKAGES.len())],
                        PACKAGES[rng.below(PACKAGES.len())],
                        FUNCS[rng.below(FUNCS.len())]
                    )
                })
                .collect();
            let words = (0..3)
                .map(|_| LOG_WORDS[rng.below(LOG_WORDS.len())])
                .collect();
            Cause {
                text: format!(
                    "cause {c}: {alert} on {service} from a {} fault",
                    PACKAGES[c % PACKAGES.len()]
                ),
                fix: format!("fix {c}"),
                alert,
                service,
                functions,
                words,
            }
        })
        .collect()
}

/// One incident of cause `c` (`resolved`: part of the history, with its
/// root cause; otherwise a new one to triage).
fn incident(
    id: usize,
    cause: &Cause,
    rng: &mut Lcg,
    resolved: bool,
    drop: u64,
    now: DateTime<Utc>,
) -> IncidentRecord {
    // Each part of the trace goes missing (or is replaced) now and then.
    let alert = if rng.chance(15) {
        ALERTS[rng.below(ALERTS.len())]
    } else {
        cause.alert
    };
    let service = if rng.chance(10) {
        SERVICES[rng.below(SERVICES.len())]
    } else {
        cause.service
    };
    let mut top: Vec<String> = cause
        .functions
        .iter()
        .filter(|_| !rng.chance(drop))
        .cloned()
        .collect();
    for _ in 0..2 + rng.below(3) {
        top.insert(
            rng.below(top.len() + 1),
            COMMON_FUNCS[rng.below(COMMON_FUNCS.len())].to_string(),
        );
    }
    let mut words: Vec<&str> = cause
        .words
        .iter()
        .copied()
        .filter(|_| !rng.chance(drop))
        .collect();
    for _ in 0..3 {
        words.push(COMMON_WORDS[rng.below(COMMON_WORDS.len())]);
    }
    // A stray word of another cause.
    words.push(LOG_WORDS[rng.below(LOG_WORDS.len())]);
    let opened = now - chrono::Duration::minutes((rng.next() % (365 * 24 * 60)) as i64);
    let labels: BTreeMap<String, String> = [
        ("alertname", alert.to_string()),
        ("service", service.to_string()),
        ("pod", format!("{service}-{}", rng.below(1000))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let record = json!({
        "schema": 1,
        "id": format!("inc-{id}"),
        "title": format!("{alert} {service}"),
        "status": if resolved { "resolved" } else { "open" },
        "group_key": "",
        "alerts": [{
            "seq": id, "source": "alertmanager", "fingerprint": format!("fp-{id}"),
            "state": "firing", "labels": labels,
            "annotations": {"summary": format!("{alert} on {service}"), "logs": words.join(" ")},
            "starts_at": opened, "first_received_at": opened, "notifications": 1
        }],
        "first_alert_at": opened,
        "opened_at": opened,
        "updated_at": opened,
        "resolved_at": if resolved { Some(opened + chrono::Duration::minutes(30)) } else { None },
        "timeline": [],
        "steps": [{
            "id": "cpu", "uses": "pprof.capture", "destructive": false, "state": "succeeded",
            "attempts": 1, "attempt_key": "", "rendered": null, "reason": "",
            "output": {"top": top.iter().map(|f| json!({"function": f})).collect::<Vec<_>>()}
        }],
        "notes": if resolved {
            json!({"root_cause": cause.text, "resolution": cause.fix, "commits": [], "tags": []})
        } else {
            json!({"commits": [], "tags": []})
        },
        "chaos": []
    });
    serde_json::from_value(record).expect("a generated record reads")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let n_causes: usize = arg("--causes").and_then(|s| s.parse().ok()).unwrap_or(40);
    let probes: usize = arg("--probes").and_then(|s| s.parse().ok()).unwrap_or(500);
    // How often each hot function and log word of a cause is missing.
    let missing: u64 = arg("--drop").and_then(|s| s.parse().ok()).unwrap_or(30);
    let now: DateTime<Utc> = "2026-11-27T12:00:00Z".parse().expect("a time");
    let all = causes(n_causes);
    println!(
        "triage: {n_causes} root causes (pairs share an alert, triples a service), each trace part missing {missing}% of the time, {probes} new incidents per history size"
    );
    println!(
        "{:>10} {:>8} {:>8} {:>10}",
        "history", "hit@1", "hit@3", "ms/probe"
    );
    let mut last = None;
    for &size in &sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let (index, _) = SearchIndex::open(&dir.path().join("index")).expect("index");
        let mut rng = Lcg(1);
        let history: Vec<IncidentRecord> = (0..size)
            .map(|i| {
                incident(
                    i + 1,
                    &all[rng.below(all.len())],
                    &mut rng,
                    true,
                    missing,
                    now,
                )
            })
            .collect();
        index.rebuild(&history).expect("index the history");
        drop(history);
        let mut rng = Lcg(2);
        let (mut hit1, mut hit3) = (0, 0);
        let started = std::time::Instant::now();
        for p in 0..probes {
            let truth = &all[rng.below(all.len())];
            let r = incident(size + p + 1, truth, &mut rng, false, missing, now);
            let hs = index.hypotheses(&r, 3).expect("hypotheses");
            let want = quench_knowledge::search::key_text(&truth.text);
            if hs.first().is_some_and(|h| h.cause == want) {
                hit1 += 1;
            }
            if hs.iter().any(|h| h.cause == want) {
                hit3 += 1;
            }
        }
        let per = started.elapsed().as_secs_f64() * 1000.0 / probes as f64;
        let (h1, h3) = (hit1 as f64 / probes as f64, hit3 as f64 / probes as f64);
        println!("{size:>10} {h1:>8.3} {h3:>8.3} {per:>10.2}");
        last = Some((size, h1, h3));
    }
    if let Some((size, h1, h3)) = last {
        println!(
            "triage: history {size}, hit@1 {h1:.3}, hit@3 {h3:.3} (target hit@3 >= 0.9: {})",
            if h3 >= 0.9 { "met" } else { "NOT met" }
        );
    }
}
