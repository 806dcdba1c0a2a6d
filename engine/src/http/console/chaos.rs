//! The chaos page: the calendar of the next scheduled runs, the runs going
//! on, and the history of verdicts with what each found wrong and the
//! incidents each one opened.

use super::*;

/// Verdicts listed, newest first.
const RUNS: usize = 50;
/// Scheduled runs shown per experiment.
const NEXT: usize = 3;

pub(super) async fn chaos_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let (v, cookie) = match viewer(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = s.clock.now();
    let running = s.chaos.running();
    let mut calendar: Vec<(chrono::DateTime<chrono::Utc>, Value)> = Vec::new();
    let experiments: Vec<Value> = s
        .chaos
        .experiments()
        .iter()
        .map(|e| {
            let schedule = e.schedule.as_ref().map(|sc| {
                for at in quench_chaos::schedule::next_runs(sc, now, NEXT) {
                    calendar.push((at, json!({"at": time(Some(at)), "experiment": e.name})));
                }
                format!("{} ({})", sc.cron.describe(), sc.tz.name())
            });
            json!({"name": e.name, "title": e.file.title.value, "path": e.path,
                   "schedule": schedule,
                   "running": running.iter().filter(|(_, x)| *x == e.name).map(|(r, _)| r).collect::<Vec<_>>()})
        })
        .collect();
    calendar.sort_by_key(|(at, _)| *at);
    let store = s.chaos.store().clone();
    let stored = match blocking(move || store.runs(RUNS)).await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let runs: Vec<Value> = stored
        .into_iter()
        .filter_map(|x| serde_json::from_value::<crate::chaos::RunReport>(x).ok())
        .map(|r| {
            let took = (r.verdict.ended_at - r.verdict.started_at).num_milliseconds() as f64 / 1000.0;
            json!({
                "experiment": r.verdict.experiment, "run": r.verdict.run,
                "outcome": r.verdict.outcome.as_str(),
                "bad": !r.verdict.outcome.is_success(),
                "started": time(Some(r.verdict.started_at)),
                "took": stats::human_secs(Some(took)),
                "dry_run": r.dry_run, "abort_reason": r.verdict.abort_reason,
                "rollback_failed": r.verdict.rollback_failed,
                "defects": r.defects,
                "incidents": r.incidents.iter().map(|i| json!({"id": i.id, "title": i.title,
                    "recovered": i.recovered_seconds.map(|x| stats::human_secs(Some(x)))})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let ctx = json!({
        "schedules_on": s.config.chaos.schedule,
        "experiments": experiments,
        "calendar": calendar.into_iter().map(|(_, c)| c).collect::<Vec<_>>(),
        "runs": runs,
    });
    with_cookie(
        page(&s, Some(&v), StatusCode::OK, "Chaos", "chaos", ctx, None).await,
        cookie,
    )
}
