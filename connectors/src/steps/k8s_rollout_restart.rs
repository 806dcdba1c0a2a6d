//! `k8s.rollout_restart`: what `kubectl rollout restart` does (a
//! `kubectl.kubernetes.io/restartedAt` annotation on the pod template),
//! then waiting for the rollout to complete, as `kubectl rollout status`
//! judges it, within `timeout_seconds`.
//!
//! ```yaml
//! - id: restart
//!   uses: k8s.rollout_restart
//!   with: {kind: Deployment, name: "{{k8s_name alert.labels.deployment}}", namespace: shop}
//! ```

use super::{Acts, Step, StepCtx};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::StepError;
use crate::k8s::Kube;
use crate::k8s::objects::{self, ObjectRef};

/// The annotation kubectl sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// `Deployment` (default), `StatefulSet` or `DaemonSet`.
    #[serde(default = "super::k8s_scale::deployment")]
    pub kind: String,
    /// Its name.
    #[serde(alias = "deployment")]
    pub name: String,
    /// Its namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Wait for the rollout to complete (default true).
    #[serde(default = "yes")]
    pub wait: bool,
    /// How long to wait (default 300).
    #[serde(default = "five_minutes", deserialize_with = "super::number")]
    #[schemars(schema_with = "super::number_schema")]
    pub timeout_seconds: u64,
    /// Ask the API server what would happen (`dryRun=All`), change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn yes() -> bool {
    true
}

fn five_minutes() -> u64 {
    300
}

/// Whether a rollout is complete, or why not (`kubectl rollout status`).
pub fn rollout_done(kind: &str, obj: &Value) -> Result<bool, StepError> {
    let spec = &obj["spec"];
    let status = &obj["status"];
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let generation = n(&obj["metadata"]["generation"]);
    if n(&status["observedGeneration"]) < generation {
        return Ok(false);
    }
    match kind {
        "Deployment" => {
            if let Some(c) = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Progressing")
                && c["reason"] == "ProgressDeadlineExceeded"
            {
                return Err(StepError::Failed(format!(
                    "the rollout exceeded its progress deadline: {}",
                    c["message"].as_str().unwrap_or("")
                )));
            }
            let want = spec["replicas"].as_i64().unwrap_or(1);
            let updated = n(&status["updatedReplicas"]);
            Ok(updated >= want
                && n(&status["replicas"]) <= updated
                && n(&status["availableReplicas"]) >= updated)
        }
        "StatefulSet" => {
            let want = spec["replicas"].as_i64().unwrap_or(1);
            Ok(n(&status["updatedReplicas"]) >= want
                && n(&status["readyReplicas"]) >= want
                && status["currentRevision"] == status["updateRevision"])
        }
        "DaemonSet" => {
            let want = n(&status["desiredNumberScheduled"]);
            Ok(n(&status["updatedNumberScheduled"]) >= want
                && n(&status["numberAvailable"]) >= want)
        }
        other => Err(StepError::Failed(format!("no rollout for kind {other}"))),
    }
}

/// Waits until the object's rollout is complete.
pub async fn wait_for_rollout(
    kube: &dyn Kube,
    obj: &ObjectRef,
    timeout: Duration,
) -> Result<Value, StepError> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = objects::get(kube, &obj.path(None)).await?;
        match rollout_done(&obj.kind, &now) {
            Ok(true) => return Ok(now),
            Ok(false) => {}
            Err(why) => return Err(StepError::Failed(format!("{}: {why}", obj.label()))),
        }
        if Instant::now() >= deadline {
            return Err(StepError::Failed(format!(
                "{}: rollout not complete within {}s (updated {}, available {} of {})",
                obj.label(),
                timeout.as_secs(),
                now["status"]["updatedReplicas"],
                now["status"]["availableReplicas"],
                now["spec"]["replicas"]
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The images of a workload's pod template, by container.
pub fn images(obj: &Value) -> Value {
    obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["image"].clone(),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Restarts and waits.
pub async fn run(kube: &dyn Kube, p: Params) -> Result<Value, StepError> {
    let obj = ObjectRef::new(&p.kind, p.namespace.as_deref(), &p.name, None, None, kube)?;
    if !["Deployment", "StatefulSet", "DaemonSet"].contains(&obj.kind.as_str()) {
        return Err(StepError::Params(format!(
            "kind {}: k8s.rollout_restart restarts a Deployment, StatefulSet or DaemonSet",
            obj.kind
        )));
    }
    let before = objects::get(kube, &obj.path(None)).await?;
    let previous = before["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT].clone();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
    let after = objects::send(
        kube,
        http::Method::PATCH,
        &objects::with_dry_run(&obj.path(None), p.dry_run),
        patch,
        objects::STRATEGIC,
    )
    .await?;
    let mut out = json!({
        "object": obj.label(),
        "dry_run": p.dry_run,
        "restarted_at": now,
        "before": {
            "generation": before["metadata"]["generation"],
            "restarted_at": previous,
            "images": images(&before),
            "replicas": before["spec"]["replicas"],
        },
        "revert": objects::revert_record(&obj, None, json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: previous}}}}})),
    });
    if p.dry_run {
        out["would_be"] = json!({"generation": after["metadata"]["generation"]});
        return Ok(out);
    }
    if p.wait {
        let done = wait_for_rollout(kube, &obj, Duration::from_secs(p.timeout_seconds)).await?;
        out["after"] = json!({
            "generation": done["metadata"]["generation"],
            "updated_replicas": done["status"]["updatedReplicas"],
            "available_replicas": done["status"]["availableReplicas"],
        });
        out["rollout"] = json!("complete");
    } else {
        out["rollout"] = json!("started");
    }
    Ok(out)
}

/// The `k8s.rollout_restart` step type.
pub struct K8sRolloutRestart;

impl Step for K8sRolloutRestart {
    const NAME: &'static str = "k8s.rollout_restart";
    const OUTPUT: &'static str = "`object`, `restarted_at`, `generation`, the rollout's `replicas`, `updated_replicas` and `available_replicas`, `dry_run`, `before`, and `revert`.";
    const DESTRUCTIVE: bool = true;
    const SERVER_DRY_RUN: bool = true;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::new(p.namespace.as_deref(), &p.name)
    }

    async fn run(ctx: &StepCtx<'_>, mut p: Params) -> Result<Value, StepError> {
        p.dry_run |= ctx.dry_run;
        run(ctx.kube()?, p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollout_is_done_when_every_replica_is_updated_and_available() {
        let d = |generation: i64, observed: i64, updated: i64, replicas: i64, available: i64| {
            json!({"metadata": {"generation": generation}, "spec": {"replicas": 3},
                   "status": {"observedGeneration": observed, "updatedReplicas": updated,
                              "replicas": replicas, "availableReplicas": available}})
        };
        assert_eq!(rollout_done("Deployment", &d(2, 2, 3, 3, 3)), Ok(true));
        assert_eq!(
            rollout_done("Deployment", &d(2, 1, 3, 3, 3)),
            Ok(false),
            "not observed yet"
        );
        assert_eq!(rollout_done("Deployment", &d(2, 2, 2, 3, 3)), Ok(false));
        assert_eq!(
            rollout_done("Deployment", &d(2, 2, 3, 4, 3)),
            Ok(false),
            "old pods left"
        );
        assert_eq!(rollout_done("Deployment", &d(2, 2, 3, 3, 2)), Ok(false));
        let stuck = json!({"metadata": {"generation": 1}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "conditions": [
                {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]}});
        assert!(
            rollout_done("Deployment", &stuck)
                .unwrap_err()
                .to_string()
                .contains("too slow")
        );
    }
}
