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
use axum::routing::{get, post, put};
use quench_connectors::inbound::{
    IntakeError, Parsed, alertmanager, check_bearer, check_github_signature, constant_time_eq,
    datadog, generic, pagerduty,
};
use quench_knowledge::{IncidentFilter, IncidentStatus, IncidentStore};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::alert_log::AlertLog;
use crate::config::{Config, Role};
use crate::executor::Verdict;
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
    /// Runs runbooks; holds approvals, the kill switch and the audit log.
    pub executor: Arc<crate::executor::Executor>,
    /// Evidence bytes.
    pub artifacts: quench_knowledge::ArtifactStore,
    /// Chaos experiments and their runs.
    pub chaos: Arc<crate::chaos::ChaosService>,
    /// The full-text index of the incidents.
    pub search: Arc<quench_knowledge::search::SearchIndex>,
    /// How far the followers of the stores are behind.
    pub lag: Lag,
    /// The KPI gauges of `/metrics`, computed in the background.
    pub kpis: Arc<KpiCache>,
}

/// Where the readers of the stores are, for `/readyz` and `/metrics`.
#[derive(Clone)]
pub struct Lag {
    /// The last alert the pipeline processed.
    pub pipeline: Arc<std::sync::atomic::AtomicU64>,
    /// The last change of the records the search index holds.
    pub index: Arc<std::sync::atomic::AtomicU64>,
    /// The knowledge writer, for its queue.
    pub writer: quench_knowledge::Writer,
}

/// Alerts the pipeline may be behind before `/readyz` says degraded.
const PIPELINE_LAG_DEGRADED: u64 = 10_000;
/// Changes the search index may be behind before `/readyz` says degraded.
const INDEX_LAG_DEGRADED: u64 = 10_000;

impl Lag {
    fn pipeline_lag(&self, log: &AlertLog) -> u64 {
        log.len()
            .saturating_sub(self.pipeline.load(std::sync::atomic::Ordering::Acquire))
    }

    fn index_lag(&self, incidents: &IncidentStore) -> u64 {
        incidents
            .last_change()
            .saturating_sub(self.index.load(std::sync::atomic::Ordering::Acquire))
    }
}

/// The KPI gauges, rendered, and when. `/metrics` serves a rendering up
/// to [`KPI_TTL`] old instead of reading every incident on each scrape.
#[derive(Default)]
pub struct KpiCache(std::sync::Mutex<Option<(std::time::Instant, String)>>);

/// How long a rendering of the KPI gauges is served.
const KPI_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl KpiCache {
    /// The gauges, worked out again (off the async workers) when the last
    /// rendering is older than [`KPI_TTL`].
    async fn get(&self, incidents: &IncidentStore) -> String {
        if let Some((at, text)) = &*self.0.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < KPI_TTL
        {
            return text.clone();
        }
        let inc = incidents.clone();
        let text = tokio::task::spawn_blocking(move || kpi_gauges(&inc))
            .await
            .unwrap_or_default();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), text.clone()));
        text
    }
}

/// Declares every route once: the router and [`ROUTES`] come from the
/// same list, so a test can walk every route the server has.
macro_rules! routes {
    ($( $verb:ident $path:literal => $handler:ident; )*) => {
        /// Every route: `(method, path)`.
        pub const ROUTES: &[(&str, &str)] = &[ $( (stringify!($verb), $path), )* ];

        /// Builds the router.
        pub fn router(state: AppState) -> Router {
            Router::new()
                $( .route($path, routes!(@method $verb $handler)) )*
                .fallback(not_found)
                .with_state(state)
        }
    };
    (@method GET $h:ident) => { get($h) };
    (@method POST $h:ident) => { post($h) };
    (@method PUT $h:ident) => { put($h) };
}

/// The routes anyone may call: probes and metrics. Webhooks check their
/// sender's own credentials (a bearer token, a signature) instead of an
/// API token. Every other route takes a [`Caller`].
pub const PUBLIC_ROUTES: &[&str] = &["/healthz", "/readyz", "/metrics"];

routes! {
    GET "/healthz" => healthz;
    GET "/readyz" => readyz;
    GET "/metrics" => metrics;
    POST "/hooks/alertmanager" => hook_alertmanager;
    POST "/hooks/pagerduty" => hook_pagerduty;
    POST "/hooks/datadog" => hook_datadog;
    POST "/hooks/generic/{name}" => hook_generic;
    GET "/api/v1/incidents" => list_incidents;
    GET "/api/v1/incidents/{id}" => show_incident;
    GET "/api/v1/incidents/{id}/timeline" => incident_timeline;
    GET "/api/v1/alerts" => list_alerts;
    GET "/api/v1/runbooks" => list_runbooks;
    POST "/api/v1/incidents/{id}/approvals" => approve;
    POST "/api/v1/incidents/{id}/ack" => acknowledge;
    POST "/api/v1/incidents/{id}/annotations" => annotate;
    GET "/api/v1/stats" => stats;
    GET "/api/v1/search" => search;
    POST "/api/v1/reindex" => reindex;
    POST "/api/v1/import" => import_incidents;
    GET "/api/v1/audit" => list_audit;
    GET "/api/v1/artifacts/{id}" => get_artifact;
    GET "/api/v1/artifacts/{id}/meta" => get_artifact_meta;
    GET "/api/v1/chaos" => list_chaos;
    GET "/api/v1/chaos/runs" => list_chaos_runs;
    GET "/api/v1/chaos/runs/{run}" => show_chaos_run;
    POST "/api/v1/chaos/runs/{run}/abort" => abort_chaos_run;
    POST "/api/v1/chaos/{name}/run" => start_chaos_run;
    GET "/api/v1/baselines" => list_baselines;
    PUT "/api/v1/baselines/{service}/{kind}" => put_baseline;
    GET "/api/v1/control" => control_state;
    POST "/api/v1/control/pause" => pause;
    POST "/api/v1/control/resume" => resume;
    POST "/hooks/git" => hook_git;
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

/// Readiness: answers at once from counters, and says `degraded` (still
/// 200: intake keeps acknowledging durable alerts) with the lags when the
/// pipeline or the search index has fallen behind.
async fn readyz(State(s): State<AppState>) -> Response {
    let pipeline = s.lag.pipeline_lag(&s.log);
    let index = s.lag.index_lag(&s.incidents);
    let mut reasons = Vec::new();
    if pipeline > PIPELINE_LAG_DEGRADED {
        reasons.push(format!("the pipeline is {pipeline} alerts behind the log"));
    }
    if index > INDEX_LAG_DEGRADED {
        reasons.push(format!(
            "the search index is {index} changes behind the records"
        ));
    }
    axum::Json(json!({
        "status": if reasons.is_empty() { "ready" } else { "degraded" },
        "reasons": reasons,
        "pipeline_lag_alerts": pipeline,
        "index_lag_changes": index,
        "store_writer_queue": s.lag.writer.stats().queued.load(std::sync::atomic::Ordering::Relaxed),
        "runs_active": s.metrics.runs_active.load(std::sync::atomic::Ordering::Relaxed),
        "index_docs": s.search.count(),
    }))
    .into_response()
}

/// The runbook set in force, where it came from, and the last sync.
async fn list_runbooks(State(s): State<AppState>, _caller: Caller<Viewer>) -> Response {
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
                "steps": r.steps.iter().map(|s| s.kind.name()).collect::<Vec<_>>(),
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

/// The response KPIs of the last 30 days, as gauges.
fn kpi_gauges(incidents: &IncidentStore) -> String {
    use std::fmt::Write;
    let since = chrono::Utc::now() - chrono::Duration::days(30);
    let all = incidents
        .list(&quench_knowledge::IncidentFilter::default())
        .unwrap_or_default();
    let k =
        quench_knowledge::kpi::stats(&all, since, quench_knowledge::kpi::By::Overall).remove("all");
    let mut out = String::new();
    let gauges = [
        (
            "quench_mttd_seconds",
            "Mean time to detect, last 30 days",
            k.as_ref().and_then(|k| k.mttd_seconds),
        ),
        (
            "quench_mtta_seconds",
            "Mean time to acknowledge or act, last 30 days",
            k.as_ref().and_then(|k| k.mtta_seconds),
        ),
        (
            "quench_mttr_seconds",
            "Mean time to resolve, last 30 days",
            k.as_ref().and_then(|k| k.mttr_seconds),
        ),
        (
            "quench_auto_closure_ratio",
            "Incidents resolved with no human step, last 30 days",
            k.as_ref().and_then(|k| k.auto_closure_rate),
        ),
        (
            "quench_human_intervention_ratio",
            "Incidents a human touched, last 30 days",
            k.as_ref().and_then(|k| k.human_intervention_rate),
        ),
        (
            "quench_runbook_success_ratio",
            "Runbook runs that ended in resolution, last 30 days",
            k.as_ref().and_then(|k| k.runbook_success_rate),
        ),
    ];
    for (name, help, value) in gauges {
        // No value (nothing to measure) is no sample, not zero.
        if let Some(v) = value {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
    }
    out
}

async fn metrics(State(s): State<AppState>) -> Response {
    use std::fmt::Write;
    let mut text = s.metrics.render();
    text.push_str(&s.kpis.get(&s.incidents).await);
    let gauges = [
        (
            "quench_pipeline_lag_alerts",
            "Alerts stored but not yet matched and attached to incidents.",
            s.lag.pipeline_lag(&s.log),
        ),
        (
            "quench_index_lag_changes",
            "Changes to the incident records not yet in the search index.",
            s.lag.index_lag(&s.incidents),
        ),
        (
            "quench_store_writer_queue",
            "Writes waiting for the knowledge store's writer thread.",
            s.lag
                .writer
                .stats()
                .queued
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}"
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
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

/// A 404 for a thing that is not there: `missing(format!("incident {id:?}"))`.
fn missing(what: String) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no {what}"),
        Value::Null,
    )
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
    _caller: Caller<Viewer>,
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
    match s.incidents.query(filter).await {
        Ok(list) => axum::Json(json!({ "incidents": list })).into_response(),
        Err(e) => internal(e),
    }
}

async fn show_incident(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Path(id): Path<String>,
) -> Response {
    match s.incidents.fetch(&id).await {
        Ok(Some(r)) => axum::Json(with_similar(&s, r).await).into_response(),
        Ok(None) => missing(format!("incident {id:?}")),
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
    _caller: Caller<Viewer>,
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

/// Checks the caller's bearer token against the configured hashes and
/// returns the token's name for the audit log. With no tokens configured
/// (loopback only, see the config check) everyone is `anonymous`.
// Handlers return a Response either way; boxing the error side would only
// add noise at every call.
#[allow(clippy::result_large_err)]
/// The role a route needs, as a type: `Caller<Viewer>`, `Caller<Responder>`,
/// `Caller<Admin>`.
pub trait Needs: Send + Sync + 'static {
    /// The least role that may call.
    const ROLE: Role;
}

/// Read access: incidents, search, stats, audit, artifacts, chaos runs.
pub struct Viewer;
/// Acting on incidents: approvals, acknowledgements, annotations, baselines.
pub struct Responder;
/// The kill switch, imports, reindexing, chaos runs.
pub struct Admin;

impl Needs for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl Needs for Responder {
    const ROLE: Role = Role::Responder;
}
impl Needs for Admin {
    const ROLE: Role = Role::Admin;
}

/// An authenticated caller with at least role `N`. A handler that takes
/// one cannot run for anyone else: the extractor answers 401 (no or an
/// unknown token) or 403 (a lesser role) first. With no `api_tokens`
/// configured (only allowed on loopback) everyone is `anonymous`.
pub struct Caller<N> {
    /// The token's name, for the audit log.
    pub name: String,
    need: std::marker::PhantomData<N>,
}

impl<N: Needs> axum::extract::FromRequestParts<AppState> for Caller<N> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AppState,
    ) -> Result<Self, Response> {
        authorize(s, &parts.headers, N::ROLE).map(|name| Caller {
            name,
            need: std::marker::PhantomData,
        })
    }
}

fn authorize(s: &AppState, headers: &HeaderMap, need: Role) -> Result<String, Response> {
    if s.config.api_tokens.is_empty() {
        return Ok("anonymous".into());
    }
    let unauthorized =
        |msg: &str| error(StatusCode::UNAUTHORIZED, "unauthorized", msg, Value::Null);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <token>"))?;
    let hash = hex_sha256(token.as_bytes());
    let found = s
        .config
        .api_tokens
        .iter()
        .find(|t| constant_time_eq(t.sha256.to_ascii_lowercase().as_bytes(), hash.as_bytes()));
    match found {
        None => Err(unauthorized("unknown token")),
        Some(t) if t.role < need => Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} has role {:?}; this needs {:?}",
                t.name, t.role, need
            )
            .to_lowercase(),
            Value::Null,
        )),
        Some(t) => Ok(t.name.clone()),
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Deserialize)]
struct ApprovalBody {
    step: String,
    decision: String,
    #[serde(default)]
    reason: String,
}

async fn audit_incident(s: &AppState, actor: &str, action: &str, incident: &str, detail: String) {
    audit(
        s,
        quench_knowledge::AuditEntry {
            seq: 0,
            at: chrono::Utc::now(),
            actor: actor.to_string(),
            action: action.to_string(),
            incident: Some(incident.to_string()),
            step: None,
            target: None,
            detail,
        },
    )
    .await;
}

/// Records what a person did. The change is already made, so a failed
/// append is logged (and counted) rather than undone.
async fn audit(s: &AppState, entry: quench_knowledge::AuditEntry) {
    if let Err(e) = s.executor.audit.append(entry).await {
        s.metrics.add("quench_audit_failures_total", &[], 1);
        tracing::error!(error = %e, "audit append failed");
    }
}

/// `POST /api/v1/incidents/{id}/ack`: a human has it (responder). The
/// first acknowledgement counts for MTTA; later ones are recorded only in
/// the audit log.
async fn acknowledge(
    State(s): State<AppState>,
    caller: Caller<Responder>,
    Path(id): Path<String>,
) -> Response {
    let actor = caller.name;
    let now = chrono::Utc::now();
    let who = actor.clone();
    let updated = s
        .incidents
        .update(&id, move |r| {
            if r.acknowledged.is_none() {
                r.acknowledged = Some(quench_knowledge::Acknowledgement {
                    at: now,
                    by: who.clone(),
                });
                r.timeline.push(quench_knowledge::TimelineEvent {
                    at: now,
                    kind: "acknowledged".into(),
                    detail: format!("acknowledged by {who}"),
                });
            }
            r.acknowledged.clone()
        })
        .await;
    match updated {
        Ok(Some((_, ack))) => {
            audit_incident(&s, &actor, "incident.ack", &id, "acknowledged".into()).await;
            axum::Json(json!({"incident": id, "acknowledged": ack})).into_response()
        }
        Ok(None) => missing(format!("incident {id:?}")),
        Err(e) => internal(e),
    }
}

/// What `POST /api/v1/incidents/{id}/annotations` takes. Fields left out
/// stay as they are; commits and tags are added.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AnnotationBody {
    #[serde(default)]
    root_cause: Option<String>,
    #[serde(default)]
    resolution: Option<String>,
    /// `SHA` or `SHA@repository`.
    #[serde(default)]
    commits: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// The prologue of a JSON endpoint: the body within `limit`, the body as
/// `T`; or the response that says which failed (413, 422 with the
/// expected `shape`).
async fn json_request<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    shape: &str,
) -> Result<T, Response> {
    let bytes = read_body(headers, body, limit).await?;
    let req = serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_shape",
            format!("expected {shape}: {e}"),
            Value::Null,
        )
    })?;
    Ok(req)
}

/// `POST /api/v1/incidents/{id}/annotations`: root cause, resolution,
/// commits and tags (responder). Each edit is audited with what changed.
async fn annotate(
    State(s): State<AppState>,
    caller: Caller<Responder>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let actor = caller.name;
    let req: AnnotationBody = match json_request(
        &headers,
        body,
        256 * 1024,
        "{root_cause, resolution, commits: [SHA or SHA@repo], tags: [..]}",
    )
    .await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut commits = Vec::new();
    for c in &req.commits {
        match crate::import::parse_commit(c) {
            Ok(c) => commits.push(c),
            Err(m) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_commit",
                    m,
                    json!({"field": "commits"}),
                );
            }
        }
    }
    for t in &req.tags {
        if !crate::import::is_tag(t) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_tag",
                format!("tag {t:?}: 1 to 64 letters, digits, '-', '_', '.', ':' or '/'"),
                json!({"field": "tags"}),
            );
        }
    }
    for (field, text) in [
        ("root_cause", &req.root_cause),
        ("resolution", &req.resolution),
    ] {
        if text.as_ref().is_some_and(|t| t.len() > 10_000) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too_long",
                format!("{field} is longer than 10000 bytes"),
                json!({"field": field}),
            );
        }
    }
    let mut changed = Vec::new();
    if req.root_cause.is_some() {
        changed.push("root_cause");
    }
    if req.resolution.is_some() {
        changed.push("resolution");
    }
    if !commits.is_empty() {
        changed.push("commits");
    }
    if !req.tags.is_empty() {
        changed.push("tags");
    }
    let now = chrono::Utc::now();
    let who = actor.clone();
    let req_root_cause = req.root_cause.clone();
    let req_resolution = req.resolution.clone();
    let req_tags = req.tags.clone();
    let commits_in = commits.clone();
    let updated = s
        .incidents
        .update(&id, move |r| {
            let (req_root_cause, req_resolution, req_tags, commits) =
                (&req_root_cause, &req_resolution, &req_tags, &commits_in);
            if let Some(rc) = req_root_cause {
                r.notes.root_cause = Some(rc.clone());
            }
            if let Some(res) = req_resolution {
                r.notes.resolution = Some(res.clone());
            }
            for c in commits {
                if !r.notes.commits.contains(c) {
                    r.notes.commits.push(c.clone());
                }
            }
            for t in req_tags {
                if !r.notes.tags.contains(t) {
                    r.notes.tags.push(t.clone());
                }
            }
            r.notes.edited_at = Some(now);
            r.notes.edited_by = Some(who.clone());
            r.timeline.push(quench_knowledge::TimelineEvent {
                at: now,
                kind: "annotated".into(),
                detail: format!("{} edited by {who}", changed.join(", ")),
            });
            r.notes.clone()
        })
        .await;
    match updated {
        Ok(Some((_, notes))) => {
            audit_incident(
                &s,
                &actor,
                "incident.annotate",
                &id,
                serde_json::to_string(&notes).unwrap_or_default(),
            )
            .await;
            axum::Json(json!({"incident": id, "notes": notes})).into_response()
        }
        Ok(None) => missing(format!("incident {id:?}")),
        Err(e) => internal(e),
    }
}

#[derive(serde::Deserialize)]
struct ImportQuery {
    name: Option<String>,
}

/// `POST /api/v1/import[?name=FILE]`: historical incidents (YAML or JSON,
/// see `engine/src/import.rs`), all or none (admin). Problems come back as
/// `FILE:line:col: record N: ...`, with nothing written.
async fn import_incidents(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    Query(q): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let actor = caller.name;
    let bytes = match read_body(&headers, body, 64 << 20).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let name = q.name.unwrap_or_else(|| "import".into());
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return error(
            StatusCode::BAD_REQUEST,
            "not_utf8",
            "the file is not UTF-8",
            Value::Null,
        );
    };
    match crate::import::parse(&name, text) {
        Err(problems) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_import",
            format!("{} problem(s); nothing was imported", problems.len()),
            json!({"problems": problems}),
        ),
        Ok(records) => match s.incidents.import(records).await {
            Ok(ids) => {
                audit(
                    &s,
                    quench_knowledge::AuditEntry {
                        seq: 0,
                        at: chrono::Utc::now(),
                        actor,
                        action: "incident.import".into(),
                        incident: None,
                        step: None,
                        target: Some(name),
                        detail: format!(
                            "{} incidents: {} to {}",
                            ids.len(),
                            ids.first().cloned().unwrap_or_default(),
                            ids.last().cloned().unwrap_or_default()
                        ),
                    },
                )
                .await;
                axum::Json(json!({"imported": ids.len(), "ids": ids})).into_response()
            }
            Err(e) => internal(e),
        },
    }
}

#[derive(serde::Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
    limit: Option<usize>,
}

/// `GET /api/v1/search?q=...[&limit=N]`: incidents by words, phrases,
/// prefixes and filters (docs/KNOWLEDGE.md), best first, with snippets.
async fn search(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Query(q): Query<SearchQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(20).clamp(1, 200);
    let index = s.search.clone();
    let query = q.q.clone();
    let result =
        tokio::task::spawn_blocking(move || index.search(&query, limit, chrono::Utc::now())).await;
    match result {
        Ok(Ok(hits)) => axum::Json(json!({"query": q.q, "hits": hits})).into_response(),
        Ok(Err(quench_knowledge::search::SearchError::Query(m))) => {
            error(StatusCode::BAD_REQUEST, "invalid_query", m, Value::Null)
        }
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// `POST /api/v1/reindex`: rebuilds the search index from the records
/// (admin).
async fn reindex(State(s): State<AppState>, caller: Caller<Admin>) -> Response {
    let actor = caller.name;
    let (index, incidents) = (s.search.clone(), s.incidents.clone());
    let rebuilt = tokio::task::spawn_blocking(move || {
        crate::indexer::rebuild(&index, &incidents).map(|_| index.count())
    })
    .await;
    match rebuilt {
        Ok(Ok(n)) => {
            audit(
                &s,
                quench_knowledge::AuditEntry {
                    seq: 0,
                    at: chrono::Utc::now(),
                    actor,
                    action: "search.reindex".into(),
                    incident: None,
                    step: None,
                    target: None,
                    detail: format!("{n} incidents"),
                },
            )
            .await;
            axum::Json(json!({"indexed": n})).into_response()
        }
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

#[derive(serde::Deserialize)]
struct StatsQuery {
    since: Option<String>,
    by: Option<String>,
}

/// `GET /api/v1/stats[?since=30d][&by=service|runbook]`: MTTD, MTTA, MTTR
/// and the rates, per group.
async fn stats(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Query(q): Query<StatsQuery>,
) -> Response {
    let window = q.since.as_deref().unwrap_or("30d");
    let Ok(span) = quench_runbooks::duration::parse(window) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("since {window:?} is not a duration (7d, 24h, 30m)"),
            Value::Null,
        );
    };
    let by = match q.by.as_deref() {
        None | Some("all") => quench_knowledge::kpi::By::Overall,
        Some("service") => quench_knowledge::kpi::By::Service,
        Some("runbook") => quench_knowledge::kpi::By::Runbook,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("by {other:?}: service or runbook"),
                Value::Null,
            );
        }
    };
    let since = chrono::Utc::now() - chrono::Duration::from_std(span).unwrap_or_default();
    match s
        .incidents
        .list(&quench_knowledge::IncidentFilter::default())
    {
        Ok(all) => axum::Json(json!({
            "since": since,
            "by": q.by.as_deref().unwrap_or("all"),
            "groups": quench_knowledge::kpi::stats(&all, since, by),
        }))
        .into_response(),
        Err(e) => internal(e),
    }
}

/// `POST /api/v1/incidents/{id}/approvals`: answers a waiting approval gate
/// (responder role). The approver's name goes into the audit log.
async fn approve(
    State(s): State<AppState>,
    caller: Caller<Responder>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let actor = caller.name;
    let req: ApprovalBody = match json_request(
        &headers,
        body,
        64 * 1024,
        r#"{"step", "decision": "approve"|"reject", "reason"}"#,
    )
    .await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    let verdict = match req.decision.as_str() {
        "approve" => Verdict::Approve { by: actor.clone() },
        "reject" => Verdict::Reject {
            by: actor.clone(),
            reason: req.reason.clone(),
        },
        other => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_shape",
                format!("decision {other:?}: approve or reject"),
                json!({"field": "decision"}),
            );
        }
    };
    if s.executor.approvals.answer(&id, &req.step, verdict) {
        axum::Json(json!({"status": "ok", "incident": id, "step": req.step, "decision": req.decision, "by": actor})).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "not_waiting",
            format!("no approval is waiting for step {:?} of {id}", req.step),
            Value::Null,
        )
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    incident: Option<String>,
    limit: Option<usize>,
}

async fn list_audit(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let audit = s.executor.audit.clone();
    let (limit, incident) = (q.limit.unwrap_or(100).min(MAX_LIST), q.incident.clone());
    match blocking(move || audit.list(limit, incident.as_deref())).await {
        Ok(list) => axum::Json(json!({ "audit": list })).into_response(),
        Err(e) => internal(e),
    }
}

async fn control_state(State(s): State<AppState>, _caller: Caller<Viewer>) -> Response {
    let control = s.executor.control.clone();
    match blocking(move || control.state()).await {
        Ok(st) => axum::Json(json!({"paused": s.executor.control.is_paused(), "last_change": st}))
            .into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize, Default)]
struct ReasonBody {
    #[serde(default)]
    reason: String,
}

async fn set_paused(
    s: AppState,
    actor: String,
    headers: HeaderMap,
    body: Body,
    paused: bool,
) -> Response {
    let bytes = match read_body(&headers, body, 64 * 1024).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let reason: ReasonBody = if bytes.is_empty() {
        ReasonBody::default()
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_shape",
                    format!("expected {{\"reason\": ...}}: {e}"),
                    Value::Null,
                );
            }
        }
    };
    match s.executor.control.set(paused, &actor, &reason.reason).await {
        Ok(st) => {
            let action = if paused {
                "control.pause"
            } else {
                "control.resume"
            };
            audit(
                &s,
                quench_knowledge::AuditEntry {
                    seq: 0,
                    at: st.at,
                    actor: actor.clone(),
                    action: action.into(),
                    incident: None,
                    step: None,
                    target: None,
                    detail: reason.reason.clone(),
                },
            )
            .await;
            warn!(by = %actor, paused, reason = %reason.reason, "kill switch changed");
            axum::Json(json!({"paused": paused, "last_change": st})).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn pause(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    set_paused(s, caller.name, headers, body, true).await
}

async fn resume(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    set_paused(s, caller.name, headers, body, false).await
}

/// `GET /api/v1/artifacts/{id}`: a profile, trace or flame graph, served
/// with its media type.
async fn get_artifact(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let (store, aid) = (s.artifacts.clone(), id.clone());
    match blocking(move || store.get(&aid)).await {
        Ok(Some((meta, bytes))) => {
            let ct = HeaderValue::from_str(&meta.media_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            ([(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Ok(None) => missing(format!("artifact {id:?}")),
        Err(e) => internal(e),
    }
}

/// `GET /api/v1/chaos`: the experiments in force, their schedules (with
/// the next three runs) and the runs going on.
async fn list_chaos(State(s): State<AppState>, _caller: Caller<Viewer>) -> Response {
    let running = s.chaos.running();
    let now = chrono::Utc::now();
    let list: Vec<Value> = s
        .chaos
        .experiments()
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "title": e.file.title.value,
                "path": e.path,
                "tags": e.file.tags,
                "schedule": e.schedule.as_ref().map(|sc| json!({
                    "cron": sc.cron.as_str(),
                    "timezone": sc.tz.name(),
                    "describe": sc.cron.describe(),
                    "next": quench_chaos::schedule::next_runs(sc, now, 3),
                })),
                "running": running.iter().filter(|(_, x)| *x == e.name).map(|(r, _)| r.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(json!({ "experiments": list })).into_response()
}

#[derive(serde::Deserialize)]
struct ChaosRunQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/chaos/{name}/run[?dry_run=true]`: starts a run (admin).
async fn start_chaos_run(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    Path(name): Path<String>,
    Query(q): Query<ChaosRunQuery>,
) -> Response {
    let actor = caller.name;
    match s.chaos.start(&name, q.dry_run, &actor) {
        Ok(run) => (StatusCode::ACCEPTED, axum::Json(json!({"run": run}))).into_response(),
        Err(e @ crate::chaos::StartError::NotFound(_)) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            e.to_string(),
            Value::Null,
        ),
        Err(e @ crate::chaos::StartError::Busy(_)) => {
            error(StatusCode::CONFLICT, "busy", e.to_string(), Value::Null)
        }
    }
}

/// `POST /api/v1/chaos/runs/{run}/abort`: stops a run; its rollbacks run.
async fn abort_chaos_run(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    Path(run): Path<String>,
) -> Response {
    let actor = caller.name;
    if s.chaos.abort(&run, &actor) {
        (
            StatusCode::ACCEPTED,
            axum::Json(json!({"run": run, "aborting": true})),
        )
            .into_response()
    } else {
        missing(format!("chaos run {run:?} is going on"))
    }
}

#[derive(serde::Deserialize)]
struct ChaosRunsQuery {
    limit: Option<usize>,
}

/// `GET /api/v1/chaos/runs[?limit=N]`: verdicts, newest first.
async fn list_chaos_runs(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Query(q): Query<ChaosRunsQuery>,
) -> Response {
    let (store, limit) = (s.chaos.store().clone(), q.limit.unwrap_or(50));
    match blocking(move || store.runs(limit)).await {
        Ok(runs) => axum::Json(json!({"runs": runs, "running": s.chaos.running()})).into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /api/v1/chaos/runs/{run}`: a verdict, or `{"state": "running"}`.
async fn show_chaos_run(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Path(run): Path<String>,
) -> Response {
    if s.chaos.running().iter().any(|(r, _)| *r == run) {
        return axum::Json(json!({"run": run, "state": "running"})).into_response();
    }
    let (store, id) = (s.chaos.store().clone(), run.clone());
    match blocking(move || store.run(&id)).await {
        Ok(Some(v)) => axum::Json(v).into_response(),
        Ok(None) => missing(format!("chaos run {run:?}")),
        Err(e) => internal(e),
    }
}

/// `GET /api/v1/baselines`: the healthy profile saved for each service
/// and kind, which `pprof.capture` with `baseline_of` diffs against.
async fn list_baselines(State(s): State<AppState>, _caller: Caller<Viewer>) -> Response {
    let store = s.artifacts.clone();
    match blocking(move || store.baselines()).await {
        Ok(b) => axum::Json(json!({ "baselines": b })).into_response(),
        Err(e) => internal(e),
    }
}

/// `PUT /api/v1/baselines/{service}/{kind}`: a profile captured while the
/// service was healthy (a scheduled capture: `curl -T cpu.pb.gz`) becomes
/// its baseline for that kind. The body must decode as a profile.
async fn put_baseline(
    State(s): State<AppState>,
    caller: Caller<Responder>,
    Path((service, kind)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let actor = caller.name;
    for (what, v) in [("service", &service), ("kind", &kind)] {
        if let Err(m) = quench_knowledge::artifacts::check_baseline_key(what, v) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_name",
                m,
                json!({"field": what}),
            );
        }
    }
    let bytes = match read_body(&headers, body, s.config.max_artifact_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(e) = quench_connectors::pprof::decode(&bytes) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_a_profile",
            format!("the body is not a pprof profile: {e}"),
            Value::Null,
        );
    }
    let put = s
        .artifacts
        .store(
            "pprof",
            "application/octet-stream",
            bytes,
            quench_knowledge::artifacts::Origin::default(),
        )
        .await;
    let id = match put {
        Ok(id) => id,
        Err(e @ quench_knowledge::ArtifactError::TooLarge { .. }) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                e.to_string(),
                Value::Null,
            );
        }
        Err(e) => return internal(e),
    };
    let set = s
        .artifacts
        .save_baseline(
            &service,
            &kind,
            &id,
            quench_knowledge::artifacts::Origin::default(),
        )
        .await;
    match set {
        Ok(b) => {
            audit(
                &s,
                quench_knowledge::AuditEntry {
                    seq: 0,
                    at: b.saved_at,
                    actor: actor.clone(),
                    action: "baseline.set".into(),
                    incident: None,
                    step: None,
                    target: Some(format!("{service}/{kind}")),
                    detail: id.clone(),
                },
            )
            .await;
            axum::Json(json!({ "baseline": b })).into_response()
        }
        Err(e) => internal(e),
    }
}

/// `GET /api/v1/artifacts/{id}/meta`: what an artifact is: kind, size,
/// incident and step, capture target and window.
async fn get_artifact_meta(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let (store, aid) = (s.artifacts.clone(), id.clone());
    match blocking(move || store.meta(&aid)).await {
        Ok(Some(meta)) => axum::Json(meta).into_response(),
        Ok(None) => missing(format!("artifact {id:?}")),
        Err(e) => internal(e),
    }
}

/// The record, with similar past incidents worked out now when the
/// indexer did not attach them (it skips that during a storm).
pub async fn with_similar(
    s: &AppState,
    mut r: quench_knowledge::IncidentRecord,
) -> quench_knowledge::IncidentRecord {
    if r.similar.is_none() {
        let index = s.search.clone();
        let probe = r.clone();
        if let Ok(Ok(similar)) = tokio::task::spawn_blocking(move || index.similar(&probe, 3)).await
        {
            r.similar = Some(similar);
        }
    }
    r
}

/// Runs a store call on tokio's blocking pool, off the async workers.
async fn blocking<T: Send + 'static, E: From<quench_knowledge::StoreError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(E::from(quench_knowledge::StoreError::Stopped)))
}

/// `GET /api/v1/incidents/{id}/timeline`: events, steps and evidence
/// capture windows on one UTC axis.
async fn incident_timeline(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Path(id): Path<String>,
) -> Response {
    match s.incidents.fetch(&id).await {
        Ok(Some(r)) => axum::Json(json!({"incident": id, "entries": r.aligned()})).into_response(),
        Ok(None) => missing(format!("incident {id:?}")),
        Err(e) => internal(e),
    }
}
