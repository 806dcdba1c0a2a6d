//! The HTTP surface, one file per area: `intake` (webhooks), `incidents`,
//! `knowledge` (search, import, stats, audit), `evidence` (artifacts and
//! baselines), `chaos`, and `ops` (probes, metrics, runbooks, the kill
//! switch). This file holds the state, the route list, authorization (the
//! [`Caller`] extractor) and the helpers the areas share.
//!
//! Every error is a JSON body `{"error": {"code", "message", ...}}` with the
//! status the sender needs: 400 malformed JSON, 401 authentication, 404
//! unknown hook, 413 too large, 422 wrong shape, 503 storage unavailable
//! (the only one a sender should retry).

use quench_knowledge::AuditAction;
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

mod chaos;
pub mod console;
mod evidence;
pub mod front;
mod import;
mod incidents;
mod intake;
mod knowledge;
mod ops;
mod replica;
mod slack;

pub use incidents::with_similar;
pub use ops::KpiCache;

/// The most entries one list request returns.
const MAX_LIST: usize = 100_000;

/// What every handler shares, behind one `Arc`: axum clones the state for
/// each extractor and layer of every request, and a clone is then one
/// atomic increment instead of one per service.
pub type AppState = Arc<Services>;

/// The services behind [`AppState`].
pub struct Services {
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
    /// The wall clock: KPI windows, search recency, audit times.
    pub clock: Arc<dyn quench_knowledge::Clock>,
    /// The console's templates and sessions.
    pub console: Arc<console::Console>,
    /// Slack interaction signatures seen lately (replays are refused).
    pub slack_seen: Arc<slack::Seen>,
    /// High availability: the Lease as this replica sees it.
    pub ha: Option<Arc<crate::ha::Ha>>,
    /// High availability, on the leader: what the standby acknowledged.
    pub replication: Option<Arc<crate::replication::Replication>>,
    /// High availability, on a standby: how far it has copied.
    pub follower: Option<Arc<crate::replication::Follower>>,
    /// The client a standby forwards writes with.
    pub forwarder: reqwest::Client,
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

/// Declares every route once: the router and [`ROUTES`] come from the
/// same list, so a test can walk every route the server has.
macro_rules! routes {
    ($( $verb:ident $path:literal => $handler:path; )*) => {
        /// Every route: `(method, path)`.
        pub const ROUTES: &[(&str, &str)] = &[ $( (stringify!($verb), $path), )* ];

        /// Builds the router.
        pub fn router(state: AppState) -> Router {
            let open = state.config.api_tokens.is_empty();
            let router = Router::new()
                $( .route($path, routes!(@method $verb $handler)) )*
                .merge(console::routes())
                .route("/internal/v1/replicate", get(replica::replicate))
                .route("/internal/v1/artifacts/{id}", get(replica::artifact))
                .fallback(not_found)
                .layer(axum::middleware::from_fn(move |req, next| {
                    browser_guard(open, req, next)
                }));
            // Only a replica of two forwards; one alone pays nothing.
            let router = if state.ha.is_some() {
                router.layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    replica::standby_forward,
                ))
            } else {
                router
            };
            router.with_state(state)
        }
    };
    (@method GET $h:path) => { get($h) };
    (@method POST $h:path) => { post($h) };
    (@method PUT $h:path) => { put($h) };
}

/// The routes anyone may call: probes and metrics. Webhooks check their
/// sender's own credentials (a bearer token, a signature) instead of an
/// API token. Every other route takes a [`Caller`].
pub const PUBLIC_ROUTES: &[&str] = &["/healthz", "/readyz", "/metrics"];

routes! {
    GET "/healthz" => ops::healthz;
    GET "/readyz" => ops::readyz;
    GET "/metrics" => ops::metrics;
    POST "/hooks/alertmanager" => intake::hook_alertmanager;
    POST "/hooks/pagerduty" => intake::hook_pagerduty;
    POST "/hooks/datadog" => intake::hook_datadog;
    POST "/hooks/generic/{name}" => intake::hook_generic;
    POST "/hooks/slack/interactive" => slack::interactive;
    GET "/api/v1/incidents" => incidents::list_incidents;
    GET "/api/v1/incidents/{id}" => incidents::show_incident;
    GET "/api/v1/incidents/{id}/timeline" => incidents::incident_timeline;
    GET "/api/v1/incidents/{id}/hypotheses" => incidents::hypotheses;
    GET "/api/v1/alerts" => incidents::list_alerts;
    GET "/api/v1/runbooks" => ops::list_runbooks;
    POST "/api/v1/incidents/{id}/rerun" => incidents::rerun;
    GET "/api/v1/status" => ops::status;
    POST "/api/v1/incidents/{id}/approvals" => incidents::approve;
    POST "/api/v1/incidents/{id}/ack" => incidents::acknowledge;
    POST "/api/v1/incidents/{id}/annotations" => incidents::annotate;
    GET "/api/v1/stats" => knowledge::stats;
    GET "/api/v1/search" => knowledge::search;
    GET "/api/v1/graph/{kind}/{name}" => knowledge::graph;
    POST "/api/v1/reindex" => knowledge::reindex;
    POST "/api/v1/import" => import::import_incidents;
    GET "/api/v1/audit" => knowledge::list_audit;
    GET "/api/v1/audit/verify" => knowledge::verify_audit;
    GET "/api/v1/artifacts/{id}" => evidence::get_artifact;
    GET "/api/v1/artifacts/{id}/meta" => evidence::get_artifact_meta;
    GET "/api/v1/chaos" => chaos::list_chaos;
    GET "/api/v1/chaos/runs" => chaos::list_chaos_runs;
    GET "/api/v1/chaos/runs/{run}" => chaos::show_chaos_run;
    POST "/api/v1/chaos/runs/{run}/abort" => chaos::abort_chaos_run;
    POST "/api/v1/chaos/{name}/run" => chaos::start_chaos_run;
    GET "/api/v1/baselines" => evidence::list_baselines;
    PUT "/api/v1/baselines/{service}/{kind}" => evidence::put_baseline;
    GET "/api/v1/control" => ops::control_state;
    POST "/api/v1/control/pause" => ops::pause;
    POST "/api/v1/control/resume" => ops::resume;
    POST "/hooks/git" => intake::hook_git;
}

/// What a web page the operator happens to visit must not be able to do
/// to the API: a write needs a content type a page cannot send without
/// asking first (not a form's, not `text/plain`, not none), and an
/// `Origin`, when sent, must be the API's own. While the API is open (no
/// `api_tokens`, loopback only), the `Host` must be a loopback address or
/// `localhost` too: a page whose name resolves to 127.0.0.1 (DNS
/// rebinding) is refused.
async fn browser_guard(
    open: bool,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/api/") {
        return next.run(req).await;
    }
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let forbidden = |m: String| error(StatusCode::FORBIDDEN, "cross_site", m, Value::Null);
    if open {
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host.as_str(), |(h, _)| h);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let loopback = name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return forbidden(format!(
                "Host {host:?}: the open API (no api_tokens) answers loopback addresses and localhost only"
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let own = origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(&host));
        if !own {
            return forbidden(format!(
                "Origin {origin:?} is not this API's: requests from other sites are refused"
            ));
        }
    }
    let write = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if write {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if matches!(
            ct.as_str(),
            "" | "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
        ) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_type",
                format!(
                    "a write to the API needs Content-Type: application/json (or application/octet-stream for a profile, application/yaml or application/x-ndjson for an import), not {:?}",
                    if ct.is_empty() { "none" } else { ct.as_str() }
                ),
                Value::Null,
            );
        }
    }
    next.run(req).await
}

/// An optional `{"reason": ...}` body (pause, resume, rerun): empty is no
/// reason; anything else must be that shape.
async fn reason_body(
    headers: &HeaderMap,
    body: Body,
) -> Result<crate::api::ReasonRequest, Response> {
    let bytes = read_body(headers, body, 64 * 1024).await?;
    if bytes.is_empty() {
        return Ok(crate::api::ReasonRequest::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_shape",
            format!("expected {{\"reason\": ...}}: {e}"),
            Value::Null,
        )
    })
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
        // Without a copy when the body came in one piece.
        Ok(b) => Ok(Vec::from(b)),
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
        let caller = |name: String| Caller {
            name,
            need: std::marker::PhantomData,
        };
        let (headers, need) = (&parts.headers, N::ROLE);
        if s.config.api_tokens.is_empty() {
            return Ok(caller("anonymous".into()));
        }
        let unauthorized =
            |msg: &str| error(StatusCode::UNAUTHORIZED, "unauthorized", msg, Value::Null);
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <token>"))?;
        let hash = hex_sha256(token.as_bytes());
        let found =
            s.config.api_tokens.iter().find(|t| {
                constant_time_eq(t.sha256.to_ascii_lowercase().as_bytes(), hash.as_bytes())
            });
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
            Some(t) => Ok(caller(t.name.clone())),
        }
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn audit_incident(
    s: &AppState,
    actor: &str,
    action: AuditAction,
    incident: &str,
    detail: String,
) {
    audit(
        s,
        quench_knowledge::AuditEntry {
            seq: 0,
            at: s.clock.now(),
            actor: actor.to_string(),
            action,
            incident: Some(incident.to_string()),
            step: None,
            target: None,
            detail,
            prev: None,
            lease_epoch: None,
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

/// Runs a store call on tokio's blocking pool, off the async workers.
async fn blocking<T: Send + 'static, E: From<quench_knowledge::StoreError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(E::from(quench_knowledge::StoreError::Stopped)))
}
