//! `k8s.drain`: what `kubectl drain` does. Cordons the node, then evicts
//! its pods through the eviction API, so PodDisruptionBudgets are honoured
//! (an eviction a budget forbids is answered 429 and retried until
//! `timeout_seconds`). DaemonSet pods and mirror pods stay, as they would
//! come straight back. `policy/v1` is used where the server has it, else
//! `policy/v1beta1` (clusters before 1.22).
//!
//! Pods in namespaces outside quench's scope are not touched; if any must
//! go for the node to drain, the step refuses before evicting anything.
//!
//! ```yaml
//! - id: drain
//!   uses: k8s.drain
//!   with: {node: "{{k8s_name alert.labels.node}}", timeout_seconds: 300}
//! ```

use super::{Acts, Step, StepCtx};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::StepError;
use crate::k8s::KubeError;
use crate::k8s::objects::{self, ObjectRef};
use crate::k8s::{Kube, names};

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The node.
    #[serde(alias = "name")]
    pub node: String,
    /// Each evicted pod's grace period (default: the pod's own).
    #[serde(default, deserialize_with = "super::opt_number")]
    #[schemars(schema_with = "super::number_schema")]
    pub grace_seconds: Option<u32>,
    /// The most pods the drain may evict (default 110, a node's default
    /// pod limit); more is refused before anything happens.
    #[serde(default, deserialize_with = "super::opt_number")]
    #[schemars(schema_with = "super::number_schema")]
    pub max: Option<usize>,
    /// How long to keep trying evictions and wait for pods to go
    /// (default 300).
    #[serde(default = "five_minutes", deserialize_with = "super::number")]
    #[schemars(schema_with = "super::number_schema")]
    pub timeout_seconds: u64,
    /// Ask the API server what would happen (`dryRun=All`), change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn five_minutes() -> u64 {
    300
}

/// Why a pod on the node is left alone, if it is.
pub fn stays(pod: &Value) -> Option<&'static str> {
    if pod["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string() {
        return Some("mirror pod");
    }
    if pod["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["kind"] == "DaemonSet" && o["controller"] == true)
    {
        return Some("DaemonSet pod");
    }
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return Some("already terminating");
    }
    match pod["status"]["phase"].as_str() {
        Some("Succeeded") | Some("Failed") => Some("finished"),
        _ => None,
    }
}

/// Drains.
pub async fn run(kube: &dyn Kube, p: Params) -> Result<Value, StepError> {
    let max = p.max.unwrap_or(110);
    let node = ObjectRef::new("Node", None, &p.node, None, None, kube)?;
    let list = objects::get(
        kube,
        &format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{}", p.node),
    )
    .await?;
    let mut to_evict = Vec::new();
    let mut left = Vec::new();
    let mut out_of_scope = Vec::new();
    for pod in list["items"].as_array().into_iter().flatten() {
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        if let Some(why) = stays(pod) {
            left.push(json!({"pod": format!("{ns}/{name}"), "why": why}));
            continue;
        }
        names::label("namespace", &ns)?;
        names::subdomain("pod", &name)?;
        if kube.scope().check(&ns).is_err() {
            out_of_scope.push(format!("{ns}/{name}"));
            continue;
        }
        to_evict.push((ns, name, pod["metadata"]["uid"].clone()));
    }
    if !out_of_scope.is_empty() {
        return Err(StepError::Refused(format!(
            "node {} has pods in namespaces outside quench's scope ({}): nothing was evicted",
            p.node,
            out_of_scope.join(", ")
        )));
    }
    if to_evict.len() > max {
        return Err(StepError::Refused(format!(
            "node {} has {} pods to evict, more than max {max}: nothing was evicted",
            p.node,
            to_evict.len()
        )));
    }
    // Cordon first, so evicted pods are not scheduled back.
    let before = objects::get(kube, &node.path(None)).await?;
    let was = before["spec"]["unschedulable"].as_bool().unwrap_or(false);
    objects::send(
        kube,
        http::Method::PATCH,
        &objects::with_dry_run(&node.path(None), p.dry_run),
        json!({"spec": {"unschedulable": true}}),
        objects::MERGE,
    )
    .await?;
    let policy = match kube.get("/apis/policy/v1", 1 << 20, objects::CALL).await {
        Ok(body) if String::from_utf8_lossy(&body).contains("\"pods/eviction\"") => "policy/v1",
        _ => "policy/v1beta1",
    };
    let deadline = Instant::now() + Duration::from_secs(p.timeout_seconds);
    let mut evicted = Vec::new();
    let mut blocked: Option<String> = None;
    for (ns, name, _) in &to_evict {
        let mut options = json!({});
        if let Some(g) = p.grace_seconds {
            options["gracePeriodSeconds"] = json!(g);
        }
        if p.dry_run {
            options["dryRun"] = json!(["All"]);
        }
        let body = json!({"apiVersion": policy, "kind": "Eviction",
            "metadata": {"name": name, "namespace": ns}, "deleteOptions": options});
        let path = objects::with_dry_run(
            &format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"),
            p.dry_run,
        );
        loop {
            match objects::send(
                kube,
                http::Method::POST,
                &path,
                body.clone(),
                "application/json",
            )
            .await
            {
                Ok(_) => {
                    evicted.push(format!("{ns}/{name}"));
                    break;
                }
                // Gone already: nothing to evict.
                Err(KubeError::Refused(m)) if m.contains("HTTP 404") => break,
                // A disruption budget says not now.
                Err(KubeError::Failed(m)) if m.contains("HTTP 429") => {
                    if Instant::now() >= deadline {
                        blocked = Some(format!("{ns}/{name}: {m}"));
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if blocked.is_some() {
            break;
        }
    }
    let revert = objects::revert_record(
        &node,
        None,
        json!({"spec": {"unschedulable": if was { json!(true) } else { Value::Null }}}),
    );
    if let Some(b) = blocked {
        return Err(StepError::Failed(format!(
            "drain of {} stopped after {}s: evicted {} of {} pods; a disruption budget blocks {b}",
            p.node,
            p.timeout_seconds,
            evicted.len(),
            to_evict.len()
        )));
    }
    // Wait for the evicted pods to be gone (their uid no longer there).
    if !p.dry_run {
        for (ns, name, uid) in &to_evict {
            loop {
                let gone = match objects::get(kube, &format!("/api/v1/namespaces/{ns}/pods/{name}"))
                    .await
                {
                    Ok(now) => now["metadata"]["uid"] != *uid,
                    Err(KubeError::Refused(m)) if m.contains("HTTP 404") => true,
                    Err(e) => return Err(e.into()),
                };
                if gone {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(StepError::Failed(format!(
                        "drain of {}: pod {ns}/{name} still there after {}s",
                        p.node, p.timeout_seconds
                    )));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(json!({
        "object": node.label(),
        "dry_run": p.dry_run,
        "eviction_api": policy,
        "before": {"unschedulable": was, "pods": to_evict.len()},
        "evicted": evicted,
        "left": left,
        "revert": revert,
    }))
}

/// The `k8s.drain` step type.
pub struct K8sDrain;

impl Step for K8sDrain {
    const NAME: &'static str = "k8s.drain";
    const OUTPUT: &'static str = "`object`, `evicted` and `left` (pods, each with why), `eviction_api`, `dry_run`, `before`, and `revert`.";
    const DESTRUCTIVE: bool = true;
    const SERVER_DRY_RUN: bool = true;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::new(None, &p.node)
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
    fn daemonset_mirror_and_finished_pods_stay() {
        let ds = json!({"metadata": {"ownerReferences": [{"kind": "DaemonSet", "controller": true}]},
                        "status": {"phase": "Running"}});
        assert_eq!(stays(&ds), Some("DaemonSet pod"));
        let mirror = json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}});
        assert_eq!(stays(&mirror), Some("mirror pod"));
        assert_eq!(
            stays(&json!({"metadata": {}, "status": {"phase": "Succeeded"}})),
            Some("finished")
        );
        let rs = json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "controller": true}]},
                        "status": {"phase": "Running"}});
        assert_eq!(stays(&rs), None);
    }
}
