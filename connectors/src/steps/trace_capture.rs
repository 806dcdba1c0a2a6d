//! `trace.capture`: a Go execution trace (`/debug/pprof/trace?seconds=N`),
//! kept as an artifact with its capture window in UTC, so it lines up with
//! metrics and profiles on the incident's timeline.
//!
//! ```yaml
//! - id: trace
//!   uses: trace.capture
//!   with: {url: "http://checkout:6060", seconds: 5}
//! ```

use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::read_capped;
use super::{Artifacts, StepError};

/// The parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The service's base URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Or a pod, reached through the API server's pod proxy.
    #[serde(default)]
    pub pod: Option<String>,
    /// The pod's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The pod's pprof port.
    #[serde(default)]
    pub port: Option<u16>,
    /// How long to trace (1 to 60, default 5).
    #[serde(default = "five")]
    pub seconds: u64,
}

fn five() -> u64 {
    5
}

/// Captures, checks the trace header, keeps the bytes.
pub async fn run(
    http: &reqwest::Client,
    artifacts: Option<&dyn Artifacts>,
    with: &Value,
) -> Result<Value, StepError> {
    let p: Params = super::params(with)?;
    let base = super::go_target(
        &p.url,
        &p.pod,
        "trace.capture of a pod (give url meanwhile)",
    )?;
    if !(1..=60).contains(&p.seconds) {
        return Err(StepError::Params("seconds must be 1 to 60".into()));
    }
    let url = format!(
        "{}/debug/pprof/trace?seconds={}",
        base.trim_end_matches('/'),
        p.seconds
    );
    let start = Utc::now();
    let resp = http
        .get(&url)
        .timeout(Duration::from_secs(p.seconds + 30))
        .send()
        .await
        .map_err(|e| StepError::Failed(format!("{url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(StepError::Failed(format!("{url}: HTTP {}", resp.status())));
    }
    let bytes = read_capped(resp, 256 << 20).await?;
    let end = Utc::now();
    // "go 1.19 trace\0\0\0": the format's own header.
    let header: String = bytes
        .iter()
        .take(16)
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    if !(header.starts_with("go 1.") && header.ends_with(" trace")) {
        return Err(StepError::Failed(format!(
            "not a Go execution trace (header {header:?})"
        )));
    }
    let stored = match artifacts {
        Some(a) => Some(
            a.put("go-trace", "application/octet-stream", &bytes)
                .map_err(StepError::Failed)?,
        ),
        None => None,
    };
    Ok(json!({
        "format": header,
        "bytes": bytes.len(),
        "artifact": stored,
        "window": {"start": start, "end": end},
        "open_with": "go tool trace <file>",
    }))
}
