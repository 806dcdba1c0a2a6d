//! `k8s.patch`: a merge, strategic-merge or JSON patch of any object,
//! custom resources included (`api_version` and the plural `resource`).
//! The output carries the merge patch that restores the object's earlier
//! state, which `k8s.revert` applies.
//!
//! ```yaml
//! - id: pause-chaos
//!   uses: k8s.patch
//!   with:
//!     api_version: chaos-mesh.org/v1alpha1
//!     resource: podchaos
//!     kind: PodChaos
//!     namespace: shop
//!     name: kill-web
//!     type: merge
//!     patch: {metadata: {annotations: {experiment.chaos-mesh.org/pause: "true"}}}
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
    /// The kind (`Deployment`, `ConfigMap`, `PodChaos`, ...).
    pub kind: String,
    /// The object.
    pub name: String,
    /// Its namespace (default `default`; ignored for cluster-scoped kinds).
    #[serde(default)]
    pub namespace: Option<String>,
    /// For kinds that are not built in: `group/version`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// For kinds that are not built in: the plural resource name.
    #[serde(default)]
    pub resource: Option<String>,
    /// `merge` (default), `strategic` (built-in kinds) or `json`.
    #[serde(default = "merge", rename = "type")]
    pub patch_type: String,
    /// The patch: an object, or for `json` a list of operations.
    pub patch: Value,
    /// Ask the API server what would happen (`dryRun=All`), change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn merge() -> String {
    "merge".into()
}

/// Patches.
pub async fn run(kube: &dyn Kube, p: Params) -> Result<Value, StepError> {
    let content_type = match (p.patch_type.as_str(), &p.patch) {
        ("merge", Value::Object(_)) => objects::MERGE,
        ("strategic", Value::Object(_)) => objects::STRATEGIC,
        ("json", Value::Array(_)) => objects::JSON_PATCH,
        (t @ ("merge" | "strategic"), _) => {
            return Err(StepError::Params(format!("a {t} patch is an object")));
        }
        ("json", _) => {
            return Err(StepError::Params(
                "a json patch is a list of operations".into(),
            ));
        }
        (other, _) => {
            return Err(StepError::Params(format!(
                "type {other:?}: merge, strategic or json"
            )));
        }
    };
    let obj = ObjectRef::new(
        &p.kind,
        p.namespace.as_deref(),
        &p.name,
        p.api_version.as_deref(),
        p.resource.as_deref(),
        kube,
    )?;
    let before = objects::get(kube, &obj.path(None)).await?;
    let after = objects::send(
        kube,
        http::Method::PATCH,
        &objects::with_dry_run(&obj.path(None), p.dry_run),
        p.patch.clone(),
        content_type,
    )
    .await?;
    let revert = objects::inverse_merge_patch(&before, &after);
    Ok(json!({
        "object": obj.label(),
        "dry_run": p.dry_run,
        "changed": !p.dry_run && revert != json!({}),
        "before": {"resource_version": before["metadata"]["resourceVersion"]},
        "after": {"resource_version": after["metadata"]["resourceVersion"]},
        "revert": objects::revert_record(&obj, None, revert),
    }))
}

/// The `k8s.patch` step type.
pub struct K8sPatch;

impl Step for K8sPatch {
    const NAME: &'static str = "k8s.patch";
    const OUTPUT: &'static str =
        "`object`, `changed`, `resource_version`, `dry_run`, `before`, `after`, and `revert`.";
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
