//! The HTTP surface: webhook intake, the incident API, `/healthz` and
//! `/metrics`.
//!
//! Every error is a JSON body `{"error": {"code", "message", ...}}` with the
//! status the sender needs: 400 malformed JSON, 401 authentication, 404
//! unknown hook, 413 too large, 422 wrong shape, 503 storage unavailable
//! (the only one a sender should retry).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use quench_connectors::inbound::{
    IntakeError, Parsed, alertmanager, check_bearer, check_github_signature, datadog, generic,
    pagerduty,
};
use quench_knowledge::{IncidentFilter, IncidentStatus, IncidentStore};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::alert_log::AlertLog;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::runbook_source::Runbooks;

/// The most entries one list request returns.
const MAX_LIST: usize = 100_000;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// The durable alert log.
    pub log: AlertLog,
    /// Incident records.
    pub incidents: IncidentStore,
    /// The runbooks in force.
    pub runbooks: Arc<Runbooks>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/hooks/alertmanager", post(hook_alertmanager))
        .route("/hooks/pagerduty", post(hook_pagerduty))
        .route("/hooks/datadog", post(hook_datadog))
        .route("/hooks/generic/{name}", post(hook_generic))
        .route("/api/v1/incidents", get(list_incidents))
        .route("/api/v1/incidents/{id}", get(show_incident))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/runbooks", get(list_runbooks))
        .route("/hooks/git", post(hook_git))
        .fallback(not_found)
        .with_state(state)
}

/// A JSON error response.
fn error(status: StatusCode, code: &str, message: impl Into<String>, extra: Value) -> Response {
    let mut body = json!({"code": code, "message": message.into()});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    (status, axum::Json(json!({ "error": body }))).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint",
        Value::Null,
    )
}

async fn healthz(State(s): State<AppState>) -> Response {
    let loaded = s.runbooks.current();
    axum::Json(json!({
        "status": "ok",
        "alerts_stored": s.log.len(),
        "runbooks": loaded.set.runbooks.len(),
        "runbooks_commit": loaded.commit,
    }))
    .into_response()
}

/// The runbook set in force, where it came from, and the last sync.
async fn list_runbooks(State(s): State<AppState>) -> Response {
    let loaded = s.runbooks.current();
    let runbooks: Vec<Value> = loaded
        .set
        .runbooks
        .iter()
        .map(|r| {
            json!({
                "name": r.name(),
                "path": r.path,
                "description": r.file.description,
                "priority": r.file.priority,
                "continue": r.file.continue_matching,
                "matchers": r.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
                "group_by": r.file.group_by.iter().map(|g| g.value.as_str()).collect::<Vec<_>>(),
                "steps": r.step_types.iter().map(|t| t.name()).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(json!({
        "source": s.runbooks.origin(),
        "commit": loaded.commit,
        "loaded_at": loaded.loaded_at,
        "triage": loaded.set.triage,
        "sync": s.runbooks.status(),
        "runbooks": runbooks,
    }))
    .into_response()
}

/// `POST /hooks/git`: fetch the runbook repository now. Authenticated by
/// a bearer token or a GitHub `X-Hub-Signature-256`. Answers 202 at once;
/// `GET /api/v1/runbooks` shows the outcome.
async fn hook_git(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(git) = &s.config.git else {
        return error(
            StatusCode::NOT_FOUND,
            "no_git_source",
            "runbooks come from a local directory; there is nothing to fetch",
            Value::Null,
        );
    };
    let bytes = match read_body(&headers, body, s.config.max_body_bytes).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let mut result = Err(IntakeError::Unauthorized(
        "POST /hooks/git needs git.webhook_token or git.webhook_secret in the config".into(),
    ));
    if let Some(token) = &git.webhook_token
        && headers.contains_key(header::AUTHORIZATION)
    {
        result = check_bearer(&headers, token);
    } else if let Some(secret) = &git.webhook_secret {
        result = check_github_signature(&headers, secret, &bytes);
    } else if let Some(token) = &git.webhook_token {
        result = check_bearer(&headers, token);
    }
    if let Err(e) = result {
        return error(
            StatusCode::UNAUTHORIZED,
            e.reason(),
            e.to_string(),
            Value::Null,
        );
    }
    s.runbooks.trigger();
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "sync requested"})),
    )
        .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn hook_alertmanager(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let cfg = s.config.clone();
    intake(&s, "alertmanager", headers, body, move |h, b| {
        alertmanager::parse(&cfg.hooks.alertmanager, h, b)
    })
    .await
}

async fn hook_pagerduty(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let cfg = s.config.clone();
    intake(&s, "pagerduty", headers, body, move |h, b| {
        pagerduty::parse(&cfg.hooks.pagerduty, h, b)
    })
    .await
}

async fn hook_datadog(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let cfg = s.config.clone();
    intake(&s, "datadog", headers, body, move |h, b| {
        datadog::parse(&cfg.hooks.datadog, h, b)
    })
    .await
}

async fn hook_generic(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cfg = s.config.clone();
    if !cfg.hooks.generic.contains_key(&name) {
        s.metrics.add(
            "quench_webhook_rejected_total",
            &[("source", "generic"), ("reason", "unknown_hook")],
            1,
        );
        return error(
            StatusCode::NOT_FOUND,
            "unknown_hook",
            format!("no generic hook named {name:?} is configured"),
            Value::Null,
        );
    }
    intake(&s, "generic", headers, body, move |h, b| {
        generic::parse(&name, &cfg.hooks.generic[&name], h, b)
    })
    .await
}

/// Reads the body up to the configured limit.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body exceeds the limit of {limit} bytes"),
            json!({"limit": limit}),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b.to_vec()),
        Err(e) => {
            let inner = e.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                Err(too_large())
            } else {
                Err(error(
                    StatusCode::BAD_REQUEST,
                    "body_unreadable",
                    format!("could not read the request body: {inner}"),
                    Value::Null,
                ))
            }
        }
    }
}

/// The shared intake path: read, verify and parse, append and flush, answer.
async fn intake(
    s: &AppState,
    source: &'static str,
    headers: HeaderMap,
    body: Body,
    parse: impl FnOnce(&HeaderMap, &[u8]) -> Result<Parsed, IntakeError>,
) -> Response {
    let started = Instant::now();
    let response = intake_inner(s, source, &headers, body, parse).await;
    let outcome = if response.status().is_success() {
        "accepted"
    } else {
        "rejected"
    };
    s.metrics.add(
        "quench_webhook_requests_total",
        &[("source", source), ("outcome", outcome)],
        1,
    );
    s.metrics.observe_intake(source, started.elapsed());
    response
}

async fn intake_inner(
    s: &AppState,
    source: &'static str,
    headers: &HeaderMap,
    body: Body,
    parse: impl FnOnce(&HeaderMap, &[u8]) -> Result<Parsed, IntakeError>,
) -> Response {
    let reject = |reason: &str| {
        s.metrics.add(
            "quench_webhook_rejected_total",
            &[("source", source), ("reason", reason)],
            1,
        );
    };
    let bytes = match read_body(headers, body, s.config.max_body_bytes).await {
        Ok(b) => b,
        Err(resp) => {
            reject(if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "unreadable"
            });
            return resp;
        }
    };
    let parsed = match parse(headers, &bytes) {
        Ok(p) => p,
        Err(e) => {
            reject(e.reason());
            warn!(source, reason = e.reason(), error = %e, "webhook refused");
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            let extra = match &e {
                IntakeError::Syntax { line, column, .. } => json!({"line": line, "column": column}),
                IntakeError::Shape { path, .. } => json!({"field": path}),
                IntakeError::Unauthorized(_) => Value::Null,
            };
            return error(status, e.reason(), e.to_string(), extra);
        }
    };
    let count = parsed.alerts.len() as u64;
    s.metrics
        .add("quench_alerts_received_total", &[("source", source)], count);
    match s.log.append(bytes, parsed.alerts).await {
        Ok(appended) => {
            let dups = appended.iter().filter(|a| a.duplicate).count() as u64;
            s.metrics.add(
                "quench_alerts_accepted_total",
                &[("source", source)],
                count - dups,
            );
            s.metrics
                .add("quench_alerts_duplicate_total", &[("source", source)], dups);
            debug!(
                source,
                accepted = count - dups,
                duplicates = dups,
                "webhook stored"
            );
            axum::Json(json!({
                "status": "ok",
                "accepted": count - dups,
                "duplicates": dups,
                "alerts": appended,
            }))
            .into_response()
        }
        Err(e) => {
            reject("storage");
            tracing::error!(source, error = %e, "alert log append failed");
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                format!("could not store the alerts durably, retry later: {e}"),
                Value::Null,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

fn internal(e: impl std::fmt::Display) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        e.to_string(),
        Value::Null,
    )
}

/// A query string that does not parse: a JSON 400, like every other error.
fn bad_query(e: QueryRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "bad_query",
        e.body_text(),
        Value::Null,
    )
}

async fn list_incidents(
    State(s): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let mut filter = IncidentFilter {
        open_only: false,
        status: None,
        limit: Some(q.limit.unwrap_or(100).min(MAX_LIST)),
    };
    match q.status.as_deref() {
        None => {}
        Some("open") => filter.open_only = true,
        Some(other) => {
            match serde_json::from_value::<IncidentStatus>(Value::String(other.into())) {
                Ok(st) => filter.status = Some(st),
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_query",
                        format!(
                            "unknown status {other:?}: use open, diagnosing, remediating, verifying, resolved, escalated, failed or cancelled"
                        ),
                        Value::Null,
                    );
                }
            }
        }
    }
    match s.incidents.list(&filter) {
        Ok(list) => axum::Json(json!({ "incidents": list })).into_response(),
        Err(e) => internal(e),
    }
}

async fn show_incident(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match s.incidents.get(&id) {
        Ok(Some(r)) => axum::Json(r).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no incident {id:?}"),
            Value::Null,
        ),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct AlertsQuery {
    limit: Option<usize>,
    fingerprint: Option<String>,
}

async fn list_alerts(
    State(s): State<AppState>,
    q: Result<Query<AlertsQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let limit = q.limit.unwrap_or(100).min(MAX_LIST);
    match s.log.recent(limit, q.fingerprint.as_deref()) {
        Ok(list) => axum::Json(json!({ "alerts": list })).into_response(),
        Err(e) => internal(e),
    }
}
