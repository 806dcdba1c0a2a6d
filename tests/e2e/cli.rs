//! The `quench` command line as an on-call engineer meets it: addresses,
//! errors, listings, pipes.

use std::process::{Command, Stdio};

use quench_tests::{Quench, quench_bin};

/// Runs `quench ARGS`; (success, stdout, stderr).
fn quench(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(quench_bin())
        .args(args)
        .env_remove("QUENCH_SERVER")
        .env_remove("QUENCH_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_errors_and_listings_say_what_to_do() {
    let rb = tempfile::tempdir().unwrap();
    let q = Quench::start("{}\n", rb.path());
    let bare = q.url.trim_start_matches("http://").to_string();

    // An address without a scheme works.
    let (ok, out, err) = quench(&["status", "--server", &bare], &[]);
    assert!(ok, "{err}");
    assert!(out.starts_with("quench "), "{out}");
    assert!(out.contains("kill switch: off"), "{out}");
    assert!(out.contains("runbooks: 0 from"), "{out}");
    assert!(out.contains("lags: pipeline 0 alerts"), "{out}");
    assert!(out.contains("chaos schedules: off"), "{out}");
    let (ok, out, err) = quench(&["status", "--json", "--server", &q.url], &[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["control"]["paused"], false);
    assert!(v["version"].is_string());

    // Nothing listening: the message names the flag, the variable and the
    // server command.
    let (ok, _, err) = quench(&["incidents", "list", "--server", "127.0.0.1:1"], &[]);
    assert!(!ok);
    assert!(err.contains("Connection refused"), "{err}");
    assert!(
        err.contains("--server") && err.contains("QUENCH_SERVER") && err.contains("quench serve"),
        "{err}"
    );
    // One message, no backtrace, whatever RUST_BACKTRACE says...
    let (_, _, err) = quench(
        &["incidents", "list", "--server", "127.0.0.1:1"],
        &[("RUST_BACKTRACE", "1")],
    );
    assert!(!err.contains("backtrace"), "{err}");
    // ...unless asked for.
    let (_, _, err) = quench(
        &["incidents", "list", "--debug", "--server", "127.0.0.1:1"],
        &[("RUST_BACKTRACE", "1")],
    );
    assert!(err.contains("backtrace"), "{err}");

    // A search with no hits says so; annotate without fields is refused
    // before anything is sent; --limit 0 is refused.
    let (ok, out, err) = quench(&["search", "nothing-like-this", "--server", &q.url], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("no incident matches"), "{out}");
    let (ok, _, err) = quench(&["annotate", "inc-1", "--server", &q.url], &[]);
    assert!(!ok);
    assert!(err.contains("--root-cause"), "{err}");
    let (ok, _, err) = quench(
        &["incidents", "list", "--limit", "0", "--server", &q.url],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("must be 1 or more"), "{err}");
    let (ok, _, err) = quench(
        &[
            "incidents",
            "list",
            "--status",
            "closed",
            "--server",
            &q.url,
        ],
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains("interrupted") && err.contains("unresolved"),
        "{err}"
    );

    // Listings take --json.
    let (ok, out, err) = quench(&["audit", "--json", "--server", &q.url], &[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["audit"].is_array());
    // Something to audit, then the chain over it.
    let (ok, _, err) = quench(&["pause", "--reason", "test", "--server", &q.url], &[]);
    assert!(ok, "{err}");
    let (ok, _, err) = quench(&["resume", "--server", &q.url], &[]);
    assert!(ok, "{err}");
    let (ok, out, err) = quench(&["audit", "verify", "--server", &q.url], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("2 entries, the chain holds"), "{out}");
    let (ok, out, err) = quench(&["lint", "--json", rb.path().to_str().unwrap()], &[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["problems"], serde_json::json!([]));
    let (ok, out, err) = quench(&["test", "--json", rb.path().to_str().unwrap()], &[]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!([])
    );
}

/// With API tokens, a request without one is refused, and the message
/// says how to give one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_names_the_flag() {
    let rb = tempfile::tempdir().unwrap();
    let hash = crate::executor::sha256_hex("s3cret");
    let q = Quench::start(
        &format!("api_tokens:\n  - {{name: oncall, role: viewer, sha256: {hash}}}\n"),
        rb.path(),
    );
    let (ok, _, err) = quench(&["incidents", "list", "--server", &q.url], &[]);
    assert!(!ok);
    assert!(
        err.contains("401") && err.contains("--token") && err.contains("QUENCH_TOKEN"),
        "{err}"
    );
    let (ok, _, err) = quench(
        &["incidents", "list", "--server", &q.url],
        &[("QUENCH_TOKEN", "s3cret")],
    );
    assert!(ok, "{err}");
}

/// `quench schema | head`: the closed pipe ends the command quietly.
#[test]
fn a_closed_stdout_ends_quietly() {
    let mut child = Command::new(quench_bin())
        .arg("schema")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read nothing: close our end at once.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// `quench serve` on a broken local directory stops at once with what to
/// fix, and never claims a last good set it does not have.
#[test]
fn serve_on_a_broken_runbook_directory_says_what_to_fix() {
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("bad.yaml"),
        "version: 1\nname: Bad Name\nmatch: {}\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(quench_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--runbooks"])
        .arg(rb.path())
        .arg("--data")
        .arg(data.path())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("do not load, so quench does not start"),
        "{err}"
    );
    assert!(err.contains("quench lint"), "{err}");
    assert!(err.contains("bad.yaml:2:7: error[RB003]"), "{err}");
    assert!(!err.contains("last good set stays"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
}

/// `quench explain` renders the steps an alert would run, with the
/// configuration's defaults, and warns about a step that will not render or
/// will be refused.
#[test]
fn explain_renders_the_steps_and_warns_about_what_will_not_run() {
    let root = quench_tests::repo_root();
    let examples = root.join("runbooks/examples");
    let config = root.join("quench.example.yaml");
    let dir = tempfile::tempdir().unwrap();
    let explain = |instance: &str| {
        let alert = dir.path().join("a.json");
        std::fs::write(
            &alert,
            format!(r#"{{"labels": {{"alertname": "HighCPU", "severity": "warning", "instance": "{instance}"}}}}"#),
        )
        .unwrap();
        let (ok, out, err) = quench(
            &[
                "explain",
                "--runbooks",
                examples.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                alert.to_str().unwrap(),
            ],
            &[],
        );
        assert!(ok, "{err}");
        out
    };
    let out = explain("10.0.0.7:6060");
    assert!(out.contains("cpu (pprof.capture): skipped"), "{out}");
    assert!(out.contains(r#"cpu_instance (pprof.capture): {"kind":"cpu","seconds":10,"url":"http://10.0.0.7:6060"}"#), "{out}");
    assert!(
        out.contains(r#""url":"http://127.0.0.1:9090""#),
        "prometheus.url: {out}"
    );
    assert!(!out.contains("warning: "), "{out}");
    let out = explain("8.8.8.8:80");
    assert!(
        out.contains("warning: cpu_instance (pprof.capture) will be refused")
            && out.contains("not in executor.allowed_hosts"),
        "{out}"
    );
    let out = explain("evil.com/x?");
    assert!(
        out.contains("warning: cpu_instance (pprof.capture) will not render"),
        "{out}"
    );
}

/// `quench chaos list` says when schedules are off (the default), and each
/// schedule as off; `--json` carries the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_list_shows_schedules_as_off_when_they_are() {
    let examples = quench_tests::repo_root().join("runbooks/examples");
    let q = Quench::start("{}\n", &examples);
    let (ok, out, err) = quench(&["chaos", "list", "--server", &q.url], &[]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("schedules are off (chaos.schedule: false)"),
        "{out}"
    );
    assert!(out.contains("): off"), "{out}");
    assert!(!out.contains("next:"), "{out}");
    let (ok, out, err) = quench(&["chaos", "list", "--json", "--server", &q.url], &[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schedules_on"], false);
    let q = Quench::start("chaos: {schedule: true}\n", &examples);
    let (ok, out, err) = quench(&["chaos", "list", "--server", &q.url], &[]);
    assert!(ok, "{err}");
    assert!(
        !out.contains("schedules are off") && out.contains("next:"),
        "{out}"
    );
}

/// `quench config check` names what weakens a configuration, worst first,
/// and exits 1 on what quench would refuse to start with.
#[test]
fn config_check_names_the_weak_points_and_fails_on_a_high_one() {
    let (ok, out, err) = quench(&["config", "check"], &[]);
    assert!(ok, "{err}");
    assert!(out.starts_with("MEDIUM"), "{out}");
    assert!(
        out.contains("fix: set hooks.alertmanager.bearer_token"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open.yaml");
    std::fs::write(&open, "listen: 0.0.0.0:9797\n").unwrap();
    let (ok, out, err) = quench(
        &["config", "check", "--config", open.to_str().unwrap()],
        &[],
    );
    assert!(!ok);
    assert!(out.starts_with("HIGH"), "{out}");
    assert!(err.contains("high finding"), "{err}");
    let example = quench_tests::repo_root().join("quench.example.yaml");
    let (ok, out, err) = quench(
        &[
            "config",
            "check",
            "--json",
            "--config",
            example.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|f| f["severity"] != "high"),
        "{v:#}"
    );
}
