//! Prometheus metrics for `/metrics`, in the text exposition format.
//!
//! A handful of counters and one histogram do not justify a metrics crate;
//! one mutex around a map is plenty at webhook rates (one lock per request).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Upper bounds of the intake latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The counters quench exports, with their help text.
const COUNTERS: &[(&str, &str)] = &[
    (
        "quench_webhook_requests_total",
        "Webhook deliveries, by source and outcome.",
    ),
    (
        "quench_alerts_received_total",
        "Alerts parsed from accepted deliveries, by source.",
    ),
    (
        "quench_alerts_accepted_total",
        "Alerts stored for the first time, by source.",
    ),
    (
        "quench_alerts_duplicate_total",
        "Alerts acknowledged but not stored again (same idempotency key), by source.",
    ),
    (
        "quench_alerts_truncated_total",
        "Alerts a sender said it left out of accepted deliveries (Alertmanager's truncatedAlerts, its max_alerts), by source.",
    ),
    (
        "quench_webhook_rejected_total",
        "Deliveries refused, by source and reason.",
    ),
    (
        "quench_alerts_unmatched_total",
        "Firing alerts no runbook matched.",
    ),
    (
        "quench_incidents_opened_total",
        "Incidents opened, by runbook.",
    ),
    (
        "quench_alerts_suppressed_total",
        "Matching runbooks not run because of inhibit_when, mute_time or active_time, by runbook.",
    ),
    (
        "quench_steps_total",
        "Runbook steps that ended, by step type and state (succeeded, failed, cancelled).",
    ),
    (
        "quench_audit_failures_total",
        "Audit entries that could not be made durable.",
    ),
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, String), u64>,
    latency: BTreeMap<String, Histogram>,
    steps: BTreeMap<String, Histogram>,
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// Runbook runs in progress.
    pub runs_active: AtomicI64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, label: &str, value: &str) {
        let v = escape(value);
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{label}=\"{v}\",le=\"{le}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{label}=\"{v}\",le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{label}=\"{v}\"}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{label}=\"{v}\"}} {}", self.count);
    }
}

/// A label value as the exposition format quotes it; borrowed when there
/// is nothing to escape (every value but a rare runbook name).
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    std::borrow::Cow::Owned(
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

/// The label set as rendered, built before the registry's lock is taken.
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::with_capacity(pairs.iter().map(|(k, v)| k.len() + v.len() + 4).sum());
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        s.push_str(&escape(v));
        s.push('"');
    }
    s
}

impl Metrics {
    /// Adds `n` to a counter. `name` must be one of [`COUNTERS`].
    pub fn add(&self, name: &'static str, pairs: &[(&str, &str)], n: u64) {
        debug_assert!(
            COUNTERS.iter().any(|(c, _)| *c == name),
            "unknown counter {name}"
        );
        if n == 0 {
            return;
        }
        let key = (name, labels(pairs));
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner.counters.entry(key).or_default() += n;
    }

    /// Records how long one delivery took, from first byte to response.
    pub fn observe_intake(&self, source: &str, d: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.latency.get_mut(source) {
            Some(h) => h.observe(d),
            None => inner
                .latency
                .entry(source.to_string())
                .or_default()
                .observe(d),
        }
    }

    /// Records one step that ended: its duration and its state.
    pub fn observe_step(&self, step_type: &str, state: &str, d: Duration) {
        self.add(
            "quench_steps_total",
            &[("type", step_type), ("state", state)],
            1,
        );
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .steps
            .entry(step_type.to_string())
            .or_default()
            .observe(d);
    }

    /// Renders the text exposition format.
    pub fn render(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, help) in COUNTERS {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((n, l), v) in inner.counters.range((*name, String::new())..) {
                if n != name {
                    break;
                }
                let _ = writeln!(out, "{name}{{{l}}} {v}");
            }
        }
        let name = "quench_intake_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from request to acknowledgement, including the flush, by source.\n# TYPE {name} histogram"
        );
        for (source, h) in &inner.latency {
            h.render(&mut out, name, "source", source);
        }
        let name = "quench_step_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} How long runbook steps took, guards and retries included, by step type.\n# TYPE {name} histogram"
        );
        for (t, h) in &inner.steps {
            h.render(&mut out, name, "type", t);
        }
        let name = "quench_runs_active";
        let _ = writeln!(
            out,
            "# HELP {name} Runbook runs in progress.\n# TYPE {name} gauge\n{name} {}",
            self.runs_active.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.add(
            "quench_webhook_rejected_total",
            &[("source", "datadog"), ("reason", "bad \"x\"")],
            2,
        );
        m.add(
            "quench_alerts_accepted_total",
            &[("source", "alertmanager")],
            3,
        );
        m.observe_intake("alertmanager", Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains(
                "quench_webhook_rejected_total{source=\"datadog\",reason=\"bad \\\"x\\\"\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("quench_alerts_accepted_total{source=\"alertmanager\"} 3"));
        assert!(text.contains(
            "quench_intake_duration_seconds_bucket{source=\"alertmanager\",le=\"0.0025\"} 0"
        ));
        assert!(text.contains(
            "quench_intake_duration_seconds_bucket{source=\"alertmanager\",le=\"0.005\"} 1"
        ));
        assert!(text.contains("quench_intake_duration_seconds_count{source=\"alertmanager\"} 1"));
    }
}
