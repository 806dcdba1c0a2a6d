//! Evidence on the incident page: each step's output turned into what a
//! responder reads at a glance (a profile's top table and its flame graph,
//! PromQL series as a chart drawn on the server, samples, goroutine
//! groups, log lines, Kubernetes events), and the artifacts those link to.
//!
//! Every string here reaches the page through handlebars' escaping; the
//! chart's coordinates are numbers this module formats.

use super::*;
use quench_knowledge::StepRecord;

/// Series drawn on one chart at most, and points per series.
const MAX_SERIES: usize = 6;
const MAX_POINTS: usize = 400;
/// Lines of a log shown inline (the last ones).
const LOG_LINES: usize = 20;
/// Rows of a table shown inline.
const ROWS: usize = 10;

/// The chart's size and margins, in SVG units.
const W: f64 = 560.0;
const H: f64 = 140.0;
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 18.0;
const COLOURS: [&str; MAX_SERIES] = ["#c33", "#36c", "#393", "#c80", "#939", "#077"];

/// The evidence of one step, for `incident.hbs`.
pub(super) fn of_step(st: &StepRecord) -> Value {
    let o = &st.output;
    let top: Vec<Value> = o["top"]
        .as_array()
        .into_iter()
        .flatten()
        .take(ROWS)
        .map(|row| {
            let flat = row["flat_pct"]
                .as_f64()
                .map(|x| format!("{x:.1}%"))
                .unwrap_or_else(|| row["flat"].to_string());
            json!({"function": row["function"], "flat": flat})
        })
        .collect();
    // pprof keeps its artifacts under `artifacts`, perf under `flamegraph`.
    let flame = o["artifacts"]["flamegraph"]
        .as_str()
        .or_else(|| o["flamegraph"].as_str())
        .filter(|id| artifact_id_ok(id));
    let samples: Vec<Value> = o["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .take(ROWS)
        .map(|x| json!({"labels": labels_text(&x["labels"]), "value": number(&x["value"])}))
        .collect();
    let lines = o["lines"].as_array().map(|l| {
        let from = l.len().saturating_sub(LOG_LINES);
        l[from..]
            .iter()
            .map(|x| match x["time"].as_str() {
                Some(t) => format!("{t} {}", x["text"].as_str().unwrap_or("")),
                None => x["text"].as_str().unwrap_or("").to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let groups: Vec<Value> = o["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .take(ROWS)
        .map(|g| json!({"count": g["count"], "state": g["state"], "function": g["function"]}))
        .collect();
    json!({
        "top": top,
        "flame": flame,
        "chart": o["series"].as_array().and_then(|s| chart(s)),
        "samples": samples,
        "log": lines,
        "groups": groups,
        "summary": st.evidence_summary(),
    })
}

/// Artifact ids are ours (`sha256:` and 64 hex digits); anything else is
/// not linked.
fn artifact_id_ok(id: &str) -> bool {
    id.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn number(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

fn labels_text(v: &Value) -> String {
    let Some(m) = v.as_object() else {
        return String::new();
    };
    let inner: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or("")))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// A figure for an axis: short, whatever its size.
fn short(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{:.1}G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

/// PromQL series (`[{labels, values: [[t, v], ...]}]`) as lines on one
/// chart: a polyline per series, the value axis from 0 (or the lowest
/// value below it) to the highest, the time axis in UTC.
fn chart(series: &[Value]) -> Option<Value> {
    let parsed: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .take(MAX_SERIES)
        .map(|s| {
            let points: Vec<(f64, f64)> = s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                .filter(|(t, v)| t.is_finite() && v.is_finite())
                .collect();
            let stride = points.len().div_ceil(MAX_POINTS).max(1);
            let kept = points.into_iter().step_by(stride).collect();
            (labels_text(&s["labels"]), kept)
        })
        .filter(|(_, p): &(String, Vec<(f64, f64)>)| !p.is_empty())
        .collect();
    let all = parsed.iter().flat_map(|(_, p)| p.iter());
    let (mut t0, mut t1, mut v0, mut v1) = (f64::MAX, f64::MIN, 0.0f64, f64::MIN);
    for &(t, v) in all {
        t0 = t0.min(t);
        t1 = t1.max(t);
        v0 = v0.min(v);
        v1 = v1.max(v);
    }
    if parsed.is_empty() {
        return None;
    }
    if v1 <= v0 {
        v1 = v0 + 1.0;
    }
    let span_t = (t1 - t0).max(1.0);
    let x = |t: f64| LEFT + (t - t0) / span_t * (W - LEFT - 4.0);
    let y = |v: f64| 4.0 + (1.0 - (v - v0) / (v1 - v0)) * (H - BOTTOM - 8.0);
    let lines: Vec<Value> = parsed
        .iter()
        .enumerate()
        .map(|(i, (name, p))| {
            let points: Vec<String> = p
                .iter()
                .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
                .collect();
            json!({"points": points.join(" "), "colour": COLOURS[i % COLOURS.len()], "name": name})
        })
        .collect();
    let when = |t: f64| {
        chrono::DateTime::from_timestamp(t as i64, 0)
            .map(|d| d.format("%H:%M:%S").to_string())
            .unwrap_or_default()
    };
    Some(json!({
        "width": W, "height": H, "left": LEFT - 4.0, "axis_y": H - BOTTOM + 2.0,
        "top_label_y": 12.0, "bottom_label_y": H - BOTTOM - 4.0,
        "time_y": H - 4.0, "right": W - 4.0,
        "max": short(v1), "min": short(v0), "from": when(t0), "to": when(t1),
        "lines": lines,
    }))
}

/// Kubernetes events and step spans, for the incident's one time axis.
pub(super) fn timeline_extras(steps: &[StepRecord]) -> Vec<(chrono::DateTime<chrono::Utc>, Value)> {
    let mut out = Vec::new();
    for st in steps {
        if let (Some(a), Some(b)) = (st.started_at, st.ended_at) {
            let ms = (b - a).num_milliseconds().max(0);
            out.push((
                a,
                json!({"kind": "step", "detail": format!("{} ({}) ran {} ({})", st.id, st.uses, duration_text(ms), words(&st.state))}),
            ));
        }
        for e in st.output["events"]
            .as_array()
            .into_iter()
            .flatten()
            .take(50)
        {
            let Some(at) = e["time"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            else {
                continue;
            };
            let detail = format!(
                "{} {} {}: {}",
                e["type"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
                e["object"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            );
            out.push((
                at.with_timezone(&chrono::Utc),
                json!({"kind": "kubernetes event", "detail": detail}),
            ));
        }
    }
    out
}

fn duration_text(ms: i64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// `GET /artifacts/{id}` for a signed-in visitor: a flame graph shown in
/// an `<img>` (so its own script never runs, and a policy that allows
/// none says so again), any other artifact as a download.
pub(super) async fn artifact(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = viewer(&s, &headers) {
        return r;
    }
    if !artifact_id_ok(&id) {
        return secure((StatusCode::NOT_FOUND, "no such artifact").into_response());
    }
    let store = s.artifacts.clone();
    let found = match blocking(move || store.get(&id)).await {
        Ok(f) => f,
        Err(e) => return internal(e),
    };
    let Some((meta, bytes)) = found else {
        return secure((StatusCode::NOT_FOUND, "no such artifact").into_response());
    };
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "cache-control",
        HeaderValue::from_static("private, max-age=3600"),
    );
    if meta.media_type == "image/svg+xml" {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("image/svg+xml"),
        );
        h.insert(
            "content-security-policy",
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
        );
    } else {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
        h.insert(
            "content-security-policy",
            HeaderValue::from_static("default-src 'none'; sandbox"),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_spans_its_series_and_skips_what_is_not_a_number() {
        let series = json!([
            {"labels": {"job": "a"}, "values": [[100.0, 1.0], [160.0, 3.0], [130.0, "x"]]},
            {"labels": {"job": "<b>"}, "values": [[100.0, 2.0]]},
            {"labels": {}, "values": []},
        ]);
        let c = chart(series.as_array().unwrap()).unwrap();
        let lines = c["lines"].as_array().unwrap();
        assert_eq!(lines.len(), 2, "the empty series is not drawn");
        // t=100 is the left edge, t=160 the right; 3.0 the top, 0 the axis.
        assert_eq!(
            lines[0]["points"],
            format!(
                "{LEFT:.1},{:.1} {:.1},4.0",
                4.0 + (1.0 - 1.0 / 3.0) * (H - BOTTOM - 8.0),
                W - 4.0
            )
        );
        assert_eq!(lines[1]["name"], "{job=\"<b>\"}");
        assert_eq!(
            (c["max"].as_str(), c["min"].as_str()),
            (Some("3.000"), Some("0"))
        );
        assert!(chart(json!([{"values": []}]).as_array().unwrap()).is_none());
    }

    #[test]
    fn only_our_artifact_ids_are_linked() {
        let good = format!("sha256:{}", "0a".repeat(32));
        assert!(artifact_id_ok(&good));
        for bad in [
            "",
            "../x",
            "sha256:../x",
            "sha256:0a",
            "a b",
            "<x>",
            &good[1..],
        ] {
            assert!(!artifact_id_ok(bad), "{bad:?}");
        }
    }
}
