//! The console over HTTP, against the real binary: sign-in and sessions,
//! roles, CSRF on every form, the security headers, escaping of what came
//! from outside, and an approval given from a page reaching the executor.

use std::time::Duration;

use quench_tests::{Quench, init_tls};
use serde_json::json;

use crate::executor::sha256_hex;

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    init_tls();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A form body, as a browser encodes it.
fn form(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The session cookie a sign-in sets, as `name=value`.
fn session(r: &reqwest::Response) -> String {
    let c = r
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string();
    assert!(c.contains("HttpOnly"), "{c}");
    assert!(c.contains("SameSite=Strict"), "{c}");
    assert!(c.contains("Max-Age=28800"), "{c}");
    c.split(';').next().unwrap().to_string()
}

/// The CSRF token of a page's forms.
fn csrf(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + 64].to_string()
}

/// Polls an API document (as the viewer) until `done` holds; 20 s at most.
async fn api_wait(
    q: &Quench,
    path: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v: serde_json::Value = quench_tests::http()
            .get(format!("{}{path}", q.url))
            .bearer_auth("viewer-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never got there: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn login(q: &Quench, c: &reqwest::Client, token: &str) -> String {
    let r = c
        .post(format!("{}/login", q.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "sign-in with {token}");
    assert_eq!(r.headers()["location"], "/incidents");
    session(&r)
}

async fn get(
    q: &Quench,
    c: &reqwest::Client,
    cookie: &str,
    path: &str,
) -> (u16, String, reqwest::header::HeaderMap) {
    let r = c
        .get(format!("{}{path}", q.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, r.text().await.unwrap(), headers)
}

async fn post(
    q: &Quench,
    c: &reqwest::Client,
    cookie: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let r = c
        .post(format!("{}{path}", q.url))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(fields))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_roles_csrf_escaping_and_an_approval() {
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("cart.yaml"),
        "version: 1\nname: restart-cart\nmatch:\n  matchers: ['alertname=\"CartDown\"']\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    approval: {required: true, timeout: 10m}\n    with: {namespace: shop, name: cart}\n",
    )
    .unwrap();
    let config = format!(
        "api_tokens:\n  - {{name: vera, role: viewer, sha256: {}}}\n  - {{name: rosa, role: responder, sha256: {}}}\nkubernetes: {{kubeconfig: /nonexistent/quench/kubeconfig}}\n",
        sha256_hex("viewer-token"),
        sha256_hex("responder-token"),
    );
    let q = Quench::start(&config, rb.path());
    let c = client();
    // An alert whose labels and annotations try to run a script.
    let alert = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing",
                    "labels": {"alertname": "CartDown", "service": "<script>alert(1)</script>"},
                    "annotations": {"summary": "<img src=x onerror=alert(2)>"},
                    "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "cart-1"}]});
    let r = quench_tests::http()
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    api_wait(&q, "/api/v1/incidents/inc-1", |d| {
        d["steps"][0]["state"] == "awaiting_approval"
    })
    .await;

    // Without a session: to the sign-in page. A wrong token: 401.
    let r = c.get(format!("{}/incidents", q.url)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let r = c.get(format!("{}/events", q.url)).send().await.unwrap();
    assert_eq!(r.status(), 303, "no session, no live stream");
    let r = c
        .get(format!("{}/artifacts/sha256:{}", q.url, "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "no session, no artifact");
    let (status, html, headers) = get(&q, &c, "quench_session=not-a-session", "/incidents").await;
    assert_eq!(status, 303, "an unknown session signs in again: {html}");
    assert_eq!(headers["location"], "/login");
    let r = c
        .post(format!("{}/login", q.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", "wrong")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("unknown token"));

    // A viewer sees the incident, escaped, with the security headers.
    let viewer = login(&q, &c, "viewer-token").await;
    let (status, html, headers) = get(&q, &c, &viewer, "/incidents").await;
    assert_eq!(status, 200, "{html}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("script-src 'self'")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(html.contains("href=\"/incidents/inc-1\""), "{html}");
    assert!(
        html.contains("Running: destructive steps are allowed."),
        "{html}"
    );
    let (status, page, _) = get(&q, &c, &viewer, "/incidents/inc-1").await;
    assert_eq!(status, 200);
    assert!(
        !page.contains("<script>alert(1)</script>"),
        "a label became markup: {page}"
    );
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(
        page.contains("&lt;img src&#x3D;x onerror&#x3D;alert(2)&gt;"),
        "{page}"
    );
    assert!(
        !page.contains("value=\"approve\""),
        "a viewer gets no approve button"
    );
    assert_eq!(
        page.matches("<script").count(),
        1,
        "one script, the console's own file, and none inline: {page}"
    );
    assert!(page.contains("<script src=\"/console.js\" defer></script>"));
    assert!(
        page.contains("data-live=\"yes\""),
        "the incident page is live"
    );
    let (status, queue, _) = get(&q, &c, &viewer, "/approvals").await;
    assert_eq!(status, 200);
    assert!(
        queue.contains("restart") && queue.contains("k8s.rollout_restart"),
        "{queue}"
    );
    assert!(
        queue.contains("&quot;name&quot;:&quot;cart&quot;")
            && queue.contains("&quot;namespace&quot;:&quot;shop&quot;"),
        "what it will do, to what: {queue}"
    );
    // The viewer's own CSRF token does not make it a responder.
    let token = csrf(&page);
    let (status, text) = post(
        &q,
        &c,
        &viewer,
        "/incidents/inc-1/approve",
        &[
            ("csrf", &token),
            ("step", "restart"),
            ("decision", "approve"),
        ],
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("vera has role Viewer; this needs Responder"),
        "{text}"
    );

    // A responder: no CSRF token, or another session's, is refused.
    let responder = login(&q, &c, "responder-token").await;
    let (_, page, _) = get(&q, &c, &responder, "/incidents/inc-1").await;
    assert!(page.contains("value=\"approve\""), "{page}");
    let (status, text) = post(&q, &c, &responder, "/incidents/inc-1/ack", &[]).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("CSRF"), "{text}");
    let (status, _) = post(
        &q,
        &c,
        &responder,
        "/incidents/inc-1/ack",
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(status, 403, "the viewer's token is not the responder's");
    let mine = csrf(&page);
    let (status, text) = post(
        &q,
        &c,
        &responder,
        "/incidents/inc-1/ack",
        &[("csrf", &mine)],
    )
    .await;
    assert_eq!(status, 303, "{text}");
    // Approve from the page: the executor goes on (and fails at the
    // missing cluster), the audit log names rosa.
    let (status, text) = post(
        &q,
        &c,
        &responder,
        "/incidents/inc-1/approve",
        &[
            ("csrf", &mine),
            ("step", "restart"),
            ("decision", "approve"),
            ("reason", "looks right"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{text}");
    let inc = api_wait(&q, "/api/v1/incidents/inc-1", |d| {
        d["steps"][0]["state"] != "awaiting_approval"
    })
    .await;
    assert_eq!(inc["acknowledged"]["by"], "rosa", "{inc:#}");
    let audit = quench_tests::http()
        .get(format!("{}/api/v1/audit?incident=inc-1", q.url))
        .bearer_auth("responder-token")
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let approved = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "approval.approved" && e["actor"] == "rosa");
    assert!(approved, "{audit:#}");
    // Notes from the annotate form: the responder's CSRF token and role,
    // checked and audited as the API does; shown escaped.
    let notes = [
        ("root_cause", "pool <b>exhausted</b>"),
        ("resolution", "raised the pool size"),
        ("commits", "abc1234@shop/cart"),
        ("tags", "db, pool"),
    ];
    let (status, _) = post(&q, &c, &responder, "/incidents/inc-1/annotate", &notes).await;
    assert_eq!(status, 403, "no CSRF token");
    let mut with_viewer = vec![("csrf", token.as_str())];
    with_viewer.extend(notes);
    let (status, _) = post(&q, &c, &viewer, "/incidents/inc-1/annotate", &with_viewer).await;
    assert_eq!(status, 403, "a viewer cannot annotate");
    let mut fields = vec![("csrf", mine.as_str())];
    fields.extend(notes);
    let (status, text) = post(&q, &c, &responder, "/incidents/inc-1/annotate", &fields).await;
    assert_eq!(status, 303, "{text}");
    let (_, page, _) = get(&q, &c, &responder, "/incidents/inc-1").await;
    assert!(page.contains("pool &lt;b&gt;exhausted&lt;/b&gt;"), "{page}");
    assert!(
        page.contains("<code>abc1234@shop/cart</code>") && page.contains("<code>pool</code>"),
        "{page}"
    );
    assert!(page.contains("rosa,"), "the last edit is named: {page}");
    api_wait(&q, "/api/v1/incidents/inc-1", |d| {
        d["notes"]["resolution"] == "raised the pool size"
    })
    .await;
    let (status, text) = post(
        &q,
        &c,
        &responder,
        "/incidents/inc-1/annotate",
        &[("csrf", &mine), ("tags", "no spaces allowed here!")],
    )
    .await;
    assert_eq!(status, 422, "the API's check, as a page: {text}");
    assert!(text.contains("tag"), "{text}");
    let (_, queue, _) = get(&q, &c, &responder, "/approvals").await;
    assert!(queue.contains("Nothing is waiting."), "{queue}");

    // Search, as the search API: totals, hits linked, a bad query said.
    // (The index follows the records within a second or so.)
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let html = loop {
        let (status, html, _) = get(&q, &c, &responder, "/search?q=CartDown+OR+nothing").await;
        assert_eq!(status, 200, "{html}");
        if html.contains("1 incident matches; 1–1 shown.") || std::time::Instant::now() > deadline
        {
            break html;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(html.contains("1 incident matches; 1–1 shown."), "{html}");
    assert!(html.contains("href=\"/incidents/inc-1\""), "{html}");
    let (status, html, _) = get(&q, &c, &responder, "/search?q=redis+OR").await;
    assert_eq!(status, 400);
    assert!(
        html.contains("column 7: OR needs a term after it"),
        "{html}"
    );
    // Stats: the KPIs per service as a table and SVG bars; the service
    // name (a label) escaped in both.
    let (status, html, _) = get(&q, &c, &responder, "/stats?since=3650d&by=service").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<svg class=\"chart\""), "{html}");
    assert_eq!(
        html.matches("&lt;script&gt;alert(1)&lt;/script&gt;")
            .count(),
        3,
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    let (status, _, _) = get(&q, &c, &responder, "/stats?since=soon").await;
    assert_eq!(status, 400);
    // The kill switch takes the admin role.
    let (_, page, _) = get(&q, &c, &responder, "/incidents").await;
    assert!(
        !page.contains("Pause automation"),
        "a responder gets no kill switch form"
    );
    let (status, _) = post(
        &q,
        &c,
        &responder,
        "/control/pause",
        &[("csrf", &csrf(&page)), ("reason", "x"), ("confirm", "yes")],
    )
    .await;
    assert_eq!(status, 403);

    // Signing out ends the session.
    let (_, page, _) = get(&q, &c, &responder, "/incidents").await;
    let (status, _) = post(&q, &c, &responder, "/logout", &[("csrf", &csrf(&page))]).await;
    assert_eq!(status, 303);
    let (status, _, headers) = get(&q, &c, &responder, "/incidents").await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/login");
}

/// With no tokens (loopback only), the console is open as the API is: a
/// visitor gets a session (for the CSRF token) without signing in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_console_on_loopback() {
    let rb = tempfile::tempdir().unwrap();
    waiting_runbook(rb.path(), "live", "Live");
    let q = Quench::start("{}\n", rb.path());
    let c = client();
    let r = c.get(format!("{}/incidents", q.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = session(&r);
    let html = r.text().await.unwrap();
    assert!(html.contains("anonymous (admin)"), "{html}");
    assert!(html.contains("No incident."), "{html}");
    let (status, _, _) = get(&q, &c, &cookie, "/incidents?status=nonsense").await;
    assert_eq!(status, 400);
    let (status, _, _) = get(&q, &c, &cookie, "/incidents/inc-404").await;
    assert_eq!(status, 404);
    // Live refresh: the event stream says `change` when an alert opens an
    // incident.
    let mut events = c
        .get(format!("{}/events", q.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let alert = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing", "labels": {"alertname": "Live"},
                    "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "live-1"}]});
    let r = quench_tests::http()
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = String::new();
        while let Some(chunk) = events.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: change") {
                break;
            }
        }
        seen
    })
    .await
    .expect("no change event within 10 s");
    assert!(got.contains("event: change\ndata: "), "{got:?}");
    drop(events);
    let js = c.get(format!("{}/console.js", q.url)).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(
        js.text()
            .await
            .unwrap()
            .contains("new EventSource(\"/events\")")
    );
    // Pausing needs a reason and a confirmation, then shows on every page.
    let (_, page, _) = get(&q, &c, &cookie, "/incidents").await;
    let token = csrf(&page);
    let (status, text) = post(
        &q,
        &c,
        &cookie,
        "/control/pause",
        &[("csrf", &token), ("reason", "bad deploy")],
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let (status, _) = post(
        &q,
        &c,
        &cookie,
        "/control/pause",
        &[
            ("csrf", &token),
            ("reason", "bad <deploy>"),
            ("confirm", "yes"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (_, page, _) = get(&q, &c, &cookie, "/approvals").await;
    assert!(
        page.contains("Kill switch ON: paused by anonymous (bad &lt;deploy&gt;)"),
        "{page}"
    );
    let api = quench_tests::http()
        .get(format!("{}/api/v1/control", q.url))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(api["paused"], true, "{api}");
    let (status, _) = post(
        &q,
        &c,
        &cookie,
        "/control/resume",
        &[("csrf", &token), ("reason", "fixed"), ("confirm", "yes")],
    )
    .await;
    assert_eq!(status, 303);
    let (_, page, _) = get(&q, &c, &cookie, "/incidents").await;
    assert!(
        page.contains("Running: destructive steps are allowed."),
        "{page}"
    );
    let r = c
        .get(format!("{}/console.css", q.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

/// The runbooks pages (the set, one runbook, the explain form) and the
/// chaos page (the calendar from a schedule, no run yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbooks_explain_and_chaos_pages() {
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("cart.yaml"),
        "version: 1\nname: restart-cart\ndescription: restarts the cart\nmatch:\n  matchers: ['alertname=\"CartDown\"', 'namespace=~\"shop|shop-eu\"']\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    approval: {required: true}\n    with: {namespace: '{{alert.labels.namespace}}', name: cart}\n",
    )
    .unwrap();
    waiting_runbook(rb.path(), "db-failover", "DbDown");
    std::fs::write(
        rb.path().join("cart-kill.chaos.yaml"),
        "version: 1\ntitle: cart loses a pod\nmethod:\n  - id: kill\n    uses: chaos.pod_kill\n    with: {grace_seconds: 0}\nduration: 1m\nblast_radius:\n  namespaces: [shop]\n  selector: app=cart\n  mode: one\n  max_pods: 1\nschedule:\n  cron: '0 3 * * MON'\n  timezone: Europe/Paris\n",
    )
    .unwrap();
    let q = Quench::start("{}\n", rb.path());
    let c = client();
    let r = c.get(format!("{}/runbooks", q.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = session(&r);
    let html = r.text().await.unwrap();
    assert!(html.contains("href=\"/runbooks/restart-cart\""), "{html}");
    assert!(html.contains("restarts the cart"), "{html}");
    assert!(
        html.contains("<code>namespace&#x3D;~&quot;shop|shop-eu&quot;</code>"),
        "{html}"
    );
    assert!(html.contains("1 (1 destructive)"), "{html}");
    assert!(html.contains("not from git"), "{html}");
    let token = csrf(&html);

    // Explain: which runbook runs, why the other does not, and the step
    // rendered for this alert; a label shown as text.
    let alert = r#"{"labels": {"alertname": "CartDown", "namespace": "shop", "pod": "<b>x</b>"}}"#;
    let (status, text) = post(
        &q,
        &c,
        &cookie,
        "/runbooks/explain",
        &[("csrf", &token), ("alert", alert)],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("Runs: <a href=\"/runbooks/restart-cart\">restart-cart</a>"),
        "{text}"
    );
    assert!(
        text.contains("db-failover (db-failover.yaml): skipped"),
        "{text}"
    );
    assert!(
        text.contains("&quot;namespace&quot;:&quot;shop&quot;"),
        "the rendered parameters: {text}"
    );
    assert!(
        text.contains("&lt;b&gt;x&lt;/b&gt;") && !text.contains("<b>x</b>"),
        "{text}"
    );
    let (status, text) = post(
        &q,
        &c,
        &cookie,
        "/runbooks/explain",
        &[("csrf", &token), ("alert", "{nope")],
    )
    .await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("not JSON"), "{text}");
    let (status, _) = post(&q, &c, &cookie, "/runbooks/explain", &[("alert", alert)]).await;
    assert_eq!(status, 403, "a form without its CSRF token");

    let (status, html, _) = get(&q, &c, &cookie, "/runbooks/restart-cart").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("destructive, needs approval"), "{html}");
    assert!(html.contains("k8s.rollout_restart"), "{html}");
    assert!(html.contains("No run yet."), "{html}");
    let (status, _, _) = get(&q, &c, &cookie, "/runbooks/nope").await;
    assert_eq!(status, 404);

    // Chaos: the next three Monday 03:00 Paris runs (02:00 UTC in winter).
    let (status, html, _) = get(&q, &c, &cookie, "/chaos").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Scheduled runs are off"), "{html}");
    assert_eq!(
        html.matches("02:00:00</time> cart-kill").count(),
        3,
        "{html}"
    );
    assert!(html.contains("No run yet."), "{html}");
}

/// A runbook `name` that opens an incident for alert `alertname` and
/// waits no time: an incident with a run, nothing more.
fn waiting_runbook(dir: &std::path::Path, name: &str, alertname: &str) {
    std::fs::write(
        dir.join(format!("{name}.yaml")),
        format!(
            "version: 1\nname: {name}\nmatch:\n  matchers: ['alertname=\"{alertname}\"']\nsteps:\n  - id: look\n    uses: wait\n    with: {{seconds: 0}}\n"
        ),
    )
    .unwrap();
}

/// Where the browser tests leave a screenshot of every page they visit.
fn shots() -> std::path::PathBuf {
    quench_tests::repo_root().join("target/console-screenshots")
}

/// In a real headless Chromium: sign in, open an incident a real alert
/// opened (its `<script>` label shows as text and never runs), approve its
/// waiting step and see the executor go on, search for it, and keep a
/// screenshot of every page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser() {
    use quench_tests::browser::Browser;
    let (svc, prom) = (
        quench_tests::GoService::start(),
        quench_tests::Prometheus::start().await,
    );
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("cart.yaml"),
        "version: 1\nname: restart-cart\nmatch:\n  matchers: ['alertname=\"CartDown\"']\nsteps:\n  - id: look\n    uses: pprof.capture\n    with: {url: '{{alert.annotations.pprof}}', kind: cpu, seconds: 1, top: 5}\n  - id: series\n    uses: promql.range\n    with: {query: 'go_goroutines', seconds: 120, step: 1}\n  - id: restart\n    uses: k8s.rollout_restart\n    approval: {required: true, timeout: 10m}\n    with: {namespace: shop, name: cart}\n",
    )
    .unwrap();
    waiting_runbook(rb.path(), "disk", "DiskFull");
    let config = format!(
        "api_tokens:\n  - {{name: vera, role: viewer, sha256: {}}}\n  - {{name: rosa, role: responder, sha256: {}}}\nkubernetes: {{kubeconfig: /nonexistent/quench/kubeconfig}}\nprometheus: {{url: '{}'}}\n",
        sha256_hex("viewer-token"),
        sha256_hex("responder-token"),
        prom.url,
    );
    // Prometheus has scraped itself at least once: a series to chart.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v: serde_json::Value = quench_tests::http()
            .get(format!("{}/api/v1/query?query=go_goroutines", prom.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus never scraped itself: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let q = Quench::start(&config, rb.path());
    // Something to see in the profile.
    let burn = format!("{}/burn?ms=3000", svc.url);
    tokio::spawn(async move { quench_tests::http().get(burn).send().await });
    let alert = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing",
                    "labels": {"alertname": "CartDown", "service": "<script>alert(1)</script>"},
                    "annotations": {"summary": "cart pods crash <img src=x onerror=alert(2)>", "pprof": svc.url},
                    "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "cart-b"}]});
    let r = quench_tests::http()
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inc = api_wait(&q, "/api/v1/incidents/inc-1", |d| {
        d["steps"][2]["state"] == "awaiting_approval"
    })
    .await;
    assert_eq!(inc["steps"][0]["state"], "succeeded", "{inc:#}");
    assert_eq!(inc["steps"][1]["state"], "succeeded", "{inc:#}");

    let b = Browser::start().await;
    let dir = shots();
    b.goto(&format!("{}/incidents", q.url)).await;
    b.wait_url("/login").await;
    b.screenshot(&dir.join("login.png")).await;
    b.type_into("#token", "responder-token").await;
    b.click("form[action='/login'] button").await;
    b.wait_url("/incidents").await;
    let text = b.wait_text("rosa (responder)").await;
    assert!(text.contains("inc-1"), "{text}");
    b.screenshot(&dir.join("incidents.png")).await;

    b.click("a[href='/incidents/inc-1']").await;
    // The label is shown as the text it is, and nothing ran.
    let text = b.wait_text("Timeline (UTC)").await;
    assert!(text.contains("service=<script>alert(1)</script>"), "{text}");
    assert!(
        text.contains("cart pods crash <img src=x onerror=alert(2)>"),
        "{text}"
    );
    assert!(text.contains("restart"), "{text}");
    assert!(
        text.contains("main.burnCPU"),
        "the profile's top table: {text}"
    );
    assert!(
        text.contains("step series (promql.range) ran"),
        "a step's span on the time axis: {text}"
    );
    // The flame graph is an image the browser loaded and drew; the PromQL
    // series a chart with a line in it.
    let mut flame = serde_json::Value::Null;
    for _ in 0..50 {
        flame = b
            .eval("const i = document.querySelector('.flame img'); return i && i.complete ? i.naturalWidth : -1;")
            .await;
        if flame.as_f64().unwrap_or(-1.0) > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        flame.as_f64().unwrap_or(-1.0) > 100.0,
        "flame graph not drawn: {flame}"
    );
    let chart = b
        .eval("const l = document.querySelector('figure.chart polyline'); return l ? l.getAttribute('points').split(' ').length : 0;")
        .await;
    assert!(
        chart.as_u64().unwrap_or(0) >= 1,
        "no PromQL line: {chart}; the step: {:#}",
        inc["steps"][1]
    );
    assert!(
        text.contains("go_goroutines"),
        "the series is named: {text}"
    );
    assert!(!b.dialog_open().await, "a script from a label ran");
    b.resize(1280, 2600).await;
    b.screenshot(&dir.join("incident.png")).await;
    b.resize(1280, 800).await;

    b.goto(&format!("{}/approvals", q.url)).await;
    b.wait_text("k8s.rollout_restart").await;
    b.screenshot(&dir.join("approvals.png")).await;

    // Approve from the page; the executor goes on with the step.
    b.goto(&format!("{}/incidents/inc-1", q.url)).await;
    b.type_into("#reason-restart", "checked the dashboards")
        .await;
    b.click("form.approve button[value='approve']").await;
    let inc = api_wait(&q, "/api/v1/incidents/inc-1", |d| {
        d["steps"][2]["state"] != "awaiting_approval"
    })
    .await;
    assert_ne!(inc["steps"][2]["state"], "awaiting_approval", "{inc:#}");
    b.wait_url("/incidents/inc-1").await;
    b.goto(&format!("{}/incidents/inc-1", q.url)).await;
    b.wait_text("Timeline (UTC)").await;
    b.screenshot(&dir.join("incident-approved.png")).await;

    api_wait(&q, "/api/v1/search?q=CartDown", |v| v["total"] == 1).await;
    b.goto(&format!("{}/search", q.url)).await;
    b.type_into("#q", "CartDown").await;
    b.click("form[role='search'] button").await;
    let text = b.wait_text("1 incident matches").await;
    assert!(text.contains("inc-1"), "{text}");
    b.screenshot(&dir.join("search.png")).await;
    assert!(!b.dialog_open().await);

    // Live refresh: the incidents list shows a new incident by itself.
    b.goto(&format!("{}/incidents", q.url)).await;
    let text = b.wait_text("inc-1").await;
    assert!(!text.contains("inc-2"), "{text}");
    let other = json!({"version": "4", "groupKey": "g2", "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing", "labels": {"alertname": "DiskFull", "service": "db"},
                    "startsAt": "2026-11-27T10:05:00Z", "fingerprint": "disk-1"}]});
    let r = quench_tests::http()
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = b.wait_text("inc-2").await;
    assert!(text.contains("DiskFull") || text.contains("db"), "{text}");

    // The other pages, for their screenshots.
    for (path, needle, shot) in [
        ("/runbooks", "restart-cart", "runbooks"),
        ("/runbooks/restart-cart", "Latest incidents", "runbook"),
        ("/chaos", "Next runs", "chaos"),
        ("/stats?since=3650d&by=runbook", "MTTR", "stats"),
    ] {
        b.goto(&format!("{}{path}", q.url)).await;
        b.wait_text(needle).await;
        b.screenshot(&dir.join(format!("{shot}.png"))).await;
    }
    assert!(!b.dialog_open().await);
    b.close().await;
    for page in [
        "login",
        "incidents",
        "incident",
        "approvals",
        "incident-approved",
        "search",
        "runbooks",
        "runbook",
        "chaos",
        "stats",
    ] {
        let png = std::fs::read(dir.join(format!("{page}.png"))).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 2000,
            "{page}.png is no screenshot"
        );
    }
}

/// Slack's side, standing in: signs as Slack documents (the signature
/// computed by `openssl`), and a `response_url` receiver that keeps what
/// quench posts back.
mod slack {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `v0=` HMAC-SHA256 of `v0:{ts}:{body}`, by `openssl dgst`.
    pub fn sign(secret: &str, ts: i64, body: &str) -> String {
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                "printf '%s' \"$MSG\" | openssl dgst -sha256 -hmac \"$KEY\" -hex",
            ])
            .env("MSG", format!("v0:{ts}:{body}"))
            .env("KEY", secret)
            .output()
            .expect("openssl (apt-get install openssl)");
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text.rsplit(' ').next().unwrap().trim();
        assert_eq!(hex.len(), 64, "openssl said {text:?}");
        format!("v0={hex}")
    }

    /// An HTTP receiver on loopback; every request's body, in order.
    pub async fn receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let keep = got.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let keep = keep.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = c.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                let body = &buf[end + 4..end + 4 + len];
                                keep.lock()
                                    .unwrap()
                                    .push(serde_json::from_slice(body).unwrap_or_default());
                                let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, got)
    }
}

/// Approvals from Slack, against a stand-in that signs like Slack: a
/// forged signature, a stale timestamp and a replay are refused; a user
/// not on the list is told so and nothing happens; an approver's click
/// answers the gate once (a second click finds nothing waiting), the
/// executor goes on, the buttons are replaced through `response_url`, and
/// every click is audited with the Slack user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_from_slack() {
    let (responses, got) = slack::receiver().await;
    let secret = "slack-signing-secret";
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("cart.yaml"),
        "version: 1\nname: restart-cart\nmatch:\n  matchers: ['alertname=\"CartDown\"']\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    approval: {required: true, timeout: 10m}\n    with: {namespace: shop, name: cart}\n",
    )
    .unwrap();
    let config = format!(
        "api_tokens:\n  - {{name: vera, role: viewer, sha256: {}}}\nkubernetes: {{kubeconfig: /nonexistent/quench/kubeconfig}}\nhooks:\n  slack:\n    signing_secret: {secret}\n    approvers: {{U0ROSA: rosa}}\n    response_url_prefix: {responses}\n",
        sha256_hex("viewer-token"),
    );
    let q = Quench::start(&config, rb.path());
    let alert = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing", "labels": {"alertname": "CartDown"},
                    "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "cart-s"}]});
    let http = quench_tests::http();
    let r = http
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    api_wait(&q, "/api/v1/incidents/inc-1", |d| {
        d["steps"][0]["state"] == "awaiting_approval"
    })
    .await;

    let click = |user: &str, action: &str| {
        let payload = json!({"type": "block_actions", "user": {"id": user, "username": user},
            "response_url": format!("{responses}actions/T0/1/xyz"),
            "actions": [{"action_id": action, "block_id": "quench_approval", "value": "inc-1:restart", "type": "button"}]});
        form(&[("payload", &payload.to_string())])
    };
    let post = |body: String, ts: i64, sig: String| {
        let (http, url) = (http.clone(), format!("{}/hooks/slack/interactive", q.url));
        async move {
            let t = std::time::Instant::now();
            let r = http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-slack-request-timestamp", ts.to_string())
                .header("x-slack-signature", sig)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), t.elapsed(), r.text().await.unwrap())
        }
    };
    let now = chrono::Utc::now().timestamp();

    // Forged, stale: refused, nothing answered.
    let body = click("U0ROSA", "quench_approve");
    let (status, _, text) =
        post(body.clone(), now, slack::sign("not-the-secret", now, &body)).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("does not match"), "{text}");
    let old = now - 600;
    let (status, _, text) = post(body.clone(), old, slack::sign(secret, old, &body)).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("from now"), "{text}");

    // Someone not on the list: told so, the gate still waits.
    let stranger = click("U0EVE", "quench_approve");
    let (status, _, _) = post(stranger.clone(), now, slack::sign(secret, now, &stranger)).await;
    assert_eq!(status, 200);
    let inc = api_wait(&q, "/api/v1/incidents/inc-1", |_| true).await;
    assert_eq!(inc["steps"][0]["state"], "awaiting_approval");

    // The approver: answered within 3 s, the gate opens, the executor goes on.
    let sig = slack::sign(secret, now, &body);
    let (status, took, text) = post(body.clone(), now, sig.clone()).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        took < std::time::Duration::from_secs(3),
        "Slack waited {took:?}"
    );
    api_wait(&q, "/api/v1/incidents/inc-1", |d| {
        d["steps"][0]["state"] != "awaiting_approval"
    })
    .await;
    // The same request again: a replay.
    let (status, _, text) = post(body.clone(), now, sig).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("replay"), "{text}");
    // A new click on the same (answered) gate does nothing.
    let later = now + 1;
    let reject = click("U0ROSA", "quench_reject");
    let (status, _, _) = post(reject.clone(), later, slack::sign(secret, later, &reject)).await;
    assert_eq!(status, 200);

    // What Slack was told, through response_url.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let said = got.lock().unwrap().clone();
    assert_eq!(said.len(), 3, "{said:#?}");
    let texts: Vec<String> = said
        .iter()
        .map(|v| v["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("You (U0EVE) are not on quench's approver list")),
        "{texts:?}"
    );
    let approved = said
        .iter()
        .find(|v| {
            v["text"]
                .as_str()
                .unwrap_or("")
                .contains("approved by rosa (Slack U0ROSA)")
        })
        .expect("the outcome");
    assert_eq!(approved["replace_original"], true, "{approved}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains("nothing waits for an answer")),
        "{texts:?}"
    );

    // Every click audited, with the Slack user.
    let audit: serde_json::Value = http
        .get(format!("{}/api/v1/audit?incident=inc-1", q.url))
        .bearer_auth("viewer-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = audit["audit"].as_array().unwrap();
    let clicks: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["action"] == "slack.click")
        .collect();
    assert_eq!(clicks.len(), 3, "{audit:#}");
    assert!(
        clicks.iter().any(|e| e["actor"] == "slack:U0EVE"),
        "{audit:#}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "approval.approved" && e["actor"] == "rosa (Slack U0ROSA)"),
        "{audit:#}"
    );
}
