//! Chaos experiments and their runs.

use super::*;

/// `GET /api/v1/chaos`: the experiments in force, their schedules (with
/// the next three runs) and the runs going on.
pub(super) async fn list_chaos(State(s): State<AppState>, _caller: Caller<Viewer>) -> Response {
    let running = s.chaos.running();
    let now = s.clock.now();
    let experiments = s
        .chaos
        .experiments()
        .iter()
        .map(|e| crate::api::ExperimentInfo {
            name: e.name.clone(),
            title: e.file.title.value.clone(),
            path: e.path.clone(),
            tags: e.file.tags.clone(),
            schedule: e.schedule.as_ref().map(|sc| crate::api::ScheduleInfo {
                cron: sc.cron.as_str().to_string(),
                timezone: sc.tz.name().to_string(),
                describe: sc.cron.describe(),
                next: quench_chaos::schedule::next_runs(sc, now, 3),
            }),
            running: running
                .iter()
                .filter(|(_, x)| *x == e.name)
                .map(|(r, _)| r.clone())
                .collect(),
        })
        .collect();
    axum::Json(crate::api::ChaosList {
        schedules_on: s.config.chaos.schedule,
        experiments,
    })
    .into_response()
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
        Ok(run) => (
            StatusCode::ACCEPTED,
            axum::Json(crate::api::ChaosStarted { run }),
        )
            .into_response(),
        Err(e @ crate::chaos::StartError::NotFound(_)) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            e.to_string(),
            Value::Null,
        ),
        Err(e @ crate::chaos::StartError::Refused { .. }) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused",
            e.to_string(),
            Value::Null,
        ),
        Err(e @ crate::chaos::StartError::Paused(_)) => {
            error(StatusCode::CONFLICT, "paused", e.to_string(), Value::Null)
        }
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
            axum::Json(crate::api::ChaosAborting {
                run,
                aborting: true,
            }),
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
    let runs = match blocking(move || store.runs(limit)).await {
        Ok(runs) => runs,
        Err(e) => return internal(e),
    };
    match runs
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(runs) => axum::Json(crate::api::ChaosRuns {
            runs,
            running: s.chaos.running(),
        })
        .into_response(),
        Err(e) => internal(format!("a stored chaos verdict does not decode: {e}")),
    }
}

/// `GET /api/v1/chaos/runs/{run}`: a verdict, or `{"state": "running"}`.
pub(super) async fn show_chaos_run(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Path(run): Path<String>,
) -> Response {
    use crate::api::ChaosRunAnswer;
    if s.chaos.running().iter().any(|(r, _)| *r == run) {
        return axum::Json(ChaosRunAnswer::Running {
            run,
            state: "running".into(),
        })
        .into_response();
    }
    let (store, id) = (s.chaos.store().clone(), run.clone());
    match blocking(move || store.run(&id)).await {
        Ok(Some(v)) => match serde_json::from_value(v) {
            Ok(verdict) => axum::Json(ChaosRunAnswer::Done(Box::new(verdict))).into_response(),
            Err(e) => internal(format!(
                "chaos run {run:?}: the stored verdict does not decode: {e}"
            )),
        },
        Ok(None) => missing(format!("chaos run {run:?}")),
        Err(e) => internal(e),
    }
}
