//! The runbooks pages: the set in force (where from, which commit, the
//! last sync and its error), each runbook's matchers, steps and recent runs,
//! and the explain form (paste an alert, see which runbook runs, why the
//! others do not, and what each step would get).

use super::*;
use quench_knowledge::search::graph::Node;

/// An explain form's alert text, at most.
const MAX_ALERT: usize = 256 * 1024;

/// The list, the sync state and the explain form (and its answer).
fn list_context(s: &AppState, v: &Visitor, explained: Option<Value>, alert: &str) -> Value {
    let loaded = s.runbooks.current();
    let status = s.runbooks.status();
    let runbooks: Vec<Value> = loaded
        .set
        .runbooks
        .iter()
        .map(|r| {
            json!({
                "name": r.name(), "path": r.path, "description": r.file.description,
                "priority": r.file.priority,
                "matchers": r.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
                "steps": r.steps.len(),
                "destructive": r.steps.iter().filter(|st| st.kind.is_destructive()).count(),
            })
        })
        .collect();
    json!({
        "origin": s.runbooks.origin(),
        "commit": loaded.commit.as_deref().unwrap_or("not from git"),
        "loaded_at": time(loaded.loaded_at),
        "triage": loaded.set.triage,
        "last_attempt": time(status.last_attempt_at),
        "last_attempt_commit": status.last_attempt_commit,
        "last_error": status.last_error,
        "runbooks": runbooks,
        "explained": explained,
        "alert": alert,
        "csrf": v.csrf,
    })
}

pub(super) async fn runbooks_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let (v, cookie) = match viewer(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ctx = list_context(&s, &v, None, "");
    with_cookie(
        page(
            &s,
            Some(&v),
            StatusCode::OK,
            "Runbooks",
            "runbooks",
            ctx,
            None,
        )
        .await,
        cookie,
    )
}

#[derive(Deserialize)]
pub(super) struct ExplainForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    alert: String,
}

/// Which runbooks an alert would run and why the others would not, with
/// each matched runbook's steps rendered and checked as the run would.
/// Read only: the viewer role, a CSRF token as every form.
pub(super) async fn explain(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<ExplainForm>,
) -> Response {
    let v = match check_form(&s, &headers, &f.csrf, Role::Viewer) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let refuse = |m: String| async {
        let ctx = list_context(&s, &v, None, &f.alert);
        page(
            &s,
            Some(&v),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Runbooks",
            "runbooks",
            ctx,
            Some(m),
        )
        .await
    };
    if f.alert.len() > MAX_ALERT {
        return refuse(format!("the alert is longer than {MAX_ALERT} bytes")).await;
    }
    let alerts = match crate::explain::read_alerts(f.alert.as_bytes()) {
        Ok(a) if a.is_empty() => return refuse("no alert in what was pasted".into()).await,
        Ok(a) => a,
        Err(e) => return refuse(e).await,
    };
    let hosts = match &s.config.executor.allowed_hosts {
        Some(list) => match quench_connectors::hosts::HostAllowlist::parse(list) {
            Ok(h) => Some(h),
            Err(e) => return refuse(format!("executor.allowed_hosts: {e}")).await,
        },
        None => None,
    };
    let defaults = s.config.step_defaults();
    let env: std::collections::BTreeMap<String, String> = s
        .config
        .executor
        .env_allowlist
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
        .collect();
    let loaded = s.runbooks.current();
    let now = s.clock.now();
    let explained: Vec<Value> = alerts
        .iter()
        .take(20)
        .map(|a| {
            let e = loaded.set.explain_at(a, now, &[]);
            let plans: Vec<Value> = e
                .matched()
                .iter()
                .filter_map(|n| loaded.set.runbooks.iter().find(|r| r.name() == *n))
                .map(|r| {
                    let steps: Vec<Value> =
                        crate::explain::plan(r, a, &defaults, hosts.as_ref(), &env)
                            .into_iter()
                            .map(|p| {
                                json!({"id": p.id, "uses": p.uses, "destructive": p.destructive,
                                   "verdict": p.verdict, "why": p.why,
                                   "params": p.with.map(|w| w.to_string())})
                            })
                            .collect();
                    json!({"runbook": r.name(), "steps": steps})
                })
                .collect();
            let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            json!({"alert": format!("{} {{{}}}", a.status.as_str(), labels.join(", ")),
                   "runs": e.matched(), "lines": e.lines(), "plans": plans})
        })
        .collect();
    let ctx = list_context(&s, &v, Some(json!(explained)), &f.alert);
    page(
        &s,
        Some(&v),
        StatusCode::OK,
        "Runbooks",
        "runbooks",
        ctx,
        None,
    )
    .await
}

/// One runbook: what it matches, its steps as written, how its runs went
/// and the latest incidents it ran for (from the index's columns).
pub(super) async fn runbook_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let (v, cookie) = match viewer(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let loaded = s.runbooks.current();
    let Some(r) = loaded.set.runbooks.iter().find(|r| r.name() == name) else {
        let ctx = list_context(&s, &v, None, "");
        return with_cookie(
            page(
                &s,
                Some(&v),
                StatusCode::NOT_FOUND,
                "Runbooks",
                "runbooks",
                ctx,
                Some(format!("no runbook {name:?} in force")),
            )
            .await,
            cookie,
        );
    };
    let step = |st: &quench_runbooks::runbook::Step| {
        json!({"id": st.id, "uses": st.kind.name(), "destructive": st.kind.is_destructive(),
               "approval": st.approval.is_some(), "when": st.when,
               "params": serde_json::to_string(&st.with).unwrap_or_default()})
    };
    let index = s.search.clone();
    let node = Node::Runbook(name.clone());
    let view = match tokio::task::spawn_blocking(move || index.graph(&node)).await {
        Ok(Ok(v)) => Some(v),
        _ => None,
    };
    let runs = view
        .as_ref()
        .and_then(|g| g.runbooks.iter().find(|x| x.name == name))
        .map(|x| {
            json!({"runs": x.runs, "judged": x.judged, "succeeded": x.succeeded,
                   "success": x.success_rate.map(|r| format!("{:.0}%", r * 100.0)),
                   "mttr": x.mttr_seconds.map(|m| stats::human_secs(Some(m))),
                   "outcomes": x.outcomes})
        });
    let recent: Vec<Value> = view
        .as_ref()
        .map(|g| {
            g.recent
                .iter()
                .map(|l| json!({"id": l.id, "title": l.title, "status": l.status, "opened": time(l.opened_at)}))
                .collect()
        })
        .unwrap_or_default();
    let ctx = json!({
        "name": r.name(), "path": r.path, "description": r.file.description,
        "priority": r.file.priority, "continue": r.file.continue_matching,
        "commit": loaded.commit.as_deref().unwrap_or("not from git"),
        "matchers": r.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        "group_by": r.file.group_by.iter().map(|g| g.value.as_str()).collect::<Vec<_>>(),
        "steps": r.steps.iter().map(step).collect::<Vec<_>>(),
        "on_failure": r.on_failure.iter().map(step).collect::<Vec<_>>(),
        "verify": r.verify.as_ref().map(|v| json!({"uses": v.kind.name(),
            "every": format!("{:?}", v.every), "timeout": format!("{:?}", v.timeout)})),
        "runs": runs,
        "recent": recent,
    });
    let title = format!("Runbook {name}");
    with_cookie(
        page(&s, Some(&v), StatusCode::OK, &title, "runbook", ctx, None).await,
        cookie,
    )
}
