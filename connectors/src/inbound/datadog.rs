//! Datadog webhooks, through the payload template documented in README.md.
//!
//! Datadog signs nothing, so the hook requires a shared secret in a custom
//! header (configured in the webhook's "Custom Headers"). The template maps
//! Datadog's variables one-to-one onto the fields of [`Payload`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::Deserialize;

use super::{IntakeError, Parsed, check_secret_header, decode, parse_time};
use crate::alert::{Alert, AlertStatus, Source, fingerprint_of};

/// The header that carries the shared secret unless configured otherwise.
pub const DEFAULT_SECRET_HEADER: &str = "x-quench-token";

/// Settings for the Datadog hook.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The shared secret. With none configured, every delivery is refused.
    #[serde(default)]
    pub secret: Option<String>,
    /// The header carrying it; defaults to [`DEFAULT_SECRET_HEADER`].
    #[serde(default)]
    pub header: Option<String>,
}

/// The body the documented template produces. Every value is a string,
/// because Datadog substitutes variables into a text template.
#[derive(Debug, Deserialize)]
struct Payload {
    /// `$ALERT_ID`: the monitor id.
    id: String,
    /// `$ALERT_TRANSITION`: Triggered, Recovered, Warn, No Data, ...
    transition: String,
    /// `$ALERT_PRIORITY`: P1..P5, may be empty.
    #[serde(default)]
    priority: String,
    /// `$ALERT_TITLE`.
    title: String,
    /// `$TAGS`: comma-separated `key:value` (or bare) tags.
    #[serde(default)]
    tags: String,
    /// `$LINK`.
    #[serde(default)]
    link: String,
    /// `$DATE`: epoch milliseconds (RFC 3339 is accepted too).
    #[serde(default)]
    date: String,
    /// `$EVENT_MSG`.
    #[serde(default)]
    message: String,
    /// `$ALERT_SCOPE`: the comma-separated tags of the group that alerted.
    #[serde(default)]
    scope: String,
}

fn status_of(transition: &str) -> Result<AlertStatus, IntakeError> {
    let t = transition.trim().to_ascii_lowercase();
    match t.as_str() {
        "recovered" | "warn recovered" | "no data recovered" => Ok(AlertStatus::Resolved),
        "triggered" | "re-triggered" | "warn" | "re-warn" | "no data" | "re-no data"
        | "renotify" | "re-notify" | "escalated" => Ok(AlertStatus::Firing),
        _ => Err(IntakeError::shape(
            "transition",
            format!(
                "unknown alert transition {transition:?} (expected Triggered, Recovered, Warn, No Data or a Re- form)"
            ),
        )),
    }
}

fn parse_date(s: &str) -> Result<Option<DateTime<Utc>>, IntakeError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = s.parse::<i64>() {
        // Datadog's $DATE is epoch milliseconds; accept seconds too.
        let ms = if n.unsigned_abs() < 100_000_000_000 {
            n.checked_mul(1000)
        } else {
            Some(n)
        };
        return ms
            .and_then(DateTime::from_timestamp_millis)
            .map(Some)
            .ok_or_else(|| IntakeError::shape("date", format!("epoch out of range: {s}")));
    }
    parse_time("date", s)
}

/// Splits `key:value,key2:value2,bare` into labels. A bare tag becomes a label
/// whose value is `"true"`.
fn split_tags(into: &mut BTreeMap<String, String>, tags: &str) {
    for tag in tags.split(',') {
        let tag = tag.trim();
        if tag.is_empty() {
            continue;
        }
        match tag.split_once(':') {
            Some((k, v)) => into.insert(k.trim().to_string(), v.trim().to_string()),
            None => into.insert(tag.to_string(), "true".to_string()),
        };
    }
}

/// Datadog titles look like `[Triggered on {host:web-1}] High CPU`; the
/// bracketed transition prefix is dropped so the name is stable.
fn clean_title(title: &str) -> &str {
    let t = title.trim();
    if t.starts_with('[')
        && let Some(end) = t.find("] ")
    {
        return t[end + 2..].trim();
    }
    t
}

/// Parses one Datadog delivery.
pub fn parse(cfg: &Config, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, IntakeError> {
    let header = cfg.header.as_deref().unwrap_or(DEFAULT_SECRET_HEADER);
    let Some(secret) = &cfg.secret else {
        return Err(IntakeError::Unauthorized(
            "no datadog shared secret is configured".into(),
        ));
    };
    check_secret_header(headers, header, secret)?;
    let p: Payload = decode(body)?;
    if p.id.trim().is_empty() {
        return Err(IntakeError::shape("id", "empty alert id"));
    }
    let status = status_of(&p.transition)?;
    let date = parse_date(&p.date)?;

    let mut scope = BTreeMap::new();
    split_tags(&mut scope, &p.scope);
    let mut labels = BTreeMap::new();
    split_tags(&mut labels, &p.tags);
    labels.extend(scope.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels.insert("alertname".into(), clean_title(&p.title).to_string());
    labels.insert("monitor_id".into(), p.id.clone());
    if !p.priority.is_empty() {
        labels.insert("priority".into(), p.priority.clone());
    }

    let mut annotations = BTreeMap::new();
    annotations.insert("title".into(), p.title.clone());
    if !p.message.is_empty() {
        annotations.insert("description".into(), p.message.clone());
    }
    if !p.link.is_empty() {
        annotations.insert("link".into(), p.link.clone());
    }
    let mut meta = BTreeMap::new();
    meta.insert("transition".into(), p.transition.clone());
    if !p.scope.is_empty() {
        meta.insert("scope".into(), p.scope.clone());
    }

    // A multi-alert monitor alerts once per scope: the monitor id plus the
    // scope identify the alert.
    let mut ident = scope;
    ident.insert("monitor_id".into(), p.id.clone());
    let fingerprint = fingerprint_of(&Source::Datadog, &ident);
    let idempotency_key = format!(
        "datadog:{fingerprint}:{}:{}",
        p.transition.trim().to_ascii_lowercase(),
        p.date.trim()
    );
    Ok(Parsed {
        alerts: vec![Alert {
            source: Source::Datadog,
            fingerprint,
            status,
            labels,
            annotations,
            starts_at: if status == AlertStatus::Firing {
                date
            } else {
                None
            },
            ends_at: if status == AlertStatus::Resolved {
                date
            } else {
                None
            },
            meta,
            idempotency_key,
            raw_ref: String::new(),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"id":"1234","transition":"Triggered","priority":"P1","title":"[Triggered on {host:web-1}] High CPU","tags":"env:prod,team:checkout,critical","link":"https://app.datadoghq.com/event/1","date":"1795768800000","message":"CPU above 90%","scope":"host:web-1,env:prod"}"#;

    fn cfg() -> Config {
        Config {
            secret: Some("dd-secret".into()),
            header: None,
        }
    }

    fn auth() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(DEFAULT_SECRET_HEADER, "dd-secret".parse().unwrap());
        h
    }

    #[test]
    fn maps_the_template() {
        let p = parse(&cfg(), &auth(), BODY.as_bytes()).unwrap();
        let a = &p.alerts[0];
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.labels["alertname"], "High CPU");
        assert_eq!(a.labels["host"], "web-1");
        assert_eq!(a.labels["team"], "checkout");
        assert_eq!(a.labels["critical"], "true");
        assert_eq!(a.labels["priority"], "P1");
        assert_eq!(a.annotations["description"], "CPU above 90%");
        assert_eq!(
            a.starts_at.unwrap().to_rfc3339(),
            "2026-11-27T08:40:00+00:00"
        );

        let recovered = BODY.replace("\"Triggered\"", "\"Recovered\"");
        let r = parse(&cfg(), &auth(), recovered.as_bytes()).unwrap();
        assert_eq!(r.alerts[0].status, AlertStatus::Resolved);
        // the same alert, a different notification
        assert_eq!(r.alerts[0].fingerprint, a.fingerprint);
        assert_ne!(r.alerts[0].idempotency_key, a.idempotency_key);
    }

    #[test]
    fn requires_the_secret_header() {
        assert_eq!(
            parse(&cfg(), &HeaderMap::new(), BODY.as_bytes())
                .unwrap_err()
                .http_status(),
            401
        );
        assert!(parse(&Config::default(), &auth(), BODY.as_bytes()).is_err());
    }

    #[test]
    fn unknown_transition_is_a_shape_error() {
        let bad = BODY.replace("\"Triggered\"", "\"Exploded\"");
        match parse(&cfg(), &auth(), bad.as_bytes()) {
            Err(IntakeError::Shape { path, .. }) => assert_eq!(path, "transition"),
            other => panic!("{other:?}"),
        }
    }

    /// Found by `fuzz/` (target `datadog`): a large negative epoch in
    /// seconds overflowed when turned into milliseconds.
    #[test]
    fn far_epochs_are_a_shape_error_not_an_overflow() {
        for d in [
            "-1635860014055385923",
            "-99999999999999999",
            "9223372036854775807",
        ] {
            let body =
                serde_json::json!({"id": "1", "transition": "Triggered", "title": "x", "date": d});
            match parse(&cfg(), &auth(), body.to_string().as_bytes()) {
                Err(IntakeError::Shape { path, .. }) => assert_eq!(path, "date", "{d}"),
                other => panic!("{d}: {other:?}"),
            }
        }
        let body =
            serde_json::json!({"id": "1", "transition": "Triggered", "title": "x", "date": "-60"});
        let p = parse(&cfg(), &auth(), body.to_string().as_bytes()).unwrap();
        assert_eq!(p.alerts[0].starts_at.map(|t| t.timestamp()), Some(-60));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&cfg(), &auth(), &body);
        }

        #[test]
        fn arbitrary_field_values_never_panic(t in ".{0,40}", d in ".{0,30}", s in ".{0,60}") {
            let body = serde_json::json!({"id": "1", "transition": t, "title": "x", "date": d, "scope": s, "tags": s});
            let _ = parse(&cfg(), &auth(), body.to_string().as_bytes());
        }
    }
}
