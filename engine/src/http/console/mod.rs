//! The on-call console: HTML pages served at `/`, rendered on the server
//! (handlebars, every value HTML-escaped), working without script.
//!
//! Sign-in takes an API token once and keeps a session in an `HttpOnly`,
//! `SameSite=Strict` cookie that expires after [`SESSION_TTL`]; the role is
//! the token's, as in the API. With no `api_tokens` (loopback only) the
//! console is open as the API is: a visitor gets an anonymous session with
//! every role. Every form carries the session's CSRF token, checked on
//! every POST; every page sends a `Content-Security-Policy` that allows only
//! quench's own script file (no inline script), and `X-Frame-Options: DENY`.
//!
//! Pages: incidents (list, filter and pages in the URL), the incident page
//! (alerts, steps with their evidence inline, see [`evidence`]; one time
//! axis; notes and the annotate form; acknowledge; approve and reject),
//! the approvals queue, search, runbooks (the set, one runbook, the explain
//! form), chaos (calendar and verdicts), stats (KPIs as tables and SVG
//! bars), and the kill switch on every page (admin, reason, confirmation).
//! Live pages reload on [`live`]'s server-sent events.

use super::*;

mod chaos;
mod evidence;
mod live;
mod runbooks;
mod stats;
use crate::config::Role;
use axum::extract::Form;
use axum::response::Redirect;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lives after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most (the oldest go first).
const MAX_SESSIONS: usize = 10_000;
/// Incidents per page.
const PAGE: usize = 50;
const COOKIE: &str = "quench_session";
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Pages that reload themselves when something changes (`console.js`).
const LIVE: &[&str] = &["incidents", "incident", "approvals", "chaos"];

struct Session {
    name: String,
    role: Role,
    csrf: String,
    expires: Instant,
}

/// The console's templates and sessions.
pub struct Console {
    hb: handlebars::Handlebars<'static>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

impl Console {
    /// The templates, compiled once.
    pub fn new() -> Console {
        let mut hb = handlebars::Handlebars::new();
        hb.set_strict_mode(false);
        for (name, text) in [
            (
                "layout",
                include_str!("../../../templates/console/layout.hbs"),
            ),
            (
                "login",
                include_str!("../../../templates/console/login.hbs"),
            ),
            (
                "incidents",
                include_str!("../../../templates/console/incidents.hbs"),
            ),
            (
                "incident",
                include_str!("../../../templates/console/incident.hbs"),
            ),
            (
                "approvals",
                include_str!("../../../templates/console/approvals.hbs"),
            ),
            (
                "search",
                include_str!("../../../templates/console/search.hbs"),
            ),
            (
                "stats",
                include_str!("../../../templates/console/stats.hbs"),
            ),
            (
                "runbooks",
                include_str!("../../../templates/console/runbooks.hbs"),
            ),
            (
                "runbook",
                include_str!("../../../templates/console/runbook.hbs"),
            ),
            (
                "chaos",
                include_str!("../../../templates/console/chaos.hbs"),
            ),
        ] {
            hb.register_template_string(name, text)
                .expect("the console's templates compile");
        }
        Console {
            hb,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session: its id and CSRF token. Without randomness there is
    /// no safe session, and none is made.
    #[allow(clippy::result_large_err)] // the refusal is the answer, as elsewhere in http
    fn create(&self, name: String, role: Role) -> Result<(String, String), Response> {
        let (id, csrf) = match (random_hex(), random_hex()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                return Err(internal(format!("reading /dev/urandom: {e}")));
            }
        };
        let mut all = self.sessions();
        let now = Instant::now();
        all.retain(|_, s| s.expires > now);
        if all.len() >= MAX_SESSIONS
            && let Some(oldest) = all
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            all.remove(&oldest);
        }
        all.insert(
            id.clone(),
            Session {
                name,
                role,
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        Ok((id, csrf))
    }

    /// The live session `id` at `now`; an expired one is forgotten.
    fn lookup(&self, id: &str, now: Instant) -> Option<Visitor> {
        let mut all = self.sessions();
        match all.get(id) {
            Some(sess) if sess.expires > now => Some(Visitor {
                id: id.to_string(),
                name: sess.name.clone(),
                role: sess.role,
                csrf: sess.csrf.clone(),
            }),
            Some(_) => {
                all.remove(id);
                None
            }
            None => None,
        }
    }
}

/// 32 random bytes from the kernel, as hex.
fn random_hex() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Who is looking, from the session cookie.
struct Visitor {
    id: String,
    name: String,
    role: Role,
    csrf: String,
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(id: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .expect("a cookie of hex digits is a header value")
}

/// The session's viewer; with no tokens configured, a new anonymous
/// session (and its cookie) when there is none.
#[allow(clippy::result_large_err)] // the refusal is the answer, as elsewhere in http
fn viewer(s: &AppState, headers: &HeaderMap) -> Result<(Visitor, Option<HeaderValue>), Response> {
    if let Some(v) = cookie_value(headers).and_then(|id| s.console.lookup(&id, Instant::now())) {
        return Ok((v, None));
    }
    if s.config.api_tokens.is_empty() {
        let (id, csrf) = s.console.create("anonymous".into(), Role::Admin)?;
        let cookie = set_cookie(&id, SESSION_TTL.as_secs());
        return Ok((
            Visitor {
                id,
                name: "anonymous".into(),
                role: Role::Admin,
                csrf,
            },
            Some(cookie),
        ));
    }
    Err(Redirect::to("/login").into_response())
}

fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

/// Renders `page` inside the layout.
async fn page(
    s: &AppState,
    v: Option<&Visitor>,
    status: StatusCode,
    title: &str,
    page: &str,
    ctx: Value,
    flash: Option<String>,
) -> Response {
    let body = match s.console.hb.render(page, &ctx) {
        Ok(b) => b,
        Err(e) => return internal(e),
    };
    let control = s.executor.control.clone();
    let pause = blocking(move || control.state()).await.ok().flatten();
    let layout = json!({
        "title": title,
        "body": body,
        "user": v.map(|v| v.name.clone()),
        "role": v.map(|v| format!("{:?}", v.role).to_lowercase()),
        "csrf": v.map(|v| v.csrf.clone()),
        "is_admin": v.is_some_and(|v| v.role >= Role::Admin),
        "paused": s.executor.control.is_paused(),
        "paused_by": pause.as_ref().map(|p| p.by.clone()),
        "paused_reason": pause.as_ref().map(|p| p.reason.clone()).filter(|r| !r.is_empty()),
        "flash": flash,
        "live": v.is_some() && LIVE.contains(&page),
    });
    match s.console.hb.render("layout", &layout) {
        Ok(html) => secure(
            (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
        ),
        Err(e) => internal(e),
    }
}

fn with_cookie(mut r: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(c) = cookie {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// A POST from a console form: the session, its role, its CSRF token.
#[allow(clippy::result_large_err)] // the refusal is the answer, as elsewhere in http
fn check_form(
    s: &AppState,
    headers: &HeaderMap,
    csrf: &str,
    need: Role,
) -> Result<Visitor, Response> {
    let forbidden = |m: &str| {
        secure(
            (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                m.to_string(),
            )
                .into_response(),
        )
    };
    let Some(id) = cookie_value(headers) else {
        return Err(forbidden("no session: log in again"));
    };
    let Some(v) = s.console.lookup(&id, Instant::now()) else {
        return Err(forbidden("the session expired: log in again"));
    };
    if !constant_time_eq(v.csrf.as_bytes(), csrf.as_bytes()) {
        return Err(forbidden(
            "the form's CSRF token is missing or wrong: reload the page",
        ));
    }
    if v.role < need {
        return Err(forbidden(&format!(
            "{} has role {:?}; this needs {:?}",
            v.name, v.role, need
        )));
    }
    Ok(v)
}

/// The console's routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/incidents") }))
        .route("/console.css", get(css))
        .route("/console.js", get(live::script))
        .route("/events", get(live::events))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/incidents", get(incidents_page))
        .route("/incidents/{id}", get(incident_page))
        .route("/incidents/{id}/ack", post(ack))
        .route("/incidents/{id}/approve", post(approve))
        .route("/incidents/{id}/annotate", post(annotate))
        .route("/artifacts/{id}", get(evidence::artifact))
        .route("/approvals", get(approvals_page))
        .route("/search", get(search_page))
        .route("/stats", get(stats::stats_page))
        .route("/runbooks", get(runbooks::runbooks_page))
        .route("/chaos", get(chaos::chaos_page))
        .route("/runbooks/explain", post(runbooks::explain))
        .route("/runbooks/{name}", get(runbooks::runbook_page))
        .route("/control/pause", post(pause))
        .route("/control/resume", post(resume))
}

async fn css() -> Response {
    secure(
        (
            [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
            include_str!("../../../templates/console/console.css"),
        )
            .into_response(),
    )
}

async fn login_page(State(s): State<AppState>) -> Response {
    page(&s, None, StatusCode::OK, "Log in", "login", json!({}), None).await
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(State(s): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let hash = hex_sha256(f.token.as_bytes());
    let found = s
        .config
        .api_tokens
        .iter()
        .find(|t| constant_time_eq(t.sha256.to_ascii_lowercase().as_bytes(), hash.as_bytes()));
    let Some(t) = found else {
        return page(
            &s,
            None,
            StatusCode::UNAUTHORIZED,
            "Log in",
            "login",
            json!({"error": "unknown token"}),
            None,
        )
        .await;
    };
    let (id, _) = match s.console.create(t.name.clone(), t.role) {
        Ok(x) => x,
        Err(r) => return r,
    };
    with_cookie(
        secure(Redirect::to("/incidents").into_response()),
        Some(set_cookie(&id, SESSION_TTL.as_secs())),
    )
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let v = match check_form(&s, &headers, &f.csrf, Role::Viewer) {
        Ok(v) => v,
        Err(r) => return r,
    };
    s.console.sessions().remove(&v.id);
    with_cookie(
        secure(Redirect::to("/login").into_response()),
        Some(set_cookie("", 0)),
    )
}

/// A state or kind as the records write it (`awaiting_approval`), with
/// spaces for underscores.
fn words<T: serde::Serialize>(x: &T) -> String {
    serde_json::to_value(x)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default()
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn outcome(r: &quench_knowledge::IncidentRecord) -> String {
    r.run
        .as_ref()
        .map(|x| x.outcome.as_str().to_string())
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    page: Option<usize>,
}

async fn incidents_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let (v, cookie) = match viewer(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let status = q.status.clone().filter(|x| !x.is_empty());
    let parsed = match status.as_deref() {
        None | Some("all") => None,
        Some(st) => match IncidentStatus::parse(st) {
            Some(x) => Some(x),
            None => {
                return with_cookie(
                    page(
                        &s,
                        Some(&v),
                        StatusCode::BAD_REQUEST,
                        "Incidents",
                        "incidents",
                        json!({"incidents": []}),
                        Some(format!("unknown status {st:?}")),
                    )
                    .await,
                    cookie,
                );
            }
        },
    };
    let pg = q.page.unwrap_or(0).min(1000);
    let filter = IncidentFilter {
        open_only: false,
        status: parsed,
        limit: Some((pg + 1) * PAGE + 1),
    };
    let list = match s.incidents.query(filter).await {
        Ok(l) => l,
        Err(e) => return internal(e),
    };
    let more = list.len() > (pg + 1) * PAGE;
    let rows: Vec<Value> = list
        .iter()
        .skip(pg * PAGE)
        .take(PAGE)
        .map(|r| {
            json!({"id": r.id, "title": r.title, "status": r.status.as_str(), "service": r.service(),
                   "runbook": r.runbook.as_ref().map(|b| b.name.clone()).unwrap_or_default(),
                   "opened": time(Some(r.opened_at)), "outcome": outcome(r)})
        })
        .collect();
    let st = status.clone().unwrap_or_else(|| "all".into());
    let statuses: Vec<Value> = [
        "all",
        "open",
        "verifying",
        "resolved",
        "escalated",
        "failed",
        "cancelled",
    ]
    .iter()
    .map(|x| json!({"value": x, "label": x, "selected": *x == st}))
    .collect();
    let link = |p: usize| format!("/incidents?status={st}&page={p}");
    let ctx = json!({
        "incidents": rows,
        "statuses": statuses,
        "prev": (pg > 0).then(|| link(pg - 1)),
        "next": more.then(|| link(pg + 1)),
    });
    with_cookie(
        page(
            &s,
            Some(&v),
            StatusCode::OK,
            "Incidents",
            "incidents",
            ctx,
            None,
        )
        .await,
        cookie,
    )
}

async fn incident_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (v, cookie) = match viewer(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let r = match s.incidents.fetch(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return with_cookie(
                page(
                    &s,
                    Some(&v),
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "incidents",
                    json!({"incidents": []}),
                    Some(format!("no incident {id:?}")),
                )
                .await,
                cookie,
            );
        }
        Err(e) => return internal(e),
    };
    let steps: Vec<Value> = r
        .steps
        .iter()
        .map(|st| {
            json!({"id": st.id, "uses": st.uses, "state": words(&st.state),
                   "reason": st.reason, "evidence": evidence::of_step(st),
                   "params": (!st.rendered.is_null()).then(|| st.rendered.to_string()),
                   "waiting": st.state == quench_knowledge::StepState::AwaitingApproval})
        })
        .collect();
    let alerts: Vec<Value> = r
        .alerts
        .iter()
        .map(
            |a| json!({"state": words(&a.state), "labels": a.labels, "annotations": a.annotations}),
        )
        .collect();
    // One time axis: the record's events, each step's span and the
    // Kubernetes events its evidence brought.
    let mut events: Vec<(chrono::DateTime<chrono::Utc>, Value)> = r
        .timeline
        .iter()
        .map(|e| (e.at, json!({"kind": words(&e.kind), "detail": e.detail})))
        .collect();
    events.extend(evidence::timeline_extras(&r.steps));
    events.sort_by_key(|(at, _)| *at);
    let timeline: Vec<Value> = events
        .into_iter()
        .map(|(at, mut e)| {
            e["at"] = json!(time(Some(at)));
            e
        })
        .collect();
    let similar = r.similar.clone().unwrap_or_default();
    let ctx = json!({
        "r": {"id": r.id, "title": r.title, "status": r.status.as_str()},
        "service": r.service(),
        "runbook": r.runbook.as_ref().map(|b| format!("{} ({})", b.name, b.commit.as_deref().unwrap_or("not from git"))).unwrap_or_default(),
        "opened": time(Some(r.opened_at)),
        "outcome": outcome(&r),
        "alerts": alerts,
        "steps": steps,
        "timeline": timeline,
        "similar": similar,
        "notes": {"root_cause": r.notes.root_cause, "resolution": r.notes.resolution,
                  "tags": r.notes.tags, "commits": r.notes.commits.iter().map(|c| match &c.repo {
                      Some(repo) => format!("{}@{repo}", c.sha), None => c.sha.clone() }).collect::<Vec<_>>(),
                  "edited_by": r.notes.edited_by, "edited_at": time(r.notes.edited_at)},
        "can_respond": v.role >= Role::Responder,
        "csrf": v.csrf,
    });
    let title = format!("{} {}", r.id, r.title);
    with_cookie(
        page(&s, Some(&v), StatusCode::OK, &title, "incident", ctx, None).await,
        cookie,
    )
}

/// Calls an API handler for a console form, as the session's user.
fn caller<N>(v: &Visitor) -> Caller<N> {
    Caller {
        name: v.name.clone(),
        need: std::marker::PhantomData,
    }
}

/// After a form: back to the incident, or the API's error as a page.
async fn after(s: &AppState, v: &Visitor, id: &str, answer: Response) -> Response {
    if answer.status().is_success() {
        return secure(Redirect::to(&format!("/incidents/{id}")).into_response());
    }
    let status = answer.status();
    let body = axum::body::to_bytes(answer.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| status.to_string());
    page(
        s,
        Some(v),
        status,
        "Refused",
        "incidents",
        json!({"incidents": []}),
        Some(message),
    )
    .await
}

async fn ack(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let v = match check_form(&s, &headers, &f.csrf, Role::Responder) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let answer = incidents::acknowledge(State(s.clone()), caller(&v), Path(id.clone())).await;
    after(&s, &v, &id, answer).await
}

#[derive(Deserialize)]
struct ApproveForm {
    #[serde(default)]
    csrf: String,
    step: String,
    decision: String,
    #[serde(default)]
    reason: String,
}

async fn approve(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ApproveForm>,
) -> Response {
    let v = match check_form(&s, &headers, &f.csrf, Role::Responder) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let body = json!({"step": f.step, "decision": f.decision, "reason": f.reason});
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let answer = incidents::approve(
        State(s.clone()),
        caller(&v),
        Path(id.clone()),
        h,
        Body::from(body.to_string()),
    )
    .await;
    after(&s, &v, &id, answer).await
}

#[derive(Deserialize)]
struct AnnotateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    root_cause: String,
    #[serde(default)]
    resolution: String,
    /// Space- or comma-separated.
    #[serde(default)]
    commits: String,
    #[serde(default)]
    tags: String,
}

/// The annotate form: what is filled in replaces the last note, commits
/// and tags are added; checked and audited by the API's handler.
async fn annotate(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<AnnotateForm>,
) -> Response {
    let v = match check_form(&s, &headers, &f.csrf, Role::Responder) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let text = |t: &str| Some(t.trim().to_string()).filter(|t| !t.is_empty());
    let list = |t: &str| -> Vec<String> {
        t.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    let req = crate::api::AnnotationRequest {
        root_cause: text(&f.root_cause),
        resolution: text(&f.resolution),
        commits: list(&f.commits),
        tags: list(&f.tags),
    };
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = serde_json::to_string(&req).unwrap_or_default();
    let answer = incidents::annotate(
        State(s.clone()),
        caller(&v),
        Path(id.clone()),
        h,
        Body::from(body),
    )
    .await;
    after(&s, &v, &id, answer).await
}

async fn approvals_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let (v, cookie) = match viewer(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    // The gates waiting now, as the executor holds them: a few incidents
    // read, however many the store has.
    let mut waiting: Vec<(chrono::DateTime<chrono::Utc>, Value)> = Vec::new();
    for (incident, step) in s.executor.approvals.pending() {
        let r = match s.incidents.fetch(&incident).await {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => return internal(e),
        };
        let st = r.steps.iter().find(|st| st.id == step);
        let uses = st.map(|st| st.uses.clone()).unwrap_or_default();
        // What it will do, to what: its rendered parameters; and what a
        // dry run answered, when one ran before the gate.
        let params = st
            .map(|st| &st.rendered)
            .filter(|p| !p.is_null())
            .map(|p| p.to_string());
        let dry_run = st
            .map(|st| &st.output)
            .filter(|o| o["dry_run"] == json!(true))
            .map(|o| o.to_string());
        waiting.push((
            r.opened_at,
            json!({"incident": r.id, "title": r.title, "step": step, "uses": uses,
                   "params": params, "dry_run": dry_run,
                   "service": r.service(), "opened": time(Some(r.opened_at))}),
        ));
    }
    waiting.sort_by_key(|(t, _)| *t);
    let rows: Vec<Value> = waiting.into_iter().map(|(_, v)| v).collect();
    with_cookie(
        page(
            &s,
            Some(&v),
            StatusCode::OK,
            "Approvals",
            "approvals",
            json!({"waiting": rows}),
            None,
        )
        .await,
        cookie,
    )
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
    page: Option<usize>,
}

/// tantivy's snippet HTML: its text is escaped and its only tags are the
/// highlights. Anything else is escaped whole (never trusted as markup).
fn safe_snippet(html: &str) -> String {
    let bare = html.replace("<b>", "").replace("</b>", "");
    if bare.contains('<') || bare.contains('>') {
        return handlebars::html_escape(html);
    }
    html.to_string()
}

async fn search_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Response {
    let (v, cookie) = match viewer(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    const HITS: usize = 20;
    let pg = q
        .page
        .unwrap_or(0)
        .min(super::knowledge::MAX_SEARCH_OFFSET / HITS);
    let mut ctx = json!({"q": q.q, "searched": false});
    let mut status = StatusCode::OK;
    if !q.q.trim().is_empty() {
        let (index, text, now) = (s.search.clone(), q.q.clone(), s.clock.now());
        match tokio::task::spawn_blocking(move || index.search_page(&text, pg * HITS, HITS, now))
            .await
        {
            Ok(Ok(p)) => {
                let hits: Vec<Value> = p
                    .hits
                    .iter()
                    .map(|h| json!({"id": h.id, "title": h.title, "status": h.status, "service": h.service,
                                    "opened": time(h.opened_at), "snippet": safe_snippet(&h.snippet)}))
                    .collect();
                let link = |p: usize| format!("/search?q={}&page={p}", url_encode(&q.q));
                ctx = json!({
                    "q": q.q, "searched": true, "total": p.total, "one": p.total == 1,
                    "first": pg * HITS + 1, "last": pg * HITS + hits.len(), "hits": hits,
                    "prev": (pg > 0).then(|| link(pg - 1)),
                    "next": ((pg + 1) * HITS < p.total).then(|| link(pg + 1)),
                });
            }
            Ok(Err(e)) => {
                status = StatusCode::BAD_REQUEST;
                ctx = json!({"q": q.q, "searched": false, "error": e.to_string()});
            }
            Err(e) => return internal(e),
        }
    }
    with_cookie(
        page(&s, Some(&v), status, "Search", "search", ctx, None).await,
        cookie,
    )
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize)]
struct SwitchForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    confirm: String,
}

async fn switch(s: AppState, headers: HeaderMap, f: SwitchForm, pause: bool) -> Response {
    let v = match check_form(&s, &headers, &f.csrf, Role::Admin) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if f.confirm != "yes" || f.reason.trim().is_empty() {
        return page(
            &s,
            Some(&v),
            StatusCode::BAD_REQUEST,
            "Refused",
            "incidents",
            json!({"incidents": []}),
            Some("give a reason and tick \"I am sure\"".into()),
        )
        .await;
    }
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = Body::from(json!({"reason": f.reason}).to_string());
    let answer = if pause {
        ops::pause(State(s.clone()), caller(&v), h, body).await
    } else {
        ops::resume(State(s.clone()), caller(&v), h, body).await
    };
    if answer.status().is_success() {
        return secure(Redirect::to("/incidents").into_response());
    }
    after(&s, &v, "", answer).await
}

async fn pause(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<SwitchForm>,
) -> Response {
    switch(s, headers, f, true).await
}

async fn resume(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<SwitchForm>,
) -> Response {
    switch(s, headers, f, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A template file that is not registered fails only when its page is
    /// asked for: every one is registered.
    #[test]
    fn a_session_ends_after_its_lifetime() {
        let c = Console::new();
        let (id, csrf) = c.create("rosa".into(), Role::Responder).unwrap();
        let now = Instant::now();
        let v = c.lookup(&id, now).expect("a fresh session");
        assert_eq!(
            (v.name.as_str(), v.role, v.csrf),
            ("rosa", Role::Responder, csrf)
        );
        assert!(
            c.lookup(&id, now + SESSION_TTL + Duration::from_secs(1))
                .is_none()
        );
        assert!(
            c.lookup(&id, now).is_none(),
            "an expired session is forgotten"
        );
        assert!(c.lookup("not-a-session", now).is_none());
    }

    #[test]
    fn every_template_file_is_registered() {
        let c = Console::new();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/console");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".hbs") {
                assert!(c.hb.has_template(stem), "{name} is not registered");
                n += 1;
            }
        }
        assert!(n >= 6, "{n} templates");
    }

    #[test]
    fn snippets_keep_only_their_highlights() {
        assert_eq!(
            safe_snippet("a <b>redis</b> &lt;x&gt;"),
            "a <b>redis</b> &lt;x&gt;"
        );
        assert_eq!(
            safe_snippet("<b>x</b><script>"),
            "&lt;b&gt;x&lt;/b&gt;&lt;script&gt;"
        );
    }
}
