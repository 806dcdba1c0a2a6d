//! `perf.record`: `perf record -g -p PID -F HZ -- sleep N` against a local
//! process, then `perf script`, folded into stacks for a top list and a
//! flame graph. Go symbols read as in `go tool pprof` (`main.(*T).m` stays
//! whole); `[unknown]` frames (Go assembly) are kept and counted.
//!
//! ```yaml
//! - id: perf
//!   uses: perf.record
//!   with: {process: checkout, seconds: 10}
//! ```
//!
//! Everything is an argv: no shell, no template inside a command string.
//! With `pod:` instead of `pid:` or `process:`, it runs on the pod's node,
//! in a short-lived privileged Job (see [`crate::k8s::perf_job`]):
//!
//! ```yaml
//! - id: perf
//!   uses: perf.record
//!   with: {pod: "{{k8s_name alert.labels.pod}}", namespace: shop, image: "registry.example/perf:6.1", seconds: 10}
//! ```

use super::{Acts, Step, StepCtx};
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_json::{Value, json};

use super::StepError;

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The process id.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Or a process name (`/proc/PID/comm`), the first match.
    #[serde(default)]
    pub process: Option<String>,
    /// How long to record (1 to 120, default 10).
    #[serde(default = "ten")]
    pub seconds: u64,
    /// Sampling frequency (1 to 999, default 99).
    #[serde(default = "ninety_nine")]
    pub hz: u32,
    /// Rows of the top list (default 10).
    #[serde(default = "ten")]
    pub top: u64,
    /// Or a pod: perf runs on its node, in a Job.
    #[serde(default)]
    pub pod: Option<String>,
    /// The pod's namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The pod's container (needed when it has several).
    #[serde(default)]
    pub container: Option<String>,
    /// For a pod: the image of the Job (it needs `perf` and `sh`);
    /// `executor.perf_image`, when configured, replaces it.
    #[serde(default)]
    pub image: Option<String>,
    /// For a pod: where the Job runs (default: the pod's namespace).
    #[serde(default)]
    pub job_namespace: Option<String>,
    /// For a pod: seconds to wait for the Job beyond `seconds` (default 120).
    #[serde(default = "one_twenty")]
    pub margin_seconds: u64,
}

fn one_twenty() -> u64 {
    120
}

fn ten() -> u64 {
    10
}

fn ninety_nine() -> u32 {
    99
}

/// `perf script` output to folded stacks (`root;...;leaf` → samples).
pub fn fold(script: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for block in script.split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.trim().is_empty());
        if lines.next().is_none() {
            continue; // the header line: comm pid time: period event:
        }
        // Frames, innermost first: "\t addr symbol+0xoff (dso)".
        let frames: Vec<String> = lines
            .filter_map(|l| {
                let l = l.trim();
                let (_, rest) = l.split_once(char::is_whitespace)?;
                let rest = rest.trim();
                let sym = match rest.rfind(" (") {
                    Some(i) if rest.ends_with(')') => &rest[..i],
                    _ => rest,
                };
                let sym = match sym.rfind("+0x") {
                    Some(i) if sym[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) => &sym[..i],
                    _ => sym,
                };
                Some(sym.replace(';', ":"))
            })
            .collect();
        if frames.is_empty() {
            continue;
        }
        let stack: Vec<&str> = frames.iter().rev().map(String::as_str).collect();
        *out.entry(stack.join(";")).or_default() += 1;
    }
    out
}

fn find_pid(name: &str) -> Result<u32, StepError> {
    let entries =
        std::fs::read_dir("/proc").map_err(|e| StepError::Failed(format!("/proc: {e}")))?;
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort();
    pids.into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .ok_or_else(|| StepError::Failed(format!("no process named {name:?}")))
}

/// Records, folds, summarises.
pub async fn run(ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
    let kube = ctx.kube;
    if !(1..=120).contains(&p.seconds) || !(1..=999).contains(&p.hz) {
        return Err(StepError::Params(
            "seconds must be 1 to 120 and hz 1 to 999".into(),
        ));
    }
    let (script, target, start, end, job) = match (&p.pid, &p.process, &p.pod) {
        (None, None, Some(pod)) => {
            let kube = kube.ok_or_else(|| {
                StepError::Failed("perf.record of a pod: no Kubernetes client is configured".into())
            })?;
            let image = p.image.as_deref().ok_or_else(|| {
                StepError::Params(
                    "perf.record of a pod needs image: one with perf and sh (quench ships none)"
                        .into(),
                )
            })?;
            let namespace = p.namespace.as_deref().unwrap_or("default");
            let job_namespace = p.job_namespace.as_deref().unwrap_or(namespace);
            // The Job is privileged (hostPID on the pod's node): both
            // namespaces are held to the namespace rules, and the image
            // is a name, not something a label could turn into a path.
            kube.scope().check(namespace)?;
            kube.scope().check(job_namespace)?;
            if image.contains(char::is_whitespace) || image.contains("{{") || image.is_empty() {
                return Err(StepError::Params(format!(
                    "image {image:?} is not an image reference"
                )));
            }
            let t =
                crate::k8s::perf_job::locate(kube, namespace, pod, p.container.as_deref()).await?;
            let start = chrono::Utc::now();
            let (job, script) = crate::k8s::perf_job::record(
                kube,
                &t,
                job_namespace,
                image,
                p.hz,
                p.seconds,
                std::time::Duration::from_secs(p.seconds + p.margin_seconds),
            )
            .await?;
            let end = chrono::Utc::now();
            (
                script,
                format!("pod/{namespace}/{pod}"),
                start,
                end,
                Some(format!("{} on node {}", job, t.node)),
            )
        }
        (pid, process, None) => {
            let (script, pid, start, end) =
                local(*pid, process.as_deref(), p.hz, p.seconds).await?;
            (script, format!("pid/{pid}"), start, end, None)
        }
        _ => {
            return Err(StepError::Params(
                "give exactly one of pid, process or pod".into(),
            ));
        }
    };
    summarise(ctx, &script, &target, start, end, job, p.top).await
}

type Recorded = (
    String,
    u32,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
);

/// `perf record` then `perf script` on a process of this host.
async fn local(
    pid: Option<u32>,
    process: Option<&str>,
    hz: u32,
    seconds: u64,
) -> Result<Recorded, StepError> {
    let pid = match (pid, process) {
        (Some(pid), None) => pid,
        (None, Some(name)) => find_pid(name)?,
        _ => {
            return Err(StepError::Params(
                "give exactly one of pid, process or pod".into(),
            ));
        }
    };
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(StepError::Failed(format!("no process {pid}")));
    }
    let dir = std::env::temp_dir().join(format!("quench-perf-{pid}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| StepError::Failed(e.to_string()))?;
    let data = dir.join("perf.data");
    let start = chrono::Utc::now();
    let out = tokio::process::Command::new("perf")
        .args([
            "record",
            "-g",
            "-F",
            &hz.to_string(),
            "-p",
            &pid.to_string(),
            "-o",
        ])
        .arg(&data)
        .args(["--", "sleep", &seconds.to_string()])
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| StepError::Failed(format!("cannot run perf (install linux-perf): {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(StepError::Failed(format!(
            "perf record: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let end = chrono::Utc::now();
    let script = tokio::process::Command::new("perf")
        .args(["script", "-i"])
        .arg(&data)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| StepError::Failed(format!("perf script: {e}")))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !script.status.success() {
        return Err(StepError::Failed(format!(
            "perf script: {}",
            String::from_utf8_lossy(&script.stderr).trim()
        )));
    }
    Ok((
        String::from_utf8_lossy(&script.stdout).into_owned(),
        pid,
        start,
        end,
    ))
}

/// Folds `perf script` output and builds the step's output: top list,
/// `[unknown]` count, flame graph artifact, target and window.
async fn summarise(
    ctx: &StepCtx<'_>,
    script: &str,
    target: &str,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
    job: Option<String>,
    top_n: u64,
) -> Result<Value, StepError> {
    let artifacts = ctx.artifacts;
    let folded = fold(script);
    let samples: u64 = folded.values().sum();
    let mut flat: HashMap<&str, u64> = HashMap::new();
    let mut cum: HashMap<&str, u64> = HashMap::new();
    let mut unknown = 0;
    for (stack, n) in &folded {
        let frames: Vec<&str> = stack.split(';').collect();
        unknown += frames.iter().filter(|f| **f == "[unknown]").count() as u64 * n;
        if let Some(leaf) = frames.last() {
            *flat.entry(leaf).or_default() += n;
        }
        for f in frames.iter().collect::<HashSet<_>>() {
            *cum.entry(f).or_default() += n;
        }
    }
    let mut top: Vec<(&str, u64, u64)> = cum
        .iter()
        .map(|(f, c)| (*f, flat.get(f).copied().unwrap_or(0), *c))
        .collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(b.0)));
    let lines: Vec<String> = folded.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let svg = if lines.is_empty() {
        None
    } else {
        Some(
            crate::pprof::flame::svg(&lines, &format!("perf {target}"), "samples")
                .map_err(|e| StepError::Failed(e.to_string()))?,
        )
    };
    let stored = match (artifacts, &svg) {
        (Some(a), Some(svg)) => Some(
            a.put(
                "flamegraph",
                "image/svg+xml",
                svg,
                &ctx.captured(Some(target), Some((start, end))),
            )
            .await?,
        ),
        _ => None,
    };
    Ok(json!({
        "target": target,
        "job": job,
        "window": {"start": start, "end": end},
        "samples": samples,
        "unknown_frames": unknown,
        "top": top.iter().take(top_n as usize).map(|(f, fl, c)| json!({"function": f, "flat": fl, "cum": c})).collect::<Vec<_>>(),
        "flamegraph": stored,
    }))
}

/// The `perf.record` step type.
pub struct PerfRecord;

impl Step for PerfRecord {
    const NAME: &'static str = "perf.record";
    const OUTPUT: &'static str = "`target`, `samples`, `top` (function, flat, cum), `unknown_frames`, `window`, and `flamegraph` (an artifact id).";
    /// It runs a privileged Job (or perf on this host): the executor's
    /// guards apply, as to anything that changes the cluster.
    const DESTRUCTIVE: bool = true;
    const IMAGE_IS_PERF: bool = true;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::maybe(p.namespace.as_deref(), p.pod.as_deref())
    }

    async fn run(ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
        run(ctx, p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "testsvc 16533  6985.479102:   10101010 cpu-clock:ppp: \n\t          273ee9 main.burnCPU+0x89 (/tmp/testsvc)\n\t          273fa7 main.burn+0x87 (/tmp/testsvc)\n\t          221469 net/http.(*ServeMux).ServeHTTP+0x149 (/tmp/testsvc)\n\n testsvc 16533  6985.489203:   10101010 cpu-clock:ppp: \n\t          273ee9 main.burnCPU+0x89 (/tmp/testsvc)\n\t          273fa7 main.burn+0x87 (/tmp/testsvc)\n\t          221469 net/http.(*ServeMux).ServeHTTP+0x149 (/tmp/testsvc)\n\ntestsvc 16533  6985.5:   10101010 cpu-clock:ppp: \n\t          ffffff [unknown] ([unknown])\n\t          6b181 runtime.goexit.abi0+0x1 (/tmp/testsvc)\n";

    #[test]
    fn folds_go_symbols_whole_and_keeps_unknown_frames() {
        let f = fold(SCRIPT);
        assert_eq!(
            f["net/http.(*ServeMux).ServeHTTP;main.burn;main.burnCPU"],
            2
        );
        assert_eq!(f["runtime.goexit.abi0;[unknown]"], 1);
        assert_eq!(f.len(), 2);
    }
}
