//! `k8s.logs`: the last lines of a pod's container log, with the API
//! server's timestamps, so they line up with profiles and metrics on the
//! incident's timeline.
//!
//! ```yaml
//! - id: logs
//!   uses: k8s.logs
//!   with: {namespace: shop, pod: "{{alert.labels.pod}}", tail_lines: 200, previous: true}
//! ```
//!
//! `previous: true` reads the container instance that ran before the
//! current one: what a crash-looping pod said before it died.

use super::{Acts, Step, StepCtx};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::StepError;
use crate::k8s::{Kube, names};

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The pod.
    pub pod: String,
    /// Its namespace (default `default`).
    #[serde(default = "default_ns")]
    pub namespace: String,
    /// The container (needed when the pod has several).
    #[serde(default)]
    pub container: Option<String>,
    /// How many lines from the end (default 200, at most 10000).
    #[serde(default = "two_hundred")]
    pub tail_lines: u32,
    /// Only lines newer than this many seconds.
    #[serde(default)]
    pub since_seconds: Option<u64>,
    /// The previous container instance (after a restart or crash).
    #[serde(default)]
    pub previous: bool,
    /// The most log bytes to read (default 1 MiB, at most 16 MiB).
    #[serde(default = "one_mib")]
    pub limit_bytes: usize,
    /// Seconds to wait for the API server (default 30).
    #[serde(default = "thirty")]
    pub timeout_seconds: u64,
}

pub(crate) fn default_ns() -> String {
    "default".into()
}

fn two_hundred() -> u32 {
    200
}

fn one_mib() -> usize {
    1 << 20
}

fn thirty() -> u64 {
    30
}

/// The API path and query for these parameters, names checked first.
pub fn path(p: &Params) -> Result<String, StepError> {
    names::label("namespace", &p.namespace)?;
    names::subdomain("pod", &p.pod)?;
    if !(1..=10_000).contains(&p.tail_lines) {
        return Err(StepError::Params("tail_lines must be 1 to 10000".into()));
    }
    if !(1..=16 << 20).contains(&p.limit_bytes) {
        return Err(StepError::Params("limit_bytes must be 1 to 16 MiB".into()));
    }
    let mut path = format!(
        "/api/v1/namespaces/{}/pods/{}/log?timestamps=true&tailLines={}&limitBytes={}",
        p.namespace, p.pod, p.tail_lines, p.limit_bytes
    );
    if let Some(c) = &p.container {
        names::label("container", c)?;
        path.push_str(&format!("&container={c}"));
    }
    if let Some(s) = p.since_seconds {
        path.push_str(&format!("&sinceSeconds={s}"));
    }
    if p.previous {
        path.push_str("&previous=true");
    }
    Ok(path)
}

/// Splits `timestamps=true` lines into their RFC 3339 time and text.
pub fn split_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| match line.split_once(' ') {
            Some((t, rest)) if chrono::DateTime::parse_from_rfc3339(t).is_ok() => {
                json!({"time": t, "text": rest})
            }
            _ => json!({"time": null, "text": line}),
        })
        .collect()
}

/// Reads the log.
pub async fn run(kube: &dyn Kube, p: Params) -> Result<Value, StepError> {
    let path = path(&p)?;
    // limitBytes bounds what the server sends; the cap on our side holds
    // even against a server that ignores it.
    let body = kube
        .get(
            &path,
            p.limit_bytes + (64 << 10),
            Duration::from_secs(p.timeout_seconds),
        )
        .await?;
    let text = String::from_utf8_lossy(&body);
    let lines = split_lines(&text);
    let first = lines.iter().find_map(|l| l["time"].as_str());
    let last = lines.iter().rev().find_map(|l| l["time"].as_str());
    Ok(json!({
        "target": format!("pod/{}/{}", p.namespace, p.pod),
        "container": p.container,
        "previous": p.previous,
        "count": lines.len(),
        "lines": lines,
        "window": first.zip(last).map(|(s, e)| json!({"start": s, "end": e})),
    }))
}

/// The `k8s.logs` step type.
pub struct K8sLogs;

impl Step for K8sLogs {
    const NAME: &'static str = "k8s.logs";
    const OUTPUT: &'static str = "`lines` (time, text), `count`, `target`, `window`.";
    const DESTRUCTIVE: bool = false;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::new(Some(&p.namespace), &p.pod)
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
    fn builds_the_log_query_kubectl_would() {
        let p = params(
            json!({"pod": "web-1", "namespace": "shop", "container": "app",
                               "tail_lines": 50, "since_seconds": 600, "previous": true}),
        );
        assert_eq!(
            path(&p).unwrap(),
            "/api/v1/namespaces/shop/pods/web-1/log?timestamps=true&tailLines=50&limitBytes=1048576&container=app&sinceSeconds=600&previous=true"
        );
        let p = params(json!({"pod": "web-1"}));
        assert!(
            path(&p)
                .unwrap()
                .starts_with("/api/v1/namespaces/default/pods/web-1/log?")
        );
    }

    #[test]
    fn refuses_names_that_are_not_kubernetes_names() {
        for v in [
            json!({"pod": "web; rm -rf /"}),
            json!({"pod": "web-1", "namespace": "../kube-system"}),
            json!({"pod": "web-1", "container": "app&previous=true"}),
        ] {
            let e = path(&params(v)).unwrap_err();
            assert!(e.to_string().contains("not a valid Kubernetes name"), "{e}");
        }
        let e = path(&params(json!({"pod": "web-1", "tail_lines": 0}))).unwrap_err();
        assert!(e.to_string().contains("tail_lines"), "{e}");
    }

    #[test]
    fn splits_timestamps_from_text() {
        let lines = split_lines(
            "2026-11-27T17:00:00.123456789Z panic: boom\nno timestamp here\n2026-11-27T17:00:01Z  two spaces\n",
        );
        assert_eq!(lines[0]["time"], "2026-11-27T17:00:00.123456789Z");
        assert_eq!(lines[0]["text"], "panic: boom");
        assert_eq!(lines[1]["time"], Value::Null);
        assert_eq!(lines[1]["text"], "no timestamp here");
        assert_eq!(lines[2]["text"], " two spaces");
    }
}
