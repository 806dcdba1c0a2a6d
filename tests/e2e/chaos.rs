//! Chaos experiments against the real API server (simulated node) and a
//! real Prometheus: the semantics table of docs/CHAOS.md, row by row.

use std::time::Duration;

use quench_chaos::run::{self, Env, Ledger, LedgerEntry, MemoryLedger, RunOptions};
use quench_chaos::{Outcome, parse_experiment};
use quench_tests::kube::Cluster;
use serde_json::json;

fn experiment(yaml: &str) -> quench_chaos::Experiment {
    parse_experiment(std::path::Path::new("t.chaos.yaml"), "t.chaos.yaml", yaml)
        .unwrap_or_else(|e| panic!("{e:#?}"))
}

fn options(run: &str) -> (RunOptions, tokio::sync::watch::Sender<bool>) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    (
        RunOptions {
            run: run.into(),
            dry_run: false,
            abort: rx,
            probe_every: Duration::from_millis(200),
        },
        tx,
    )
}

struct Parts {
    kube: quench_connectors::k8s::KubeClient,
    http: reqwest::Client,
    steps: quench_connectors::steps::Builtin,
    ledger: MemoryLedger,
}

fn parts(cluster: &Cluster) -> Parts {
    Parts {
        kube: quench_connectors::k8s::KubeClient::new(quench_connectors::k8s::KubeSource {
            kubeconfig: Some(cluster.kubeconfig.clone()),
            ..Default::default()
        }),
        http: quench_tests::http(),
        steps: cluster.steps(),
        ledger: MemoryLedger::default(),
    }
}

impl Parts {
    fn env(&self) -> Env<'_> {
        Env {
            kube: &self.kube,
            http: &self.http,
            steps: &self.steps,
            rollback_steps: &self.steps,
            ledger: &self.ledger,
            paused: &|| false,
        }
    }
}

fn pod_kill(ns: &str, min_available: u32, mode: &str, cap: u32) -> String {
    format!(
        r#"version: 1
title: web survives losing pods
steady_state:
  probes:
    - name: web available
      k8s_ready: {{kind: Deployment, name: web, namespace: {ns}, min_available: {min_available}}}
method:
  - id: kill
    uses: chaos.pod_kill
    with: {{grace_seconds: 0}}
  # The Deployment's status lags the deletions by a moment; without a
  # pause the rollback's wait could see the old, complete status.
  - id: settle
    uses: wait
    with: {{seconds: 2}}
rollbacks:
  - id: back
    uses: k8s.wait
    with: {{kind: Deployment, name: web, namespace: {ns}, for: available, timeout_seconds: 60}}
blast_radius:
  namespaces: [{ns}]
  selector: app=web
  mode: {mode}
  max_pods: {cap}
"#
    )
}

#[tokio::test]
async fn pod_kill_with_a_readiness_probe_honours_the_cap_and_passes() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("chaos-kill").await;
    let before = cluster.deployment(&ns, "web", 3, 8080).await;
    let p = parts(&cluster);
    let exp = experiment(&pod_kill(&ns, 3, "all", 2));
    let (opts, _abort) = options("r1");
    let v = run::run(&exp, &p.env(), opts).await;
    assert_eq!(v.outcome, Outcome::Passed, "{v:#?}");
    let killed = v.faults[0]["killed"].as_array().unwrap();
    assert_eq!(killed.len(), 2, "mode all, but the cap is 2: {v:#?}");
    assert_eq!(v.faults[0]["matched"], 3);
    let now = cluster.running_pods(&ns, "web", 3).await;
    for k in killed {
        let name = k.as_str().unwrap().rsplit('/').next().unwrap();
        assert!(before.contains(&name.to_string()) && !now.contains(&name.to_string()));
    }
    assert!(v.before[0].ok && v.after[0].ok);
    assert!(p.ledger.entries().await.unwrap().is_empty(), "cleaned up");
}

#[tokio::test]
async fn a_failing_steady_state_injects_nothing_and_dry_run_only_renders() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("chaos-notrun").await;
    let before = cluster.deployment(&ns, "web", 2, 8080).await;
    let p = parts(&cluster);
    let (opts, _abort) = options("r2");
    let v = run::run(&experiment(&pod_kill(&ns, 5, "one", 1)), &p.env(), opts).await;
    assert_eq!(v.outcome, Outcome::NotRun);
    assert!(v.faults.is_empty() && v.rollbacks.is_empty(), "{v:#?}");
    assert!(!v.before[0].ok);
    assert_eq!(cluster.running_pods(&ns, "web", 2).await, before);

    let (mut opts, _abort) = options("r3");
    opts.dry_run = true;
    let v = run::run(&experiment(&pod_kill(&ns, 2, "all", 1)), &p.env(), opts).await;
    assert_eq!(v.outcome, Outcome::DryRun);
    assert_eq!(v.faults[0]["would_kill"].as_array().unwrap().len(), 1);
    assert_eq!(
        cluster.running_pods(&ns, "web", 2).await,
        before,
        "nothing killed"
    );
    assert!(p.ledger.entries().await.unwrap().is_empty());

    // A dry run says what would happen also when the steady state does not
    // hold now, and does not call that a dry run that went through.
    let (mut opts, _abort) = options("r3b");
    opts.dry_run = true;
    let v = run::run(&experiment(&pod_kill(&ns, 5, "one", 1)), &p.env(), opts).await;
    assert_eq!(v.outcome, Outcome::NotRun, "{v:#?}");
    assert!(
        v.abort_reason
            .as_deref()
            .unwrap()
            .contains("steady state does not hold"),
        "{v:#?}"
    );
    assert_eq!(
        v.faults[0]["would_kill"].as_array().unwrap().len(),
        1,
        "{v:#?}"
    );

    // A dry run that cannot reach the API server does not pass as one.
    let mut broken = parts(&cluster);
    broken.kube = quench_connectors::k8s::KubeClient::new(quench_connectors::k8s::KubeSource {
        kubeconfig: Some("/nonexistent/quench/kubeconfig".into()),
        ..Default::default()
    });
    let (mut opts, _abort) = options("r3c");
    opts.dry_run = true;
    let v = run::run(
        &experiment(&pod_kill(&ns, 2, "all", 1)),
        &broken.env(),
        opts,
    )
    .await;
    assert_eq!(v.outcome, Outcome::Aborted, "{v:#?}");
    assert!(
        v.abort_reason
            .as_deref()
            .unwrap()
            .contains("could not be worked out"),
        "{v:#?}"
    );
    assert!(!v.outcome.is_success());

    // The kill switch on: the run injects nothing and aborts, saying why.
    let (opts, _abort) = options("r3d");
    let mut env = p.env();
    env.paused = &|| true;
    let v = run::run(&experiment(&pod_kill(&ns, 2, "all", 1)), &env, opts).await;
    assert_eq!(v.outcome, Outcome::Aborted, "{v:#?}");
    assert!(
        v.abort_reason.as_deref().unwrap().contains("kill switch"),
        "{v:#?}"
    );
    assert!(v.faults.is_empty(), "{v:#?}");
    assert_eq!(
        cluster.running_pods(&ns, "web", 2).await,
        before,
        "nothing killed"
    );
}

fn network_delay(ns: &str, prometheus: &str, abort_max: f64, duration: &str) -> String {
    format!(
        r#"version: 1
title: web tolerates 200ms of latency
method:
  - id: delay
    uses: chaos.network_delay
    with: {{latency: 200ms, jitter: 10ms}}
  - id: hold
    uses: wait
    with: {{seconds: 20}}
duration: {duration}
abort_when:
  - name: up
    promql: {{url: "{prometheus}", query: "vector(1)", max: {abort_max}}}
rollbacks:
  - id: note
    uses: wait
    with: {{seconds: 0}}
blast_radius:
  namespaces: [{ns}]
  selector: app=web
  mode: all
  max_pods: 1
"#
    )
}

/// A breach of `abort_when` (a real Prometheus answering) aborts the method
/// at once; the NetworkChaos object it created is removed, finalizer and
/// all, and the rollbacks run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_when_breach_aborts_and_the_chaos_object_is_removed() {
    let cluster = Cluster::get().await;
    cluster
        .install_chaos_mesh_crd("NetworkChaos", "networkchaos")
        .await;
    let prom = quench_tests::Prometheus::start().await;
    let ns = cluster.namespace("chaos-abort").await;
    cluster.deployment(&ns, "web", 2, 8080).await;
    let p = parts(&cluster);
    let collection = format!("/apis/chaos-mesh.org/v1alpha1/namespaces/{ns}/networkchaos");
    // While the fault is in, add a finalizer as Chaos Mesh's controller
    // would: the cleanup must not be held by it.
    let c2 = Cluster::get().await;
    let watch = {
        let collection = collection.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                let list = c2.get_json(&collection).await;
                if let Some(o) = list["items"].as_array().and_then(|i| i.first()) {
                    let name = o["metadata"]["name"].as_str().unwrap().to_string();
                    let _ = c2
                        .send(
                            "PATCH",
                            &format!("{collection}/{name}"),
                            json!({"metadata": {"finalizers": ["chaos-mesh/records"]}}),
                            "application/merge-patch+json",
                        )
                        .await;
                    return Some(o.clone());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        })
    };
    let exp = experiment(&network_delay(&ns, &prom.url, 0.5, "30s"));
    let (opts, _abort) = options("r4");
    let started = std::time::Instant::now();
    let v = run::run(&exp, &p.env(), opts).await;
    assert_eq!(v.outcome, Outcome::Aborted, "{v:#?}");
    assert!(
        v.abort_reason
            .as_deref()
            .unwrap()
            .contains("\"up\" breached"),
        "{v:#?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "aborted at once, not after the method"
    );
    let seen = watch
        .await
        .unwrap()
        .expect("the NetworkChaos object existed");
    assert_eq!(seen["spec"]["action"], "delay");
    assert_eq!(seen["spec"]["delay"]["latency"], "200ms");
    assert_eq!(seen["spec"]["value"], "1", "capped at max_pods");
    assert_eq!(seen["spec"]["selector"]["namespaces"][0], ns.as_str());
    assert_eq!(v.removed.len(), 1, "{v:#?}");
    assert!(
        v.during
            .iter()
            .any(|p| p.name == "up" && !p.ok && p.value == json!([1.0])),
        "the probe series has the breach and its value: {:#?}",
        v.during
    );
    assert_eq!(v.rollbacks[0].id, "note");
    assert!(!v.rollback_failed);
    let left = cluster.get_json(&collection).await;
    assert!(left["items"].as_array().unwrap().is_empty(), "{left}");
    assert!(p.ledger.entries().await.unwrap().is_empty());
}

/// An abort request (`quench chaos abort`, shutdown) stops the method; the
/// rollbacks still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_request_stops_the_method_and_rollbacks_run() {
    let cluster = Cluster::get().await;
    cluster
        .install_chaos_mesh_crd("NetworkChaos", "networkchaos")
        .await;
    let prom = quench_tests::Prometheus::start().await;
    let ns = cluster.namespace("chaos-stop").await;
    cluster.deployment(&ns, "web", 1, 8080).await;
    let p = parts(&cluster);
    let exp = experiment(&network_delay(&ns, &prom.url, 5.0, "30s"));
    let (opts, abort) = options("r5");
    let stop = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = abort.send(true);
        abort
    });
    let v = run::run(&exp, &p.env(), opts).await;
    let _ = stop.await;
    assert_eq!(v.outcome, Outcome::Aborted, "{v:#?}");
    assert_eq!(v.abort_reason.as_deref(), Some("aborted on request"));
    assert_eq!(v.removed.len(), 1);
    assert_eq!(v.rollbacks.len(), 1);
    let left = cluster
        .get_json(&format!(
            "/apis/chaos-mesh.org/v1alpha1/namespaces/{ns}/networkchaos"
        ))
        .await;
    assert!(left["items"].as_array().unwrap().is_empty(), "{left}");
}

/// After a crash, the ledger's faults are cleaned up on restart.
#[tokio::test]
async fn reconcile_cleans_up_what_a_crashed_run_left() {
    let cluster = Cluster::get().await;
    cluster
        .install_chaos_mesh_crd("NetworkChaos", "networkchaos")
        .await;
    let ns = cluster.namespace("chaos-crash").await;
    let p = parts(&cluster);
    let collection = format!("/apis/chaos-mesh.org/v1alpha1/namespaces/{ns}/networkchaos");
    cluster
        .send(
            "POST",
            &collection,
            json!({"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos",
                   "metadata": {"name": "quench-r6-delay", "finalizers": ["chaos-mesh/records"]},
                   "spec": {"action": "delay"}}),
            "application/json",
        )
        .await
        .unwrap();
    let obj = quench_connectors::k8s::objects::ObjectRef::new(
        "NetworkChaos",
        Some(&ns),
        "quench-r6-delay",
        Some("chaos-mesh.org/v1alpha1"),
        Some("networkchaos"),
        &p.kube,
    )
    .unwrap();
    p.ledger
        .record(&LedgerEntry {
            id: "r6/delay".into(),
            experiment: "t".into(),
            run: "r6".into(),
            fault: "chaos.network_delay".into(),
            object: Some(obj),
            pods: Vec::new(),
            native: serde_json::Value::Null,
            at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let results = run::reconcile(&p.kube, &p.ledger).await.unwrap();
    assert_eq!(results.len(), 1);
    assert!(results[0].1.is_ok(), "{results:?}");
    let left = cluster.get_json(&collection).await;
    assert!(left["items"].as_array().unwrap().is_empty(), "{left}");
    assert!(p.ledger.entries().await.unwrap().is_empty());
}

/// Through the binary: a run started by the API kills a pod, passes, and
/// its verdict lists the incident an alert opened during the run (the
/// method fires the alert itself), with the runbook that handled it; the
/// history exports as JUnit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_through_the_binary_records_its_verdict_and_the_incidents_it_caused() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("chaos-bin").await;
    cluster.deployment(&ns, "web", 2, 8080).await;
    let rb = tempfile::tempdir().unwrap();
    let port = quench_tests::free_port();
    std::fs::write(
        rb.path().join("canary.yaml"),
        "version: 1\nname: canary\nmatch:\n  matchers: ['alertname=\"WebPodLost\"']\nsteps:\n  - id: look\n    uses: wait\n    with: {seconds: 0}\n",
    )
    .unwrap();
    let alert = |status: &str| {
        json!({"version": "4", "groupKey": "g", "status": status, "receiver": "quench",
               "alerts": [{"status": status, "labels": {"alertname": "WebPodLost", "namespace": ns},
                           "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "lost"}]})
    };
    std::fs::write(
        rb.path().join("web-pod-kill.chaos.yaml"),
        format!(
            r#"version: 1
title: web loses a pod
steady_state:
  probes:
    - name: web available
      k8s_ready: {{name: web, namespace: {ns}, min_available: 2}}
method:
  - id: kill
    uses: chaos.pod_kill
    with: {{grace_seconds: 0}}
  - id: alert
    uses: http.request
    with: {{method: POST, url: "http://127.0.0.1:{port}/hooks/alertmanager", body: {firing}}}
  - id: settle
    uses: wait
    with: {{seconds: 1}}
  - id: clear
    uses: http.request
    with: {{method: POST, url: "http://127.0.0.1:{port}/hooks/alertmanager", body: {resolved}}}
rollbacks:
  - id: back
    uses: k8s.wait
    with: {{kind: Deployment, name: web, namespace: {ns}, for: available, timeout_seconds: 60}}
blast_radius:
  namespaces: [{ns}]
  selector: app=web
  mode: one
  max_pods: 1
"#,
            firing = alert("firing"),
            resolved = alert("resolved"),
        ),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("quench.yaml");
    std::fs::write(
        &config,
        format!(
            "kubernetes: {{kubeconfig: '{}'}}\n",
            cluster.kubeconfig.display()
        ),
    )
    .unwrap();
    let q = quench_tests::Quench::spawn(&config, &data.path().join("data"), rb.path(), Some(port));
    let list = q.get_json("/api/v1/chaos").await;
    assert_eq!(list["experiments"][0]["name"], "web-pod-kill", "{list}");
    let http = quench_tests::http();
    let r = http
        .post(format!("{}/api/v1/chaos/web-pod-kill/run", q.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let run = r.json::<serde_json::Value>().await.unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let v = q
        .wait_for(
            &format!("/api/v1/chaos/runs/{run}"),
            Duration::from_secs(90),
            |v| (v["state"] != "running").then(|| v.clone()),
        )
        .await;
    assert_eq!(v["outcome"], "passed", "{v:#}");
    assert_eq!(v["faults"][0]["killed"].as_array().unwrap().len(), 1);
    let incidents = v["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{v:#}");
    assert_eq!(incidents[0]["runbook"], "canary.yaml");
    let inc = q
        .get_json(&format!(
            "/api/v1/incidents/{}",
            incidents[0]["id"].as_str().unwrap()
        ))
        .await;
    assert!(
        inc["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "chaos" && e["detail"].as_str().unwrap().contains("web-pod-kill")),
        "{inc:#}"
    );
    assert_eq!(
        inc["chaos"],
        json!([{"experiment": "web-pod-kill", "run": run}]),
        "{inc:#}"
    );
    // The link is searchable.
    q.wait_for(
        "/api/v1/search?q=chaos:web-pod-kill",
        Duration::from_secs(10),
        |s| (s["hits"][0]["id"] == inc["id"]).then_some(()),
    )
    .await;
    let junit = data.path().join("chaos.xml");
    let out = std::process::Command::new(quench_tests::quench_bin())
        .args(["chaos", "history", "--server", &q.url, "--junit"])
        .arg(&junit)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"1\" failures=\"0\"") && xml.contains(&run),
        "{xml}"
    );
    assert_eq!(v["defects"], json!([]), "{v:#}");
    // A dry run through the CLI renders the pod it would kill.
    let out = std::process::Command::new(quench_tests::quench_bin())
        .args([
            "chaos",
            "run",
            "web-pod-kill",
            "--dry-run",
            "--wait",
            "--server",
            &q.url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("of web-pod-kill") && text.contains("): dry-run\n"),
        "{text}"
    );
    assert!(
        text.contains("chaos.pod_kill: would kill ")
            && text.contains("pods match the blast radius"),
        "{text}"
    );
    // The kill switch stops experiments too: a run is refused (a dry run
    // is not), then allowed again after resume.
    let post = |path: &str| {
        let req = http.post(format!("{}{path}", q.url)).json(&json!({}));
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    assert_eq!(post("/api/v1/control/pause").await.0, 200);
    let (status, v) = post("/api/v1/chaos/web-pod-kill/run").await;
    assert_eq!(status, 409);
    assert_eq!(v["error"]["code"], "paused", "{v}");
    assert_eq!(
        post("/api/v1/chaos/web-pod-kill/run?dry_run=true").await.0,
        202
    );
    assert_eq!(post("/api/v1/control/resume").await.0, 200);
    // A start of an unknown experiment is a clear 404.
    assert_eq!(post("/api/v1/chaos/nope/run").await.0, 404);
}

/// kill -9 while a fault is applied; the restarted server removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_a_fault_applied_ends_in_cleanup_on_restart() {
    let cluster = Cluster::get().await;
    cluster
        .install_chaos_mesh_crd("NetworkChaos", "networkchaos")
        .await;
    let ns = cluster.namespace("chaos-kill9").await;
    cluster.deployment(&ns, "web", 1, 8080).await;
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("slow.chaos.yaml"),
        format!(
            r#"version: 1
title: web is slowed for a long time
method:
  - id: delay
    uses: chaos.network_delay
    with: {{latency: 300ms}}
duration: 10m
blast_radius:
  namespaces: [{ns}]
  selector: app=web
  mode: all
  max_pods: 1
"#
        ),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("quench.yaml");
    std::fs::write(
        &config,
        format!(
            "kubernetes: {{kubeconfig: '{}'}}\n",
            cluster.kubeconfig.display()
        ),
    )
    .unwrap();
    let mut q = quench_tests::Quench::spawn(&config, &data.path().join("data"), rb.path(), None);
    let r = quench_tests::http()
        .post(format!("{}/api/v1/chaos/slow/run", q.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let collection = format!("/apis/chaos-mesh.org/v1alpha1/namespaces/{ns}/networkchaos");
    quench_tests::kube::wait_until(Duration::from_secs(30), "the fault applied", || async {
        !cluster.get_json(&collection).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    // Forbid (the default): a second run of the same experiment is refused.
    let r = quench_tests::http()
        .post(format!("{}/api/v1/chaos/slow/run", q.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    q.kill9();
    assert_eq!(
        cluster.get_json(&collection).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "the crash left the fault in place"
    );
    let q2 = quench_tests::Quench::spawn(&config, &data.path().join("data"), rb.path(), None);
    quench_tests::kube::wait_until(
        Duration::from_secs(30),
        "the fault removed after the restart",
        || async {
            cluster.get_json(&collection).await["items"]
                .as_array()
                .unwrap()
                .is_empty()
        },
    )
    .await;
    let audit = q2.get_json("/api/v1/audit").await;
    assert!(audit.to_string().contains("chaos.reconcile"), "{audit:#}");
}

/// A rollback that fails is recorded and escalated: the `escalate` steps
/// run (here a page to a local receiver).
#[tokio::test]
async fn a_failed_rollback_is_escalated() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("chaos-esc").await;
    cluster.deployment(&ns, "web", 1, 8080).await;
    let (pager, pages) = quench_tests::stub(|_| (202, json!({"status": "success"}))).await;
    let p = parts(&cluster);
    let exp = experiment(&format!(
        r#"version: 1
title: a rollback that cannot work
method:
  - id: kill
    uses: chaos.pod_kill
rollbacks:
  - id: impossible
    uses: k8s.wait
    with: {{kind: Deployment, name: not-there, namespace: {ns}, for: available, timeout_seconds: 1}}
escalate:
  - id: page
    uses: http.request
    with: {{method: POST, url: "{pager}/page", body: {{summary: "chaos rollback failed"}}}}
blast_radius:
  namespaces: [{ns}]
  selector: app=web
  mode: one
  max_pods: 1
"#
    ));
    let (opts, _abort) = options("r7");
    let v = run::run(&exp, &p.env(), opts).await;
    assert!(v.rollback_failed, "{v:#?}");
    assert!(!v.rollbacks[0].ok);
    assert_eq!(v.escalated.len(), 1);
    assert!(v.escalated[0].ok, "{v:#?}");
    let seen = pages.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].json()["summary"], "chaos rollback failed");
}

/// A stand-in API server for `chaos.netem`, which the simulated node
/// cannot run (no exec): it lists `pods` and answers every exec (a
/// WebSocket upgrade on `pods/NAME/exec`) with success, keeping each
/// exec's pod and command.
async fn netem_cluster(
    ns: String,
    pods: Vec<&'static str>,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<String>)>>>,
) {
    use futures_util::SinkExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let execs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let e = execs.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let e = e.clone();
            let ns = ns.clone();
            let pods = pods.clone();
            tokio::spawn(async move {
                let mut peek = [0u8; 4096];
                let n = sock.peek(&mut peek).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&peek[..n]).to_ascii_lowercase();
                if head.contains("upgrade: websocket") {
                    #[allow(clippy::result_large_err)]
                    let cb = |req: &Request, mut resp: Response| {
                        let uri = req.uri().to_string();
                        let pod = uri
                            .split("/pods/")
                            .nth(1)
                            .and_then(|r| r.split('/').next())
                            .unwrap_or("")
                            .to_string();
                        let argv: Vec<String> = uri
                            .split(['?', '&'])
                            .filter_map(|kv| kv.strip_prefix("command="))
                            .map(|v| v.replace("%25", "%"))
                            .collect();
                        e.lock().unwrap().push((pod, argv));
                        resp.headers_mut().insert(
                            "sec-websocket-protocol",
                            "v4.channel.k8s.io".parse().unwrap(),
                        );
                        Ok(resp)
                    };
                    if let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(sock, cb).await {
                        let mut status = vec![3u8];
                        status.extend_from_slice(br#"{"metadata":{},"status":"Success"}"#);
                        let _ = ws.send(Message::Binary(status.into())).await;
                        let _ = ws.close(None).await;
                    }
                    return;
                }
                let mut buf = vec![0u8; n];
                let _ = sock.read_exact(&mut buf).await;
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                let (status, body) = if path
                    .starts_with(&format!("/api/v1/namespaces/{ns}/pods?labelselector"))
                {
                    let items: Vec<serde_json::Value> = pods
                        .iter()
                        .map(|p| json!({"metadata": {"name": p, "namespace": ns}, "status": {"phase": "Running"}}))
                        .collect();
                    (200, json!({"kind": "PodList", "items": items}))
                } else {
                    (
                        404,
                        json!({"kind": "Status", "code": 404, "message": format!("{path} not stubbed")}),
                    )
                };
                let body = body.to_string();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, execs)
}

/// `chaos.netem` without Chaos Mesh: the capped number of pods get the
/// netem qdisc through exec, each value its own argument, and the cleanup
/// removes it from each.
#[tokio::test]
async fn netem_runs_tc_through_exec_in_capped_pods_and_cleans_up() {
    quench_tests::init_tls();
    let (url, execs) = netem_cluster("shop".into(), vec!["web-1", "web-2", "web-3"]).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{url}\"}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"),
    )
    .unwrap();
    let source = quench_connectors::k8s::KubeSource {
        kubeconfig: Some(kubeconfig),
        ..Default::default()
    };
    let p = Parts {
        kube: quench_connectors::k8s::KubeClient::new(source.clone()),
        http: quench_tests::http(),
        steps: quench_connectors::steps::Builtin::default().with_kube(std::sync::Arc::new(
            quench_connectors::k8s::KubeClient::new(source),
        )),
        ledger: MemoryLedger::default(),
    };
    let exp = experiment(
        r#"version: 1
title: web tolerates a slow network
method:
  - id: slow
    uses: chaos.netem
    with: {delay: 150ms, loss: 2}
blast_radius:
  namespaces: [shop]
  selector: app=web
  mode: all
  max_pods: 2
"#,
    );
    let (opts, _abort) = options("r8");
    let v = run::run(&exp, &p.env(), opts).await;
    assert_eq!(v.outcome, Outcome::Passed, "{v:#?}");
    assert_eq!(v.removed, ["r8/slow"]);
    let execs = execs.lock().unwrap().clone();
    assert_eq!(execs.len(), 4, "two pods in, two pods out: {execs:?}");
    let add = [
        "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "150ms", "loss", "2%",
    ];
    let del = ["tc", "qdisc", "del", "dev", "eth0", "root"];
    assert!(execs[..2].iter().all(|(_, a)| a == &add), "{execs:?}");
    assert!(execs[2..].iter().all(|(_, a)| a == &del), "{execs:?}");
    let mut added: Vec<&str> = execs[..2].iter().map(|(p, _)| p.as_str()).collect();
    let mut removed: Vec<&str> = execs[2..].iter().map(|(p, _)| p.as_str()).collect();
    added.sort();
    removed.sort();
    assert_eq!(added, removed, "cleaned up where it was added");
    assert!(p.ledger.entries().await.unwrap().is_empty());
}
