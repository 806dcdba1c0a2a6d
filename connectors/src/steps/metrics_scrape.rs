//! `metrics.scrape`: scrapes a `/metrics` endpoint in the Prometheus text
//! format and keeps the Go runtime series: `go_goroutines`, `go_threads`,
//! `go_memstats_*`, `go_gc_duration_seconds*` and `go_sched_*`.
//!
//! ```yaml
//! - id: runtime
//!   uses: metrics.scrape
//!   with: {url: "http://checkout:9090/metrics"}
//! ```

use super::{Acts, Step, StepCtx};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::StepError;

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The metrics URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Or a pod, reached through the API server's pod proxy.
    #[serde(default)]
    pub pod: Option<String>,
    /// The pod's namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The pod's metrics port.
    #[serde(default, deserialize_with = "super::opt_number")]
    #[schemars(schema_with = "super::number_schema")]
    pub port: Option<u16>,
    /// The metrics path on a pod (default `/metrics`).
    #[serde(default)]
    pub path: Option<String>,
    /// Seconds to wait (default 30).
    #[serde(default = "thirty")]
    pub timeout_seconds: u64,
}

fn thirty() -> u64 {
    30
}

/// One sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

fn is_runtime(name: &str) -> bool {
    name == "go_goroutines"
        || name == "go_threads"
        || name.starts_with("go_memstats_")
        || name.starts_with("go_gc_duration_seconds")
        || name.starts_with("go_sched_")
}

/// Parses the text exposition format (comments skipped, label values with
/// `\"`, `\\` and `\n` escapes), keeping the runtime series. Lines that do
/// not parse are counted, not fatal: one bad exporter line must not hide
/// the rest.
pub fn parse(text: &str) -> (Vec<Sample>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Some(s) if is_runtime(&s.name) => out.push(s),
            Some(_) => {}
            None => bad += 1,
        }
    }
    (out, bad)
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end;
        loop {
            // key
            while chars
                .peek()
                .is_some_and(|(_, c)| *c == ',' || c.is_whitespace())
            {
                chars.next();
            }
            if let Some((i, '}')) = chars.peek().copied() {
                end = i;
                break;
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key.trim().to_string(), value);
        }
        rest = &r[end + 1..];
    }
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Scrapes and parses.
pub async fn run(
    http: &reqwest::Client,
    kube: Option<&dyn crate::k8s::Kube>,
    p: Params,
) -> Result<Value, StepError> {
    let target = super::Target::new(&p.url, &p.pod, &p.namespace, p.port)?;
    // A URL names the metrics endpoint itself; a pod needs the path.
    let path = match (&target, &p.path) {
        (super::Target::Url(_), Some(_)) => {
            return Err(StepError::Params(
                "path goes with pod; put it in the url".into(),
            ));
        }
        (super::Target::Url(_), None) => "",
        (super::Target::Pod { .. }, path) => path.as_deref().unwrap_or("metrics"),
    };
    let body = target
        .get(
            http,
            kube,
            path,
            std::time::Duration::from_secs(p.timeout_seconds),
            16 << 20,
        )
        .await?;
    let (samples, bad) = parse(&String::from_utf8_lossy(&body));
    // Unlabelled series by name, for templates: steps.runtime.output.values.go_goroutines.
    let values: BTreeMap<&str, f64> = samples
        .iter()
        .filter(|s| s.labels.is_empty())
        .map(|s| (s.name.as_str(), s.value))
        .collect();
    Ok(
        json!({"target": target.label(), "values": values, "samples": samples, "unparsed_lines": bad}),
    )
}

/// The `metrics.scrape` step type.
pub struct MetricsScrape;

impl Step for MetricsScrape {
    const NAME: &'static str = "metrics.scrape";
    const OUTPUT: &'static str =
        "`target`, `values` (the Go runtime series by name), `samples` and `unparsed_lines`.";
    const DESTRUCTIVE: bool = false;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::maybe(p.namespace.as_deref(), p.pod.as_deref())
    }

    fn urls(p: &Params) -> Vec<&str> {
        p.url.as_deref().into_iter().collect()
    }

    async fn run(ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
        run(ctx.http, ctx.kube, p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format_and_keeps_runtime_series() {
        let text = "# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 250\ngo_gc_duration_seconds{quantile=\"0.5\"} 1.5e-05\ngo_gc_duration_seconds_count 12\nhttp_requests_total{code=\"200\"} 42\ngo_memstats_alloc_bytes 1.048576e+06 1700000000000\ngo_sched_latencies_seconds_bucket{le=\"+Inf\",note=\"a \\\"q\\\", b\"} 3\nthis is not a sample\n";
        let (s, bad) = parse(text);
        assert_eq!(bad, 1);
        let names: Vec<&str> = s.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "go_goroutines",
                "go_gc_duration_seconds",
                "go_gc_duration_seconds_count",
                "go_memstats_alloc_bytes",
                "go_sched_latencies_seconds_bucket"
            ]
        );
        assert_eq!(s[0].value, 250.0);
        assert_eq!(s[1].labels["quantile"], "0.5");
        assert_eq!(s[3].value, 1_048_576.0);
        assert_eq!(s[4].labels["note"], "a \"q\", b");
        assert_eq!(s[4].labels["le"], "+Inf");
    }
}
