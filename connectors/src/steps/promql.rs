//! The PromQL steps: `promql.query` (instant), `promql.range` and
//! `promql.verify`, against a Prometheus base URL: `url`, or, left out,
//! `prometheus.url` from the configuration. Results keep their metric
//! labels and values, typed.
//!
//! ```yaml
//! - id: cpu_rate
//!   uses: promql.query
//!   with: {url: "http://prometheus:9090", query: 'rate(process_cpu_seconds_total[5m])'}
//! - id: recovered
//!   uses: promql.verify
//!   with: {url: "http://prometheus:9090", query: 'go_goroutines', condition: "< 2000", within: 5m, every: 15s}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ParamError, Step, StepCtx, StepError};

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// The value (NaN and ±Inf as Prometheus sends them).
    pub value: f64,
    /// The evaluation time, Unix seconds.
    pub time: f64,
}

/// One series of a range result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// `(time, value)` pairs.
    pub values: Vec<(f64, f64)>,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Value,
}

/// A PromQL step with no `url` and no `prometheus.url` to fall back on.
fn no_url(url: &str) -> Result<(), ParamError> {
    if url.is_empty() {
        return Err(ParamError::field(
            "url",
            "no Prometheus URL: set `url`, or `prometheus.url` in the configuration",
        ));
    }
    Ok(())
}

fn number(v: &Value) -> Result<f64, StepError> {
    // Prometheus sends sample values as strings ("1", "NaN", "+Inf").
    v.as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .or_else(|| v.as_f64())
        .ok_or_else(|| StepError::Failed(format!("unexpected sample value {v}")))
}

fn pair(v: &Value) -> Result<(f64, f64), StepError> {
    let t = v[0]
        .as_f64()
        .ok_or_else(|| StepError::Failed(format!("unexpected sample {v}")))?;
    Ok((t, number(&v[1])?))
}

async fn api(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    params: &[(&str, String)],
) -> Result<Data, StepError> {
    super::check_http_url(url)?;
    let endpoint = format!("{}/api/v1/{path}", url.trim_end_matches('/'));
    let resp = http
        .get(&endpoint)
        .query(params)
        .send()
        .await
        .map_err(|e| StepError::Failed(format!("prometheus: {e}")))?;
    let status = resp.status().as_u16();
    let body = super::common::read_capped(resp, super::common::MAX_ANSWER)
        .await
        .map_err(|e| StepError::Failed(format!("prometheus: {e}")))?;
    let env: Envelope = serde_json::from_slice(&body).map_err(|e| {
        StepError::Failed(format!(
            "prometheus answered {status} with no API envelope: {e}"
        ))
    })?;
    if env.status != "success" {
        let msg = format!(
            "prometheus: {}: {}",
            env.error_type.unwrap_or_default(),
            env.error.unwrap_or_default()
        );
        // bad_data is the query's fault: retrying cannot help.
        return Err(if status == 400 {
            StepError::Refused(msg)
        } else {
            StepError::Failed(msg)
        });
    }
    env.data
        .ok_or_else(|| StepError::Failed("prometheus: success without data".into()))
}

fn samples(d: &Data) -> Result<Vec<Sample>, StepError> {
    match d.result_type.as_str() {
        "vector" => d
            .result
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let labels = serde_json::from_value(s["metric"].clone()).unwrap_or_default();
                let (time, value) = pair(&s["value"])?;
                Ok(Sample {
                    labels,
                    value,
                    time,
                })
            })
            .collect(),
        "scalar" => {
            let (time, value) = pair(&d.result)?;
            Ok(vec![Sample {
                labels: BTreeMap::new(),
                value,
                time,
            }])
        }
        other => Err(StepError::Failed(format!(
            "expected an instant vector, got a {other}"
        ))),
    }
}

/// Instant query parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    /// Prometheus base URL (default: `prometheus.url` in the configuration).
    #[serde(default)]
    pub url: String,
    /// The PromQL expression.
    pub query: String,
}

/// `promql.query`: `{samples: [{labels, value, time}]}`.
pub async fn query(http: &reqwest::Client, p: QueryParams) -> Result<Value, StepError> {
    let d = api(http, &p.url, "query", &[("query", p.query.clone())]).await?;
    let s = samples(&d)?;
    Ok(json!({"result_type": d.result_type, "samples": s}))
}

/// Range query parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    /// Prometheus base URL (default: `prometheus.url` in the configuration).
    #[serde(default)]
    pub url: String,
    /// The PromQL expression.
    pub query: String,
    /// How far back, in seconds (default 900).
    #[serde(default = "fifteen_minutes")]
    pub seconds: f64,
    /// Resolution, in seconds (default 15).
    #[serde(default = "fifteen")]
    pub step: f64,
}

fn fifteen_minutes() -> f64 {
    900.0
}

fn fifteen() -> f64 {
    15.0
}

/// `promql.range`: `{series: [{labels, values: [[time, value]]}]}` over the
/// last `seconds`.
pub async fn range(http: &reqwest::Client, p: RangeParams) -> Result<Value, StepError> {
    if !(p.step > 0.0 && p.seconds > 0.0 && p.seconds / p.step <= 11_000.0) {
        return Err(StepError::Params(
            "need 0 < step, 0 < seconds and at most 11000 points (Prometheus's limit)".into(),
        ));
    }
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let d = api(
        http,
        &p.url,
        "query_range",
        &[
            ("query", p.query.clone()),
            ("start", format!("{:.3}", end - p.seconds)),
            ("end", format!("{end:.3}")),
            ("step", p.step.to_string()),
        ],
    )
    .await?;
    if d.result_type != "matrix" {
        return Err(StepError::Failed(format!(
            "expected a matrix, got a {}",
            d.result_type
        )));
    }
    let series: Vec<Series> = d
        .result
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            Ok(Series {
                labels: serde_json::from_value(s["metric"].clone()).unwrap_or_default(),
                values: s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(pair)
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect::<Result<_, StepError>>()?;
    let at = |t: f64| chrono::DateTime::from_timestamp_millis((t * 1000.0) as i64);
    Ok(json!({
        "query": p.query,
        "series": series,
        // The window asked for, so the series line up with profiles and
        // actions on the incident's timeline.
        "window": {"start": at(end - p.seconds), "end": at(end)},
    }))
}

/// Verification parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    /// Prometheus base URL (default: `prometheus.url` in the configuration).
    #[serde(default)]
    pub url: String,
    /// The PromQL expression.
    pub query: String,
    /// `< N`, `<= N`, `> N`, `>= N`, `== N` or `!= N`, applied to every
    /// sample. Without it, the condition holds when the query returns any
    /// sample (PromQL comparisons filter).
    #[serde(default)]
    pub condition: Option<String>,
    /// Keep checking for this many seconds (default: check once).
    #[serde(default)]
    pub within: f64,
    /// Seconds between checks (default 15).
    #[serde(default = "fifteen")]
    pub every: f64,
}

fn holds(condition: &Option<String>, samples: &[Sample]) -> Result<bool, StepError> {
    let Some(c) = condition else {
        return Ok(!samples.is_empty());
    };
    let c = c.trim();
    let (op, n) = ["<=", ">=", "==", "!=", "<", ">"]
        .iter()
        .find_map(|op| c.strip_prefix(op).map(|n| (*op, n.trim())))
        .ok_or_else(|| {
            StepError::Params(format!(
                "condition {c:?}: write < N, <= N, > N, >= N, == N or != N"
            ))
        })?;
    let n: f64 = n
        .parse()
        .map_err(|_| StepError::Params(format!("condition {c:?}: {n:?} is not a number")))?;
    Ok(!samples.is_empty()
        && samples.iter().all(|s| match op {
            "<" => s.value < n,
            "<=" => s.value <= n,
            ">" => s.value > n,
            ">=" => s.value >= n,
            "==" => s.value == n,
            _ => s.value != n,
        }))
}

/// `promql.verify`: succeeds with `{ok: true, samples}` once the condition
/// holds; fails (retryable) when it still does not at the end of `within`.
pub async fn verify(http: &reqwest::Client, p: VerifyParams) -> Result<Value, StepError> {
    if !(p.every > 0.0 && (0.0..=86_400.0).contains(&p.within)) {
        return Err(StepError::Params(
            "need every > 0 and 0 <= within <= 86400".into(),
        ));
    }
    // Check the condition's syntax before the first query.
    holds(&p.condition, &[])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(p.within);
    let mut checks = 0;
    loop {
        checks += 1;
        let d = api(http, &p.url, "query", &[("query", p.query.clone())]).await?;
        let s = samples(&d)?;
        if holds(&p.condition, &s)? {
            return Ok(json!({"ok": true, "checks": checks, "samples": s}));
        }
        if tokio::time::Instant::now() + Duration::from_secs_f64(p.every) > deadline {
            let seen: Vec<f64> = s.iter().map(|x| x.value).take(5).collect();
            return Err(StepError::Failed(format!(
                "{} {} did not hold after {checks} check(s); last values {seen:?}",
                p.query,
                p.condition.as_deref().unwrap_or("(any sample)")
            )));
        }
        tokio::time::sleep(Duration::from_secs_f64(p.every)).await;
    }
}

/// The `promql.query` step type.
pub struct Query;

impl Step for Query {
    const NAME: &'static str = "promql.query";
    const OUTPUT: &'static str = "`result_type` and `samples` (labels, value, time).";
    const DESTRUCTIVE: bool = false;
    const URL_IS_PROMETHEUS: bool = true;
    type Params = QueryParams;

    fn validate(p: &QueryParams) -> Result<(), ParamError> {
        no_url(&p.url)
    }

    fn urls(p: &QueryParams) -> Vec<&str> {
        vec![p.url.as_str()]
    }

    async fn run(ctx: &StepCtx<'_>, p: QueryParams) -> Result<Value, StepError> {
        query(ctx.http, p).await
    }
}

/// The `promql.range` step type.
pub struct Range;

impl Step for Range {
    const NAME: &'static str = "promql.range";
    const OUTPUT: &'static str = "`series` (labels, values over time) and `window`.";
    const DESTRUCTIVE: bool = false;
    const URL_IS_PROMETHEUS: bool = true;
    type Params = RangeParams;

    fn validate(p: &RangeParams) -> Result<(), ParamError> {
        no_url(&p.url)
    }

    fn urls(p: &RangeParams) -> Vec<&str> {
        vec![p.url.as_str()]
    }

    async fn run(ctx: &StepCtx<'_>, p: RangeParams) -> Result<Value, StepError> {
        range(ctx.http, p).await
    }
}

/// The `promql.verify` step type.
pub struct Verify;

impl Step for Verify {
    const NAME: &'static str = "promql.verify";
    const OUTPUT: &'static str =
        "`ok`, `checks` (how many times it looked) and the last `samples`.";
    const DESTRUCTIVE: bool = false;
    const URL_IS_PROMETHEUS: bool = true;
    type Params = VerifyParams;

    fn validate(p: &VerifyParams) -> Result<(), ParamError> {
        no_url(&p.url)
    }

    fn urls(p: &VerifyParams) -> Vec<&str> {
        vec![p.url.as_str()]
    }

    async fn run(ctx: &StepCtx<'_>, p: VerifyParams) -> Result<Value, StepError> {
        verify(ctx.http, p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: f64) -> Sample {
        Sample {
            labels: BTreeMap::new(),
            value: v,
            time: 0.0,
        }
    }

    #[test]
    fn conditions() {
        assert!(holds(&Some("< 2000".into()), &[s(1.0), s(1999.0)]).unwrap());
        assert!(!holds(&Some("< 2000".into()), &[s(1.0), s(2000.0)]).unwrap());
        assert!(
            !holds(&Some(">= 1".into()), &[]).unwrap(),
            "no sample never holds"
        );
        assert!(holds(&None, &[s(0.0)]).unwrap());
        assert!(!holds(&None, &[]).unwrap());
        assert!(holds(&Some("!= 0".into()), &[s(f64::NAN)]).unwrap());
        assert!(matches!(
            holds(&Some("~ 3".into()), &[]),
            Err(StepError::Params(_))
        ));
        assert!(matches!(
            holds(&Some("< x".into()), &[]),
            Err(StepError::Params(_))
        ));
    }
}
