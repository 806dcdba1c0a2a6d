//! Runbooks from a real git repository over `file://`: a new commit is
//! picked up, a broken one is refused while the last good set keeps
//! serving, and incidents are pinned to the commit they ran with.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use quench_tests::{Quench, http, require};
use serde_json::{Value, json};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(require("git", "git"))
        .current_dir(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(work: &Path, file: &str, text: &str, msg: &str) -> String {
    let p = work.join("runbooks").join(file);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", msg]);
    git(work, &["push", "-q", "origin", "HEAD:main"]);
    git(work, &["rev-parse", "HEAD"])
}

#[tokio::test]
async fn follows_the_repository_and_keeps_the_last_good_set() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("runbooks.git");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "--initial-branch=main"]);
    git(tmp.path(), &["clone", "-q", bare.to_str().unwrap(), "work"]);
    let first = commit(
        &work,
        "cpu.yaml",
        "version: 1\nname: cpu\nmatch:\n  matchers: ['alertname=\"HighCPU\"']\nsteps:\n  - id: profile\n    uses: pprof.capture\n    with: {url: 'http://{{alert.labels.instance}}', kind: cpu}\n",
        "cpu runbook",
    );

    let config = format!(
        "git:\n  url: file://{}\n  branch: main\n  path: runbooks\n  interval: 1h\n  webhook_secret: hook-secret\n",
        bare.display()
    );
    // The runbooks flag is ignored when git is configured: point it nowhere.
    let q = Quench::start(&config, &tmp.path().join("unused"));
    let rb = q.get_json("/api/v1/runbooks").await;
    assert_eq!(rb["commit"], first.as_str(), "{rb:#}");
    assert_eq!(rb["runbooks"][0]["name"], "cpu");
    assert_eq!(rb["runbooks"][0]["steps"], json!(["pprof.capture"]));

    // An alert now is pinned to the first commit.
    let alert = |name: &str| {
        json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
               "alerts": [{"status": "firing", "labels": {"alertname": name, "n": "1"},
                           "startsAt": "2026-11-27T10:00:00Z", "fingerprint": format!("fp-{name}")}]})
    };
    let r = http()
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert("HighCPU"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inc = q
        .wait_for("/api/v1/incidents", Duration::from_secs(10), |d| {
            d["incidents"].as_array().and_then(|l| l.first()).cloned()
        })
        .await;
    assert_eq!(inc["runbook"]["commit"], first.as_str());
    assert_eq!(inc["runbook"]["path"], "cpu.yaml");

    // The webhook needs a valid GitHub signature.
    let body = br#"{"ref":"refs/heads/main"}"#;
    let hook = |sig: Option<String>| {
        let mut req = http()
            .post(format!("{}/hooks/git", q.url))
            .body(body.to_vec());
        if let Some(sig) = sig {
            req = req.header("x-hub-signature-256", sig);
        }
        req.send()
    };
    assert_eq!(hook(None).await.unwrap().status(), 401);
    assert_eq!(hook(Some("sha256=00".into())).await.unwrap().status(), 401);
    let good_sig = {
        let out = Command::new(require("openssl", "openssl"))
            .args(["dgst", "-sha256", "-hmac", "hook-secret"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(body)?;
                c.wait_with_output()
            })
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        format!("sha256={}", text.trim().rsplit(' ').next().unwrap())
    };

    // A new commit adds a runbook.
    let second = commit(
        &work,
        "leak.yaml",
        "version: 1\nname: leak\nmatch:\n  matchers: ['alertname=\"GoroutineLeak\"']\n",
        "leak runbook",
    );
    assert_eq!(hook(Some(good_sig.clone())).await.unwrap().status(), 202);
    let rb: Value = q
        .wait_for("/api/v1/runbooks", Duration::from_secs(20), |d| {
            (d["commit"] == second.as_str()).then(|| d.clone())
        })
        .await;
    assert_eq!(rb["runbooks"].as_array().unwrap().len(), 2);
    assert_eq!(rb["sync"]["last_error"], Value::Null);

    // A broken commit is refused; the second commit's set keeps serving.
    let broken = commit(
        &work,
        "cpu.yaml",
        "version: 1\nname: cpu\nmatch:\n  matchers: ['alertname=~\"(\"']\n",
        "broken regex",
    );
    assert_eq!(hook(Some(good_sig.clone())).await.unwrap().status(), 202);
    let rb: Value = q
        .wait_for("/api/v1/runbooks", Duration::from_secs(20), |d| {
            (d["sync"]["last_attempt_commit"] == broken.as_str()).then(|| d.clone())
        })
        .await;
    assert_eq!(rb["commit"], second.as_str(), "the last good set stays");
    let errors = rb["sync"]["last_error"]
        .as_array()
        .expect("the error is reported");
    assert!(
        errors[0].as_str().unwrap().contains("cpu.yaml:4:")
            && errors[0].as_str().unwrap().contains("RB004"),
        "{errors:?}"
    );
    // Still matching with the good set: the leak runbook exists.
    let r = http()
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert("GoroutineLeak"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inc = q
        .wait_for("/api/v1/incidents", Duration::from_secs(10), |d| {
            d["incidents"]
                .as_array()?
                .iter()
                .find(|i| i["runbook"]["name"] == "leak")
                .cloned()
        })
        .await;
    assert_eq!(inc["runbook"]["commit"], second.as_str());

    // Fixed: the next sync takes it.
    let fixed = commit(
        &work,
        "cpu.yaml",
        "version: 1\nname: cpu\nmatch:\n  matchers: ['alertname=~\"High.*\"']\n",
        "fix regex",
    );
    hook(Some(good_sig)).await.unwrap();
    q.wait_for("/api/v1/runbooks", Duration::from_secs(20), |d| {
        (d["commit"] == fixed.as_str() && d["sync"]["last_error"].is_null()).then_some(())
    })
    .await;
}
