//! `argocd.sync` and `argocd.rollback` against a stand-in for Argo CD's
//! API server (Argo CD cannot run here), which checks each request against
//! the documented shapes: path, bearer token, and the JSON body
//! (`ApplicationRollbackRequest`: name, id as an integer, dryRun, prune;
//! `ApplicationSyncRequest`: name, revision, dryRun, prune).

use std::sync::{Arc, Mutex};

use quench_connectors::steps::{Builtin, Call, StepError, StepRunner, StepType};
use serde_json::{Value, json};

/// An Argo CD application with three deployments in its history, running
/// the third; a rollback or sync makes it run the revision asked for.
fn argocd(automated: bool) -> impl Fn(&quench_tests::Seen) -> (u16, Value) + Send + Sync + 'static {
    let running = Arc::new(Mutex::new("c3c3c3".to_string()));
    move |req| {
        if req.header("authorization") != Some("Bearer argo-token") {
            return (
                401,
                json!({"error": "invalid session", "code": 16, "message": "invalid session: token is invalid"}),
            );
        }
        let app = |rev: &str| {
            json!({"metadata": {"name": "checkout", "namespace": "argocd"},
                   "spec": {"source": {"repoURL": "https://git.example/shop.git", "targetRevision": "main"},
                            "syncPolicy": if automated { json!({"automated": {"prune": true}}) } else { json!({}) }},
                   "status": {"sync": {"status": "Synced", "revision": rev},
                              "health": {"status": "Healthy"},
                              "operationState": {"phase": "Succeeded", "message": "successfully synced"},
                              "history": [{"id": 1, "revision": "a1a1a1"}, {"id": 2, "revision": "b2b2b2"},
                                          {"id": 3, "revision": "c3c3c3"}]}})
        };
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/api/v1/applications/checkout") => (200, app(&running.lock().unwrap())),
            ("POST", "/api/v1/applications/checkout/rollback") => {
                let b = req.json();
                let ok = b["name"] == "checkout"
                    && b["id"].is_i64()
                    && b["dryRun"].is_boolean()
                    && b["prune"].is_boolean();
                if !ok {
                    return (
                        400,
                        json!({"code": 3, "message": format!("bad rollback request {b}")}),
                    );
                }
                let rev = match b["id"].as_i64() {
                    Some(1) => "a1a1a1",
                    Some(2) => "b2b2b2",
                    _ => {
                        return (
                            400,
                            json!({"code": 3, "message": "application has no history id"}),
                        );
                    }
                };
                if b["dryRun"] != true {
                    *running.lock().unwrap() = rev.to_string();
                }
                (200, app(rev))
            }
            ("POST", "/api/v1/applications/checkout/sync") => {
                let b = req.json();
                if b["name"] != "checkout" || !b["dryRun"].is_boolean() || !b["prune"].is_boolean()
                {
                    return (
                        400,
                        json!({"code": 3, "message": format!("bad sync request {b}")}),
                    );
                }
                let rev = b["revision"].as_str().unwrap_or("d4d4d4").to_string();
                if b["dryRun"] != true {
                    *running.lock().unwrap() = rev.clone();
                }
                (200, app(&rev))
            }
            _ => (404, json!({"code": 5, "message": "not found"})),
        }
    }
}

/// The token as Argo CD expects it, in a file (a Secret's `file:`).
fn token_file(dir: &std::path::Path, token: &str) -> String {
    let path = dir.join(format!("token-{token}"));
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path.display().to_string()
}

fn with(url: &str, token: &str, extra: Value) -> Value {
    let mut w = json!({"server": url, "app": "checkout", "token": {"file": token}});
    w.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    w
}

#[tokio::test]
async fn rollback_returns_to_the_previous_deployment_and_records_its_revision() {
    quench_tests::init_tls();
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "argo-token");
    let (url, seen) = quench_tests::stub(argocd(false)).await;
    let steps = Builtin::default();
    let out = steps
        .run(
            StepType::ArgocdRollback,
            Call::default(),
            &with(&url, &token, json!({"timeout_seconds": 10})),
        )
        .await
        .expect("rollback");
    assert_eq!(out["history_id"], 2);
    assert_eq!(out["from_revision"], "c3c3c3");
    assert_eq!(out["to_revision"], "b2b2b2");
    assert_eq!(out["after"]["revision"], "b2b2b2");
    assert_eq!(out["after"]["health"], "Healthy");
    let posts: Vec<Value> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.json())
        .collect();
    assert_eq!(
        posts,
        [json!({"name": "checkout", "id": 2, "dryRun": false, "prune": false})]
    );

    let out = steps
        .run(
            StepType::ArgocdSync,
            Call::default(),
            &with(
                &url,
                &token,
                json!({"revision": "e5e5e5", "timeout_seconds": 10}),
            ),
        )
        .await
        .expect("sync");
    assert_eq!(out["revision"], "e5e5e5");
}

#[tokio::test]
async fn auto_sync_bad_tokens_and_bad_names_are_refused() {
    quench_tests::init_tls();
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "argo-token");
    let stale = token_file(dir.path(), "stale-token");
    let (url, seen) = quench_tests::stub(argocd(true)).await;
    let steps = Builtin::default();
    let e = steps
        .run(
            StepType::ArgocdRollback,
            Call::default(),
            &with(&url, &token, json!({})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Refused(m) if m.contains("syncs automatically") && m.contains("main")),
        "{e}"
    );
    assert!(
        seen.lock().unwrap().iter().all(|r| r.method == "GET"),
        "nothing was posted"
    );
    let bad = with(&url, &stale, json!({}));
    let e = steps
        .run(StepType::ArgocdSync, Call::default(), &bad)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Refused(m) if m.contains("invalid session")),
        "{e}"
    );
    let mut bad = with(&url, &token, json!({}));
    bad["app"] = json!("checkout/../../settings");
    let e = steps
        .run(StepType::ArgocdSync, Call::default(), &bad)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Params(m) if m.contains("not a valid Kubernetes name")),
        "{e}"
    );
}
