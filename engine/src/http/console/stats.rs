//! The stats page: the response KPIs per service or runbook, as a table and
//! SVG bars drawn on the server.

use super::*;

#[derive(Deserialize)]
pub(super) struct StatsPageQuery {
    since: Option<String>,
    by: Option<String>,
}

/// `1h02m`, `45s`: a duration as people read it.
pub(super) fn human_secs(s: Option<f64>) -> String {
    let Some(s) = s else {
        return "-".into();
    };
    let s = s.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn percent(r: Option<f64>) -> String {
    r.map(|x| format!("{:.0}%", x * 100.0))
        .unwrap_or_else(|| "-".into())
}

pub(super) async fn stats_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StatsPageQuery>,
) -> Response {
    let (v, cookie) = match viewer(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let since_text = q
        .since
        .clone()
        .filter(|x| !x.is_empty())
        .unwrap_or_else(|| "30d".into());
    let by_text =
        q.by.clone()
            .filter(|x| !x.is_empty())
            .unwrap_or_else(|| "service".into());
    let bys: Vec<Value> = ["all", "service", "runbook"]
        .iter()
        .map(|b| json!({"value": b, "selected": *b == by_text}))
        .collect();
    let by = match by_text.as_str() {
        "all" => Ok(quench_knowledge::kpi::By::Overall),
        "service" => Ok(quench_knowledge::kpi::By::Service),
        "runbook" => Ok(quench_knowledge::kpi::By::Runbook),
        other => Err(format!("by {other:?}: all, service or runbook")),
    };
    let span = quench_runbooks::duration::parse(&since_text)
        .map_err(|_| format!("{since_text:?} is not a duration (7d, 24h, 30m)"));
    let (by, span) = match (by, span) {
        (Ok(by), Ok(span)) => (by, span),
        (Err(m), _) | (_, Err(m)) => {
            let ctx =
                json!({"since": since_text, "by": by_text, "bys": bys, "rows": [], "error": m});
            return with_cookie(
                page(
                    &s,
                    Some(&v),
                    StatusCode::BAD_REQUEST,
                    "Stats",
                    "stats",
                    ctx,
                    None,
                )
                .await,
                cookie,
            );
        }
    };
    let since = s.clock.now() - chrono::Duration::from_std(span).unwrap_or_default();
    let (groups, lag) = match super::knowledge::kpis(&s, since, by).await {
        Ok(x) => x,
        Err(e) => return internal(e),
    };
    let max_mttr = groups
        .values()
        .filter_map(|k| k.mttr_seconds)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let rows: Vec<Value> = groups
        .iter()
        .enumerate()
        .map(|(i, (name, k))| {
            let y = 4 + i * 20;
            let mttr_width = (k.mttr_seconds.unwrap_or(0.0) / max_mttr * 360.0).round() as u64;
            let success_width = (k.runbook_success_rate.unwrap_or(0.0) * 360.0).round() as u64;
            json!({"name": name, "incidents": k.incidents, "mttd": human_secs(k.mttd_seconds),
                   "mtta": human_secs(k.mtta_seconds), "mttr": human_secs(k.mttr_seconds),
                   "auto": percent(k.auto_closure_rate), "success": percent(k.runbook_success_rate),
                   "runs": k.runs, "y": y, "y_text": y + 12, "mttr_width": mttr_width,
                   "success_width": success_width, "x_label": 206 + mttr_width,
                   "x_success": 206 + success_width})
        })
        .collect();
    let ctx = json!({"since": since_text, "by": by_text, "bys": bys, "chart_height": 8 + rows.len() * 20,
                     "rows": rows, "lag": lag});
    with_cookie(
        page(&s, Some(&v), StatusCode::OK, "Stats", "stats", ctx, None).await,
        cookie,
    )
}
