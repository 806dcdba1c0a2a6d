//! `pprof.capture` against the real Go service, checked against `go tool
//! pprof -top` on the very same profile bytes.

use std::process::Command;

use quench_connectors::pprof;
use quench_connectors::steps::StepRunner;
use quench_connectors::steps::{Builtin, Call, StepType};
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
            async move { r1.run(StepType::PprofCapture, Call::default(), &w1).await },
            async move { r2.run(StepType::PprofCapture, Call::default(), &w2).await }
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
            Call::default(),
            &json!({"url": svc.url, "kind": "heap"}),
        )
        .await
        .unwrap();
    assert_eq!(heap["sample_type"], "inuse_space");
    assert_eq!(heap["unit"], "bytes");
    let err = runner
        .run(
            StepType::PprofCapture,
            Call::default(),
            &json!({"url": svc.url, "kind": "cpu", "seconds": 0}),
        )
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}

/// "512.14kB", "1.96s", "250" to a number in the base unit.
fn value(s: &str) -> f64 {
    let units = [
        ("ns", 1.0),
        ("us", 1e3),
        ("µs", 1e3),
        ("ms", 1e6),
        ("mins", 60e9),
        ("hrs", 3600e9),
        ("s", 1e9),
        ("kB", 1024.0),
        ("MB", 1048576.0),
        ("GB", 1073741824.0),
        ("TB", 1099511627776.0),
        ("B", 1.0),
    ];
    for (u, f) in units {
        if let Some(n) = s.strip_suffix(u)
            && let Ok(v) = n.parse::<f64>()
        {
            return v * f;
        }
    }
    s.parse()
        .unwrap_or_else(|_| panic!("not a pprof value: {s:?}"))
}

/// The rows of a `-top` table: (flat, cum, function).
fn rows(text: &str) -> Vec<(f64, f64, String)> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6).then(|| (value(f[0]), value(f[3]), f[5..].join(" ")))
        })
        .collect()
}

/// Downloads a profile to `file`.
async fn save_profile(client: &reqwest::Client, url: &str, file: &std::path::Path) {
    let bytes = client.get(url).send().await.unwrap().bytes().await.unwrap();
    std::fs::write(file, &bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quench_pprof_top_matches_go_tool_pprof_for_every_kind_and_sample_index() {
    let go = require("go", "golang-go");
    let svc = GoService::start();
    let client = http();
    // Give every profile something to show.
    client
        .get(format!("{}/leak?n=250", svc.url))
        .send()
        .await
        .unwrap();
    client
        .get(format!("{}/alloc?mb=8", svc.url))
        .send()
        .await
        .unwrap();
    let burn = format!("{}/burn?ms=3000", svc.url);
    let c = client.clone();
    tokio::spawn(async move { c.get(burn).send().await });
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<(std::path::PathBuf, Option<&str>)> = Vec::new();
    for (kind, path) in [
        ("cpu", "profile?seconds=2"),
        ("heap", "heap"),
        ("allocs", "allocs"),
        ("goroutine", "goroutine"),
    ] {
        let file = dir.path().join(format!("{kind}.pb.gz"));
        save_profile(&client, &format!("{}/debug/pprof/{path}", svc.url), &file).await;
        if kind == "heap" {
            for idx in [
                "inuse_space",
                "inuse_objects",
                "alloc_space",
                "alloc_objects",
            ] {
                cases.push((file.clone(), Some(idx)));
            }
        } else {
            cases.push((file, None));
        }
    }
    // And a real program's profiles: the Alertmanager the tests run, after
    // it took some alerts (its stacks inline differently from ours).
    let am = quench_tests::Alertmanager::start("http://127.0.0.1:1/hook").await;
    for i in 0..50 {
        am.post_alerts(&json!([{"labels": {"alertname": format!("A{i}"), "service": "s"}}]))
            .await;
    }
    let mut am_cases = Vec::new();
    for kind in ["heap", "allocs", "goroutine"] {
        let file = dir.path().join(format!("am-{kind}.pb.gz"));
        save_profile(&client, &format!("{}/debug/pprof/{kind}", am.url), &file).await;
        am_cases.push(file);
    }
    // Every case in full, and CPU with a node count (the "Showing top N"
    // line and the unit chosen from the rows shown). pprof marks inlining
    // on the graph of the rows it shows, so node counts matter there too.
    let cpu = dir.path().join("cpu.pb.gz");
    let mut runs: Vec<(&std::path::Path, Option<&str>, usize)> =
        cases.iter().map(|(f, i)| (f.as_path(), *i, 0)).collect();
    runs.push((&cpu, None, 3));
    runs.push((&cpu, None, 1));
    for f in &am_cases {
        for nodecount in [0, 3, 10] {
            runs.push((f.as_path(), None, nodecount));
        }
    }
    let am_heap = dir.path().join("am-heap.pb.gz");
    for idx in ["inuse_objects", "alloc_space", "alloc_objects"] {
        for nodecount in [0, 3, 10] {
            runs.push((&am_heap, Some(idx), nodecount));
        }
    }
    for (file, idx, nodecount) in runs {
        let mut theirs = Command::new(&go);
        // pprof prints the profile's time in the local zone; quench in UTC.
        theirs
            .args(["tool", "pprof", "-top"])
            .env("TZ", "UTC")
            .env("PPROF_TMPDIR", dir.path());
        let mut ours = Command::new(quench_tests::quench_bin());
        ours.args(["pprof", "top"]);
        if nodecount > 0 {
            theirs.arg(format!("-nodecount={nodecount}"));
            ours.args(["--nodecount", &nodecount.to_string()]);
        }
        if let Some(i) = idx {
            theirs.arg(format!("-sample_index={i}"));
            ours.args(["--sample-index", i]);
        }
        let theirs = theirs.arg(file).output().unwrap();
        let ours = ours.arg(file).output().unwrap();
        let (t, o) = (
            String::from_utf8_lossy(&theirs.stdout),
            String::from_utf8_lossy(&ours.stdout),
        );
        assert!(
            ours.status.success() && theirs.status.success(),
            "{}{}",
            String::from_utf8_lossy(&ours.stderr),
            String::from_utf8_lossy(&theirs.stderr)
        );
        assert!(!rows(&t).is_empty(), "{file:?} {idx:?}\n{t}");
        // Line for line: headers, units, percentages, order, (inline).
        for (n, (a, b)) in t.lines().zip(o.lines()).enumerate() {
            assert_eq!(
                b, a,
                "line {n} of {file:?} {idx:?} nodecount {nodecount}\n--- go tool pprof\n{t}\n--- quench\n{o}"
            );
        }
        assert_eq!(t.lines().count(), o.lines().count(), "{t}\n{o}");
    }
    // The goroutine profile names the leak with its count.
    let out = Command::new(quench_tests::quench_bin())
        .args(["pprof", "top", "--nodecount", "40"])
        .arg(dir.path().join("goroutine.pb.gz"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let leak = rows(&text)
        .into_iter()
        .find(|r| r.2 == "main.leakyWorker")
        .expect("leak row");
    assert_eq!(leak.1, 250.0, "{text}");
    // The CPU profile's first row is the burner.
    let out = Command::new(quench_tests::quench_bin())
        .args(["pprof", "top"])
        .arg(dir.path().join("cpu.pb.gz"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(rows(&text)[0].2, "main.burnCPU", "{text}");
    assert!(text.contains("\nType: cpu\nTime: "), "{text}");
}

/// A pprof endpoint that accepts the connection and never answers fails
/// the capture at its deadline, not never.
#[tokio::test]
async fn a_hung_pprof_endpoint_hits_the_deadline() {
    quench_tests::init_tls();
    let (url, _) = quench_tests::stub_with(|_| quench_tests::Reply::Silence).await;
    let t = std::time::Instant::now();
    let err = Builtin::default()
        .run(
            StepType::PprofCapture,
            Call::default(),
            &json!({"url": url, "kind": "heap", "margin_seconds": 1}),
        )
        .await
        .unwrap_err();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("no answer within 1s"), "{err}");
}

/// A healthy heap profile pushed as the service's baseline (as a scheduled
/// capture would) is what a runbook's capture diffs against: the function
/// that grew since comes first. A step can save its own capture as the
/// next baseline, and bad uploads are refused with their reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_diff_against_the_services_last_healthy_baseline() {
    use quench_tests::Quench;

    let svc = GoService::start();
    let client = http();
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("heap.yaml"),
        "version: 1\nname: heap\nmatch:\n  matchers: ['alertname=\"HeapGrowth\"']\nsteps:\n  - id: heap\n    uses: pprof.capture\n    with: {url: '{{alert.annotations.pprof}}', kind: heap, baseline_of: '{{alert.labels.service}}'}\n  - id: goroutines\n    uses: pprof.capture\n    with: {url: '{{alert.annotations.pprof}}', kind: goroutine, baseline_of: '{{alert.labels.service}}', save_baseline: '{{alert.labels.service}}'}\n",
    )
    .unwrap();
    let q = Quench::start("{}\n", rb.path());

    // The healthy capture, before the service allocates.
    let healthy = client
        .get(format!("{}/debug/pprof/heap", svc.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let r = client
        .put(format!("{}/api/v1/baselines/checkout/heap", q.url))
        .body(healthy.clone())
        .header("content-type", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for (path, body, code) in [
        (
            "checkout/heap",
            b"<html>oops</html>".to_vec(),
            "not_a_profile",
        ),
        ("check%20out/heap", healthy.to_vec(), "invalid_name"),
        // A heap profile is not a CPU baseline; `cpux` is no kind.
        ("checkout/cpu", healthy.to_vec(), "wrong_kind"),
        ("checkout/cpux", healthy.to_vec(), "unknown_kind"),
    ] {
        let r = client
            .put(format!("{}/api/v1/baselines/{path}", q.url))
            .body(body)
            .header("content-type", "application/octet-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        if code == "wrong_kind" {
            let m = v["error"]["message"].as_str().unwrap();
            assert!(
                m.contains("a heap/allocs profile") && m.contains("a CPU profile"),
                "both kinds are named: {m}"
            );
        }
    }
    // `quench pprof diff` of two kinds is refused, naming both.
    let dir = tempfile::tempdir().unwrap();
    let (heap_file, goroutine_file) = (dir.path().join("heap.pb.gz"), dir.path().join("g.pb.gz"));
    std::fs::write(&heap_file, &healthy).unwrap();
    save_profile(
        &client,
        &format!("{}/debug/pprof/goroutine", svc.url),
        &goroutine_file,
    )
    .await;
    let out = std::process::Command::new(quench_tests::quench_bin())
        .args(["pprof", "diff"])
        .arg(&heap_file)
        .arg(&goroutine_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is a heap/allocs profile") && err.contains("is a goroutine profile"),
        "{err}"
    );

    client
        .get(format!("{}/alloc?mb=16", svc.url))
        .send()
        .await
        .unwrap();
    let alert = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing", "labels": {"alertname": "HeapGrowth", "service": "checkout"},
                    "annotations": {"pprof": svc.url},
                    "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "heap"}]});
    let r = client
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inc = q
        .wait_for(
            "/api/v1/incidents/inc-1",
            std::time::Duration::from_secs(60),
            |d| (d["run"]["outcome"] == "succeeded" && d["status"] == "open").then(|| d.clone()),
        )
        .await;
    let heap = &inc["steps"][0]["output"];
    assert_eq!(inc["steps"][0]["state"], "succeeded", "{inc:#}");
    assert_eq!(heap["baseline"]["service"], "checkout");
    let grew = &heap["diff"][0];
    assert_eq!(grew["function"], "main.alloc", "{heap:#}");
    assert!(
        grew["new_pct"].as_f64().unwrap() > grew["base_pct"].as_f64().unwrap() + 50.0,
        "{grew}"
    );
    // No goroutine baseline yet: the capture still succeeds, says so, and
    // saves itself as the first one.
    let g = &inc["steps"][1]["output"];
    assert_eq!(inc["steps"][1]["state"], "succeeded", "{inc:#}");
    assert!(g["diff"].is_null(), "{g}");
    assert!(
        g["baseline"]["note"]
            .as_str()
            .unwrap()
            .contains("no baseline saved for checkout goroutine"),
        "{g}"
    );
    let list = q.get_json("/api/v1/baselines").await;
    let saved = list["baselines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "goroutine")
        .unwrap_or_else(|| panic!("{list:#}"));
    assert_eq!(saved["service"], "checkout");
    assert_eq!(saved["incident"], "inc-1");
    assert_eq!(saved["step"], "goroutines");
    assert_eq!(saved["artifact"], g["artifacts"]["profile"]);
    let audit = q.get_json("/api/v1/audit").await;
    assert!(
        audit.to_string().contains("baseline.set"),
        "the upload is audited: {audit}"
    );

    // `incidents show` and the postmortem carry the evidence: the top of
    // the table, what grew since the baseline, and the note when there was
    // no baseline.
    for args in [
        &["incidents", "show", "inc-1"][..],
        &["postmortem", "inc-1"][..],
    ] {
        let out = std::process::Command::new(quench_tests::quench_bin())
            .args(args)
            .args(["--server", &q.url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("main.alloc"), "{args:?}: {text}");
        assert!(
            text.contains("since the baseline of checkout"),
            "{args:?}: {text}"
        );
        assert!(
            text.contains("no baseline saved for checkout goroutine"),
            "{args:?}: {text}"
        );
    }
}
