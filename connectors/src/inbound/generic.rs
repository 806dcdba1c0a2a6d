//! The generic JSON hook: any JSON body, mapped to alerts by JSON pointers
//! (RFC 6901) configured per hook name.
//!
//! ```yaml
//! generic:
//!   grafana:
//!     token: "..."                 # Authorization: Bearer <token>
//!     alerts: /alerts              # optional: the array of alerts
//!     fingerprint: /fingerprint    # optional: derived from labels if absent
//!     status: /status
//!     labels: /labels              # an object of labels
//!     label_fields: {service: /tags/service}
//!     annotations: /annotations
//!     starts_at: /startsAt
//! ```

use std::collections::BTreeMap;

use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::{IntakeError, Parsed, check_bearer, decode, parse_time};
use crate::alert::{Alert, AlertStatus, Source, fingerprint_of};

/// The mapping for one generic hook. Pointers inside an alert are relative
/// to that alert's object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The bearer token callers must present. Required: an unauthenticated
    /// hook would let anyone open incidents.
    pub token: String,
    /// Pointer to an array of alerts. Without it the whole body is one alert.
    #[serde(default)]
    pub alerts: Option<String>,
    /// Pointer to the fingerprint. Without it, a hash of the labels.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Pointer to the status. Without it every alert is firing.
    #[serde(default)]
    pub status: Option<String>,
    /// Status values that mean firing (compared case-insensitively).
    #[serde(default = "default_firing")]
    pub firing_values: Vec<String>,
    /// Status values that mean resolved (compared case-insensitively).
    #[serde(default = "default_resolved")]
    pub resolved_values: Vec<String>,
    /// Pointer to an object whose members become labels.
    #[serde(default)]
    pub labels: Option<String>,
    /// Individual labels: label name to pointer.
    #[serde(default)]
    pub label_fields: BTreeMap<String, String>,
    /// Pointer to an object whose members become annotations.
    #[serde(default)]
    pub annotations: Option<String>,
    /// Individual annotations: annotation name to pointer.
    #[serde(default)]
    pub annotation_fields: BTreeMap<String, String>,
    /// Pointer to the RFC 3339 start time.
    #[serde(default)]
    pub starts_at: Option<String>,
    /// Pointer to the RFC 3339 end time.
    #[serde(default)]
    pub ends_at: Option<String>,
    /// Pointer to a sender-provided idempotency key. Without it, the
    /// fingerprint plus status plus start time.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

fn default_firing() -> Vec<String> {
    [
        "firing",
        "triggered",
        "alerting",
        "alert",
        "open",
        "problem",
    ]
    .map(String::from)
    .to_vec()
}

fn default_resolved() -> Vec<String> {
    ["resolved", "ok", "recovered", "closed"]
        .map(String::from)
        .to_vec()
}

/// A pointer that found something that is not a scalar, or nothing at all.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn lookup<'v>(root: &'v Value, base: &str, ptr: &str) -> Result<Option<&'v Value>, IntakeError> {
    if !(ptr.is_empty() || ptr.starts_with('/')) {
        return Err(IntakeError::shape(
            base,
            format!("mapping pointer {ptr:?} must start with '/'"),
        ));
    }
    Ok(root.pointer(ptr).filter(|v| !v.is_null()))
}

fn get_string(
    root: &Value,
    base: &str,
    ptr: &Option<String>,
) -> Result<Option<String>, IntakeError> {
    let Some(ptr) = ptr else { return Ok(None) };
    match lookup(root, base, ptr)? {
        None => Ok(None),
        Some(v) => scalar(v).map(Some).ok_or_else(|| {
            IntakeError::shape(
                format!("{base}{ptr}"),
                "expected a string, number or boolean",
            )
        }),
    }
}

fn get_map(
    root: &Value,
    base: &str,
    ptr: &Option<String>,
    fields: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, IntakeError> {
    let mut out = BTreeMap::new();
    if let Some(ptr) = ptr
        && let Some(v) = lookup(root, base, ptr)?
    {
        let Value::Object(obj) = v else {
            return Err(IntakeError::shape(
                format!("{base}{ptr}"),
                "expected an object",
            ));
        };
        for (k, v) in obj {
            let s = scalar(v).ok_or_else(|| {
                IntakeError::shape(
                    format!("{base}{ptr}/{k}"),
                    "expected a string, number or boolean",
                )
            })?;
            out.insert(k.clone(), s);
        }
    }
    for (name, ptr) in fields {
        if let Some(s) = get_string(root, base, &Some(ptr.clone()))? {
            out.insert(name.clone(), s);
        }
    }
    Ok(out)
}

/// Parses one delivery to the generic hook called `name`.
pub fn parse(
    name: &str,
    mapping: &Mapping,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Parsed, IntakeError> {
    check_bearer(headers, &mapping.token)?;
    let root: Value = decode(body)?;
    let items: Vec<(String, &Value)> = match &mapping.alerts {
        None => vec![(String::new(), &root)],
        Some(ptr) => match lookup(&root, "", ptr)? {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{ptr}/{i}"), v))
                .collect(),
            Some(_) => {
                return Err(IntakeError::shape(
                    ptr.clone(),
                    "expected an array of alerts",
                ));
            }
            None => return Err(IntakeError::shape(ptr.clone(), "missing array of alerts")),
        },
    };
    let source = Source::Generic(name.to_string());
    let mut alerts = Vec::with_capacity(items.len());
    for (base, item) in items {
        let labels = get_map(item, &base, &mapping.labels, &mapping.label_fields)?;
        let annotations = get_map(
            item,
            &base,
            &mapping.annotations,
            &mapping.annotation_fields,
        )?;
        let status = match get_string(item, &base, &mapping.status)? {
            None => AlertStatus::Firing,
            Some(s) => {
                let l = s.to_ascii_lowercase();
                if mapping
                    .firing_values
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case(&l))
                {
                    AlertStatus::Firing
                } else if mapping
                    .resolved_values
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case(&l))
                {
                    AlertStatus::Resolved
                } else {
                    let ptr = mapping.status.as_deref().unwrap_or_default();
                    return Err(IntakeError::shape(
                        format!("{base}{ptr}"),
                        format!("status {s:?} is neither a firing nor a resolved value"),
                    ));
                }
            }
        };
        let starts_raw = get_string(item, &base, &mapping.starts_at)?.unwrap_or_default();
        let starts_at = parse_time(
            &format!("{base}{}", mapping.starts_at.as_deref().unwrap_or_default()),
            &starts_raw,
        )?;
        let ends_raw = get_string(item, &base, &mapping.ends_at)?.unwrap_or_default();
        let ends_at = parse_time(
            &format!("{base}{}", mapping.ends_at.as_deref().unwrap_or_default()),
            &ends_raw,
        )?;
        let fingerprint = match get_string(item, &base, &mapping.fingerprint)? {
            Some(f) if !f.is_empty() => f,
            _ => {
                if labels.is_empty() {
                    return Err(IntakeError::shape(
                        base,
                        "alert has neither a fingerprint nor any labels to derive one from",
                    ));
                }
                fingerprint_of(&source, &labels)
            }
        };
        let idempotency_key = match get_string(item, &base, &mapping.idempotency_key)? {
            Some(k) => format!("generic/{name}:{k}"),
            None => format!(
                "generic/{name}:{fingerprint}:{}:{starts_raw}",
                status.as_str()
            ),
        };
        alerts.push(Alert {
            source: source.clone(),
            fingerprint,
            status,
            labels,
            annotations,
            starts_at,
            ends_at,
            meta: BTreeMap::new(),
            idempotency_key,
            raw_ref: String::new(),
        });
    }
    Ok(Parsed { alerts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Mapping {
        serde_json::from_value(serde_json::json!({
            "token": "g",
            "alerts": "/items",
            "fingerprint": "/id",
            "status": "/state",
            "labels": "/labels",
            "label_fields": {"service": "/svc/name"},
            "annotations": "/notes",
            "starts_at": "/at"
        }))
        .unwrap()
    }

    fn auth() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer g".parse().unwrap());
        h
    }

    #[test]
    fn maps_pointers() {
        let body = br#"{"items":[
            {"id":"a1","state":"ALERTING","labels":{"alertname":"Disk","node":3},"svc":{"name":"db"},"notes":{"summary":"full"},"at":"2026-11-27T10:00:00Z"},
            {"state":"ok","labels":{"alertname":"Disk"}}
        ]}"#;
        let p = parse("grafana", &mapping(), &auth(), body).unwrap();
        assert_eq!(p.alerts.len(), 2);
        assert_eq!(p.alerts[0].fingerprint, "a1");
        assert_eq!(p.alerts[0].status, AlertStatus::Firing);
        assert_eq!(p.alerts[0].labels["node"], "3");
        assert_eq!(p.alerts[0].labels["service"], "db");
        assert_eq!(p.alerts[0].annotations["summary"], "full");
        assert_eq!(p.alerts[0].source, Source::Generic("grafana".into()));
        assert_eq!(p.alerts[1].status, AlertStatus::Resolved);
        assert_eq!(p.alerts[1].fingerprint.len(), 16);
    }

    #[test]
    fn errors_name_the_pointer() {
        let body = br#"{"items":[{"id":"a","state":"weird","labels":{}}]}"#;
        match parse("g", &mapping(), &auth(), body) {
            Err(IntakeError::Shape { path, .. }) => assert_eq!(path, "/items/0/state"),
            other => panic!("{other:?}"),
        }
        let body = br#"{"items":[{"id":"a","labels":{"x":{"nested":1}}}]}"#;
        match parse("g", &mapping(), &auth(), body) {
            Err(IntakeError::Shape { path, .. }) => assert_eq!(path, "/items/0/labels/x"),
            other => panic!("{other:?}"),
        }
        let body = br#"{"items": 3}"#;
        assert_eq!(
            parse("g", &mapping(), &auth(), body)
                .unwrap_err()
                .http_status(),
            422
        );
        assert_eq!(
            parse("g", &mapping(), &HeaderMap::new(), body)
                .unwrap_err()
                .http_status(),
            401
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse("g", &mapping(), &auth(), &body);
        }

        #[test]
        fn arbitrary_pointers_never_panic(p in "[/a-z0-9~]{0,12}", q in "[/a-z0-9~]{0,12}") {
            let mut m = mapping();
            m.alerts = Some(p.clone());
            m.fingerprint = Some(q.clone());
            m.labels = Some(q);
            let body = br#"{"items":[{"id":"a","labels":{"a":"b"}}],"a":{"b":[1,{"c":null}]}}"#;
            let _ = parse("g", &m, &auth(), body);
        }
    }
}
