//! `k8s.cordon` and `k8s.uncordon`: a node's `spec.unschedulable`, as
//! `kubectl cordon` sets it.
//!
//! ```yaml
//! - id: cordon
//!   uses: k8s.cordon
//!   with: {node: "{{k8s_name alert.labels.node}}"}
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
    /// The node.
    #[serde(alias = "name")]
    pub node: String,
    /// Ask the API server what would happen (`dryRun=All`), change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Marks the node unschedulable (`cordon: true`) or schedulable again.
pub async fn run(kube: &dyn Kube, p: Params, cordon: bool) -> Result<Value, StepError> {
    let obj = ObjectRef::new("Node", None, &p.node, None, None, kube)?;
    let before = objects::get(kube, &obj.path(None)).await?;
    let was = before["spec"]["unschedulable"].as_bool().unwrap_or(false);
    let mut out = json!({
        "object": obj.label(),
        "dry_run": p.dry_run,
        "before": {"unschedulable": was},
        "revert": objects::revert_record(&obj, None, json!({"spec": {"unschedulable": if was { json!(true) } else { Value::Null }}})),
    });
    if was == cordon {
        out["changed"] = json!(false);
        out["after"] = json!({"unschedulable": was});
        return Ok(out);
    }
    let after = objects::send(
        kube,
        http::Method::PATCH,
        &objects::with_dry_run(&obj.path(None), p.dry_run),
        json!({"spec": {"unschedulable": if cordon { json!(true) } else { Value::Null }}}),
        objects::MERGE,
    )
    .await?;
    out["changed"] = json!(!p.dry_run);
    out["after"] =
        json!({"unschedulable": after["spec"]["unschedulable"].as_bool().unwrap_or(false)});
    Ok(out)
}

/// The `k8s.cordon` step type.
pub struct K8sCordon;

impl Step for K8sCordon {
    const NAME: &'static str = "k8s.cordon";
    const OUTPUT: &'static str = "`object`, `unschedulable`, `dry_run`, `before`, and `revert`.";
    const DESTRUCTIVE: bool = true;
    const SERVER_DRY_RUN: bool = true;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::new(None, &p.node)
    }

    async fn run(ctx: &StepCtx<'_>, mut p: Params) -> Result<Value, StepError> {
        p.dry_run |= ctx.dry_run;
        run(ctx.kube()?, p, true).await
    }
}

/// The `k8s.uncordon` step type.
pub struct K8sUncordon;

impl Step for K8sUncordon {
    const NAME: &'static str = "k8s.uncordon";
    const OUTPUT: &'static str = "`object`, `unschedulable`, `dry_run`, `before`, and `revert`.";
    const DESTRUCTIVE: bool = true;
    const SERVER_DRY_RUN: bool = true;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::new(None, &p.node)
    }

    async fn run(ctx: &StepCtx<'_>, mut p: Params) -> Result<Value, StepError> {
        p.dry_run |= ctx.dry_run;
        run(ctx.kube()?, p, false).await
    }
}
