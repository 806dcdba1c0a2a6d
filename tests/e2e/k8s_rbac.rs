//! The shipped least-privilege RBAC (`deploy/rbac.yaml`), applied to the
//! real API server: quench running with that ServiceAccount's token can do
//! what its step types need in a namespace it is bound in, and the API
//! server itself refuses it anywhere else.

use base64::Engine as _;
use quench_connectors::k8s::{KubeClient, KubeSource};
use quench_connectors::steps::{Builtin, Call, StepError, StepRunner, StepType};
use quench_tests::kube::Cluster;
use serde_json::{Value, json};

/// The API path of a manifest's object.
fn path_of(m: &Value) -> String {
    let kind = m["kind"].as_str().unwrap();
    let name = m["metadata"]["name"].as_str().unwrap();
    let ns = m["metadata"]["namespace"].as_str();
    let (base, plural) = match kind {
        "ServiceAccount" => ("/api/v1", "serviceaccounts"),
        "ClusterRole" => ("/apis/rbac.authorization.k8s.io/v1", "clusterroles"),
        "ClusterRoleBinding" => ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings"),
        "RoleBinding" => ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
        "Role" => ("/apis/rbac.authorization.k8s.io/v1", "roles"),
        "Namespace" => ("/api/v1", "namespaces"),
        "ConfigMap" => ("/api/v1", "configmaps"),
        "Secret" => ("/api/v1", "secrets"),
        "Service" => ("/api/v1", "services"),
        "StatefulSet" => ("/apis/apps/v1", "statefulsets"),
        "NetworkPolicy" => ("/apis/networking.k8s.io/v1", "networkpolicies"),
        other => panic!("no path for {other}"),
    };
    match ns {
        Some(ns) => format!("{base}/namespaces/{ns}/{plural}/{name}"),
        None => format!("{base}/{plural}/{name}"),
    }
}

async fn apply(cluster: &Cluster, m: &Value) {
    cluster
        .send(
            "PATCH",
            &format!("{}?fieldManager=quench-test&force=true", path_of(m)),
            m.clone(),
            "application/apply-patch+yaml",
        )
        .await
        .unwrap_or_else(|e| panic!("apply {}: {e}", path_of(m)));
}

fn manifests(file: &str) -> Vec<Value> {
    let text =
        std::fs::read_to_string(quench_tests::repo_root().join("deploy").join(file)).unwrap();
    serde_saphyr::from_str_multiple(&text).unwrap()
}

/// Applies the shipped RBAC and binds it in a fresh namespace; returns that
/// namespace and another one it is not bound in.
async fn install_rbac(cluster: &Cluster, bound: &str, unbound: &str) -> (String, String) {
    match cluster
        .send(
            "POST",
            "/api/v1/namespaces",
            json!({"metadata": {"name": "quench-system"}}),
            "application/json",
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
    // The node rights are a file of their own, applied only by those
    // whose runbooks cordon or drain; this test runs every step type.
    for m in manifests("rbac.yaml")
        .into_iter()
        .chain(manifests("rbac-nodes.yaml"))
    {
        apply(cluster, &m).await;
    }
    let ns = cluster.namespace(bound).await;
    let other = cluster.namespace(unbound).await;
    for mut m in manifests("rolebinding-example.yaml") {
        m["metadata"]["namespace"] = json!(ns);
        apply(cluster, &m).await;
    }
    (ns, other)
}

/// A kubeconfig that authenticates as the `quench` ServiceAccount of
/// quench-system (its token, as the token controller writes it).
async fn quench_kubeconfig(cluster: &Cluster, dir: &std::path::Path) -> std::path::PathBuf {
    // The token controller writes the ServiceAccount's token secret.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let token = loop {
        let sa = cluster
            .get_json("/api/v1/namespaces/quench-system/serviceaccounts/quench")
            .await;
        if let Some(secret) = sa["secrets"][0]["name"].as_str() {
            let s = cluster
                .get_json(&format!(
                    "/api/v1/namespaces/quench-system/secrets/{secret}"
                ))
                .await;
            if let Some(t) = s["data"]["token"].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD.decode(t).unwrap();
                break String::from_utf8(bytes).unwrap();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no token for the quench ServiceAccount"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let admin = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let ca = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority: "))
        .unwrap()
        .to_string();
    let server = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    let kubeconfig = dir.join("quench.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\", certificate-authority: \"{ca}\"}}\nusers:\n- name: quench\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: q\n  context: {{cluster: c, user: quench}}\ncurrent-context: q\n"
        ),
    )
    .unwrap();
    kubeconfig
}

/// quench's steps with the ServiceAccount's token, and no namespace scope
/// of quench's own: whatever is refused, the API server refuses.
async fn steps_as_quench(cluster: &Cluster, dir: &std::path::Path) -> Builtin {
    let kubeconfig = quench_kubeconfig(cluster, dir).await;
    Builtin::default().with_kube(std::sync::Arc::new(KubeClient::new(KubeSource {
        kubeconfig: Some(kubeconfig),
        deny_namespaces: Vec::new(),
        ..KubeSource::default()
    })))
}

#[tokio::test]
async fn the_shipped_rbac_allows_every_step_in_its_namespace_and_the_api_server_refuses_the_rest() {
    let cluster = Cluster::get().await;
    cluster.clear_drain_node().await;
    let (ns, other) = install_rbac(&cluster, "rbac-ok", "rbac-other").await;
    cluster.deployment(&ns, "web", 1, 8080).await;
    cluster.deployment(&other, "web", 1, 8080).await;
    // A drain empties the node of every namespace's pods: one of a
    // namespace quench is not bound in sits on the drain node.
    let pinned = cluster.deployment_on_drain_node(&other, "pinned", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let steps = steps_as_quench(&cluster, dir.path()).await;
    let run = |t: StepType, w: Value| {
        let steps = &steps;
        async move { steps.run(t, Call::default(), &w).await }
    };

    // Every Kubernetes step type of the registry, in the bound namespace.
    // The match has no catch-all: a new step type does not compile until
    // it is listed here, with parameters or as one that needs no RBAC.
    let pods = cluster.running_pods(&ns, "web", 1).await;
    let mut outputs: std::collections::HashMap<StepType, Value> = std::collections::HashMap::new();
    let mut ran = Vec::new();
    for t in StepType::ALL.iter().copied() {
        let w = match t {
            StepType::K8sEvents => json!({"namespace": ns}),
            StepType::K8sScale => json!({"deployment": "web", "namespace": ns, "replicas": 2}),
            StepType::K8sRolloutRestart => {
                json!({"deployment": "web", "namespace": ns, "timeout_seconds": 60})
            }
            StepType::K8sRollback => {
                json!({"deployment": "web", "namespace": ns, "timeout_seconds": 60})
            }
            StepType::K8sWait => {
                json!({"kind": "Deployment", "name": "web", "namespace": ns, "for": "available"})
            }
            StepType::K8sApply => json!({"manifest": {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "flags", "namespace": ns}, "data": {"a": "1"}}}),
            StepType::K8sPatch => json!({"kind": "Deployment", "name": "web", "namespace": ns,
                "patch": {"metadata": {"annotations": {"quench.dev/rbac": "2"}}}}),
            StepType::K8sRevert => json!({"revert": outputs[&StepType::K8sScale]["revert"]}),
            StepType::K8sDeletePod => json!({"pod": pods[0], "namespace": ns}),
            StepType::K8sDrain => {
                json!({"node": cluster.drain_node(), "dry_run": true, "timeout_seconds": 20})
            }
            StepType::K8sCordon | StepType::K8sUncordon => {
                json!({"node": cluster.drain_node(), "dry_run": true})
            }
            StepType::K8sLogs => json!({"pod": pods[0], "namespace": ns}),
            StepType::K8sExec => json!({"pod": pods[0], "namespace": ns, "argv": ["/bin/true"]}),
            // perf.record's Job is created in its own namespace; its rights
            // are tested with the Job in k8s_evidence.rs. The others call
            // no API server.
            StepType::PerfRecord
            | StepType::PprofCapture
            | StepType::TraceCapture
            | StepType::GoroutineDump
            | StepType::PromqlQuery
            | StepType::PromqlRange
            | StepType::PromqlVerify
            | StepType::MetricsScrape
            | StepType::ArgocdSync
            | StepType::ArgocdRollback
            | StepType::HttpRequest
            | StepType::NotifySlack
            | StepType::PagerdutyEvent
            | StepType::Wait => continue,
        };
        let r = run(t, w).await;
        match t {
            // Logs and exec are allowed: the refusal is the simulated
            // node's (it has no streaming endpoint), not RBAC's. By the
            // time exec runs, the restart and the deletion above may have
            // replaced the pod: a 404 has passed RBAC too (a refusal would
            // be a 403).
            StepType::K8sLogs | StepType::K8sExec => {
                let e = r.unwrap_err().to_string();
                assert!(
                    e.contains("no preferred addresses")
                        || (t == StepType::K8sExec && e.contains("HTTP 404")),
                    "{t}: {e}"
                );
                assert!(!e.contains("403") && !e.contains("forbidden"), "{t}: {e}");
            }
            _ => {
                outputs.insert(t, r.unwrap_or_else(|e| panic!("{t}: {e}")));
            }
        }
        ran.push(t);
    }
    assert_eq!(ran.len(), 14, "{ran:?}");
    let drained = &outputs[&StepType::K8sDrain];
    assert!(
        drained["evicted"]
            .as_array()
            .is_some_and(|e| e.contains(&json!(format!("{other}/{}", pinned[0])))),
        "the drain evicts (dry-run) a pod of a namespace quench is not bound in: {drained}"
    );

    // Elsewhere the API server says no, although quench itself would allow it.
    for (t, w) in [
        (
            StepType::K8sScale,
            json!({"deployment": "web", "namespace": other, "replicas": 2}),
        ),
        (StepType::K8sEvents, json!({"namespace": other})),
        (
            StepType::K8sExec,
            json!({"pod": "web", "namespace": other, "argv": ["/bin/true"]}),
        ),
        (
            StepType::K8sRolloutRestart,
            json!({"deployment": "web", "namespace": other}),
        ),
    ] {
        let e = run(t, w).await.unwrap_err();
        assert!(
            matches!(&e, StepError::Refused(m) if m.contains("HTTP 403") && m.contains("system:serviceaccount:quench-system:quench")),
            "{t:?}: {e}"
        );
    }
}

/// The same, through the binary: quench running with the ServiceAccount's
/// kubeconfig scales in its namespace, and the API server refuses it in
/// another (the incident records the refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quench_runs_with_the_service_accounts_token() {
    let cluster = Cluster::get().await;
    let (ns, other) = install_rbac(&cluster, "rbac-bin", "rbac-bin-other").await;
    cluster.deployment(&ns, "web", 1, 8080).await;
    cluster.deployment(&other, "web", 1, 8080).await;
    let dir = tempfile::tempdir().unwrap();
    steps_as_quench(&cluster, dir.path()).await;
    let kubeconfig = dir.path().join("quench.kubeconfig");
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("scale.yaml"),
        "version: 1\nname: scale\nmatch:\n  matchers: ['alertname=\"Saturated\"']\ngroup_by: [namespace]\nsteps:\n  - id: scale\n    uses: k8s.scale\n    with: {deployment: web, namespace: '{{k8s_name alert.labels.namespace}}', replicas: 2}\n",
    )
    .unwrap();
    let q = quench_tests::Quench::start(
        &format!(
            "kubernetes: {{kubeconfig: '{}', deny_namespaces: []}}\n",
            kubeconfig.display()
        ),
        rb.path(),
    );
    let alert = |namespace: &str, fp: &str| {
        json!({"version": "4", "groupKey": fp, "status": "firing", "receiver": "quench",
               "alerts": [{"status": "firing", "labels": {"alertname": "Saturated", "namespace": namespace},
                           "startsAt": "2026-11-27T10:00:00Z", "fingerprint": fp}]})
    };
    let http = quench_tests::http();
    for (namespace, fp) in [(ns.as_str(), "a"), (other.as_str(), "b")] {
        let r = http
            .post(format!("{}/hooks/alertmanager", q.url))
            .json(&alert(namespace, fp))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut by_ns = std::collections::HashMap::new();
    for id in ["inc-1", "inc-2"] {
        let inc = q
            .wait_for(
                &format!("/api/v1/incidents/{id}"),
                std::time::Duration::from_secs(60),
                |d| {
                    let s = &d["steps"][0]["state"];
                    (s == "succeeded" || s == "failed").then(|| d.clone())
                },
            )
            .await;
        by_ns.insert(
            inc["alerts"][0]["labels"]["namespace"]
                .as_str()
                .unwrap()
                .to_string(),
            inc,
        );
    }
    assert_eq!(
        by_ns[&ns]["steps"][0]["state"], "succeeded",
        "{:#}",
        by_ns[&ns]
    );
    let refused = &by_ns[&other]["steps"][0];
    assert_eq!(refused["state"], "failed");
    assert!(
        refused["reason"].as_str().unwrap().contains("HTTP 403")
            && refused["reason"]
                .as_str()
                .unwrap()
                .contains("system:serviceaccount:quench-system:quench"),
        "{refused:#}"
    );
    let replicas = |n: &str| {
        let n = n.to_string();
        let cluster = &cluster;
        async move {
            cluster
                .get_json(&format!("/apis/apps/v1/namespaces/{n}/deployments/web"))
                .await["spec"]["replicas"]
                .clone()
        }
    };
    assert_eq!(replicas(&ns).await, 2);
    assert_eq!(replicas(&other).await, 1);
}

/// deploy/quench-ha.yaml is accepted by the API server (server-side dry
/// run; its PodDisruptionBudget is policy/v1, newer than the test
/// server), and deploy/rbac-ha.yaml lets the quench ServiceAccount make
/// exactly the Lease calls: its Lease in its namespace, nothing in
/// another. A real quench with that account's token then leads.
#[tokio::test]
async fn the_ha_manifests_apply_and_let_exactly_the_lease_calls_through() {
    use k8s_openapi::api::coordination::v1::Lease;
    let cluster = Cluster::get().await;
    let (_ns, other) = install_rbac(&cluster, "ha-rbac", "ha-other").await;
    for m in manifests("rbac-ha.yaml") {
        apply(&cluster, &m).await;
    }
    for m in manifests("quench-ha.yaml") {
        if m["kind"] == "PodDisruptionBudget" {
            assert_eq!(m["apiVersion"], "policy/v1");
            continue;
        }
        cluster
            .send(
                "PATCH",
                &format!(
                    "{}?fieldManager=quench-test&force=true&dryRun=All",
                    path_of(&m)
                ),
                m.clone(),
                "application/apply-patch+yaml",
            )
            .await
            .unwrap_or_else(|e| panic!("{} does not apply: {e}", path_of(&m)));
    }
    let admin: kube::Api<Lease> = kube::Api::namespaced(cluster.client.clone(), "quench-system");
    let _ = admin.delete("quench", &Default::default()).await;

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = quench_kubeconfig(&cluster, dir.path()).await;
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let me = kube::Client::try_from(config).unwrap();
    let mine: kube::Api<Lease> = kube::Api::namespaced(me.clone(), "quench-system");
    let lease = |name: &str| -> Lease {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"holderIdentity": "t"}}))
            .unwrap()
    };
    let created = mine
        .create(&Default::default(), &lease("quench"))
        .await
        .expect("create its Lease");
    mine.get("quench").await.expect("get its Lease");
    mine.replace("quench", &Default::default(), &created)
        .await
        .expect("update its Lease");
    let refused = |r: Result<Lease, kube::Error>, what: &str| match r {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{what}: {e:?}"),
        other => panic!("{what} was not refused: {other:?}"),
    };
    refused(mine.get("someone-else").await, "another Lease's name");
    let theirs: kube::Api<Lease> = kube::Api::namespaced(me.clone(), &other);
    refused(
        theirs.create(&Default::default(), &lease("quench")).await,
        "a Lease in another namespace",
    );
    refused(theirs.get("quench").await, "a Lease in another namespace");
    admin.delete("quench", &Default::default()).await.unwrap();

    // A real replica with only these rights takes the Lease.
    let rb = tempfile::tempdir().unwrap();
    let port = quench_tests::free_port();
    let cfg = dir.path().join("quench.yaml");
    std::fs::write(
        &cfg,
        format!(
            "kubernetes: {{kubeconfig: '{}'}}\nha:\n  enabled: true\n  namespace: quench-system\n  identity: quench-0\n  advertise_url: http://127.0.0.1:{port}\n  peer_token: t0ken\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let q = quench_tests::Quench::spawn(&cfg, &dir.path().join("data"), rb.path(), Some(port));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = q.get_json("/readyz").await;
        if v["ha"]["role"] == "leader" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never led: {v:#}\n{}",
            q.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let held = admin.get("quench").await.unwrap();
    assert_eq!(
        held.spec.unwrap().holder_identity.as_deref(),
        Some("quench-0")
    );
    drop(q);
    admin.delete("quench", &Default::default()).await.unwrap();
}
