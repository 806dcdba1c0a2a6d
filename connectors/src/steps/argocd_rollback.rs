//! `argocd.rollback`: a GitOps-managed service goes back to an earlier
//! deployment of its Argo CD application (`POST
//! /api/v1/applications/{name}/rollback` with a history id), and the step
//! waits until the application runs that revision healthy. The output
//! keeps the Git revision it returned to.
//!
//! Argo CD re-syncs an application with automated sync straight back to
//! its target revision, so a rollback of one is refused here, before any
//! request, saying so.
//!
//! ```yaml
//! - id: rollback
//!   uses: argocd.rollback
//!   with:
//!     server: https://argocd.example.com
//!     app: "{{k8s_name alert.labels.service}}"
//!     token: {env: ARGOCD_TOKEN}
//! ```

use super::{Acts, Step, StepCtx};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::StepError;
use crate::argocd::{self, AppRef};

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Argo CD's base URL.
    pub server: String,
    /// The application.
    pub app: String,
    /// Its namespace (apps in any namespace).
    #[serde(default)]
    pub app_namespace: Option<String>,
    /// The API token.
    pub token: super::Secret,
    /// The history id to return to (default: the deployment before the
    /// current one).
    #[serde(default, deserialize_with = "super::opt_number")]
    #[schemars(schema_with = "super::number_schema")]
    pub to_history_id: Option<i64>,
    /// Let Argo CD delete resources the old revision does not have.
    #[serde(default)]
    pub prune: bool,
    /// Ask Argo CD what it would do.
    #[serde(default)]
    pub dry_run: bool,
    /// Wait for the application to run the old revision healthy
    /// (default true).
    #[serde(default = "yes")]
    pub wait: bool,
    /// How long (default 300).
    #[serde(default = "five_minutes", deserialize_with = "super::number")]
    #[schemars(schema_with = "super::number_schema")]
    pub timeout_seconds: u64,
}

fn yes() -> bool {
    true
}

fn five_minutes() -> u64 {
    300
}

/// The history entry to return to: `to`, or the newest one before the
/// current (the last) deployment. Returns (id, revision).
pub fn pick(history: &[Value], to: Option<i64>) -> Result<(i64, String), StepError> {
    let mut entries: Vec<(i64, String)> = history
        .iter()
        .filter_map(|h| Some((h["id"].as_i64()?, h["revision"].as_str()?.to_string())))
        .collect();
    entries.sort_by_key(|e| e.0);
    let current = entries.last().cloned();
    match (to, current) {
        (_, None) => Err(StepError::Failed(
            "the application has no deployment history".into(),
        )),
        (Some(t), Some(c)) if t == c.0 => Err(StepError::Failed(format!(
            "history id {t} is the current deployment"
        ))),
        (Some(t), _) => entries.iter().find(|e| e.0 == t).cloned().ok_or_else(|| {
            StepError::Failed(format!(
                "no history id {t} (have {:?})",
                entries.iter().map(|e| e.0).collect::<Vec<_>>()
            ))
        }),
        (None, Some(c)) => entries
            .iter()
            .rev()
            .find(|e| e.0 < c.0)
            .cloned()
            .ok_or_else(|| StepError::Failed("no earlier deployment to roll back to".into())),
    }
}

/// Rolls back.
pub async fn run(http: &reqwest::Client, p: Params) -> Result<Value, StepError> {
    let app = AppRef {
        server: p.server.clone(),
        app: p.app.clone(),
        app_namespace: p.app_namespace.clone(),
        token: p.token.clone(),
    };
    let token = app.check()?;
    let before = argocd::call(http, &token, reqwest::Method::GET, &app.url(""), None).await?;
    if !before["spec"]["syncPolicy"]["automated"].is_null() {
        return Err(StepError::Refused(format!(
            "Argo CD application {} syncs automatically, so it would go straight back to {}: turn automated sync off (or revert in Git) instead",
            p.app,
            before["spec"]["source"]["targetRevision"]
                .as_str()
                .unwrap_or("its target revision")
        )));
    }
    let history = before["status"]["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (id, revision) = pick(&history, p.to_history_id)
        .map_err(|e| StepError::Failed(format!("Argo CD application {}: {e}", p.app)))?;
    let mut body = json!({"name": p.app, "id": id, "dryRun": p.dry_run, "prune": p.prune});
    if let Some(ns) = &p.app_namespace {
        body["appNamespace"] = json!(ns);
    }
    argocd::call(
        http,
        &token,
        reqwest::Method::POST,
        &app.url("/rollback"),
        Some(body),
    )
    .await?;
    let mut out = json!({
        "app": p.app,
        "dry_run": p.dry_run,
        "history_id": id,
        "from_revision": before["status"]["sync"]["revision"],
        "to_revision": revision,
        "before": argocd::state(&before),
    });
    if p.wait && !p.dry_run {
        let after = argocd::wait(
            http,
            &token,
            &app,
            Some(&revision),
            Duration::from_secs(p.timeout_seconds),
        )
        .await?;
        out["after"] = argocd::state(&after);
    }
    Ok(out)
}

/// The `argocd.rollback` step type.
pub struct ArgocdRollback;

impl Step for ArgocdRollback {
    const NAME: &'static str = "argocd.rollback";
    const OUTPUT: &'static str = "`app`, `from_revision` and `to_revision` (the history entry rolled back to), `dry_run`, and `before` (the application's sync state).";
    const DESTRUCTIVE: bool = true;
    const SERVER_DRY_RUN: bool = true;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::new(p.app_namespace.as_deref(), &p.app)
    }

    fn urls(p: &Params) -> Vec<&str> {
        vec![p.server.as_str()]
    }

    async fn run(ctx: &StepCtx<'_>, mut p: Params) -> Result<Value, StepError> {
        p.dry_run |= ctx.dry_run;
        run(ctx.http, p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_deployment_before_the_current_one() {
        let h = [
            json!({"id": 3, "revision": "c3"}),
            json!({"id": 1, "revision": "a1"}),
            json!({"id": 2, "revision": "b2"}),
        ];
        assert_eq!(pick(&h, None).unwrap(), (2, "b2".to_string()));
        assert_eq!(pick(&h, Some(1)).unwrap(), (1, "a1".to_string()));
        assert!(
            pick(&h, Some(3))
                .unwrap_err()
                .to_string()
                .contains("current")
        );
        assert!(
            pick(&h, Some(9))
                .unwrap_err()
                .to_string()
                .contains("no history id 9")
        );
        assert!(
            pick(&h[1..2], None)
                .unwrap_err()
                .to_string()
                .contains("no earlier")
        );
        assert!(pick(&[], None).is_err());
    }
}
