//! Remediation steps against the real API server of scripts/k8s-up.sh,
//! with its simulated node running the Deployments' pods. Each check reads
//! the object back from the API server.

use quench_connectors::steps::{StepError, StepRunner, StepType};
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
        let e = steps.run(step, &with).await.unwrap_err();
        assert!(
            matches!(&e, StepError::Params(m) if m.contains("not a valid Kubernetes name")),
            "{e}"
        );
    }
    // kube-system is denied by default, by quench, before the request.
    let e = steps
        .run(
            StepType::K8sRolloutRestart,
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
            &json!({"deployment": "nope", "namespace": ns, "replicas": 1}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Refused(m) if m.contains("not found")),
        "{e}"
    );
}
