//! `k8s.events`: the recent events of a namespace or of one object, newest
//! last, each with its time, so they line up on the incident's timeline.
//!
//! ```yaml
//! - id: events
//!   uses: k8s.events
//!   with: {namespace: shop, kind: Pod, name: "{{alert.labels.pod}}", since_seconds: 900}
//! ```

use super::{Acts, Step, StepCtx};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::StepError;
use crate::k8s::{Kube, names};

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The namespace (default `default`).
    #[serde(default = "super::k8s_logs::default_ns")]
    pub namespace: String,
    /// Only events about this object.
    #[serde(default)]
    pub name: Option<String>,
    /// Only events about objects of this kind (`Pod`, `Deployment`, ...).
    #[serde(default)]
    pub kind: Option<String>,
    /// How far back (default 3600 seconds).
    #[serde(default = "hour")]
    pub since_seconds: i64,
    /// The most events to return, newest kept (default 50, at most 1000).
    #[serde(default = "fifty")]
    pub limit: usize,
    /// Only `Warning` events.
    #[serde(default)]
    pub warnings_only: bool,
    /// Seconds to wait for the API server (default 30).
    #[serde(default = "thirty")]
    pub timeout_seconds: u64,
}

fn hour() -> i64 {
    3600
}

fn fifty() -> usize {
    50
}

fn thirty() -> u64 {
    30
}

/// The API path for these parameters, names checked first.
pub fn path(p: &Params) -> Result<String, StepError> {
    names::label("namespace", &p.namespace)?;
    if !(1..=1000).contains(&p.limit) {
        return Err(StepError::Params("limit must be 1 to 1000".into()));
    }
    let mut selectors = Vec::new();
    if let Some(n) = &p.name {
        names::subdomain("name", n)?;
        selectors.push(format!("involvedObject.name%3D{n}"));
    }
    if let Some(k) = &p.kind {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(StepError::Params(format!(
                "kind {k:?} must be a Kubernetes kind such as Pod or Deployment"
            )));
        }
        selectors.push(format!("involvedObject.kind%3D{k}"));
    }
    if p.warnings_only {
        selectors.push("type%3DWarning".into());
    }
    let mut path = format!("/api/v1/namespaces/{}/events", p.namespace);
    if !selectors.is_empty() {
        path.push_str("?fieldSelector=");
        path.push_str(&selectors.join("%2C"));
    }
    Ok(path)
}

/// When an event last happened: `lastTimestamp`, else `eventTime`, else
/// `firstTimestamp`, else when it was created.
fn when(e: &Value) -> Option<DateTime<Utc>> {
    ["lastTimestamp", "eventTime", "firstTimestamp"]
        .iter()
        .filter_map(|k| e.get(*k).and_then(Value::as_str))
        .chain(e["metadata"]["creationTimestamp"].as_str())
        .find_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Turns an `EventList` into the step's events: newer than `since`, oldest
/// first, the newest `limit` kept.
pub fn summarise(
    list: &Value,
    since: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Value>, StepError> {
    let items = list["items"]
        .as_array()
        .ok_or_else(|| StepError::Failed("the API server's answer is not an EventList".into()))?;
    let mut events: Vec<(DateTime<Utc>, Value)> = items
        .iter()
        .filter_map(|e| {
            let t = when(e)?;
            (t >= since).then(|| {
                let object = &e["involvedObject"];
                (
                    t,
                    json!({
                        "time": t,
                        "type": e["type"],
                        "reason": e["reason"],
                        "object": format!(
                            "{}/{}",
                            object["kind"].as_str().unwrap_or("?"),
                            object["name"].as_str().unwrap_or("?")
                        ),
                        "message": e["message"],
                        "count": e["count"].as_u64().unwrap_or(1),
                    }),
                )
            })
        })
        .collect();
    events.sort_by_key(|e| e.0);
    let skip = events.len().saturating_sub(limit);
    Ok(events.into_iter().skip(skip).map(|(_, v)| v).collect())
}

/// One human line: `Warning BackOff Pod/web-1 (x5): Back-off restarting failed container`.
pub fn line(e: &Value) -> String {
    let count = e["count"].as_u64().unwrap_or(1);
    let times = if count > 1 {
        format!(" (x{count})")
    } else {
        String::new()
    };
    format!(
        "{} {} {}{times}: {}",
        e["type"].as_str().unwrap_or("?"),
        e["reason"].as_str().unwrap_or("?"),
        e["object"].as_str().unwrap_or("?"),
        e["message"].as_str().unwrap_or("").trim()
    )
}

/// Reads the events.
pub async fn run(kube: &dyn Kube, p: Params) -> Result<Value, StepError> {
    let path = path(&p)?;
    let since = Utc::now() - chrono::Duration::seconds(p.since_seconds.max(0));
    let body = kube
        .get(&path, 16 << 20, Duration::from_secs(p.timeout_seconds))
        .await?;
    let list: Value = serde_json::from_slice(&body)
        .map_err(|e| StepError::Failed(format!("{path}: not JSON: {e}")))?;
    let events = summarise(&list, since, p.limit)?;
    let summary: Vec<String> = events.iter().map(line).collect();
    let window = match (events.first(), events.last()) {
        (Some(a), Some(b)) => json!({"start": a["time"], "end": b["time"]}),
        _ => Value::Null,
    };
    Ok(json!({
        "namespace": p.namespace,
        "count": events.len(),
        "warnings": events.iter().filter(|e| e["type"] == "Warning").count(),
        "summary": summary,
        "events": events,
        "window": window,
    }))
}

/// The `k8s.events` step type.
pub struct K8sEvents;

impl Step for K8sEvents {
    const NAME: &'static str = "k8s.events";
    const OUTPUT: &'static str = "`events` (time, type, reason, object, message; newest first), `count`, `warnings`, `window` and `summary` lines.";
    const DESTRUCTIVE: bool = false;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::maybe(Some(&p.namespace), p.name.as_deref())
    }

    async fn run(ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
        run(ctx.kube()?, p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Params {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn selects_by_object_kind_and_type() {
        let p = params(
            json!({"namespace": "shop", "name": "web-1", "kind": "Pod", "warnings_only": true}),
        );
        assert_eq!(
            path(&p).unwrap(),
            "/api/v1/namespaces/shop/events?fieldSelector=involvedObject.name%3Dweb-1%2CinvolvedObject.kind%3DPod%2Ctype%3DWarning"
        );
        assert_eq!(
            path(&params(json!({}))).unwrap(),
            "/api/v1/namespaces/default/events"
        );
        for v in [
            json!({"name": "web-1,type=Normal"}),
            json!({"namespace": "kube-system/../x"}),
        ] {
            assert!(
                path(&params(v))
                    .unwrap_err()
                    .to_string()
                    .contains("not a valid Kubernetes name")
            );
        }
        assert!(path(&params(json!({"kind": "Pod,x"}))).is_err());
    }

    #[test]
    fn keeps_recent_events_oldest_first_and_the_newest_within_the_limit() {
        let list = json!({"kind": "EventList", "items": [
            {"type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container",
             "count": 5, "lastTimestamp": "2026-11-27T17:05:00Z",
             "involvedObject": {"kind": "Pod", "name": "web-1"}},
            {"type": "Normal", "reason": "Scheduled", "message": "assigned",
             "eventTime": "2026-11-27T17:01:00.000000Z",
             "involvedObject": {"kind": "Pod", "name": "web-1"}},
            {"type": "Normal", "reason": "Old", "message": "long ago",
             "lastTimestamp": "2026-11-26T01:00:00Z",
             "involvedObject": {"kind": "Pod", "name": "web-1"}},
            {"type": "Normal", "reason": "Created", "message": "created",
             "metadata": {"creationTimestamp": "2026-11-27T17:02:00Z"},
             "involvedObject": {"kind": "Pod", "name": "web-1"}}
        ]});
        let since = "2026-11-27T17:00:00Z".parse().unwrap();
        let ev = summarise(&list, since, 10).unwrap();
        let reasons: Vec<&str> = ev.iter().map(|e| e["reason"].as_str().unwrap()).collect();
        assert_eq!(reasons, ["Scheduled", "Created", "BackOff"]);
        assert_eq!(
            line(&ev[2]),
            "Warning BackOff Pod/web-1 (x5): Back-off restarting failed container"
        );
        let ev = summarise(&list, since, 2).unwrap();
        assert_eq!(ev[0]["reason"], "Created");
        assert!(summarise(&json!({"kind": "Status"}), since, 1).is_err());
    }
}
