//! `quench explain`: which runbooks an alert would run, and why each other
//! one would not, without starting anything.

use std::collections::BTreeMap;

use quench_connectors::inbound::alertmanager;
use quench_connectors::{Alert, AlertStatus, Source};
use serde::Deserialize;

/// A hand-written alert: just what matching looks at.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Plain {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    status: Option<AlertStatus>,
    #[serde(default)]
    source: Option<String>,
}

/// Reads the alerts of a file: an Alertmanager webhook payload as it
/// arrives, or one plain alert `{"labels": {...}, "status": "firing"}`, or a
/// list of them.
pub fn read_alerts(bytes: &[u8]) -> Result<Vec<Alert>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("alerts").is_some() && value.get("version").is_some() {
        return alertmanager::parse(&Default::default(), &Default::default(), bytes)
            .map(|p| p.alerts)
            .map_err(|e| format!("not an Alertmanager webhook payload: {e}"));
    }
    let plain: Vec<Plain> = if value.is_array() {
        serde_json::from_value(value)
    } else {
        serde_json::from_value(value).map(|p| vec![p])
    }
    .map_err(|e| format!("expected an Alertmanager payload or {{\"labels\": {{...}}}}: {e}"))?;
    plain
        .into_iter()
        .map(|p| {
            let source: Source = p
                .source
                .as_deref()
                .unwrap_or("alertmanager")
                .parse()
                .map_err(|e: quench_connectors::alert::UnknownSource| e.to_string())?;
            Ok(Alert {
                fingerprint: quench_connectors::alert::fingerprint_of(&source, &p.labels),
                source,
                status: p.status.unwrap_or(AlertStatus::Firing),
                labels: p.labels,
                annotations: p.annotations,
                starts_at: None,
                ends_at: None,
                meta: BTreeMap::new(),
                idempotency_key: String::new(),
                raw_ref: String::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_alerts_and_alertmanager_payloads() {
        let a = read_alerts(
            br#"{"labels": {"alertname": "X"}, "status": "resolved", "source": "generic/app"}"#,
        )
        .unwrap();
        assert_eq!(a[0].status, AlertStatus::Resolved);
        assert_eq!(a[0].source, Source::Generic("app".into()));
        let a = read_alerts(br#"[{"labels": {"alertname": "X"}}, {"labels": {"alertname": "Y"}}]"#)
            .unwrap();
        assert_eq!(a.len(), 2);
        let am = br#"{"version":"4","groupKey":"g","status":"firing","receiver":"r","alerts":[{"status":"firing","labels":{"alertname":"Z"},"startsAt":"2026-11-27T10:00:00Z"}]}"#;
        assert_eq!(read_alerts(am).unwrap()[0].name(), "Z");
        assert!(read_alerts(b"{").is_err());
        assert!(read_alerts(br#"{"labelz": {}}"#).is_err());
        assert!(read_alerts(br#"{"labels": {}, "source": "nagios"}"#).is_err());
    }
}
