//! `k8s.apply`: server-side apply of a manifest written in the runbook
//! (its strings may be templates, rendered like any parameter), with
//! quench as the field manager. The object's earlier state (if it existed)
//! is kept for a revert.
//!
//! ```yaml
//! - id: limits
//!   uses: k8s.apply
//!   with:
//!     manifest:
//!       apiVersion: v1
//!       kind: ConfigMap
//!       metadata: {name: "feature-flags", namespace: shop}
//!       data: {slow_path: "off"}
//! ```

use super::{Step, StepCtx};
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
    /// The object, as YAML in the runbook.
    pub manifest: Value,
    /// For kinds that are not built in: the plural resource.
    #[serde(default)]
    pub resource: Option<String>,
    /// Take over fields another manager owns (default false).
    #[serde(default)]
    pub force: bool,
    /// Ask the API server what would happen (`dryRun=All`), change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Applies.
pub async fn run(kube: &dyn Kube, p: Params) -> Result<Value, StepError> {
    let m = &p.manifest;
    let text = |v: &Value, what: &str| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| StepError::Params(format!("manifest.{what} is required")))
    };
    let api_version = text(&m["apiVersion"], "apiVersion")?;
    let kind = text(&m["kind"], "kind")?;
    let name = text(&m["metadata"]["name"], "metadata.name")?;
    let namespace = m["metadata"]["namespace"].as_str();
    let builtin = ObjectRef::new(&kind, namespace, &name, None, None, kube);
    let obj = match (builtin, &p.resource) {
        (Ok(o), None) if o.api_version == api_version => o,
        (_, resource) => ObjectRef::new(
            &kind,
            namespace,
            &name,
            Some(&api_version),
            Some(resource.as_deref().ok_or_else(|| {
                StepError::Params(format!(
                    "{kind} {api_version} is not built in: give resource (its plural)"
                ))
            })?),
            kube,
        )?,
    };
    let before = match objects::get(kube, &obj.path(None)).await {
        Ok(o) => Some(o),
        Err(KubeError::Refused(msg)) if msg.contains("HTTP 404") => None,
        Err(e) => return Err(e.into()),
    };
    let mut path = format!("{}?fieldManager=quench", obj.path(None));
    if p.force {
        path.push_str("&force=true");
    }
    // JSON is YAML: the apply content type takes it as it is.
    let after = objects::send(
        kube,
        http::Method::PATCH,
        &objects::with_dry_run(&path, p.dry_run),
        p.manifest.clone(),
        "application/apply-patch+yaml",
    )
    .await?;
    Ok(json!({
        "object": obj.label(),
        "dry_run": p.dry_run,
        "created": before.is_none(),
        "after": {"resource_version": after["metadata"]["resourceVersion"], "generation": after["metadata"]["generation"]},
        "revert": match &before {
            Some(b) => objects::revert_record(&obj, None, objects::inverse_merge_patch(b, &after)),
            None => Value::Null,
        },
    }))
}

/// The `k8s.apply` step type.
pub struct K8sApply;

impl Step for K8sApply {
    const NAME: &'static str = "k8s.apply";
    const OUTPUT: &'static str = "`object`, `created`, `resource_version`, `generation`, `dry_run`, `after`, and `revert` (what `k8s.revert` puts back).";
    const DESTRUCTIVE: bool = true;
    const SERVER_DRY_RUN: bool = true;
    type Params = Params;

    async fn run(ctx: &StepCtx<'_>, mut p: Params) -> Result<Value, StepError> {
        p.dry_run |= ctx.dry_run;
        run(ctx.kube()?, p).await
    }
}
