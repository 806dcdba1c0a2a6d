//! The knowledge store: search, reindex, stats and the audit log.

use super::*;
use quench_knowledge::AuditAction;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(serde::Deserialize)]
pub(super) struct SearchQuery {
    #[serde(default)]
    q: String,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// The deepest page a search serves (`offset`): paging further means
/// ranking that many hits, and nobody reads past it.
pub const MAX_SEARCH_OFFSET: usize = 10_000;

/// `GET /api/v1/search?q=...[&limit=N][&offset=M]`: incidents by the
/// query language of docs/KNOWLEDGE.md, best first, with snippets, the
/// total and a page.
pub(super) async fn search(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Query(q): Query<SearchQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(20).clamp(1, 200);
    let offset = q.offset.unwrap_or(0);
    if offset > MAX_SEARCH_OFFSET {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_offset",
            format!(
                "offset {offset} is past the deepest page ({MAX_SEARCH_OFFSET}); narrow the query"
            ),
            Value::Null,
        );
    }
    let index = s.search.clone();
    let query = q.q.clone();
    let result = tokio::task::spawn_blocking(move || {
        index.search_page(&query, offset, limit, s.clock.now())
    })
    .await;
    match result {
        Ok(Ok(page)) => axum::Json(crate::api::SearchResponse {
            query: q.q,
            total: page.total,
            offset,
            limit,
            hits: page.hits,
        })
        .into_response(),
        Ok(Err(quench_knowledge::search::SearchError::Syntax(e))) => error(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            e.to_string(),
            serde_json::json!({"column": e.column}),
        ),
        Ok(Err(quench_knowledge::search::SearchError::Query(m))) => {
            error(StatusCode::BAD_REQUEST, "invalid_query", m, Value::Null)
        }
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// `GET /api/v1/graph/{kind}/{name}` (`service`, `cause`, `function`,
/// `runbook`): the knowledge graph walked from one node (docs/KNOWLEDGE.md).
pub(super) async fn graph(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Path((kind, name)): Path<(String, String)>,
) -> Response {
    use quench_knowledge::search::graph::Node;
    let node = match Node::parse(&format!("{kind}:{name}")) {
        Ok(n) => n,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_node",
                e.to_string(),
                Value::Null,
            );
        }
    };
    let index = s.search.clone();
    match tokio::task::spawn_blocking(move || index.graph(&node)).await {
        Ok(Ok(view)) => axum::Json(view).into_response(),
        Ok(Err(quench_knowledge::search::SearchError::Query(m))) => {
            error(StatusCode::BAD_REQUEST, "invalid_node", m, Value::Null)
        }
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// `POST /api/v1/reindex`: rebuilds the search index from the records
/// (admin).
pub(super) async fn reindex(State(s): State<AppState>, caller: Caller<Admin>) -> Response {
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
                    at: s.clock.now(),
                    actor,
                    action: AuditAction::SearchReindex,
                    incident: None,
                    step: None,
                    target: None,
                    detail: format!("{n} incidents"),
                    prev: None,
                    lease_epoch: None,
                },
            )
            .await;
            axum::Json(crate::api::ReindexAnswer { indexed: n }).into_response()
        }
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct StatsQuery {
    since: Option<String>,
    by: Option<String>,
}

/// `GET /api/v1/stats[?since=30d][&by=service|runbook]`: MTTD, MTTA, MTTR
/// and the rates, per group.
pub(super) async fn stats(
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
    let since = s.clock.now() - chrono::Duration::from_std(span).unwrap_or_default();
    match kpis(&s, since, by).await {
        Ok((groups, lag)) => axum::Json(crate::api::StatsResponse {
            since,
            by: q.by.as_deref().unwrap_or("all").to_string(),
            groups: groups.into_iter().collect(),
            index_lag_changes: lag,
        })
        .into_response(),
        Err(e) => internal(e),
    }
}

/// How long a KPI read waits for the search index to take in the changes
/// made before it.
const KPI_CATCH_UP: Duration = Duration::from_secs(2);

/// The KPIs since `since`, summed from the search index's columns (a few
/// milliseconds at 100,000 incidents, where reading every record takes most
/// of a second) once the index holds every change made before the call, or
/// after [`KPI_CATCH_UP`] with the changes it still lacks.
pub(super) async fn kpis(
    s: &AppState,
    since: chrono::DateTime<chrono::Utc>,
    by: quench_knowledge::kpi::By,
) -> Result<
    (BTreeMap<String, quench_knowledge::kpi::Kpis>, u64),
    quench_knowledge::search::SearchError,
> {
    let wanted = s.incidents.last_change();
    let indexed = || s.lag.index.load(std::sync::atomic::Ordering::Acquire);
    let deadline = tokio::time::Instant::now() + KPI_CATCH_UP;
    while indexed() < wanted && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lag = wanted.saturating_sub(indexed());
    let index = s.search.clone();
    let groups = tokio::task::spawn_blocking(move || index.kpis(since, by))
        .await
        .map_err(|e| quench_knowledge::search::SearchError::Records(e.to_string()))??;
    Ok((groups, lag))
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    incident: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list_audit(
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
        Ok(audit) => axum::Json(crate::api::AuditList { audit }).into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /api/v1/audit/verify`: walks the audit log's hash chain; the first
/// entry changed, removed or reordered after the fact, if any.
pub(super) async fn verify_audit(State(s): State<AppState>, _caller: Caller<Viewer>) -> Response {
    let audit = s.executor.audit.clone();
    match blocking(move || audit.verify()).await {
        Ok(check) => axum::Json(check).into_response(),
        Err(e) => internal(e),
    }
}
