//! Remediation steps against the real API server of scripts/k8s-up.sh,
//! with its simulated node running the Deployments' pods. Each check reads
//! the object back from the API server.

use quench_connectors::steps::{Call, StepError, StepRunner, StepType};
use quench_tests::kube::Cluster;
use serde_json::{Value, json};

async fn replicas(cluster: &Cluster, ns: &str, name: &str) -> i64 {
    cluster
        .get_json(&format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"))
        .await["spec"]["replicas"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn scale_absolute_relative_bounded_and_dry_run() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("scale").await;
    cluster.deployment(&ns, "web", 2, 8080).await;
    let steps = cluster.steps();
    let scale = |extra: Value| {
        let mut w = json!({"deployment": "web", "namespace": ns});
        w.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        w
    };

    // Dry-run: the API server answers, nothing changes.
    let out = steps
        .run(
            StepType::K8sScale,
            Call::default(),
            &scale(json!({"replicas": 4, "dry_run": true})),
        )
        .await
        .unwrap();
    assert_eq!(out["after"]["replicas"], 4, "{out}");
    assert_eq!(out["changed"], false);
    assert_eq!(replicas(&cluster, &ns, "web").await, 2);

    let out = steps
        .run(
            StepType::K8sScale,
            Call::default(),
            &scale(json!({"replicas": "+1", "max": 3})),
        )
        .await
        .unwrap();
    assert_eq!(out["before"]["replicas"], 2);
    assert_eq!(out["after"]["replicas"], 3);
    assert_eq!(out["revert"]["patch"], json!({"spec": {"replicas": 2}}));
    assert_eq!(replicas(&cluster, &ns, "web").await, 3);
    cluster.running_pods(&ns, "web", 3).await;

    // At the bound: a relative scale stops there.
    let out = steps
        .run(
            StepType::K8sScale,
            Call::default(),
            &scale(json!({"replicas": "+2", "max": 3})),
        )
        .await
        .unwrap();
    assert_eq!(
        (out["bounded"].clone(), out["changed"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(replicas(&cluster, &ns, "web").await, 3);

    let out = steps
        .run(
            StepType::K8sScale,
            Call::default(),
            &scale(json!({"replicas": "-5", "min": 1})),
        )
        .await
        .unwrap();
    assert_eq!(out["after"]["replicas"], 1, "{out}");
    assert_eq!(replicas(&cluster, &ns, "web").await, 1);
    cluster.running_pods(&ns, "web", 1).await;
}

#[tokio::test]
async fn rollout_restart_replaces_the_pods_and_records_the_before_state() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("restart").await;
    let old = cluster.deployment(&ns, "web", 2, 8080).await;
    let steps = cluster.steps();

    let out = steps
        .run(
            StepType::K8sRolloutRestart,
            Call::default(),
            &json!({"kind": "Deployment", "name": "web", "namespace": ns, "dry_run": true}),
        )
        .await
        .unwrap();
    assert_eq!(out["dry_run"], true);
    let d = cluster
        .get_json(&format!("/apis/apps/v1/namespaces/{ns}/deployments/web"))
        .await;
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_null(),
        "dry-run changed nothing: {d}"
    );

    let out = steps
        .run(
            StepType::K8sRolloutRestart,
            Call::default(),
            &json!({"deployment": "web", "namespace": ns, "timeout_seconds": 60}),
        )
        .await
        .unwrap();
    assert_eq!(out["rollout"], "complete", "{out}");
    assert_eq!(out["before"]["images"]["app"], "quench-testsvc:1");
    assert!(out["before"]["restarted_at"].is_null());
    let d = cluster
        .get_json(&format!("/apis/apps/v1/namespaces/{ns}/deployments/web"))
        .await;
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        out["restarted_at"]
    );
    let new = cluster.running_pods(&ns, "web", 2).await;
    assert!(
        new.iter().all(|p| !old.contains(p)),
        "every pod replaced: {old:?} -> {new:?}"
    );
}

#[tokio::test]
async fn bad_names_and_denied_namespaces_never_reach_the_api_server() {
    let cluster = Cluster::get().await;
    let steps = cluster.steps();
    for (step, with) in [
        (
            StepType::K8sScale,
            json!({"deployment": "web; rm -rf /", "namespace": "shop", "replicas": 1}),
        ),
        (
            StepType::K8sScale,
            json!({"deployment": "web", "namespace": "../kube-system", "replicas": 1}),
        ),
        (
            StepType::K8sRolloutRestart,
            json!({"name": "$(reboot)", "namespace": "shop"}),
        ),
    ] {
        let e = steps.run(step, Call::default(), &with).await.unwrap_err();
        assert!(
            matches!(&e, StepError::Params(m) if m.contains("not a valid Kubernetes name")),
            "{e}"
        );
    }
    // kube-system is denied by default, by quench, before the request.
    let e = steps
        .run(
            StepType::K8sRolloutRestart,
            Call::default(),
            &json!({"name": "coredns", "namespace": "kube-system"}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Refused(m) if m.contains("deny_namespaces")),
        "{e}"
    );
    // A Deployment that is not there: the API server's own answer.
    let ns = cluster.namespace("missing").await;
    let e = steps
        .run(
            StepType::K8sScale,
            Call::default(),
            &json!({"deployment": "nope", "namespace": ns, "replicas": 1}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Refused(m) if m.contains("not found")),
        "{e}"
    );
}

#[tokio::test]
async fn delete_pod_by_name_is_replaced_and_a_wide_selector_is_refused() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("delete").await;
    let pods = cluster.deployment(&ns, "web", 2, 8080).await;
    let steps = cluster.steps();

    let out = steps
        .run(
            StepType::K8sDeletePod,
            Call::default(),
            &json!({"pod": pods[0], "namespace": ns, "dry_run": true}),
        )
        .await
        .unwrap();
    assert_eq!(out["count"], 1);
    assert_eq!(
        cluster.running_pods(&ns, "web", 2).await,
        pods,
        "dry-run deleted nothing"
    );

    // More pods match than max allows: none is deleted.
    let e = steps
        .run(
            StepType::K8sDeletePod,
            Call::default(),
            &json!({"selector": "app=web", "namespace": ns, "max": 1}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Refused(m) if m.contains("matches 2 pods") && m.contains("none deleted")),
        "{e}"
    );
    assert_eq!(cluster.running_pods(&ns, "web", 2).await, pods);

    let out = steps
        .run(
            StepType::K8sDeletePod,
            Call::default(),
            &json!({"pod": pods[0], "namespace": ns, "grace_seconds": 0}),
        )
        .await
        .unwrap();
    assert_eq!(out["deleted"][0]["pod"], pods[0].as_str());
    assert_eq!(out["deleted"][0]["node"], "localhost");
    // The ReplicaSet replaces it.
    quench_tests::kube::wait_until(
        std::time::Duration::from_secs(30),
        "a replacement pod",
        || async {
            let now = cluster.running_pods(&ns, "web", 2).await;
            !now.contains(&pods[0])
        },
    )
    .await;
}

#[tokio::test]
async fn rollback_after_an_image_change_returns_to_the_previous_image() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("rollback").await;
    cluster.deployment(&ns, "web", 2, 8080).await;
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/web");
    // `kubectl set image`: a second revision with a new image.
    cluster
        .send(
            "PATCH",
            &path,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "quench-testsvc:2"}]}}}}),
            "application/strategic-merge-patch+json",
        )
        .await
        .unwrap();
    quench_tests::kube::wait_until(
        std::time::Duration::from_secs(60),
        "revision 2 rolled out",
        || async {
            let d = cluster.get_json(&path).await;
            d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
                && d["status"]["updatedReplicas"] == 2
                && d["status"]["availableReplicas"] == 2
                && d["status"]["replicas"] == 2
        },
    )
    .await;
    let steps = cluster.steps();
    let image = |d: &Value| d["spec"]["template"]["spec"]["containers"][0]["image"].clone();

    let out = steps
        .run(
            StepType::K8sRollback,
            Call::default(),
            &json!({"deployment": "web", "namespace": ns, "dry_run": true}),
        )
        .await
        .unwrap();
    assert_eq!(
        out["would_be"]["images"]["app"], "quench-testsvc:1",
        "{out}"
    );
    assert_eq!(
        image(&cluster.get_json(&path).await),
        "quench-testsvc:2",
        "dry-run"
    );

    let out = steps
        .run(
            StepType::K8sRollback,
            Call::default(),
            &json!({"deployment": "web", "namespace": ns, "timeout_seconds": 60}),
        )
        .await
        .unwrap();
    assert_eq!(
        (out["from_revision"].clone(), out["to_revision"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(out["before"]["images"]["app"], "quench-testsvc:2");
    assert_eq!(out["after"]["images"]["app"], "quench-testsvc:1");
    assert_eq!(out["rollout"], "complete");
    let d = cluster.get_json(&path).await;
    assert_eq!(image(&d), "quench-testsvc:1");
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
}

/// Cordon, uncordon and drain, on the tainted second node that only these
/// pods use: a PodDisruptionBudget stops the drain, DaemonSet pods stay,
/// dry-run changes nothing.
#[tokio::test]
async fn cordon_and_drain_honour_budgets_and_dry_run() {
    let cluster = Cluster::get().await;
    let node = cluster.drain_node();
    cluster.clear_drain_node().await;
    let ns = cluster.namespace("drain").await;
    let pods = cluster.deployment_on_drain_node(&ns, "web", 2).await;
    cluster
        .send(
            "POST",
            &format!("/apis/apps/v1/namespaces/{ns}/daemonsets"),
            json!({"metadata": {"name": "agent"}, "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "tolerations": [{"key": "quench.dev/drain-test", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": "agent", "image": "agent:1"}]}}}}),
            "application/json",
        )
        .await
        .unwrap();
    let agent = cluster.running_pods(&ns, "agent", 1).await;
    let steps = cluster.steps();
    let unschedulable = || async {
        cluster.get_json(&format!("/api/v1/nodes/{node}")).await["spec"]["unschedulable"]
            .as_bool()
            .unwrap_or(false)
    };

    let out = steps
        .run(
            StepType::K8sCordon,
            Call::default(),
            &json!({"node": node, "dry_run": true}),
        )
        .await
        .unwrap();
    assert_eq!(out["after"]["unschedulable"], true, "{out}");
    assert!(!unschedulable().await, "dry-run");
    let out = steps
        .run(StepType::K8sCordon, Call::default(), &json!({"node": node}))
        .await
        .unwrap();
    assert_eq!(out["before"]["unschedulable"], false);
    assert!(unschedulable().await);
    let out = steps
        .run(
            StepType::K8sUncordon,
            Call::default(),
            &json!({"node": node}),
        )
        .await
        .unwrap();
    assert_eq!(out["before"]["unschedulable"], true);
    assert!(!unschedulable().await);

    // A budget that allows no disruption: nothing is evicted.
    cluster
        .send(
            "POST",
            &format!("/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets"),
            json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 2,
                   "selector": {"matchLabels": {"app": "web"}}}}),
            "application/json",
        )
        .await
        .unwrap();
    // The disruption controller must have counted the pods first.
    quench_tests::kube::wait_until(
        std::time::Duration::from_secs(30),
        "the budget observed",
        || async {
            let pdb = cluster
                .get_json(&format!(
                    "/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets/web"
                ))
                .await;
            pdb["status"]["currentHealthy"] == 2
        },
    )
    .await;
    let e = steps
        .run(
            StepType::K8sDrain,
            Call::default(),
            &json!({"node": node, "timeout_seconds": 3}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Failed(m) if m.contains("a disruption budget blocks") && m.contains("evicted 0 of 2")),
        "{e}"
    );
    assert_eq!(cluster.running_pods(&ns, "web", 2).await, pods);
    steps
        .run(
            StepType::K8sUncordon,
            Call::default(),
            &json!({"node": node}),
        )
        .await
        .unwrap();
    cluster
        .send(
            "DELETE",
            &format!("/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets/web"),
            json!({}),
            "application/json",
        )
        .await
        .unwrap();

    let out = steps
        .run(
            StepType::K8sDrain,
            Call::default(),
            &json!({"node": node, "dry_run": true}),
        )
        .await
        .unwrap();
    assert_eq!(out["evicted"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(out["eviction_api"], "policy/v1beta1");
    assert_eq!(cluster.running_pods(&ns, "web", 2).await, pods, "dry-run");
    assert!(!unschedulable().await, "dry-run");

    let out = steps
        .run(
            StepType::K8sDrain,
            Call::default(),
            &json!({"node": node, "grace_seconds": 0, "timeout_seconds": 60}),
        )
        .await
        .unwrap();
    let evicted: Vec<&str> = out["evicted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(evicted.len(), 2, "{out}");
    for p in &pods {
        assert!(evicted.contains(&format!("{ns}/{p}").as_str()), "{out}");
    }
    assert_eq!(out["left"][0]["why"], "DaemonSet pod", "{out}");
    assert!(unschedulable().await, "a drained node stays cordoned");
    assert_eq!(
        cluster.running_pods(&ns, "agent", 1).await,
        agent,
        "the DaemonSet pod stays"
    );
    steps
        .run(
            StepType::K8sRevert,
            Call::default(),
            &json!({"revert": out["revert"]}),
        )
        .await
        .unwrap();
    assert!(!unschedulable().await, "the revert uncordons");
}

#[tokio::test]
async fn patch_a_custom_resource_and_revert_it() {
    let cluster = Cluster::get().await;
    cluster.install_podchaos_crd().await;
    let ns = cluster.namespace("patch").await;
    let collection = format!("/apis/chaos-mesh.org/v1alpha1/namespaces/{ns}/podchaos");
    cluster
        .send(
            "POST",
            &collection,
            json!({"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "PodChaos",
                   "metadata": {"name": "kill-web"},
                   "spec": {"action": "pod-kill", "mode": "one", "selector": {"labelSelectors": {"app": "web"}}}}),
            "application/json",
        )
        .await
        .unwrap();
    let steps = cluster.steps();
    let with = |dry: bool| {
        json!({"api_version": "chaos-mesh.org/v1alpha1", "resource": "podchaos", "kind": "PodChaos",
               "namespace": ns, "name": "kill-web", "type": "merge", "dry_run": dry,
               "patch": {"metadata": {"annotations": {"experiment.chaos-mesh.org/pause": "true"}},
                         "spec": {"mode": "all"}}})
    };
    let read = || async { cluster.get_json(&format!("{collection}/kill-web")).await };
    steps
        .run(StepType::K8sPatch, Call::default(), &with(true))
        .await
        .unwrap();
    assert_eq!(read().await["spec"]["mode"], "one", "dry-run");
    let out = steps
        .run(StepType::K8sPatch, Call::default(), &with(false))
        .await
        .unwrap();
    let now = read().await;
    assert_eq!(now["spec"]["mode"], "all");
    assert_eq!(
        now["metadata"]["annotations"]["experiment.chaos-mesh.org/pause"],
        "true"
    );
    assert_eq!(
        out["revert"]["patch"],
        json!({"metadata": {"annotations": null}, "spec": {"mode": "one"}}),
        "{out}"
    );
    // The revert record as a runbook passes it: JSON text from a template.
    let record = out["revert"].to_string();
    steps
        .run(
            StepType::K8sRevert,
            Call::default(),
            &json!({"revert": record}),
        )
        .await
        .unwrap();
    let back = read().await;
    assert_eq!(back["spec"]["mode"], "one");
    assert!(back["metadata"]["annotations"].is_null(), "{back}");
}

#[tokio::test]
async fn a_scale_is_reverted_from_its_record() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("revert").await;
    cluster.deployment(&ns, "web", 2, 8080).await;
    let steps = cluster.steps();
    let out = steps
        .run(
            StepType::K8sScale,
            Call::default(),
            &json!({"deployment": "web", "namespace": ns, "replicas": 3}),
        )
        .await
        .unwrap();
    assert_eq!(replicas(&cluster, &ns, "web").await, 3);
    steps
        .run(
            StepType::K8sRevert,
            Call::default(),
            &json!({"revert": out["revert"]}),
        )
        .await
        .unwrap();
    assert_eq!(replicas(&cluster, &ns, "web").await, 2);
    // A forged record gets the same checks as a runbook's own parameters.
    let mut forged = out["revert"].clone();
    forged["object"]["namespace"] = json!("kube-system");
    let e = steps
        .run(
            StepType::K8sRevert,
            Call::default(),
            &json!({"revert": forged}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Refused(m) if m.contains("deny_namespaces")),
        "{e}"
    );
}

fn restart_runbook(dir: &std::path::Path) {
    std::fs::write(
        dir.join("restart.yaml"),
        r#"version: 1
name: restart-on-leak
match:
  matchers: ['alertname="GoroutineLeak"']
steps:
  - id: restart
    uses: k8s.rollout_restart
    timeout: 90s
    with:
      kind: Deployment
      name: '{{k8s_name alert.labels.deployment}}'
      namespace: '{{k8s_name alert.labels.namespace}}'
      timeout_seconds: 60
"#,
    )
    .unwrap();
}

async fn fire(q: &quench_tests::Quench, ns: &str) {
    let alert = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing",
                    "labels": {"alertname": "GoroutineLeak", "namespace": ns, "deployment": "web"},
                    "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "leak"}]});
    let r = quench_tests::http()
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Alert → runbook → rollout restart on the real API server; the incident
/// keeps the action, its before-state and revert record, and the audit log
/// the action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_restarts_a_deployment_through_the_binary() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("e2e-restart").await;
    let old = cluster.deployment(&ns, "web", 2, 8080).await;
    let rb = tempfile::tempdir().unwrap();
    restart_runbook(rb.path());
    let q = quench_tests::Quench::start(
        &format!(
            "kubernetes: {{kubeconfig: '{}'}}\n",
            cluster.kubeconfig.display()
        ),
        rb.path(),
    );
    fire(&q, &ns).await;
    let inc = q
        .wait_for(
            "/api/v1/incidents/inc-1",
            std::time::Duration::from_secs(90),
            |d| {
                let s = &d["steps"][0]["state"];
                (s == "succeeded" || s == "failed").then(|| d.clone())
            },
        )
        .await;
    let step = &inc["steps"][0];
    assert_eq!(step["state"], "succeeded", "{inc:#}");
    assert_eq!(step["output"]["rollout"], "complete");
    assert_eq!(
        step["output"]["before"]["images"]["app"],
        "quench-testsvc:1"
    );
    assert_eq!(step["output"]["revert"]["object"]["name"], "web");
    let new = cluster.running_pods(&ns, "web", 2).await;
    assert!(new.iter().all(|p| !old.contains(p)), "{old:?} -> {new:?}");
    let audit = q.get_json("/api/v1/audit?incident=inc-1").await;
    assert!(
        audit.to_string().contains("k8s.rollout_restart succeeded"),
        "{audit:#}"
    );
}

/// The engine's dry-run mode asks the API server and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_dry_run_asks_the_api_server_and_changes_nothing() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("e2e-dry").await;
    cluster.deployment(&ns, "web", 1, 8080).await;
    let rb = tempfile::tempdir().unwrap();
    restart_runbook(rb.path());
    let q = quench_tests::Quench::start(
        &format!(
            "kubernetes: {{kubeconfig: '{}'}}\nexecutor: {{dry_run: true}}\n",
            cluster.kubeconfig.display()
        ),
        rb.path(),
    );
    fire(&q, &ns).await;
    let inc = q
        .wait_for(
            "/api/v1/incidents/inc-1",
            std::time::Duration::from_secs(60),
            |d| (d["steps"][0]["state"] == "dry_run").then(|| d.clone()),
        )
        .await;
    let step = &inc["steps"][0];
    assert_eq!(step["output"]["dry_run"], true, "{inc:#}");
    assert!(
        step["reason"]
            .as_str()
            .unwrap()
            .contains("API server checked it")
    );
    let d = cluster
        .get_json(&format!("/apis/apps/v1/namespaces/{ns}/deployments/web"))
        .await;
    assert!(
        d["spec"]["template"]["metadata"]["annotations"].is_null(),
        "nothing changed: {d}"
    );
}

#[tokio::test]
async fn apply_creates_then_updates_server_side_and_dry_run_changes_nothing() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("apply").await;
    let steps = cluster.steps();
    let manifest = |flag: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "flags", "namespace": ns},
               "data": {"slow_path": flag}})
    };
    let read = || async {
        cluster
            .get_json(&format!("/api/v1/namespaces/{ns}/configmaps/flags"))
            .await
    };
    let out = steps
        .run(
            StepType::K8sApply,
            Call::default(),
            &json!({"manifest": manifest("on")}),
        )
        .await
        .unwrap();
    assert_eq!(out["created"], true, "{out}");
    assert_eq!(read().await["data"]["slow_path"], "on");
    let cm = read().await;
    assert!(
        cm["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["manager"] == "quench" && f["operation"] == "Apply"),
        "quench is the field manager: {cm}"
    );
    steps
        .run(
            StepType::K8sApply,
            Call::default(),
            &json!({"manifest": manifest("off"), "dry_run": true}),
        )
        .await
        .unwrap();
    assert_eq!(read().await["data"]["slow_path"], "on", "dry-run");
    let out = steps
        .run(
            StepType::K8sApply,
            Call::default(),
            &json!({"manifest": manifest("off")}),
        )
        .await
        .unwrap();
    assert_eq!(read().await["data"]["slow_path"], "off");
    assert_eq!(out["revert"]["patch"], json!({"data": {"slow_path": "on"}}));
}

#[tokio::test]
async fn wait_for_available_deleted_and_a_timeout_that_says_what_it_saw() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("wait").await;
    let pods = cluster.deployment(&ns, "web", 1, 8080).await;
    let steps = cluster.steps();
    let out = steps
        .run(
            StepType::K8sWait,
            Call::default(),
            &json!({"kind": "Deployment", "name": "web", "namespace": ns, "for": "available"}),
        )
        .await
        .unwrap();
    assert_eq!(out["for"], "available");
    steps
        .run(
            StepType::K8sWait,
            Call::default(),
            &json!({"kind": "Pod", "name": pods[0], "namespace": ns, "for": "ready"}),
        )
        .await
        .unwrap();
    let e = steps
        .run(
            StepType::K8sWait,
            Call::default(),
            &json!({"kind": "Pod", "name": pods[0], "namespace": ns,
                    "for": "condition:Quenched", "timeout_seconds": 2}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Failed(m) if m.contains("not condition:Quenched after 2s") && m.contains("Running")),
        "{e}"
    );
    steps
        .run(
            StepType::K8sDeletePod,
            Call::default(),
            &json!({"pod": pods[0], "namespace": ns, "grace_seconds": 0}),
        )
        .await
        .unwrap();
    steps
        .run(
            StepType::K8sWait, Call::default(),
            &json!({"kind": "Pod", "name": pods[0], "namespace": ns, "for": "deleted", "timeout_seconds": 30}),
        )
        .await
        .unwrap();
}

/// The API server goes away mid-runbook: the next Kubernetes step fails
/// within its timeout, is retried per its policy, and the incident ends
/// escalated with the error recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_going_away_mid_runbook_escalates_with_the_error() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("e2e-down").await;
    cluster.deployment(&ns, "web", 1, 8080).await;
    let proxy = quench_tests::kube::ApiProxy::start("127.0.0.1:6443").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = proxy.kubeconfig(&cluster.kubeconfig, dir.path());
    // Where on_failure pages: a local receiver that counts the pages.
    let (pager, pages) = quench_tests::stub(|_| (200, json!({}))).await;
    let pager = format!("{pager}/page");
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("down.yaml"),
        format!(
            r#"version: 1
name: scale-then-restart
match:
  matchers: ['alertname="GoroutineLeak"']
steps:
  - id: scale
    uses: k8s.scale
    with: {{deployment: '{{{{alert.labels.deployment}}}}', namespace: '{{{{alert.labels.namespace}}}}', replicas: 2}}
  - id: pause
    uses: wait
    with: {{seconds: 3}}
  - id: restart
    uses: k8s.rollout_restart
    timeout: 5s
    retries: {{attempts: 2, backoff: 1s}}
    with: {{deployment: '{{{{alert.labels.deployment}}}}', namespace: '{{{{alert.labels.namespace}}}}'}}
on_failure:
  - id: page
    uses: http.request
    with: {{method: POST, url: "{pager}", body: "restart failed"}}
"#
        ),
    )
    .unwrap();
    let q = quench_tests::Quench::start(
        &format!("kubernetes: {{kubeconfig: '{}'}}\n", kubeconfig.display()),
        rb.path(),
    );
    fire(&q, &ns).await;
    q.wait_for(
        "/api/v1/incidents/inc-1",
        std::time::Duration::from_secs(30),
        |d| (d["steps"][0]["state"] == "succeeded").then_some(()),
    )
    .await;
    // The scale went through; now the API server is gone.
    proxy.stop();
    let inc = q
        .wait_for(
            "/api/v1/incidents/inc-1",
            std::time::Duration::from_secs(60),
            |d| (d["status"] == "escalated" || d["status"] == "failed").then(|| d.clone()),
        )
        .await;
    assert_eq!(inc["status"], "escalated", "{inc:#}");
    let restart = &inc["steps"][2];
    assert_eq!(restart["state"], "failed", "{inc:#}");
    assert_eq!(
        restart["attempts"], 3,
        "one try and two retries: {restart:#}"
    );
    let reason = restart["reason"].as_str().unwrap();
    assert!(
        reason.contains("API server") || reason.contains("timed out"),
        "the error is recorded: {reason}"
    );
    assert_eq!(pages.lock().unwrap().len(), 1, "paged once");
    assert_eq!(
        replicas(&cluster, &ns, "web").await,
        2,
        "the first step's change stands"
    );
}
