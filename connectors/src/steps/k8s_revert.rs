//! `k8s.revert`: puts back what an earlier mutating step changed, from the
//! `revert` record in its output (the object and the merge patch that
//! restores it). In a runbook: `revert: "{{json steps.scale.output.revert}}"`,
//! typically in `on_failure`, so a failed verification undoes the action.
//!
//! ```yaml
//! on_failure:
//!   - id: undo
//!     uses: k8s.revert
//!     with: {revert: "{{json steps.scale.output.revert}}"}
//! ```
//!
//! The record is checked again as if written by hand: names, namespace
//! scope, the patch's shape.

use super::{Step, StepCtx};
use serde::Deserialize;
use serde_json::{Value, json};

use super::StepError;
use crate::k8s::Kube;
use crate::k8s::objects::{self, ObjectRef};

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The revert record: an object, or its JSON text.
    pub revert: Value,
    /// Ask the API server what would happen (`dryRun=All`), change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Reverts.
pub async fn run(kube: &dyn Kube, p: Params) -> Result<Value, StepError> {
    let record = match p.revert {
        Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| StepError::Params(format!("revert is not a revert record: {e}")))?,
        Value::Null => {
            return Err(StepError::Params(
                "revert is empty: the step had nothing to revert".into(),
            ));
        }
        v => v,
    };
    let r: ObjectRef = serde_json::from_value(record["object"].clone())
        .map_err(|e| StepError::Params(format!("revert.object: {e}")))?;
    // Rebuilt through the checks, never used as given.
    let builtin = ObjectRef::new(&r.kind, r.namespace.as_deref(), &r.name, None, None, kube);
    let obj = match builtin {
        Ok(o) if o.api_version == r.api_version && o.resource == r.resource => o,
        _ => ObjectRef::new(
            &r.kind,
            r.namespace.as_deref(),
            &r.name,
            Some(&r.api_version),
            Some(&r.resource),
            kube,
        )?,
    };
    let sub = match record["subresource"].as_str() {
        None => None,
        Some("scale") => Some("scale"),
        Some(other) => {
            return Err(StepError::Params(format!(
                "revert.subresource {other:?}: only scale"
            )));
        }
    };
    let patch = record["patch"].clone();
    if !patch.is_object() {
        return Err(StepError::Params(
            "revert.patch must be a merge patch".into(),
        ));
    }
    let path = obj.path(sub);
    let before = objects::get(kube, &path).await?;
    let after = objects::send(
        kube,
        http::Method::PATCH,
        &objects::with_dry_run(&path, p.dry_run),
        patch.clone(),
        objects::MERGE,
    )
    .await?;
    Ok(json!({
        "object": obj.label(),
        "dry_run": p.dry_run,
        "applied": patch,
        // Reverting the revert puts the action back.
        "revert": objects::revert_record(&obj, sub, objects::inverse_merge_patch(&before, &after)),
    }))
}

/// The `k8s.revert` step type.
pub struct K8sRevert;

impl Step for K8sRevert {
    const NAME: &'static str = "k8s.revert";
    const OUTPUT: &'static str = "`object`, `applied` (what was put back) and `dry_run`.";
    const DESTRUCTIVE: bool = true;
    const SERVER_DRY_RUN: bool = true;
    type Params = Params;

    async fn run(ctx: &StepCtx<'_>, mut p: Params) -> Result<Value, StepError> {
        p.dry_run |= ctx.dry_run;
        run(ctx.kube()?, p).await
    }
}
