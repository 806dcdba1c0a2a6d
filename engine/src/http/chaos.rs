//! Chaos experiments and their runs.

use super::*;

/// `GET /api/v1/chaos`: the experiments in force, their schedules (with
/// the next three runs) and the runs going on.
pub(super) async fn list_chaos(State(s): State<AppState>, _caller: Caller<Viewer>) -> Response {
    let running = s.chaos.running();
    let now = s.clock.now();
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
pub(super) struct ChaosRunQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/chaos/{name}/run[?dry_run=true]`: starts a run (admin).
pub(super) async fn start_chaos_run(
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
pub(super) async fn abort_chaos_run(
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
pub(super) struct ChaosRunsQuery {
    limit: Option<usize>,
}

/// `GET /api/v1/chaos/runs[?limit=N]`: verdicts, newest first.
pub(super) async fn list_chaos_runs(
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
pub(super) async fn show_chaos_run(
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
