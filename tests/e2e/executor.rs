//! The executor through the real binary: an approval gate answered with
//! the CLI, role checks on the API, and a kill switch that survives a
//! restart.

use std::process::Command;
use std::time::Duration;

use quench_tests::{Quench, http, quench_bin, require};
use serde_json::{Value, json};

pub(crate) fn sha256_hex(token: &str) -> String {
    // Computed with coreutils, not with the code under test.
    let out = Command::new(require("sha256sum", "coreutils"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(token.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn cli(q: &Quench, token: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(quench_bin())
        .args(args)
        .args(["--server", &q.url, "--token", token])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn status_of(q: &Quench, token: &str, method: &str, path: &str, body: Value) -> u16 {
    let req = match method {
        "GET" => http().get(format!("{}{path}", q.url)),
        "PUT" => http().put(format!("{}{path}", q.url)).json(&body),
        _ => http().post(format!("{}{path}", q.url)).json(&body),
    };
    let req = if token.is_empty() {
        req
    } else {
        req.bearer_auth(token)
    };
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn approvals_roles_and_a_kill_switch_that_survives_restart() {
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("cart.yaml"),
        "version: 1\nname: restart-cart\nmatch:\n  matchers: ['alertname=\"CartDown\"']\nsteps:\n  - id: settle\n    uses: wait\n    with: {seconds: 0}\n  - id: restart\n    uses: k8s.rollout_restart\n    approval: {required: true, timeout: 10m}\n    with: {namespace: shop, name: cart}\n",
    )
    .unwrap();
    let config = format!(
        "api_tokens:\n  - {{name: vera, role: viewer, sha256: {}}}\n  - {{name: rosa, role: responder, sha256: {}}}\n  - {{name: adam, role: admin, sha256: {}}}\nkubernetes: {{kubeconfig: /nonexistent/quench/kubeconfig}}\n",
        sha256_hex("viewer-token"),
        sha256_hex("responder-token"),
        sha256_hex("admin-token")
    );
    let mut q = Quench::start(&config, rb.path());

    // Every endpoint refuses the roles below it (401 without a valid
    // token, 403 with a lower role); any other answer means the role was
    // enough. Resume comes last, so the switch ends where it started.
    let endpoints: [(&str, &str, usize); 9] = [
        ("GET", "/api/v1/incidents", 0),
        ("GET", "/api/v1/incidents/inc-1", 0),
        ("GET", "/api/v1/alerts", 0),
        ("GET", "/api/v1/runbooks", 0),
        ("GET", "/api/v1/audit", 0),
        ("GET", "/api/v1/control", 0),
        ("POST", "/api/v1/incidents/inc-1/approvals", 1),
        ("POST", "/api/v1/control/pause", 2),
        ("POST", "/api/v1/control/resume", 2),
    ];
    let tokens = ["viewer-token", "responder-token", "admin-token"];
    for (method, path, need) in endpoints {
        let body = json!({"step": "none", "decision": "approve"});
        assert_eq!(
            status_of(&q, "", method, path, body.clone()).await,
            401,
            "{method} {path} without a token"
        );
        assert_eq!(
            status_of(&q, "nope", method, path, body.clone()).await,
            401,
            "{method} {path} with an unknown token"
        );
        for (rank, token) in tokens.iter().enumerate() {
            let got = status_of(&q, token, method, path, body.clone()).await;
            if rank < need {
                assert_eq!(got, 403, "{method} {path} as {token}");
            } else {
                assert!(
                    got != 401 && got != 403,
                    "{method} {path} as {token}: {got}"
                );
            }
        }
    }

    // Read endpoints need at least a viewer token.
    assert_eq!(
        status_of(&q, "", "GET", "/api/v1/incidents", Value::Null).await,
        401
    );
    assert_eq!(
        status_of(&q, "wrong", "GET", "/api/v1/incidents", Value::Null).await,
        401
    );
    assert_eq!(
        status_of(&q, "viewer-token", "GET", "/api/v1/incidents", Value::Null).await,
        200
    );
    // Webhooks keep their own authentication (none configured here).
    let alert = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing", "labels": {"alertname": "CartDown"}, "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "cart"}]});
    let r = http()
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let get = |path: &'static str| {
        let url = format!("{}{path}", q.url);
        async move {
            http()
                .get(url)
                .bearer_auth("viewer-token")
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let mut incident = Value::Null;
    for _ in 0..100 {
        incident = get("/api/v1/incidents/inc-1").await;
        if incident["steps"][1]["state"] == "awaiting_approval" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(incident["steps"][0]["state"], "succeeded", "{incident:#}");
    assert_eq!(
        incident["steps"][1]["state"], "awaiting_approval",
        "{incident:#}"
    );
    assert_eq!(incident["status"], "remediating");

    // A viewer may not approve; a responder may, with the CLI.
    let body = json!({"step": "restart", "decision": "approve"});
    assert_eq!(
        status_of(
            &q,
            "viewer-token",
            "POST",
            "/api/v1/incidents/inc-1/approvals",
            body.clone()
        )
        .await,
        403
    );
    let (ok, text) = cli(&q, "viewer-token", &["approve", "inc-1", "restart"]);
    assert!(!ok && text.contains("403"), "{text}");
    let (ok, text) = cli(&q, "responder-token", &["approve", "inc-1", "restart"]);
    assert!(ok, "{text}");
    assert!(text.contains("approved by rosa"), "{text}");
    // Nothing waits any more.
    assert_eq!(
        status_of(
            &q,
            "responder-token",
            "POST",
            "/api/v1/incidents/inc-1/approvals",
            body
        )
        .await,
        404
    );

    // No cluster is configured here (the kubeconfig does not exist): the
    // approved step fails saying so, and with no on_failure the run fails.
    for _ in 0..100 {
        incident = get("/api/v1/incidents/inc-1").await;
        if incident["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(incident["status"], "failed", "{incident:#}");
    assert!(
        incident["steps"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("kubeconfig /nonexistent/quench/kubeconfig"),
        "{incident:#}"
    );
    let audit = get("/api/v1/audit?incident=inc-1").await;
    let actions: Vec<(String, String)> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("approval.approved".into(), "rosa".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("step.run".into(), "quench".into())),
        "{actions:?}"
    );

    // The kill switch: admin only, and it holds across a restart.
    assert_eq!(
        status_of(
            &q,
            "responder-token",
            "POST",
            "/api/v1/control/pause",
            json!({})
        )
        .await,
        403
    );
    let (ok, text) = cli(&q, "admin-token", &["pause", "--reason", "bad deploy"]);
    assert!(ok, "{text}");
    q.kill9();
    let q2 = Quench::spawn(&q.config, &q.data, rb.path(), None);
    let v = http()
        .get(format!("{}/api/v1/control", q2.url))
        .bearer_auth("viewer-token")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(v["paused"], true, "{v}");
    assert_eq!(v["last_change"]["by"], "adam");
    assert_eq!(v["last_change"]["reason"], "bad deploy");
    let (ok, text) = cli(&q2, "admin-token", &["audit"]);
    assert!(
        ok && text.contains("control.pause") && text.contains("adam"),
        "{text}"
    );
}

/// A route's path with its parameters filled in: authorization comes
/// before they are looked at.
fn placeholders(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "x" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every route of the router, walked from the router's own list: without a
/// token each answers 401, except the public probes and the webhooks
/// (which check their sender's credentials, tested in senders.rs). A new
/// handler that forgets to take a `Caller` fails here.
#[tokio::test]
async fn every_route_but_the_public_ones_refuses_a_caller_without_a_token() {
    use quench_engine::http::{PUBLIC_ROUTES, ROUTES};

    let rb = tempfile::tempdir().unwrap();
    let config = format!(
        "api_tokens:\n  - {{name: vera, role: viewer, sha256: {}}}\nkubernetes: {{kubeconfig: /nonexistent/quench/kubeconfig}}\n",
        sha256_hex("viewer-token"),
    );
    let q = Quench::start(&config, rb.path());
    let mut walked = 0;
    for (method, path) in ROUTES {
        if path.starts_with("/hooks/") {
            continue;
        }
        let concrete = placeholders(path);
        let got = status_of(&q, "", method, &concrete, json!({})).await;
        if PUBLIC_ROUTES.contains(path) {
            assert_eq!(got, 200, "{method} {path} is public");
        } else {
            assert_eq!(got, 401, "{method} {path} without a token");
            let got = status_of(&q, "nope", method, &concrete, json!({})).await;
            assert_eq!(got, 401, "{method} {path} with an unknown token");
        }
        walked += 1;
    }
    assert!(walked >= 25, "only {walked} routes walked");
    // The viewer reads, and may not change anything.
    for (method, path) in ROUTES
        .iter()
        .filter(|(m, p)| *m != "GET" && !p.starts_with("/hooks/"))
    {
        let concrete = placeholders(path);
        let got = status_of(&q, "viewer-token", method, &concrete, json!({})).await;
        assert_eq!(got, 403, "{method} {path} as a viewer");
    }
}
