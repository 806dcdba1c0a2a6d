//! Probes, metrics, the runbook set and the kill switch.

use super::*;

/// The KPI gauges, rendered, and when. `/metrics` serves a rendering up
/// to [`KPI_TTL`] old instead of reading every incident on each scrape.
#[derive(Default)]
pub struct KpiCache(std::sync::Mutex<Option<(std::time::Instant, String)>>);

/// How long a rendering of the KPI gauges is served.
const KPI_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl KpiCache {
    /// The gauges, worked out again (off the async workers) when the last
    /// rendering is older than [`KPI_TTL`].
    async fn get(
        &self,
        index: &Arc<quench_knowledge::search::SearchIndex>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> String {
        if let Some((at, text)) = &*self.0.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < KPI_TTL
        {
            return text.clone();
        }
        let index = index.clone();
        let text = tokio::task::spawn_blocking(move || kpi_gauges(&index, now))
            .await
            .unwrap_or_default();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), text.clone()));
        text
    }
}

pub(super) async fn healthz(State(s): State<AppState>) -> Response {
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
/// What `/readyz` says of high availability, and why it is degraded.
pub(super) fn ha_state(s: &AppState) -> (Value, Vec<String>) {
    let Some(ha) = &s.ha else {
        return (Value::Null, Vec::new());
    };
    let mut reasons = Vec::new();
    let v = if ha.is_leader() {
        let rep = s.replication.as_ref();
        let degraded = rep.is_some_and(|r| r.degraded());
        if degraded {
            reasons.push(
                "replication degraded to async: the standby does not confirm in time".to_string(),
            );
        }
        json!({
            "role": "leader", "identity": ha.identity, "epoch": ha.epoch(),
            "replication": rep.map(|r| json!({
                "mode": r.mode, "degraded": degraded,
                "standby_acked_alerts": r.acked(),
                "standby_lag_alerts": s.log.len().saturating_sub(r.acked()),
                "standby_acked_changes": r.acked_changes(),
                "standby_silent_seconds": r.standby_silent_seconds(),
            })),
        })
    } else {
        let f = s.follower.as_ref();
        let broken = f.and_then(|f| f.broken());
        if let Some(b) = &broken {
            reasons.push(format!("replication stopped: {b}"));
        }
        let leader_log = f.map_or(0, |f| {
            f.leader_log.load(std::sync::atomic::Ordering::Acquire)
        });
        json!({
            "role": "standby", "identity": ha.identity, "leader": ha.leader_url(),
            "lag_alerts": leader_log.saturating_sub(s.log.len()),
            "lag_changes": f.map_or(0, |f| f.leader_changes.load(std::sync::atomic::Ordering::Acquire)
                .saturating_sub(f.changes.load(std::sync::atomic::Ordering::Acquire))),
            "broken": broken,
            "audit_set_aside": f.map_or(0, |f| f.audit_set_aside.load(std::sync::atomic::Ordering::Acquire)),
            "artifacts_copied": f.map_or(0, |f| f.artifacts_copied.load(std::sync::atomic::Ordering::Acquire)),
        })
    };
    (v, reasons)
}

pub(super) async fn readyz(State(s): State<AppState>) -> Response {
    // A standby runs no pipeline: it has no pipeline lag.
    let acting = s.ha.as_ref().is_none_or(|h| h.is_leader());
    let pipeline = if acting {
        s.lag.pipeline_lag(&s.log)
    } else {
        0
    };
    let index = s.lag.index_lag(&s.incidents);
    let (ha, mut reasons) = ha_state(&s);
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
        "ha": ha,
    }))
    .into_response()
}

/// `GET /api/v1/status` counts unresolved incidents up to this many.
const UNRESOLVED_COUNTED: usize = 10_000;

/// `GET /api/v1/status`: version, kill switch, runbook set, lags.
pub(super) async fn status(State(s): State<AppState>, _caller: Caller<Viewer>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let control = s.executor.control.clone();
    let last_change = match blocking(move || control.state()).await {
        Ok(st) => st,
        Err(e) => return internal(e),
    };
    let incidents = s.incidents.clone();
    let unresolved = match blocking(move || {
        // Counted up to a bound: a status call must stay cheap.
        incidents.list(&IncidentFilter {
            open_only: true,
            limit: Some(UNRESOLVED_COUNTED),
            ..Default::default()
        })
    })
    .await
    {
        Ok(list) => list.len(),
        Err(e) => return internal(e),
    };
    let loaded = s.runbooks.current();
    axum::Json(crate::api::StatusAnswer {
        version: env!("CARGO_PKG_VERSION").to_string(),
        control: crate::api::ControlAnswer {
            paused: s.executor.control.is_paused(),
            last_change,
        },
        runbooks: crate::api::RunbookSetStatus {
            source: s.runbooks.origin(),
            commit: loaded.commit.clone(),
            count: loaded.set.runbooks.len(),
            loaded_at: loaded.loaded_at,
            last_error: s.runbooks.status().last_error,
        },
        pipeline_lag_alerts: s.lag.pipeline_lag(&s.log),
        index_lag_changes: s.lag.index_lag(&s.incidents),
        store_writer_queue: s.lag.writer.stats().queued.load(Relaxed),
        runs_active: s.metrics.runs_active.load(Relaxed) as u64,
        unresolved_incidents: unresolved,
        chaos_schedule: s.config.chaos.schedule,
    })
    .into_response()
}

/// The runbook set in force, where it came from, and the last sync.
pub(super) async fn list_runbooks(State(s): State<AppState>, _caller: Caller<Viewer>) -> Response {
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

/// The response KPIs of the last 30 days, as gauges: summed from the
/// search index's columns, never by reading the records.
pub(super) fn kpi_gauges(
    index: &quench_knowledge::search::SearchIndex,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    use std::fmt::Write;
    let since = now - chrono::Duration::days(30);
    let k = index
        .kpis(since, quench_knowledge::kpi::By::Overall)
        .ok()
        .and_then(|mut g| g.remove("all"));
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

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    use std::fmt::Write;
    let mut text = s.metrics.render();
    text.push_str(&s.kpis.get(&s.search, s.clock.now()).await);
    let store = s.lag.writer.stats();
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
            store.queued.load(std::sync::atomic::Ordering::Relaxed),
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}"
        );
    }
    let commits = s.log.commit_stats();
    let counters = [
        (
            "quench_log_commits_total",
            "Group commits of the alert log (one write and one fdatasync each).",
            commits.commits.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "quench_log_commit_requests_total",
            "Webhook deliveries those group commits answered.",
            commits.requests.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "quench_store_commits_total",
            "Commits of the knowledge store's writer (each writes the records staged since the last in one transaction, if any).",
            store.commits.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "quench_store_flushes_total",
            "Flushes and fdatasyncs of the knowledge store (each covers the durable writes waiting).",
            store.flushes.load(std::sync::atomic::Ordering::Relaxed),
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let _ = writeln!(
        text,
        "# HELP quench_log_sync_seconds_total Time the alert log spent writing and in fdatasync.\n\
         # TYPE quench_log_sync_seconds_total counter\nquench_log_sync_seconds_total {}",
        commits
            .sync_nanos
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1e9
    );
    if let Some(ha) = &s.ha {
        let mut ha_gauges = vec![
            (
                "quench_ha_leader",
                "1 while this replica holds the Lease.",
                u64::from(ha.is_leader()),
            ),
            (
                "quench_ha_lease_epoch",
                "The Lease's transitions when this replica took it.",
                ha.epoch(),
            ),
        ];
        if let (true, Some(r)) = (ha.is_leader(), &s.replication) {
            ha_gauges.push((
                "quench_replication_degraded",
                "1 while sync replication answers without the standby.",
                u64::from(r.degraded()),
            ));
            ha_gauges.push((
                "quench_replication_lag_alerts",
                "Alerts the standby has not confirmed.",
                s.log.len().saturating_sub(r.acked()),
            ));
        }
        for (name, help, v) in ha_gauges {
            let _ = writeln!(
                text,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}"
            );
        }
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

pub(super) async fn control_state(State(s): State<AppState>, _caller: Caller<Viewer>) -> Response {
    let control = s.executor.control.clone();
    match blocking(move || control.state()).await {
        Ok(st) => axum::Json(crate::api::ControlAnswer {
            paused: s.executor.control.is_paused(),
            last_change: st,
        })
        .into_response(),
        Err(e) => internal(e),
    }
}

pub(super) async fn set_paused(
    s: AppState,
    actor: String,
    headers: HeaderMap,
    body: Body,
    paused: bool,
) -> Response {
    let reason = match reason_body(&headers, body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match s.executor.control.set(paused, &actor, &reason.reason).await {
        Ok(st) => {
            let action = if paused {
                AuditAction::ControlPause
            } else {
                AuditAction::ControlResume
            };
            audit(
                &s,
                quench_knowledge::AuditEntry {
                    seq: 0,
                    at: st.at,
                    actor: actor.clone(),
                    action,
                    incident: None,
                    step: None,
                    target: None,
                    detail: reason.reason.clone(),
                    prev: None,
                    lease_epoch: None,
                },
            )
            .await;
            warn!(by = %actor, paused, reason = %reason.reason, "kill switch changed");
            axum::Json(crate::api::ControlAnswer {
                paused,
                last_change: Some(st),
            })
            .into_response()
        }
        Err(e) => internal(e),
    }
}

pub(super) async fn pause(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    set_paused(s, caller.name, headers, body, true).await
}

pub(super) async fn resume(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    set_paused(s, caller.name, headers, body, false).await
}
