//! `pprof.capture` against the real Go service, checked against `go tool
//! pprof -top` on the very same profile bytes.

use std::process::Command;

use quench_connectors::pprof;
use quench_connectors::steps::StepRunner;
use quench_connectors::steps::{Builtin, StepType};
use quench_tests::{GoService, http, require};
use serde_json::json;

/// "1.96s", "980ms", "12.50us", "3µs", "15ns" to nanoseconds.
fn nanos(s: &str) -> f64 {
    let units = [
        ("ns", 1.0),
        ("us", 1e3),
        ("µs", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
        ("min", 60e9),
        ("h", 3600e9),
    ];
    for (u, f) in units.iter().rev() {
        if let Some(n) = s.strip_suffix(u)
            && let Ok(v) = n.parse::<f64>()
        {
            return v * f;
        }
    }
    s.parse()
        .unwrap_or_else(|_| panic!("not a pprof value: {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_top_table_agrees_with_go_tool_pprof() {
    let go = require("go", "golang-go");
    let svc = GoService::start();
    let client = http();
    // Burn for longer than the capture, from two requests at once.
    for _ in 0..2 {
        let url = format!("{}/burn?ms=4000", svc.url);
        let c = client.clone();
        tokio::spawn(async move { c.get(url).send().await });
    }
    let runner = std::sync::Arc::new(Builtin::default());
    // Two captures of one target at once share one profile.
    let with = json!({"url": svc.url, "kind": "cpu", "seconds": 2, "top": 5});
    let (a, b) = {
        let (r1, r2) = (runner.clone(), runner.clone());
        let (w1, w2) = (with.clone(), with.clone());
        tokio::join!(
            async move { r1.run(StepType::PprofCapture, &w1).await },
            async move { r2.run(StepType::PprofCapture, &w2).await }
        )
    };
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a["sha256"], b["sha256"], "one capture, shared");
    assert_eq!(a["top"][0]["function"], "main.burnCPU", "{a:#}");

    // The same bytes through go tool pprof.
    let bytes = client
        .get(format!("{}/debug/pprof/profile?seconds=1", svc.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cpu.pb.gz");
    std::fs::write(&file, &bytes).unwrap();
    let ours = pprof::top::top(&pprof::decode(&bytes).unwrap(), 1).unwrap();
    let out = Command::new(go)
        .args(["tool", "pprof", "-top", "-nodecount=8"])
        .arg(&file)
        .env("PPROF_TMPDIR", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(f64, f64, String)> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6).then(|| (nanos(f[0]), nanos(f[3]), f[5..].join(" ")))
        })
        .collect();
    assert!(!rows.is_empty(), "no rows in:\n{text}");
    for (flat, cum, name) in &rows {
        let r = ours
            .rows
            .iter()
            .find(|r| &r.function == name)
            .unwrap_or_else(|| panic!("{name} from pprof is missing from ours"));
        // pprof prints three significant digits.
        let close = |a: f64, b: f64| (a - b).abs() <= b.abs() * 0.006 + 10_000.0;
        assert!(
            close(r.flat as f64, *flat),
            "{name}: flat {} vs pprof {flat}\n{text}",
            r.flat
        );
        assert!(
            close(r.cum as f64, *cum),
            "{name}: cum {} vs pprof {cum}\n{text}",
            r.cum
        );
    }
    assert_eq!(ours.rows[0].function, rows[0].2, "same first row\n{text}");

    // Heap profiles rank by the sample type pprof picks (inuse_space).
    let heap = runner
        .run(
            StepType::PprofCapture,
            &json!({"url": svc.url, "kind": "heap"}),
        )
        .await
        .unwrap();
    assert_eq!(heap["sample_type"], "inuse_space");
    assert_eq!(heap["unit"], "bytes");
    let err = runner
        .run(
            StepType::PprofCapture,
            &json!({"url": svc.url, "kind": "cpu", "seconds": 0}),
        )
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}
