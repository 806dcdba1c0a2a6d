//! `pprof.capture`: a profile from a Go service's `net/http/pprof`, decoded
//! and turned into the top table on the spot.
//!
//! ```yaml
//! - id: cpu
//!   uses: pprof.capture
//!   with: {url: "http://checkout:6060", kind: cpu, seconds: 10}
//! ```
//!
//! Go serves one CPU profile per process at a time, so quench never starts
//! two CPU captures of one target: concurrent requests for the same target
//! and window share one capture.

use super::{Acts, ParamError, Step, StepCtx};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::{StepError, Target};
use crate::pprof;

/// The most a profile may weigh on the wire.
pub const MAX_BYTES: usize = 64 << 20;

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The service's base URL (where `/debug/pprof/` is served).
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
    /// cpu, heap, allocs, goroutine, mutex, block or threadcreate.
    pub kind: ProfileKind,
    /// For cpu: how long to sample (default 10, at most 300).
    #[serde(default = "ten")]
    pub seconds: u64,
    /// Rows of the top table to keep (default 10).
    #[serde(default = "ten")]
    pub top: u64,
    /// The sample type to rank by, as `-sample_index=` (default: pprof's).
    #[serde(default)]
    pub sample_index: Option<String>,
    /// A stored profile (`sha256:...`) to diff against: what got hot.
    #[serde(default)]
    pub baseline: Option<String>,
    /// Or: diff against the last healthy capture saved for this service
    /// and kind (see `save_baseline`). Without one, the step still
    /// succeeds and says so.
    #[serde(default)]
    pub baseline_of: Option<String>,
    /// Save this capture as the healthy baseline of this service for its
    /// kind: a scheduled capture, or a step that runs once the service is
    /// well again.
    #[serde(default)]
    pub save_baseline: Option<String>,
    /// Seconds to wait for the service beyond the capture itself
    /// (default 30): a hung endpoint fails the step at this deadline.
    #[serde(default = "thirty")]
    pub margin_seconds: u64,
}

/// The profiles Go's `net/http/pprof` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProfileKind {
    /// CPU time, sampled for `seconds`.
    Cpu,
    /// Live heap.
    Heap,
    /// Every allocation since start.
    Allocs,
    /// Goroutine stacks.
    Goroutine,
    /// Contended mutexes.
    Mutex,
    /// Blocking on synchronisation.
    Block,
    /// Stacks that created OS threads.
    Threadcreate,
}

impl ProfileKind {
    /// As written, and as the path under `/debug/pprof/`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Cpu => "cpu",
            ProfileKind::Heap => "heap",
            ProfileKind::Allocs => "allocs",
            ProfileKind::Goroutine => "goroutine",
            ProfileKind::Mutex => "mutex",
            ProfileKind::Block => "block",
            ProfileKind::Threadcreate => "threadcreate",
        }
    }
}

fn thirty() -> u64 {
    30
}

fn ten() -> u64 {
    10
}

type Capture = Arc<OnceCell<Result<Vec<u8>, StepError>>>;

/// Captures in flight, by target and window.
#[derive(Debug, Default)]
pub struct InFlight {
    captures: Mutex<HashMap<String, Capture>>,
}

/// Captures, decodes and summarises.
pub async fn run(ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
    let (http, kube, inflight, artifacts) = (ctx.http, ctx.kube, ctx.captures, ctx.artifacts);
    let target = Target::new(&p.url, &p.pod, &p.namespace, p.port)?;
    let path = match p.kind {
        ProfileKind::Cpu => format!("profile?seconds={}", p.seconds),
        other => other.as_str().to_string(),
    };
    let path = format!("debug/pprof/{path}");
    // One capture per target and window: the key names both.
    let key = format!("{} {path}", target.label());
    // The capture takes `seconds`; give the transfer a margin on top.
    let timeout = Duration::from_secs(
        p.margin_seconds
            + if p.kind == ProfileKind::Cpu {
                p.seconds
            } else {
                0
            },
    );
    let bytes = if p.kind == ProfileKind::Cpu {
        let cell = {
            let mut map = inflight.captures.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let result = cell
            .get_or_init(|| target.get(http, kube, &path, timeout, MAX_BYTES))
            .await
            .clone();
        // The next request for this target takes a new capture.
        let mut map = inflight.captures.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(&key);
        }
        result?
    } else {
        target.get(http, kube, &path, timeout, MAX_BYTES).await?
    };
    let profile = pprof::decode(&bytes).map_err(|e| StepError::Failed(e.to_string()))?;
    let index = match &p.sample_index {
        None => pprof::top::default_index(&profile),
        Some(name) => profile
            .sample_type
            .iter()
            .position(|t| {
                profile
                    .string_table
                    .get(t.r#type as usize)
                    .is_some_and(|s| s == name)
            })
            .ok_or_else(|| StepError::Params(format!("no sample type {name:?} in this profile")))?,
    };
    let table = pprof::top::top(&profile, index).map_err(|e| StepError::Failed(e.to_string()))?;
    let bad = |e: pprof::ProfileError| StepError::Failed(e.to_string());
    let folded = pprof::flame::folded(&profile, index).map_err(bad)?;
    let title = format!(
        "{} {} ({})",
        target.label(),
        p.kind.as_str(),
        table.sample_type
    );
    // An empty profile (no contention in a block profile, say) has no
    // flame graph; that is an answer, not an error.
    let svg = if folded.is_empty() {
        None
    } else {
        Some(pprof::flame::svg(&folded, &title, &table.unit).map_err(bad)?)
    };
    // The profile to diff against: given, or the service's last healthy one.
    let baseline_id = match (&p.baseline, &p.baseline_of) {
        (Some(_), Some(_)) => {
            return Err(StepError::Params(
                "give baseline or baseline_of, not both".into(),
            ));
        }
        (Some(id), None) => Some(id.clone()),
        (None, Some(service)) => {
            let a = artifacts
                .ok_or_else(|| StepError::Params("baseline_of needs an artifact store".into()))?;
            a.baseline(service, p.kind.as_str()).await?
        }
        (None, None) => None,
    };
    let diff = match (&baseline_id, artifacts) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(StepError::Params("baseline needs an artifact store".into()));
        }
        (Some(id), Some(a)) => {
            let base = a
                .get(id)
                .await?
                .ok_or_else(|| StepError::Params(format!("no stored profile {id}")))?;
            let base = pprof::decode(&base).map_err(bad)?;
            let base_top =
                pprof::top::top(&base, index.min(base.sample_type.len().saturating_sub(1)))
                    .map_err(bad)?;
            Some(
                pprof::flame::diff(&base_top, &table)
                    .into_iter()
                    .take(p.top as usize)
                    .collect::<Vec<_>>(),
            )
        }
    };
    // The capture window, UTC, from the profile itself.
    let window = (
        chrono::DateTime::from_timestamp_nanos(profile.time_nanos),
        chrono::DateTime::from_timestamp_nanos(
            profile.time_nanos.saturating_add(profile.duration_nanos),
        ),
    );
    let label = target.label();
    let about = ctx.captured(Some(&label), Some(window));
    let stored = match artifacts {
        Some(a) => Some(json!({
            "profile": a.put("pprof", "application/octet-stream", &bytes, &about).await?,
            "flamegraph": match &svg {
                Some(svg) => Some(a.put("flamegraph", "image/svg+xml", svg, &about).await?),
                None => None,
            },
        })),
        None => None,
    };
    if let Some(service) = &p.save_baseline {
        let a = artifacts
            .ok_or_else(|| StepError::Params("save_baseline needs an artifact store".into()))?;
        let id = crate::alert::content_address(&bytes);
        a.set_baseline(service, p.kind.as_str(), &id, &about)
            .await?;
    }

    let rows: Vec<Value> = table
        .rows
        .iter()
        .take(p.top as usize)
        .map(|r| {
            json!({"function": r.function, "flat": r.flat, "flat_pct": table.flat_pct(r),
                   "cum": r.cum, "cum_pct": table.cum_pct(r)})
        })
        .collect();
    Ok(json!({
        "kind": p.kind.as_str(),
        "sample_type": table.sample_type,
        "unit": table.unit,
        "total": table.total,
        "top": rows,
        "bytes": bytes.len(),
        "sha256": crate::alert::content_address(&bytes),
        "artifacts": stored,
        "diff": diff,
        "baseline": match (&baseline_id, &p.baseline_of) {
            (Some(id), service) => json!({"artifact": id, "service": service}),
            (None, Some(service)) => json!({"service": service, "artifact": null,
                "note": format!("no baseline saved for {service} {} yet: nothing to diff against", p.kind.as_str())}),
            (None, None) => Value::Null,
        },
        "saved_baseline": p.save_baseline,
        "target": label,
        "window": {"start": window.0, "end": window.1},
    }))
}

/// The `pprof.capture` step type.
pub struct PprofCapture;

impl Step for PprofCapture {
    const NAME: &'static str = "pprof.capture";
    const OUTPUT: &'static str = "`kind`, `sample_type`, `unit`, `total`, `top` (function, flat, flat_pct, cum, cum_pct), `artifacts` (profile and flamegraph ids), `diff` and `baseline` (against a baseline), `saved_baseline`, `target`, `window`.";
    const DESTRUCTIVE: bool = false;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::maybe(p.namespace.as_deref(), p.pod.as_deref())
    }

    fn urls(p: &Params) -> Vec<&str> {
        p.url.as_deref().into_iter().collect()
    }

    fn validate(p: &Params) -> Result<(), ParamError> {
        if p.kind == ProfileKind::Cpu && !(1..=300).contains(&p.seconds) {
            return Err(ParamError::field(
                "seconds",
                format!("{} seconds: a CPU profile takes 1 to 300", p.seconds),
            ));
        }
        if p.url.is_none() && p.pod.is_none() {
            return Err(ParamError {
                field: None,
                message: "a target is needed: `url`, or `pod` (with `namespace` and `port`)".into(),
            });
        }
        Ok(())
    }

    async fn run(ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
        run(ctx, p).await
    }
}
