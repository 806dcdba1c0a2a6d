//! `argocd.sync`: syncs an Argo CD application (`POST
//! /api/v1/applications/{name}/sync`), to its target or to a given
//! revision, and waits until it runs healthy. The output keeps the Git
//! revision it synced to.
//!
//! ```yaml
//! - id: sync
//!   uses: argocd.sync
//!   with: {server: "https://argocd.example.com", app: checkout, token: {env: ARGOCD_TOKEN}}
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
    /// A Git revision (default: the application's target revision).
    #[serde(default)]
    pub revision: Option<String>,
    /// Let Argo CD delete resources no longer in Git.
    #[serde(default)]
    pub prune: bool,
    /// Ask Argo CD what it would do.
    #[serde(default)]
    pub dry_run: bool,
    /// Wait for the application to run healthy (default true).
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

/// Syncs.
pub async fn run(http: &reqwest::Client, p: Params) -> Result<Value, StepError> {
    if let Some(r) = &p.revision
        && (r.is_empty()
            || r.len() > 255
            || !r
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b)))
    {
        return Err(StepError::Params(format!(
            "revision {r:?} must be a Git revision (a SHA, tag or branch)"
        )));
    }
    let app = AppRef {
        server: p.server.clone(),
        app: p.app.clone(),
        app_namespace: p.app_namespace.clone(),
        token: p.token.clone(),
    };
    let token = app.check()?;
    let before = argocd::call(http, &token, reqwest::Method::GET, &app.url(""), None).await?;
    let mut body = json!({"name": p.app, "dryRun": p.dry_run, "prune": p.prune});
    if let Some(r) = &p.revision {
        body["revision"] = json!(r);
    }
    if let Some(ns) = &p.app_namespace {
        body["appNamespace"] = json!(ns);
    }
    argocd::call(
        http,
        &token,
        reqwest::Method::POST,
        &app.url("/sync"),
        Some(body),
    )
    .await?;
    let mut out = json!({
        "app": p.app,
        "dry_run": p.dry_run,
        "revision": p.revision,
        "before": argocd::state(&before),
    });
    if p.wait && !p.dry_run {
        let after = argocd::wait(
            http,
            &token,
            &app,
            p.revision.as_deref(),
            Duration::from_secs(p.timeout_seconds),
        )
        .await?;
        out["revision"] = after["status"]["sync"]["revision"].clone();
        out["after"] = argocd::state(&after);
    }
    Ok(out)
}

/// The `argocd.sync` step type.
pub struct ArgocdSync;

impl Step for ArgocdSync {
    const NAME: &'static str = "argocd.sync";
    const OUTPUT: &'static str =
        "`app`, `revision`, `prune`, `dry_run`, and `before` (the application's sync state).";
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
