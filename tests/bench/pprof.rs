//! `quench pprof top` against `go tool pprof -top` on the same profiles
//! from the test service, including a CPU profile of more than 1 MB (80 s
//! of 2 kHz sampling of a handler whose stacks are random walks through 64
//! functions, so nearly every sample has a stack of its own). Prints both
//! times, the ratio, and whether both printed the same text.
//!
//! Run it with `scripts/bench-pprof.sh`. Arguments: `--runs N` (default 5),
//! `--fresh` (recapture the big profile, kept in `target/bench-pprof/`).

use std::process::Command;
use std::time::{Duration, Instant};

use quench_tests::{GoService, http, quench_bin, require};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(runs: usize, mut cmd: impl FnMut() -> Command) -> (Duration, String) {
    let mut times = Vec::new();
    let mut out = String::new();
    for _ in 0..runs {
        let t = Instant::now();
        let o = cmd().output().expect("run");
        times.push(t.elapsed());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out = String::from_utf8_lossy(&o.stdout).into_owned();
    }
    (median(times), out)
}

fn first_function(text: &str) -> String {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let fresh = args.iter().any(|a| a == "--fresh");
    let go = require("go", "golang-go");
    let svc = GoService::start();
    let client = http();
    let dir = tempfile::tempdir().expect("tempdir");
    // The big profile takes a minute to capture (this VM delivers about
    // 500 SIGPROF a second), so it is kept between runs; --fresh recaptures.
    let cache = quench_tests::repo_root().join("target/bench-pprof");
    std::fs::create_dir_all(&cache).expect("cache dir");
    let cached = cache.join("cpu-big.pb.gz");
    let big_enough = std::fs::metadata(&cached).is_ok_and(|m| m.len() >= 1 << 20);
    if fresh || !big_enough {
        println!("capturing an 80 s CPU profile at 2 kHz of 64-way random stacks ...");
        for _ in 0..2 {
            let url = format!("{}/wide?ms=82000", svc.url);
            let c = client.clone();
            tokio::spawn(async move { c.get(url).send().await });
        }
        let big = client
            .get(format!("{}/profile-hi?seconds=80", svc.url))
            .timeout(Duration::from_secs(150))
            .send()
            .await
            .expect("profile")
            .bytes()
            .await
            .expect("bytes");
        std::fs::write(&cached, &big).expect("write");
    }
    std::fs::copy(&cached, dir.path().join("cpu-big.pb.gz")).expect("copy");
    println!("capturing the small profiles ...");
    client
        .get(format!("{}/alloc?mb=16", svc.url))
        .send()
        .await
        .expect("alloc");
    for (name, path) in [("cpu-small", "profile?seconds=2"), ("heap", "heap")] {
        if name == "cpu-small" {
            let url = format!("{}/burn?ms=2500", svc.url);
            let c = client.clone();
            tokio::spawn(async move { c.get(url).send().await });
        }
        let b = client
            .get(format!("{}/debug/pprof/{path}", svc.url))
            .send()
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        std::fs::write(dir.path().join(format!("{name}.pb.gz")), &b).expect("write");
    }
    println!("{runs} runs each, median wall time, same file for both\n");
    println!(
        "{:<12} {:>10} | {:>14} {:>14} | {:>7} | same output",
        "profile", "size", "quench", "go tool pprof", "ratio"
    );
    for name in ["cpu-big", "cpu-small", "heap"] {
        let file = dir.path().join(format!("{name}.pb.gz"));
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let (ours, o) = time(runs, || {
            let mut c = Command::new(quench_bin());
            c.args(["pprof", "top", "--nodecount", "10"]).arg(&file);
            c
        });
        let (theirs, t) = time(runs, || {
            let mut c = Command::new(&go);
            c.args(["tool", "pprof", "-top", "-nodecount=10"])
                .arg(&file)
                .env("TZ", "UTC")
                .env("PPROF_TMPDIR", dir.path());
            c
        });
        println!(
            "{name:<12} {:>9}K | {:>11.1} ms {:>11.1} ms | {:>6.1}x | {}",
            size / 1024,
            ours.as_secs_f64() * 1000.0,
            theirs.as_secs_f64() * 1000.0,
            theirs.as_secs_f64() / ours.as_secs_f64(),
            if o == t {
                format!("yes, byte for byte (first row {})", first_function(&o))
            } else {
                format!(
                    "NO: first rows {} vs {}",
                    first_function(&o),
                    first_function(&t)
                )
            }
        );
    }
}
