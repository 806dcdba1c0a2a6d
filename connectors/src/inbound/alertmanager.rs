//! Prometheus Alertmanager, webhook payload version 4.
//!
//! Every field of the envelope is read. The alerts keep Alertmanager's own
//! fingerprint; `groupKey`, `receiver`, `externalURL` and `truncatedAlerts`
//! are kept in each alert's `meta`, so a truncated group is visible later.

use std::collections::BTreeMap;

use http::HeaderMap;
use serde::Deserialize;

use super::{IntakeError, Parsed, check_bearer, decode, parse_time};
use crate::alert::{Alert, AlertStatus, Source, fingerprint_of};

/// Settings for the Alertmanager hook.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// When set, requests must carry `Authorization: Bearer <token>`
    /// (Alertmanager's `http_config.authorization.credentials`).
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Or: a file holding the token (a mounted Kubernetes Secret); read
    /// when the configuration is loaded, trailing whitespace dropped.
    #[serde(default)]
    pub bearer_token_file: Option<std::path::PathBuf>,
}

/// The webhook v4 envelope.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // every field is read so a wrong shape is refused
struct Webhook {
    version: String,
    group_key: String,
    #[serde(default)]
    truncated_alerts: u64,
    status: AlertStatus,
    receiver: String,
    #[serde(default)]
    group_labels: BTreeMap<String, String>,
    #[serde(default)]
    common_labels: BTreeMap<String, String>,
    #[serde(default)]
    common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL", default)]
    external_url: String,
    alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert {
    status: AlertStatus,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: String,
    #[serde(default)]
    ends_at: String,
    #[serde(rename = "generatorURL", default)]
    generator_url: String,
    #[serde(default)]
    fingerprint: String,
}

/// Parses one Alertmanager delivery.
pub fn parse(cfg: &Config, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, IntakeError> {
    if let Some(token) = &cfg.bearer_token {
        check_bearer(headers, token)?;
    }
    let hook: Webhook = decode(body)?;
    if hook.version != "4" {
        return Err(IntakeError::shape(
            "version",
            format!(
                "unsupported webhook version {:?}, expected \"4\"",
                hook.version
            ),
        ));
    }
    let mut alerts = Vec::with_capacity(hook.alerts.len());
    for (i, a) in hook.alerts.into_iter().enumerate() {
        let starts_at = parse_time(&format!("alerts[{i}].startsAt"), &a.starts_at)?;
        let ends_at = parse_time(&format!("alerts[{i}].endsAt"), &a.ends_at)?;
        let fingerprint = if a.fingerprint.is_empty() {
            fingerprint_of(&Source::Alertmanager, &a.labels)
        } else {
            a.fingerprint
        };
        let mut meta = BTreeMap::new();
        meta.insert("groupKey".into(), hook.group_key.clone());
        meta.insert("receiver".into(), hook.receiver.clone());
        if !hook.external_url.is_empty() {
            meta.insert("externalURL".into(), hook.external_url.clone());
        }
        if hook.truncated_alerts > 0 {
            meta.insert("truncatedAlerts".into(), hook.truncated_alerts.to_string());
        }
        if !a.generator_url.is_empty() {
            meta.insert("generatorURL".into(), a.generator_url);
        }
        let idempotency_key = format!(
            "alertmanager:{fingerprint}:{}:{}",
            a.status.as_str(),
            a.starts_at
        );
        alerts.push(Alert {
            source: Source::Alertmanager,
            fingerprint,
            status: a.status,
            labels: a.labels,
            annotations: a.annotations,
            starts_at,
            ends_at,
            meta,
            idempotency_key,
            raw_ref: String::new(),
        });
    }
    Ok(Parsed { alerts })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "version": "4",
      "groupKey": "{}:{alertname=\"HighCPU\"}",
      "truncatedAlerts": 2,
      "status": "firing",
      "receiver": "quench",
      "groupLabels": {"alertname": "HighCPU"},
      "commonLabels": {"alertname": "HighCPU", "severity": "page"},
      "commonAnnotations": {"summary": "cpu hot"},
      "externalURL": "http://127.0.0.1:9093",
      "alerts": [
        {"status": "firing", "labels": {"alertname": "HighCPU", "pod": "web-1"},
         "annotations": {"summary": "cpu hot"}, "startsAt": "2026-11-27T10:00:00.5Z",
         "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph",
         "fingerprint": "c0ffee0123456789"},
        {"status": "resolved", "labels": {"alertname": "HighCPU", "pod": "web-2"},
         "startsAt": "2026-11-27T09:00:00Z", "endsAt": "2026-11-27T09:30:00Z"}
      ]
    }"#;

    #[test]
    fn parses_every_field() {
        let p = parse(&Config::default(), &HeaderMap::new(), SAMPLE.as_bytes()).unwrap();
        assert_eq!(p.alerts.len(), 2);
        let a = &p.alerts[0];
        assert_eq!(a.fingerprint, "c0ffee0123456789");
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.labels["pod"], "web-1");
        assert_eq!(a.annotations["summary"], "cpu hot");
        assert_eq!(a.ends_at, None);
        assert_eq!(a.meta["truncatedAlerts"], "2");
        assert_eq!(a.meta["groupKey"], "{}:{alertname=\"HighCPU\"}");
        assert_eq!(a.meta["generatorURL"], "http://prom/graph");
        let b = &p.alerts[1];
        assert_eq!(b.status, AlertStatus::Resolved);
        assert!(b.ends_at.is_some());
        // no fingerprint given: derived from the labels, stable
        assert_eq!(b.fingerprint.len(), 16);
        assert_ne!(a.idempotency_key, b.idempotency_key);
    }

    #[test]
    fn token_is_checked_when_configured() {
        let cfg = Config {
            bearer_token: Some("t0k".into()),
            ..Config::default()
        };
        let err = parse(&cfg, &HeaderMap::new(), SAMPLE.as_bytes()).unwrap_err();
        assert_eq!(err.http_status(), 401);
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer t0k".parse().unwrap());
        assert!(parse(&cfg, &h, SAMPLE.as_bytes()).is_ok());
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        let bad = SAMPLE.replacen("\"status\": \"resolved\"", "\"status\": \"gone\"", 1);
        match parse(&Config::default(), &HeaderMap::new(), bad.as_bytes()) {
            Err(IntakeError::Shape { path, .. }) => assert_eq!(path, "alerts[1].status"),
            other => panic!("{other:?}"),
        }
        let v3 = SAMPLE.replacen("\"version\": \"4\"", "\"version\": \"3\"", 1);
        match parse(&Config::default(), &HeaderMap::new(), v3.as_bytes()) {
            Err(IntakeError::Shape { path, .. }) => assert_eq!(path, "version"),
            other => panic!("{other:?}"),
        }
        let bad_time = SAMPLE.replacen("2026-11-27T09:00:00Z", "noon", 1);
        match parse(&Config::default(), &HeaderMap::new(), bad_time.as_bytes()) {
            Err(IntakeError::Shape { path, .. }) => assert_eq!(path, "alerts[1].startsAt"),
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&Config::default(), &HeaderMap::new(), &body);
        }

        #[test]
        fn mutated_samples_never_panic(pos in 0usize..1200, byte in proptest::num::u8::ANY) {
            let mut body = SAMPLE.as_bytes().to_vec();
            let i = pos % body.len();
            body[i] = byte;
            let _ = parse(&Config::default(), &HeaderMap::new(), &body);
        }
    }
}
