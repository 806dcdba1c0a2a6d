//! `k8s.rollback`: what `kubectl rollout undo` does. The Deployment's
//! ReplicaSets (those it owns) carry `deployment.kubernetes.io/revision`;
//! the previous revision (or `to_revision`) gives the pod template to put
//! back, and the step waits for that rollout to complete.
//!
//! ```yaml
//! - id: rollback
//!   uses: k8s.rollback
//!   with: {deployment: "{{k8s_name alert.labels.deployment}}", namespace: shop}
//! ```

use super::{Acts, Step, StepCtx};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::StepError;
use super::k8s_rollout_restart::{images, wait_for_rollout};
use crate::k8s::Kube;
use crate::k8s::objects::{self, ObjectRef};

/// The annotation that numbers a Deployment's revisions.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The Deployment.
    #[serde(alias = "name")]
    pub deployment: String,
    /// Its namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The revision to return to (default: the one before the current).
    #[serde(default, deserialize_with = "super::opt_number")]
    #[schemars(schema_with = "super::number_schema")]
    pub to_revision: Option<i64>,
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

fn revision(obj: &Value) -> Option<i64> {
    obj["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
}

/// Why there is no revision to roll back to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// `to_revision` names the revision running now.
    #[error("revision {0} is the current one")]
    Current(i64),
    /// `to_revision` names a revision no ReplicaSet of the Deployment has.
    #[error("no revision {wanted} (have {have:?})")]
    NoSuchRevision {
        /// What was asked for.
        wanted: i64,
        /// The revisions there are.
        have: Vec<i64>,
    },
    /// Only the current revision is left.
    #[error("no previous revision to roll back to")]
    NoPrevious,
}

/// Picks the ReplicaSet to return to among those `uid` owns: `to`, or the
/// highest revision below `current`. Returns (revision, template).
pub fn pick(
    replicasets: &[Value],
    uid: &str,
    current: i64,
    to: Option<i64>,
) -> Result<(i64, Value), PickError> {
    let mut owned: Vec<(i64, &Value)> = replicasets
        .iter()
        .filter(|rs| {
            rs["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| o["uid"] == uid && o["controller"] == true)
        })
        .filter_map(|rs| Some((revision(rs)?, rs)))
        .collect();
    owned.sort_by_key(|(r, _)| *r);
    let chosen = match to {
        Some(t) if t == current => return Err(PickError::Current(t)),
        Some(t) => owned.iter().find(|(r, _)| *r == t),
        None => owned.iter().rev().find(|(r, _)| *r < current),
    };
    let (rev, rs) = chosen.ok_or_else(|| match to {
        Some(wanted) => PickError::NoSuchRevision {
            wanted,
            have: owned.iter().map(|(r, _)| *r).collect(),
        },
        None => PickError::NoPrevious,
    })?;
    let mut template = rs["spec"]["template"].clone();
    // The ReplicaSet's own label, which the Deployment controller adds.
    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
        labels.remove("pod-template-hash");
    }
    Ok((*rev, template))
}

/// Rolls back and waits.
pub async fn run(kube: &dyn Kube, p: Params) -> Result<Value, StepError> {
    let obj = ObjectRef::new(
        "Deployment",
        p.namespace.as_deref(),
        &p.deployment,
        None,
        None,
        kube,
    )?;
    let before = objects::get(kube, &obj.path(None)).await?;
    let uid = before["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let current = revision(&before).ok_or_else(|| {
        StepError::Failed(format!("{} has no revision annotation yet", obj.label()))
    })?;
    let selector = before["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let encoded = super::k8s_delete_pod::check_selector(&selector)?;
    let rs_ref = ObjectRef::new(
        "ReplicaSet",
        obj.namespace.as_deref(),
        "x",
        None,
        None,
        kube,
    )?;
    let list = objects::get(
        kube,
        &format!("{}?labelSelector={encoded}", rs_ref.collection()),
    )
    .await?;
    let replicasets = list["items"].as_array().cloned().unwrap_or_default();
    let (to, template) = pick(&replicasets, &uid, current, p.to_revision)
        .map_err(|e| StepError::Failed(format!("{}: {e}", obj.label())))?;
    let patch = json!([
        {"op": "replace", "path": "/spec/template", "value": template},
    ]);
    let after = objects::send(
        kube,
        http::Method::PATCH,
        &objects::with_dry_run(&obj.path(None), p.dry_run),
        patch,
        objects::JSON_PATCH,
    )
    .await?;
    let mut out = json!({
        "object": obj.label(),
        "dry_run": p.dry_run,
        "from_revision": current,
        "to_revision": to,
        "before": {"revision": current, "images": images(&before)},
        "would_be": {"images": images(&after)},
        "revert": objects::revert_record(&obj, None, json!({"spec": {"template": before["spec"]["template"]}})),
    });
    if !p.dry_run && p.wait {
        let done = wait_for_rollout(kube, &obj, Duration::from_secs(p.timeout_seconds)).await?;
        out["after"] = json!({"revision": revision(&done), "images": images(&done)});
        out["rollout"] = json!("complete");
    }
    Ok(out)
}

/// The `k8s.rollback` step type.
pub struct K8sRollback;

impl Step for K8sRollback {
    const NAME: &'static str = "k8s.rollback";
    const OUTPUT: &'static str = "`object`, `from_revision`, `to_revision`, `images`, `dry_run`, `before`, `would_be` (for a dry run), and `revert`.";
    const DESTRUCTIVE: bool = true;
    const SERVER_DRY_RUN: bool = true;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::new(p.namespace.as_deref(), &p.deployment)
    }

    async fn run(ctx: &StepCtx<'_>, mut p: Params) -> Result<Value, StepError> {
        p.dry_run |= ctx.dry_run;
        run(ctx.kube()?, p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(uid: &str, rev: &str, image: &str) -> Value {
        json!({"metadata": {"annotations": {REVISION: rev},
                "ownerReferences": [{"uid": uid, "controller": true}]},
               "spec": {"template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}},
                        "spec": {"containers": [{"name": "app", "image": image}]}}}})
    }

    #[test]
    fn picks_the_previous_revision_of_this_deployment() {
        let sets = [
            rs("d1", "1", "web:1"),
            rs("d1", "2", "web:2"),
            rs("d1", "3", "web:3"),
            rs("other", "2", "x:9"),
        ];
        let (r, t) = pick(&sets, "d1", 3, None).unwrap();
        assert_eq!(r, 2);
        assert_eq!(t["spec"]["containers"][0]["image"], "web:2");
        assert!(t["metadata"]["labels"].get("pod-template-hash").is_none());
        assert_eq!(pick(&sets, "d1", 3, Some(1)).unwrap().0, 1);
        assert_eq!(
            pick(&sets, "d1", 3, Some(3)).unwrap_err(),
            PickError::Current(3)
        );
        let none = pick(&sets, "d1", 3, Some(7)).unwrap_err();
        assert_eq!(
            none,
            PickError::NoSuchRevision {
                wanted: 7,
                have: vec![1, 2, 3]
            }
        );
        assert_eq!(none.to_string(), "no revision 7 (have [1, 2, 3])");
        assert_eq!(
            pick(&sets[..1], "d1", 1, None).unwrap_err(),
            PickError::NoPrevious
        );
    }
}
