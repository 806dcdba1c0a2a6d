//! The two replicas' side of the HTTP server (high availability only):
//! `GET /internal/v1/replicate`, what the leader answers its standby, and
//! the standby's forwarding of writes to the leader.

use super::*;
use crate::replication::{BATCH, Batch, LONG_POLL};
use axum::http::Method;
use quench_connectors::inbound::constant_time_eq;
use std::time::Duration;

/// Marks a request a standby forwarded, so it is never forwarded twice.
const FORWARDED: &str = "x-quench-forwarded-by";

#[derive(Deserialize)]
pub(super) struct ReplicateQuery {
    log: u64,
    changes: u64,
    #[serde(default)]
    audit: u64,
    #[serde(default)]
    wait_ms: u64,
    /// The standby's delivery ending at `log`: `FIRST-DIGEST`, or absent.
    #[serde(default)]
    tail: Option<String>,
    /// A full copy of the records in progress: the page after this id
    /// (empty: from the first) instead of the change feed.
    #[serde(default)]
    full_after: Option<String>,
}

/// The peer token, or the 401 that refuses its absence.
#[allow(clippy::result_large_err)] // the refusal is the answer, as elsewhere in http
fn peer(s: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let ok = s
        .config
        .ha
        .peer_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .is_some_and(|token| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|got| constant_time_eq(got.as_bytes(), token.as_bytes()))
        });
    if ok {
        return Ok(());
    }
    Err(error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "the internal endpoints take the replicas' peer token",
        Value::Null,
    ))
}

/// `GET /internal/v1/replicate?log=N&changes=C&wait_ms=W` (peer token):
/// the deliveries after `N` and the records changed after `C`; `N` and
/// `C` are what the standby holds on disk, its acknowledgement.
pub(super) async fn replicate(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ReplicateQuery>, QueryRejection>,
) -> Response {
    let (Some(ha), Some(rep)) = (&s.ha, &s.replication) else {
        return not_found().await;
    };
    if let Err(r) = peer(&s, &headers) {
        return r;
    }
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    if !ha.is_leader() {
        return error(
            StatusCode::CONFLICT,
            "not_leader",
            "this replica is not the leader",
            json!({"leader": ha.leader_url()}),
        );
    }
    // A position counts as an acknowledgement only when the standby's log
    // is this one's up to it (a replica that led before may hold others).
    if crate::replication::tail_at(&s.log, q.log).await == q.tail {
        rep.report(q.log, q.changes, q.audit, s.log.len());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms).min(LONG_POLL);
    while s.log.len() <= q.log
        && s.incidents.last_change() <= q.changes
        && tokio::time::Instant::now() < deadline
    {
        // New alerts wake it at once; record changes are looked for
        // every few milliseconds.
        rep.wait_growth(Duration::from_millis(5)).await;
    }
    // The pipeline's position first, then the last change: every record
    // the pipeline wrote for alerts up to that position is in the feed by
    // then (see `Follower::apply`).
    let pipeline = s.lag.pipeline.load(std::sync::atomic::Ordering::Acquire);
    let change_head = s.incidents.last_change();
    let epoch = ha.epoch();
    let (log, incidents, control, audit) = (
        s.log.clone(),
        s.incidents.clone(),
        s.executor.control.clone(),
        s.executor.audit.clone(),
    );
    let read = tokio::task::spawn_blocking(move || -> Result<_, String> {
        // A position inside one of this log's deliveries is no position
        // of this log: the standby learns it from `at_position`.
        let deliveries = match log.deliveries_after(q.log, BATCH) {
            Ok(d) => d,
            Err(crate::alert_log::LogError::Corrupt { .. }) => Vec::new(),
            Err(e) => return Err(e.to_string()),
        };
        let at_position = log.delivery_ending_at(q.log).map_err(|e| e.to_string())?;
        let (mut records, mut changes_to, mut gap) = (Vec::new(), q.changes, false);
        let mut full_done = false;
        let feed = match &q.full_after {
            Some(after) => {
                let after = Some(after.as_str()).filter(|a| !a.is_empty());
                records = incidents
                    .page_after(after, BATCH)
                    .map_err(|e| e.to_string())?;
                full_done = records.len() < BATCH;
                None
            }
            None => Some(
                incidents
                    .changes_after(q.changes, BATCH)
                    .map_err(|e| e.to_string())?,
            ),
        };
        match feed {
            None => {}
            Some(quench_knowledge::Changes::Gap { .. }) => gap = true,
            Some(quench_knowledge::Changes::Next(changes)) => {
                let mut seen = std::collections::HashSet::new();
                for c in changes.iter().rev() {
                    if seen.insert(c.id.clone())
                        && let Some(r) = incidents.get(&c.id).map_err(|e| e.to_string())?
                    {
                        records.push(r);
                    }
                }
                records.reverse();
                if let Some(last) = changes.last() {
                    changes_to = last.seq;
                }
            }
        }
        let control = control.state().map_err(|e| e.to_string())?;
        let entries = audit
            .stored_after(q.audit, BATCH)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(seq, bytes)| (seq, String::from_utf8_lossy(&bytes).into_owned()))
            .collect();
        let from = q
            .audit
            .saturating_sub(crate::replication::AUDIT_WINDOW - 1)
            .max(1);
        let hashes = audit
            .stored_after(from - 1, crate::replication::AUDIT_WINDOW as usize)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|(seq, _)| *seq <= q.audit)
            .map(|(seq, bytes)| (seq, crate::replication::digest(&bytes)))
            .collect();
        Ok(Batch {
            epoch,
            log_head: log.len(),
            pipeline,
            deliveries,
            records,
            changes_to,
            change_head,
            gap,
            full_done,
            control,
            at_position,
            audit: entries,
            audit_hashes: hashes,
            audit_last: audit.last_seq(),
        })
    })
    .await;
    match read {
        Ok(Ok(batch)) => axum::Json(batch).into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// `GET /internal/v1/artifacts/{id}` (peer token): an artifact's bytes,
/// its media type and kind, for a standby that copies what its records
/// name.
pub(super) async fn artifact(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if s.ha.is_none() {
        return not_found().await;
    }
    if let Err(r) = peer(&s, &headers) {
        return r;
    }
    let store = s.artifacts.clone();
    match blocking(move || store.get(&id)).await {
        Ok(Some((meta, bytes))) => {
            let mut r = bytes.into_response();
            let h = r.headers_mut();
            for (k, v) in [
                ("content-type", meta.media_type),
                ("x-quench-kind", meta.kind),
            ] {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(k, v);
                }
            }
            r
        }
        Ok(None) => not_found().await,
        Err(e) => internal(e),
    }
}

/// On a standby: writes go to the leader (webhooks and API writes, bodies
/// streamed both ways); with no leader known or reachable, 503 and
/// `Retry-After` (Alertmanager, PagerDuty and Datadog retry). Reads are
/// answered here, from what this replica has copied.
pub(super) async fn standby_forward(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(ha) = &s.ha else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let api = path.starts_with("/hooks/") || path.starts_with("/api/");
    if ha.is_leader() || !write || path.starts_with("/internal/") {
        return next.run(req).await;
    }
    let unavailable = |m: String| {
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "no_leader", m, Value::Null);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        r
    };
    if !api {
        // Console forms: only sign-in, sign-out and explain change nothing.
        if matches!(path, "/login" | "/logout" | "/runbooks/explain") {
            return next.run(req).await;
        }
        return unavailable(format!(
            "this replica is the standby; act from the leader's console{}",
            ha.leader_url()
                .map(|u| format!(" at {u}"))
                .unwrap_or_default()
        ));
    }
    if req.headers().contains_key(FORWARDED) {
        return unavailable(
            "a standby forwarded this to a replica that is not the leader either; retry".into(),
        );
    }
    let Some(leader) = ha.leader_url() else {
        return unavailable("no leader holds the Lease right now; retry".into());
    };
    let url = format!(
        "{}{}",
        leader.trim_end_matches('/'),
        req.uri().path_and_query().map_or(path, |p| p.as_str())
    );
    let (parts, body) = req.into_parts();
    let mut out = s.forwarder.request(parts.method.clone(), &url);
    for (k, v) in &parts.headers {
        if !matches!(
            k.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding"
        ) {
            out = out.header(k, v);
        }
    }
    out = out
        .header(FORWARDED, ha.identity.as_str())
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    match out.send().await {
        Ok(r) => {
            let mut back = Response::builder().status(r.status().as_u16());
            for (k, v) in r.headers() {
                if !matches!(
                    k.as_str(),
                    "connection" | "transfer-encoding" | "content-length"
                ) {
                    back = back.header(k, v);
                }
            }
            back.body(Body::from_stream(r.bytes_stream()))
                .unwrap_or_else(internal)
        }
        Err(e) => {
            warn!(error = %e, %leader, "standby: the leader does not answer a forwarded write");
            unavailable(format!(
                "the leader at {leader} does not answer: {e}; retry"
            ))
        }
    }
}
