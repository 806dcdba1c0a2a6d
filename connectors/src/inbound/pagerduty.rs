//! PagerDuty V3 webhooks.
//!
//! PagerDuty signs the raw body with HMAC-SHA256 under the subscription's
//! secret and sends one or more `v1=<hex>` values, comma-separated, in
//! `X-PagerDuty-Signature` (several while a secret is being rotated). A
//! delivery is accepted when any value matches any configured secret. Each
//! delivery carries `X-Webhook-Id`; a redelivery reuses it, so it is the
//! idempotency key.

use std::collections::BTreeMap;

use http::HeaderMap;
use serde::Deserialize;

use super::{IntakeError, Parsed, decode, parse_time};
use crate::alert::{Alert, AlertStatus, Source};

/// Settings for the PagerDuty hook.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Signing secrets of the webhook subscription. List the new one beside
    /// the old while rotating. With none configured, every delivery is
    /// refused: an unsigned PagerDuty hook would let anyone open incidents.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// How old (`event.occurred_at`) a signed event may be, in seconds
    /// (default 3600): an older one is a replay of a captured delivery, or
    /// a retry past any use, and is refused.
    #[serde(default)]
    pub max_event_age_seconds: Option<u64>,
}

/// How old an event may be unless the configuration says.
pub const DEFAULT_MAX_EVENT_AGE: u64 = 3600;

#[derive(Debug, Deserialize)]
struct Envelope {
    event: Event,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Event {
    id: String,
    event_type: String,
    resource_type: String,
    occurred_at: String,
    #[serde(default)]
    agent: Option<serde_json::Value>,
    #[serde(default)]
    client: Option<serde_json::Value>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct IncidentData {
    id: String,
    #[serde(default)]
    number: Option<u64>,
    #[serde(default)]
    title: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    html_url: String,
    #[serde(default)]
    incident_key: Option<String>,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    urgency: Option<String>,
    #[serde(default)]
    service: Option<Reference>,
    #[serde(default)]
    priority: Option<Reference>,
}

#[derive(Debug, Deserialize)]
struct Reference {
    #[serde(default)]
    id: String,
    #[serde(default)]
    summary: String,
}

/// Checks `X-PagerDuty-Signature` against every configured secret.
pub fn verify_signature(
    secrets: &[String],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), IntakeError> {
    if secrets.is_empty() {
        return Err(IntakeError::Unauthorized(
            "no pagerduty signing secret is configured".into(),
        ));
    }
    let mut candidates = Vec::new();
    for value in headers.get_all("x-pagerduty-signature") {
        let Ok(value) = value.to_str() else { continue };
        for part in value.split(',') {
            if let Some(hex_sig) = part.trim().strip_prefix("v1=")
                && let Ok(sig) = hex::decode(hex_sig)
            {
                candidates.push(sig);
            }
        }
    }
    if candidates.is_empty() {
        return Err(IntakeError::Unauthorized(
            "missing or malformed X-PagerDuty-Signature (expected v1=<hex>)".into(),
        ));
    }
    let mut ok = false;
    for secret in secrets {
        for sig in &candidates {
            // Each comparison is constant time; keep looping so the time
            // taken does not depend on which candidate matched.
            ok |= super::hmac_sha256_matches(secret.as_bytes(), body, sig);
        }
    }
    if ok {
        Ok(())
    } else {
        Err(IntakeError::Unauthorized(
            "X-PagerDuty-Signature matches none of the configured secrets".into(),
        ))
    }
}

/// Parses one PagerDuty delivery.
pub fn parse(cfg: &Config, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, IntakeError> {
    parse_at(cfg, headers, body, Some(chrono::Utc::now()))
}

/// [`parse`] as of `now`; `None` skips the age check (test mode, which
/// replays recorded payloads on purpose).
pub fn parse_at(
    cfg: &Config,
    headers: &HeaderMap,
    body: &[u8],
    now: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Parsed, IntakeError> {
    verify_signature(&cfg.secrets, headers, body)?;
    let env: Envelope = decode(body)?;
    let ev = env.event;
    if ev.resource_type != "incident" {
        // Pings and service events are authentic but are not alerts.
        return Ok(Parsed::default());
    }
    let data: IncidentData = match ev.data {
        Some(d) => serde_json::from_value(d)
            .map_err(|e| IntakeError::shape("event.data", e.to_string()))?,
        None => return Err(IntakeError::shape("event.data", "missing incident data")),
    };
    let occurred = parse_time("event.occurred_at", &ev.occurred_at)?;
    if let (Some(now), Some(at)) = (now, occurred) {
        let max = cfg.max_event_age_seconds.unwrap_or(DEFAULT_MAX_EVENT_AGE);
        let age = (now - at).num_seconds();
        if age > max as i64 {
            return Err(IntakeError::Stale(format!(
                "event {} occurred {age} s ago, more than hooks.pagerduty.max_event_age_seconds ({max})",
                ev.id
            )));
        }
    }
    let status = if ev.event_type == "incident.resolved" || data.status == "resolved" {
        AlertStatus::Resolved
    } else {
        AlertStatus::Firing
    };
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_string(), data.title.clone());
    labels.insert("pd_incident_id".to_string(), data.id.clone());
    if let Some(svc) = &data.service {
        labels.insert("service".to_string(), svc.summary.clone());
        labels.insert("pd_service_id".to_string(), svc.id.clone());
    }
    if let Some(u) = &data.urgency {
        labels.insert("urgency".to_string(), u.clone());
    }
    if let Some(p) = &data.priority {
        labels.insert("priority".to_string(), p.summary.clone());
    }
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_string(), data.title.clone());
    if !data.html_url.is_empty() {
        annotations.insert("link".to_string(), data.html_url.clone());
    }
    let mut meta = BTreeMap::new();
    meta.insert("event_id".to_string(), ev.id.clone());
    meta.insert("event_type".to_string(), ev.event_type.clone());
    if let Some(n) = data.number {
        meta.insert("incident_number".to_string(), n.to_string());
    }
    if let Some(k) = data.incident_key.filter(|k| !k.is_empty()) {
        meta.insert("incident_key".to_string(), k);
    }
    let starts_at = parse_time("event.data.created_at", &data.created_at)?.or(occurred);
    let ends_at = if status == AlertStatus::Resolved {
        occurred
    } else {
        None
    };
    // The event id is inside the signed body (X-Webhook-Id is not signed:
    // a captured delivery resent with a new header would count as new).
    // Retries carry the same event, so the same id.
    let delivery = &ev.id;
    Ok(Parsed {
        alerts: vec![Alert {
            source: Source::Pagerduty,
            fingerprint: format!("pagerduty:{}", data.id),
            status,
            labels,
            annotations,
            starts_at,
            ends_at,
            meta,
            idempotency_key: format!("pagerduty:{delivery}"),
            raw_ref: String::new(),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses as of 30 s after the sample's event.
    fn at(cfg: &Config, h: &HeaderMap, body: &[u8]) -> Result<Parsed, IntakeError> {
        parse_at(cfg, h, body, Some("2026-11-27T10:00:30Z".parse().unwrap()))
    }

    /// A captured delivery replayed later, or with a new X-Webhook-Id, is
    /// no new alert: too old, it is refused; resent, it has the same key.
    #[test]
    fn replays_are_refused_or_deduplicated() {
        let cfg = Config {
            secrets: vec!["s3cret".into()],
            ..Config::default()
        };
        let sig = format!(
            "v1={}",
            crate::inbound::hmac_sha256_hex(b"s3cret", BODY.as_bytes())
        );
        let mut h = HeaderMap::new();
        h.insert("x-pagerduty-signature", sig.parse().unwrap());
        h.insert("x-webhook-id", "first".parse().unwrap());
        let a = at(&cfg, &h, BODY.as_bytes()).unwrap().alerts.remove(0);
        h.insert("x-webhook-id", "second".parse().unwrap());
        let b = at(&cfg, &h, BODY.as_bytes()).unwrap().alerts.remove(0);
        assert_eq!(a.idempotency_key, b.idempotency_key);
        let later = Some("2026-11-27T12:00:00Z".parse().unwrap());
        let e = parse_at(&cfg, &h, BODY.as_bytes(), later).unwrap_err();
        assert_eq!(e.http_status(), 422);
        assert!(e.to_string().contains("max_event_age_seconds"), "{e}");
        // Test mode replays recorded payloads on purpose.
        assert!(parse_at(&cfg, &h, BODY.as_bytes(), None).is_ok());
    }

    const BODY: &str = r#"{"event":{"id":"01DEN1HWXM5W5X3KO4VQGGGHIK","event_type":"incident.triggered","resource_type":"incident","occurred_at":"2026-11-27T10:00:00.000Z","agent":null,"client":null,"data":{"id":"PGR0VU2","type":"incident","self":"https://api.pagerduty.com/incidents/PGR0VU2","html_url":"https://acme.pagerduty.com/incidents/PGR0VU2","number":2,"status":"triggered","incident_key":"d3640fbd41094207a1c11e58e46b1662","created_at":"2026-11-27T09:59:58Z","title":"Checkout latency high","service":{"html_url":"https://acme.pagerduty.com/services/PF9KMXH","id":"PF9KMXH","self":"https://api.pagerduty.com/services/PF9KMXH","summary":"checkout","type":"service_reference"},"urgency":"high","priority":{"id":"P1","summary":"P1","type":"priority_reference"}}}}"#;

    use hmac::{KeyInit, Mac};
    use sha2::Sha256;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    fn headers(sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-pagerduty-signature", sig.parse().unwrap());
        h.insert("x-webhook-id", "wh-1".parse().unwrap());
        h
    }

    #[test]
    fn accepts_any_matching_signature_of_any_secret() {
        let cfg = Config {
            secrets: vec!["old".into(), "new".into()],
            ..Config::default()
        };
        let good = sign("new", BODY.as_bytes());
        let h = headers(&format!("v1=deadbeef, v1={good}"));
        let p = at(&cfg, &h, BODY.as_bytes()).unwrap();
        let a = &p.alerts[0];
        assert_eq!(a.fingerprint, "pagerduty:PGR0VU2");
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.labels["service"], "checkout");
        assert_eq!(a.labels["alertname"], "Checkout latency high");
        // The signed event id, not the unsigned X-Webhook-Id.
        assert_eq!(a.idempotency_key, "pagerduty:01DEN1HWXM5W5X3KO4VQGGGHIK");
        assert_eq!(a.meta["incident_number"], "2");
    }

    #[test]
    fn refuses_forged_missing_and_unconfigured() {
        let cfg = Config {
            secrets: vec!["s".into()],
            ..Config::default()
        };
        let forged = sign("not-s", BODY.as_bytes());
        assert!(at(&cfg, &headers(&format!("v1={forged}")), BODY.as_bytes()).is_err());
        assert!(at(&cfg, &HeaderMap::new(), BODY.as_bytes()).is_err());
        let good = sign("s", BODY.as_bytes());
        let none = Config::default();
        assert!(at(&none, &headers(&format!("v1={good}")), BODY.as_bytes()).is_err());
        // a valid signature over a different body is refused
        let tampered = BODY.replace("checkout", "payments");
        assert!(at(&cfg, &headers(&format!("v1={good}")), tampered.as_bytes()).is_err());
    }

    #[test]
    fn resolved_and_non_incident_events() {
        let cfg = Config {
            secrets: vec!["s".into()],
            ..Config::default()
        };
        let resolved = BODY
            .replace("incident.triggered", "incident.resolved")
            .replace("\"status\":\"triggered\"", "\"status\":\"resolved\"");
        let h = headers(&format!("v1={}", sign("s", resolved.as_bytes())));
        let p = at(&cfg, &h, resolved.as_bytes()).unwrap();
        assert_eq!(p.alerts[0].status, AlertStatus::Resolved);
        assert!(p.alerts[0].ends_at.is_some());

        let ping = r#"{"event":{"id":"x","event_type":"pagey.ping","resource_type":"pagey","occurred_at":"2026-11-27T10:00:00Z","data":{"message":"Hello"}}}"#;
        let h = headers(&format!("v1={}", sign("s", ping.as_bytes())));
        assert!(at(&cfg, &h, ping.as_bytes()).unwrap().alerts.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_with_valid_signatures_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let cfg = Config { secrets: vec!["s".into()], ..Config::default() };
            let h = headers(&format!("v1={}", sign("s", &body)));
            let _ = at(&cfg, &h, &body);
        }

        #[test]
        fn arbitrary_signature_headers_never_panic(sig in "[ -~]{0,200}") {
            let cfg = Config { secrets: vec!["s".into()], ..Config::default() };
            let mut h = HeaderMap::new();
            if let Ok(v) = sig.parse() { h.insert("x-pagerduty-signature", v); }
            proptest::prop_assert!(at(&cfg, &h, BODY.as_bytes()).is_err());
        }
    }
}
