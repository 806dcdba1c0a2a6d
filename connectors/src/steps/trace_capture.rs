//! `trace.capture`: a Go execution trace (`/debug/pprof/trace?seconds=N`),
//! kept as an artifact with its capture window in UTC, so it lines up with
//! metrics and profiles on the incident's timeline.
//!
//! ```yaml
//! - id: trace
//!   uses: trace.capture
//!   with: {url: "http://checkout:6060", seconds: 5}
//! ```

use super::{Acts, Step, StepCtx};
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{StepError, Target};

/// The most a trace may weigh.
pub const MAX_BYTES: usize = 256 << 20;

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
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
    #[serde(default, deserialize_with = "super::opt_number")]
    #[schemars(schema_with = "super::number_schema")]
    pub port: Option<u16>,
    /// How long to trace (1 to 60, default 5).
    #[serde(default = "five")]
    pub seconds: u64,
}

fn five() -> u64 {
    5
}

/// Captures, checks the trace header, keeps the bytes.
pub async fn run(ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
    let (http, kube, artifacts) = (ctx.http, ctx.kube, ctx.artifacts);
    let target = Target::new(&p.url, &p.pod, &p.namespace, p.port)?;
    if !(1..=60).contains(&p.seconds) {
        return Err(StepError::Params("seconds must be 1 to 60".into()));
    }
    let path = format!("debug/pprof/trace?seconds={}", p.seconds);
    let start = Utc::now();
    let bytes = target
        .get(
            http,
            kube,
            &path,
            Duration::from_secs(p.seconds + 30),
            MAX_BYTES,
        )
        .await?;
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
            a.put(
                "go-trace",
                "application/octet-stream",
                &bytes,
                &ctx.captured(Some(&target.label()), Some((start, end))),
            )
            .await?,
        ),
        None => None,
    };
    Ok(json!({
        "format": header,
        "bytes": bytes.len(),
        "artifact": stored,
        "target": target.label(),
        "window": {"start": start, "end": end},
        "open_with": "go tool trace <file>",
    }))
}

/// The `trace.capture` step type.
pub struct TraceCapture;

impl Step for TraceCapture {
    const NAME: &'static str = "trace.capture";
    const OUTPUT: &'static str = "`target`, `bytes`, `artifact` (the trace's id), `window` and `open_with` (the `go tool trace` command).";
    const DESTRUCTIVE: bool = false;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::maybe(p.namespace.as_deref(), p.pod.as_deref())
    }

    fn urls(p: &Params) -> Vec<&str> {
        p.url.as_deref().into_iter().collect()
    }

    async fn run(ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
        run(ctx, p).await
    }
}
