//! `k8s.wait`: polls an object until a condition holds, or fails at the
//! timeout saying what it saw last.
//!
//! Conditions: `available` (a Deployment's rollout is complete and its
//! `Available` condition is true), `ready` (a pod's `Ready` condition),
//! `deleted` (the object is gone), or `condition: TYPE` for any object
//! whose `status.conditions` has TYPE=True.
//!
//! ```yaml
//! - id: up
//!   uses: k8s.wait
//!   with: {kind: Deployment, name: web, namespace: shop, for: available, timeout_seconds: 120}
//! ```

use super::{Acts, Step, StepCtx};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::StepError;
use crate::k8s::Kube;
use crate::k8s::KubeError;
use crate::k8s::objects::{self, ObjectRef};

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The kind (`Deployment`, `Pod`, ... or a custom one with
    /// `api_version` and `resource`).
    pub kind: String,
    /// The object.
    #[serde(alias = "deployment", alias = "pod")]
    pub name: String,
    /// Its namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// For kinds that are not built in.
    #[serde(default)]
    pub api_version: Option<String>,
    /// For kinds that are not built in: the plural.
    #[serde(default)]
    pub resource: Option<String>,
    /// `available`, `ready`, `deleted`, or `condition:TYPE`.
    #[serde(rename = "for")]
    pub until: String,
    /// How long to wait (default 120).
    #[serde(default = "two_minutes", deserialize_with = "super::number")]
    #[schemars(schema_with = "super::number_schema")]
    pub timeout_seconds: u64,
}

fn two_minutes() -> u64 {
    120
}

fn condition_true(obj: &Value, kind: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// Whether `obj` (None: it does not exist) satisfies `until`.
pub fn holds(until: &str, kind: &str, obj: Option<&Value>) -> Result<bool, StepError> {
    match (until, obj) {
        ("deleted", o) => Ok(o.is_none()),
        (_, None) => Ok(false),
        ("available", Some(o)) => {
            if kind != "Deployment" {
                return Err(StepError::Params(format!(
                    "available is for Deployments, not {kind}"
                )));
            }
            Ok(
                super::k8s_rollout_restart::rollout_done(kind, o).unwrap_or(false)
                    && condition_true(o, "Available"),
            )
        }
        ("ready", Some(o)) => Ok(condition_true(o, "Ready")),
        (other, Some(o)) => match other.strip_prefix("condition:") {
            Some(t) if !t.trim().is_empty() => Ok(condition_true(o, t.trim())),
            _ => Err(StepError::Params(format!(
                "for {other:?}: available, ready, deleted or condition:TYPE"
            ))),
        },
    }
}

/// Waits.
pub async fn run(kube: &dyn Kube, p: Params) -> Result<Value, StepError> {
    // A bad condition is a parameter error, found before any request.
    holds(&p.until, "Deployment", Some(&json!({})))?;
    let obj = ObjectRef::new(
        &p.kind,
        p.namespace.as_deref(),
        &p.name,
        p.api_version.as_deref(),
        p.resource.as_deref(),
        kube,
    )?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(p.timeout_seconds);
    loop {
        let now = match objects::get(kube, &obj.path(None)).await {
            Ok(o) => Some(o),
            Err(KubeError::Refused(m)) if m.contains("HTTP 404") => None,
            Err(e) => return Err(e.into()),
        };
        if holds(&p.until, &obj.kind, now.as_ref())? {
            return Ok(json!({
                "object": obj.label(),
                "for": p.until,
                "waited_seconds": started.elapsed().as_secs_f64(),
            }));
        }
        if Instant::now() >= deadline {
            let seen = now
                .as_ref()
                .map(|o| o["status"].clone())
                .unwrap_or(Value::Null);
            return Err(StepError::Failed(format!(
                "{}: not {} after {}s; last status {seen}",
                obj.label(),
                p.until,
                p.timeout_seconds
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The `k8s.wait` step type.
pub struct K8sWait;

impl Step for K8sWait {
    const NAME: &'static str = "k8s.wait";
    const OUTPUT: &'static str =
        "`object`, `for`, `waited_seconds` and the object's `status` (its conditions).";
    const DESTRUCTIVE: bool = false;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::new(p.namespace.as_deref(), &p.name)
    }

    async fn run(ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
        run(ctx.kube()?, p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        let pod = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(holds("ready", "Pod", Some(&pod)), Ok(true));
        assert_eq!(holds("condition:Ready", "Pod", Some(&pod)), Ok(true));
        assert_eq!(holds("condition:Synced", "Pod", Some(&pod)), Ok(false));
        assert_eq!(holds("deleted", "Pod", None), Ok(true));
        assert_eq!(holds("deleted", "Pod", Some(&pod)), Ok(false));
        assert!(holds("up", "Pod", Some(&pod)).is_err());
        assert!(holds("available", "Pod", Some(&pod)).is_err());
    }
}
