//! Matching at scale: 10,000 runbooks of realistic shape (equality, regex
//! and negative matchers, `continue`, inhibition, a triage runbook) loaded
//! from files, then a
//! stream of alerts matched one by one. Prints the load and validation
//! time, and p50/p99 per alert through the index against trying every
//! runbook (what `quench explain` does), from the same run.
//!
//! Run it with `scripts/bench-match.sh` (a release build). Arguments:
//! `--runbooks N` (default 10000), `--alerts N` (default 20000).
//! The last line reads `match: N runbooks, p50 X us, p99 Y us, load Z s`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use quench_connectors::{Alert, AlertStatus, Source};

/// A small deterministic generator (xorshift), so every run sees the same
/// runbooks and alerts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const ALERTNAMES: u64 = 400;
const SERVICES: u64 = 800;

fn runbook_yaml(i: usize, rng: &mut Rng) -> String {
    let mut matchers = Vec::new();
    // One in twenty has no equality matcher at all: a regex on the name.
    if rng.below(20) == 0 {
        matchers.push(format!(
            "'alertname=~\"Alert{}.*\"'",
            rng.below(ALERTNAMES / 10)
        ));
    } else {
        matchers.push(format!("'alertname=\"Alert{}\"'", rng.below(ALERTNAMES)));
        if rng.below(3) > 0 {
            matchers.push(format!("'service=\"svc-{}\"'", rng.below(SERVICES)));
        }
    }
    if rng.below(2) == 0 {
        matchers.push("'severity=~\"critical|page\"'".into());
    }
    if rng.below(4) == 0 {
        matchers.push("'namespace!=\"dev\"'".into());
    }
    if rng.below(5) == 0 {
        matchers.push("'env!~\"test.*|staging\"'".into());
    }
    let cont = rng.below(10) == 0;
    let inhibit = if rng.below(20) == 0 {
        "inhibit_when:\n  - matchers: ['alertname=\"ClusterDown\"']\n    equal: [cluster]\n"
    } else {
        ""
    };
    format!(
        "version: 1\nname: rb-{i}\npriority: {}\ncontinue: {cont}\nmatch:\n  matchers: [{}]\ngroup_by: [alertname, service]\n{inhibit}steps:\n  - id: look\n    uses: wait\n    with: {{seconds: 0}}\n",
        rng.below(5),
        matchers.join(", ")
    )
}

fn alert(rng: &mut Rng) -> Alert {
    let mut labels = BTreeMap::new();
    labels.insert(
        "alertname".into(),
        format!("Alert{}", rng.below(ALERTNAMES)),
    );
    labels.insert("service".into(), format!("svc-{}", rng.below(SERVICES)));
    labels.insert(
        "severity".into(),
        ["critical", "warning", "page", "info"][rng.below(4) as usize].into(),
    );
    labels.insert(
        "namespace".into(),
        ["shop", "dev", "payments", "search"][rng.below(4) as usize].into(),
    );
    labels.insert("cluster".into(), format!("c{}", rng.below(4)));
    labels.insert(
        "env".into(),
        ["prod", "staging", "test-1"][rng.below(3) as usize].into(),
    );
    labels.insert(
        "instance".into(),
        format!("10.0.{}.{}:9090", rng.below(255), rng.below(255)),
    );
    Alert {
        source: Source::Alertmanager,
        fingerprint: format!("{:016x}", rng.next()),
        status: AlertStatus::Firing,
        labels,
        annotations: BTreeMap::new(),
        starts_at: None,
        ends_at: None,
        meta: BTreeMap::new(),
        idempotency_key: String::new(),
        raw_ref: String::new(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let mut runbooks = 10_000usize;
    let mut alerts = 20_000usize;
    let args: Vec<String> = std::env::args().collect();
    for w in args.windows(2) {
        match w[0].as_str() {
            "--runbooks" => runbooks = w[1].parse().expect("--runbooks N"),
            "--alerts" => alerts = w[1].parse().expect("--alerts N"),
            _ => {}
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..runbooks {
        std::fs::write(
            dir.path().join(format!("rb-{i:05}.yaml")),
            runbook_yaml(i, &mut rng),
        )
        .expect("write a runbook");
    }
    // And the triage runbook, for alerts nothing else matches.
    std::fs::write(
        dir.path().join("triage.yaml"),
        "version: 1\nname: triage\nmatch: {}\nsteps:\n  - id: look\n    uses: wait\n    with: {seconds: 0}\n",
    )
    .expect("write the triage runbook");
    let started = Instant::now();
    let set = quench_runbooks::load_dir(dir.path(), Some("triage")).unwrap_or_else(|e| {
        panic!("{} problems, first: {}", e.len(), e[0]);
    });
    let load = started.elapsed();
    assert_eq!(set.runbooks.len(), runbooks + 1);
    // Alerts that fire meanwhile, for inhibition (as the pipeline passes
    // its firing index).
    let firing_alerts: Vec<Alert> = (0..100).map(|_| alert(&mut rng)).collect();
    let firing: Vec<&Alert> = firing_alerts.iter().collect();
    let stream: Vec<Alert> = (0..alerts).map(|_| alert(&mut rng)).collect();
    let now = Utc::now();
    // The index is built on first use; build it outside the timing.
    let _ = set.matching_at(&stream[0], now, &firing);

    let mut indexed = Vec::with_capacity(stream.len());
    let mut matched = 0usize;
    for a in &stream {
        let t = Instant::now();
        let m = set.matching_at(a, now, &firing);
        indexed.push(t.elapsed());
        matched += usize::from(!m.runbooks.is_empty());
    }
    // The peer: every runbook tried, every decision written out.
    let peer_n = stream.len().min(2_000);
    let mut linear = Vec::with_capacity(peer_n);
    let mut agree = 0usize;
    for a in &stream[..peer_n] {
        let t = Instant::now();
        let e = set.explain_at(a, now, &firing);
        linear.push(t.elapsed());
        let fast: Vec<&str> = set
            .matching_at(a, now, &firing)
            .runbooks
            .iter()
            .map(|r| r.name())
            .collect();
        agree += usize::from(fast == e.matched());
    }
    assert_eq!(agree, peer_n, "the index and the full scan disagree");
    indexed.sort();
    linear.sort();
    let (p50, p99) = (percentile(&indexed, 0.50), percentile(&indexed, 0.99));
    let (l50, l99) = (percentile(&linear, 0.50), percentile(&linear, 0.99));
    println!(
        "{runbooks} runbooks loaded and validated from files in {:.2} s ({:.0} us each)",
        load.as_secs_f64(),
        load.as_secs_f64() * 1e6 / runbooks as f64
    );
    println!(
        "{} alerts, {matched} matched at least one runbook; {peer_n} checked against the full scan: all agree",
        stream.len()
    );
    println!("                     p50 us    p99 us");
    println!("index              {p50:>8.1}  {p99:>8.1}");
    println!("every runbook      {l50:>8.1}  {l99:>8.1}   (quench explain; the peer)");
    println!(
        "ratio              {:>8.0}x {:>8.0}x  (target: p99 under 50 us)",
        l50 / p50,
        l99 / p99
    );
    println!(
        "match: {runbooks} runbooks, p50 {p50:.1} us, p99 {p99:.1} us, load {:.2} s",
        load.as_secs_f64()
    );
}
