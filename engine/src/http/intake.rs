//! Webhook intake: each sender's parser and credentials, then the
//! write-ahead log; the 2xx waits for the fdatasync. And the git hook.

use super::*;

/// `POST /hooks/git`: fetch the runbook repository now. Authenticated by
/// a bearer token or a GitHub `X-Hub-Signature-256`. Answers 202 at once;
/// `GET /api/v1/runbooks` shows the outcome.
pub(super) async fn hook_git(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(git) = &s.config.git else {
        return error(
            StatusCode::NOT_FOUND,
            "no_git_source",
            "runbooks come from a local directory; there is nothing to fetch",
            Value::Null,
        );
    };
    let bytes = match read_body(&headers, body, s.config.max_body_bytes).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let mut result = Err(IntakeError::Unauthorized(
        "POST /hooks/git needs git.webhook_token or git.webhook_secret in the config".into(),
    ));
    if let Some(token) = &git.webhook_token
        && headers.contains_key(header::AUTHORIZATION)
    {
        result = check_bearer(&headers, token);
    } else if let Some(secret) = &git.webhook_secret {
        result = check_github_signature(&headers, secret, &bytes);
    } else if let Some(token) = &git.webhook_token {
        result = check_bearer(&headers, token);
    }
    if let Err(e) = result {
        return error(
            StatusCode::UNAUTHORIZED,
            e.reason(),
            e.to_string(),
            Value::Null,
        );
    }
    s.runbooks.trigger();
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "sync requested"})),
    )
        .into_response()
}

pub(super) async fn hook_alertmanager(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cfg = s.config.clone();
    intake(&s, "alertmanager", headers, body, move |h, b| {
        alertmanager::parse(&cfg.hooks.alertmanager, h, b)
    })
    .await
}

pub(super) async fn hook_pagerduty(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cfg = s.config.clone();
    intake(&s, "pagerduty", headers, body, move |h, b| {
        pagerduty::parse(&cfg.hooks.pagerduty, h, b)
    })
    .await
}

pub(super) async fn hook_datadog(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cfg = s.config.clone();
    intake(&s, "datadog", headers, body, move |h, b| {
        datadog::parse(&cfg.hooks.datadog, h, b)
    })
    .await
}

pub(super) async fn hook_generic(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cfg = s.config.clone();
    if !cfg.hooks.generic.contains_key(&name) {
        s.metrics.add(
            "quench_webhook_rejected_total",
            &[("source", "generic"), ("reason", "unknown_hook")],
            1,
        );
        // The same answer as a wrong token: which hook names exist is
        // nobody's business before they authenticate.
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unauthorized: missing or wrong bearer token for this hook",
            Value::Null,
        );
    }
    intake(&s, "generic", headers, body, move |h, b| {
        generic::parse(&name, &cfg.hooks.generic[&name], h, b)
    })
    .await
}

/// The answer to a stored delivery.
#[derive(serde::Serialize)]
struct Stored<'a> {
    status: &'static str,
    accepted: u64,
    duplicates: u64,
    alerts: &'a [crate::alert_log::Appended],
}

/// The shared intake path: read, verify and parse, append and flush, answer.
pub(super) async fn intake(
    s: &AppState,
    source: &'static str,
    headers: HeaderMap,
    body: Body,
    parse: impl FnOnce(&HeaderMap, &[u8]) -> Result<Parsed, IntakeError>,
) -> Response {
    let started = Instant::now();
    let response = intake_inner(s, source, &headers, body, parse).await;
    let outcome = if response.status().is_success() {
        "accepted"
    } else {
        "rejected"
    };
    s.metrics.add(
        "quench_webhook_requests_total",
        &[("source", source), ("outcome", outcome)],
        1,
    );
    s.metrics.observe_intake(source, started.elapsed());
    response
}

pub(super) async fn intake_inner(
    s: &AppState,
    source: &'static str,
    headers: &HeaderMap,
    body: Body,
    parse: impl FnOnce(&HeaderMap, &[u8]) -> Result<Parsed, IntakeError>,
) -> Response {
    let reject = |reason: &str| {
        s.metrics.add(
            "quench_webhook_rejected_total",
            &[("source", source), ("reason", reason)],
            1,
        );
    };
    let bytes = match read_body(headers, body, s.config.max_body_bytes).await {
        Ok(b) => b,
        Err(resp) => {
            reject(if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "unreadable"
            });
            return resp;
        }
    };
    let parsed = match parse(headers, &bytes) {
        Ok(p) => p,
        Err(e) => {
            reject(e.reason());
            warn!(source, reason = e.reason(), error = %e, "webhook refused");
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            let extra = match &e {
                IntakeError::Syntax { line, column, .. } => json!({"line": line, "column": column}),
                IntakeError::Shape { path, .. } => json!({"field": path}),
                IntakeError::Unauthorized(_) | IntakeError::Stale(_) => Value::Null,
            };
            return error(status, e.reason(), e.to_string(), extra);
        }
    };
    let count = parsed.alerts.len() as u64;
    s.metrics
        .add("quench_alerts_received_total", &[("source", source)], count);
    let truncated = parsed.alerts.first().and_then(|a| {
        let n: u64 = a.meta.get("truncatedAlerts")?.parse().ok()?;
        let group = a.meta.get("groupKey").cloned().unwrap_or_default();
        (n > 0).then_some((group, n))
    });
    match s.log.append(bytes, parsed.alerts).await {
        Ok(appended) => {
            // High availability, sync mode: answered once the standby has
            // these alerts on its disk too (or the wait times out).
            if let (Some(rep), Some(last)) = (
                &s.replication,
                appended
                    .iter()
                    .filter(|a| !a.duplicate)
                    .map(|a| a.seq)
                    .max(),
            ) {
                rep.grew();
                rep.wait_synced(last).await;
            }
            let dups = appended.iter().filter(|a| a.duplicate).count() as u64;
            s.metrics.add(
                "quench_alerts_accepted_total",
                &[("source", source)],
                count - dups,
            );
            s.metrics
                .add("quench_alerts_duplicate_total", &[("source", source)], dups);
            // Counted per delivery, duplicates or not: a group re-sent with
            // more alerts than max_alerts repeats alerts quench already has,
            // and the count would otherwise go nowhere.
            if let Some((group, truncated)) = truncated {
                s.metrics.add(
                    "quench_alerts_truncated_total",
                    &[("source", source)],
                    truncated,
                );
                warn!(
                    source,
                    group_key = ?group,
                    truncated,
                    "the sender left alerts out of this delivery (Alertmanager's max_alerts); quench never sees them"
                );
            }
            debug!(
                source,
                accepted = count - dups,
                duplicates = dups,
                "webhook stored"
            );
            // Serialised straight from the outcomes: a `json!` value would
            // build a map of three owned keys per alert first.
            axum::Json(Stored {
                status: "ok",
                accepted: count - dups,
                duplicates: dups,
                alerts: &appended,
            })
            .into_response()
        }
        Err(e) => {
            reject("storage");
            tracing::error!(source, error = %e, "alert log append failed");
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                format!("could not store the alerts durably, retry later: {e}"),
                Value::Null,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}
