//! `k8s.scale`: a Deployment's or StatefulSet's replicas, through the scale
//! subresource. `replicas` is absolute (`3`) or relative (`"+1"`, `"-2"`),
//! and the result is held within `min` and `max`.
//!
//! ```yaml
//! - id: scale
//!   uses: k8s.scale
//!   with: {deployment: "{{k8s_name alert.labels.deployment}}", namespace: shop, replicas: "+1", max: 10}
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
    /// `Deployment` (default) or `StatefulSet`.
    #[serde(default = "deployment")]
    pub kind: String,
    /// Its name.
    #[serde(alias = "deployment")]
    pub name: String,
    /// Its namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// `3`, `"+1"` or `"-1"`.
    pub replicas: Value,
    /// The fewest replicas the result may have (default 0).
    #[serde(default, deserialize_with = "super::opt_number")]
    #[schemars(schema_with = "super::number_schema")]
    pub min: Option<i64>,
    /// The most (default 50).
    #[serde(default, deserialize_with = "super::opt_number")]
    #[schemars(schema_with = "super::number_schema")]
    pub max: Option<i64>,
    /// Ask the API server what would happen (`dryRun=All`), change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

pub(crate) fn deployment() -> String {
    "Deployment".into()
}

/// What `replicas` asks for, given the current count: (target, relative).
pub fn wanted(replicas: &Value, current: i64) -> Result<(i64, bool), StepError> {
    let text = match replicas {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        other => {
            return Err(StepError::Params(format!(
                "replicas {other} must be a number or \"+N\"/\"-N\""
            )));
        }
    };
    let bad = || {
        StepError::Params(format!(
            "replicas {text:?} must be a number or \"+N\"/\"-N\""
        ))
    };
    if let Some(n) = text.strip_prefix('+') {
        Ok((current + n.parse::<i64>().map_err(|_| bad())?, true))
    } else if let Some(n) = text.strip_prefix('-') {
        Ok((current - n.parse::<i64>().map_err(|_| bad())?, true))
    } else {
        Ok((text.parse().map_err(|_| bad())?, false))
    }
}

/// Scales.
pub async fn run(kube: &dyn Kube, p: Params) -> Result<Value, StepError> {
    if !["deployment", "statefulset"].contains(&p.kind.to_ascii_lowercase().as_str()) {
        return Err(StepError::Params(format!(
            "kind {:?}: k8s.scale scales a Deployment or a StatefulSet",
            p.kind
        )));
    }
    let (min, max) = (p.min.unwrap_or(0), p.max.unwrap_or(50));
    if min < 0 || max < min {
        return Err(StepError::Params(format!(
            "min {min} and max {max} must satisfy 0 <= min <= max"
        )));
    }
    let obj = ObjectRef::new(&p.kind, p.namespace.as_deref(), &p.name, None, None, kube)?;
    let scale_path = obj.path(Some("scale"));
    let before = objects::get(kube, &scale_path).await?;
    let current = before["spec"]["replicas"].as_i64().unwrap_or(0);
    let (asked, relative) = wanted(&p.replicas, current)?;
    let target = asked.clamp(min, max);
    let bounded = target != asked;
    let mut out = json!({
        "object": obj.label(),
        "dry_run": p.dry_run,
        "before": {"replicas": current},
        "asked": asked,
        "relative": relative,
        "bounded": bounded,
        "revert": objects::revert_record(&obj, Some("scale"), json!({"spec": {"replicas": current}})),
    });
    if target == current {
        out["after"] = json!({"replicas": current});
        out["changed"] = json!(false);
        out["note"] = json!(if bounded {
            format!("already at the bound ({current}); nothing to do")
        } else {
            format!("already at {current} replicas")
        });
        return Ok(out);
    }
    let answer = objects::send(
        kube,
        http::Method::PATCH,
        &objects::with_dry_run(&scale_path, p.dry_run),
        json!({"spec": {"replicas": target}}),
        objects::MERGE,
    )
    .await?;
    out["after"] = json!({"replicas": answer["spec"]["replicas"].as_i64().unwrap_or(target)});
    out["changed"] = json!(!p.dry_run);
    Ok(out)
}

/// The `k8s.scale` step type.
pub struct K8sScale;

impl Step for K8sScale {
    const NAME: &'static str = "k8s.scale";
    const OUTPUT: &'static str = "`object`, `replicas` (set), `asked` (before bounds), `bounded`, `relative`, `dry_run`, `before`, and `revert`.";
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
    fn replicas_are_absolute_or_relative() {
        assert_eq!(wanted(&json!(3), 5).unwrap(), (3, false));
        assert_eq!(wanted(&json!("+2"), 5).unwrap(), (7, true));
        assert_eq!(wanted(&json!("-1"), 5).unwrap(), (4, true));
        assert_eq!(wanted(&json!(" 4 "), 5).unwrap(), (4, false));
        for bad in [json!("+x"), json!("three"), json!(true), json!("")] {
            assert!(wanted(&bad, 5).is_err(), "{bad}");
        }
    }
}
