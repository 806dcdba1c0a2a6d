//! `k8s.delete_pod`: deletes a pod by name, or the pods a label selector
//! picks, never more than `max` (default 1): a selector that matches more
//! is refused whole, before anything is deleted.
//!
//! ```yaml
//! - id: kill
//!   uses: k8s.delete_pod
//!   with: {pod: "{{k8s_name alert.labels.pod}}", namespace: shop, grace_seconds: 30}
//! ```

use super::{Acts, Step, StepCtx};
use serde::Deserialize;
use serde_json::{Value, json};

use super::StepError;
use crate::k8s::Kube;
use crate::k8s::objects::{self, ObjectRef};

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The pod.
    #[serde(default, alias = "name")]
    pub pod: Option<String>,
    /// Or a label selector (`app=web,tier!=db`).
    #[serde(default)]
    pub selector: Option<String>,
    /// The namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The most pods a selector may delete (default 1).
    #[serde(default, deserialize_with = "super::opt_number")]
    #[schemars(schema_with = "super::number_schema")]
    pub max: Option<usize>,
    /// The grace period (default: the pod's own).
    #[serde(default, deserialize_with = "super::opt_number")]
    #[schemars(schema_with = "super::number_schema")]
    pub grace_seconds: Option<u32>,
    /// Ask the API server what would happen (`dryRun=All`), change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Checks a label selector: keys, values and the operators `=`, `==`,
/// `!=`, `in`, `notin`, `!`, with commas. Anything else (spaces aside) is
/// refused, so the selector cannot carry another query parameter.
pub fn check_selector(s: &str) -> Result<String, StepError> {
    let ok = !s.trim().is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=!,() ".contains(&b));
    if !ok {
        return Err(StepError::Params(format!(
            "selector {s:?} is not a label selector (keys, values, = == != in notin !, commas)"
        )));
    }
    Ok(s.bytes()
        .map(|b| match b {
            b'=' => "%3D".to_string(),
            b'!' => "%21".to_string(),
            b',' => "%2C".to_string(),
            b' ' => "%20".to_string(),
            b'(' => "%28".to_string(),
            b')' => "%29".to_string(),
            b'/' => "%2F".to_string(),
            other => (other as char).to_string(),
        })
        .collect())
}

/// Deletes.
pub async fn run(kube: &dyn Kube, p: Params) -> Result<Value, StepError> {
    let max = p.max.unwrap_or(1);
    let namespace = p.namespace.as_deref().unwrap_or("default");
    let names: Vec<String> = match (&p.pod, &p.selector) {
        (Some(pod), None) => {
            // Checks the name, namespace and scope.
            ObjectRef::new("Pod", Some(namespace), pod, None, None, kube)?;
            vec![pod.clone()]
        }
        (None, Some(sel)) => {
            let encoded = check_selector(sel)?;
            // Any valid name checks the namespace and scope.
            let probe = ObjectRef::new("Pod", Some(namespace), "x", None, None, kube)?;
            let list = objects::get(
                kube,
                &format!("{}?labelSelector={encoded}", probe.collection()),
            )
            .await?;
            let names: Vec<String> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            if names.len() > max {
                return Err(StepError::Refused(format!(
                    "selector {sel:?} matches {} pods in {namespace}, more than max {max}: none deleted",
                    names.len()
                )));
            }
            names
        }
        _ => {
            return Err(StepError::Params(
                "give exactly one of pod or selector".into(),
            ));
        }
    };
    let mut deleted = Vec::new();
    for name in &names {
        let obj = ObjectRef::new("Pod", Some(namespace), name, None, None, kube)?;
        let before = objects::get(kube, &obj.path(None)).await?;
        let mut options = json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        if let Some(g) = p.grace_seconds {
            options["gracePeriodSeconds"] = json!(g);
        }
        // With a body, the API server reads dryRun from it, not from the
        // query: both say it.
        if p.dry_run {
            options["dryRun"] = json!(["All"]);
        }
        objects::send(
            kube,
            http::Method::DELETE,
            &objects::with_dry_run(&obj.path(None), p.dry_run),
            options,
            "application/json",
        )
        .await?;
        deleted.push(json!({
            "pod": name,
            "node": before["spec"]["nodeName"],
            "phase": before["status"]["phase"],
            "owner": before["metadata"]["ownerReferences"][0]["name"],
            "restarts": before["status"]["containerStatuses"][0]["restartCount"],
        }));
    }
    Ok(json!({
        "namespace": namespace,
        "dry_run": p.dry_run,
        "deleted": deleted,
        "count": deleted.len(),
        // A deleted pod is not restored; its controller replaces it.
        "revert": Value::Null,
    }))
}

/// The `k8s.delete_pod` step type.
pub struct K8sDeletePod;

impl Step for K8sDeletePod {
    const NAME: &'static str = "k8s.delete_pod";
    const OUTPUT: &'static str = "`deleted` (each pod with its phase, node, owner and restarts), `count`, `dry_run`, and `revert` (null: a deleted pod is not put back).";
    const DESTRUCTIVE: bool = true;
    const SERVER_DRY_RUN: bool = true;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::maybe(p.namespace.as_deref(), p.pod.as_deref())
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
    fn selectors_are_label_selectors_and_nothing_more() {
        assert_eq!(
            check_selector("app=web,tier!=db").unwrap(),
            "app%3Dweb%2Ctier%21%3Ddb"
        );
        assert_eq!(
            check_selector("env in (prod, staging)").unwrap(),
            "env%20in%20%28prod%2C%20staging%29"
        );
        for bad in [
            "",
            "app=web&fieldSelector=x",
            "app=web;rm",
            "a\nb",
            "app=web#",
        ] {
            assert!(check_selector(bad).is_err(), "{bad:?}");
        }
    }
}
