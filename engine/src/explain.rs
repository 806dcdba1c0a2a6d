//! `quench explain`: which runbooks an alert would run, and why each other
//! one would not, without starting anything.

use std::collections::BTreeMap;

use quench_connectors::hosts::HostAllowlist;
use quench_connectors::inbound::alertmanager;
use quench_connectors::steps::StepDefaults;
use quench_connectors::{Alert, AlertStatus, Source};
use quench_runbooks::Runbook;
use quench_runbooks::template::{Templates, context};
use serde::Deserialize;
use serde_json::Value;

/// A hand-written alert: just what matching looks at.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Plain {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    status: Option<AlertStatus>,
    #[serde(default)]
    source: Option<String>,
}

/// Reads the alerts of a file: an Alertmanager webhook payload as it
/// arrives, or one plain alert `{"labels": {...}, "status": "firing"}`, or a
/// list of them.
pub fn read_alerts(bytes: &[u8]) -> Result<Vec<Alert>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("alerts").is_some() && value.get("version").is_some() {
        return alertmanager::parse(&Default::default(), &Default::default(), bytes)
            .map(|p| p.alerts)
            .map_err(|e| format!("not an Alertmanager webhook payload: {e}"));
    }
    let plain: Vec<Plain> = if value.is_array() {
        serde_json::from_value(value)
    } else {
        serde_json::from_value(value).map(|p| vec![p])
    }
    .map_err(|e| format!("expected an Alertmanager payload or {{\"labels\": {{...}}}}: {e}"))?;
    plain
        .into_iter()
        .map(|p| {
            let source: Source = p
                .source
                .as_deref()
                .unwrap_or("alertmanager")
                .parse()
                .map_err(|e: quench_connectors::alert::UnknownSource| e.to_string())?;
            Ok(Alert {
                fingerprint: quench_connectors::alert::fingerprint_of(&source, &p.labels),
                source,
                status: p.status.unwrap_or(AlertStatus::Firing),
                labels: p.labels,
                annotations: p.annotations,
                starts_at: None,
                ends_at: None,
                meta: BTreeMap::new(),
                idempotency_key: String::new(),
                raw_ref: String::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_alerts_and_alertmanager_payloads() {
        let a = read_alerts(
            br#"{"labels": {"alertname": "X"}, "status": "resolved", "source": "generic/app"}"#,
        )
        .unwrap();
        assert_eq!(a[0].status, AlertStatus::Resolved);
        assert_eq!(a[0].source, Source::Generic("app".into()));
        let a = read_alerts(br#"[{"labels": {"alertname": "X"}}, {"labels": {"alertname": "Y"}}]"#)
            .unwrap();
        assert_eq!(a.len(), 2);
        let am = br#"{"version":"4","groupKey":"g","status":"firing","receiver":"r","alerts":[{"status":"firing","labels":{"alertname":"Z"},"startsAt":"2026-11-27T10:00:00Z"}]}"#;
        assert_eq!(read_alerts(am).unwrap()[0].name(), "Z");
        assert!(read_alerts(b"{").is_err());
        assert!(read_alerts(br#"{"labelz": {}}"#).is_err());
        assert!(read_alerts(br#"{"labels": {}, "source": "nagios"}"#).is_err());
    }
}

/// What a step would do for an alert, as far as can be known before the
/// run: skipped by its `when`, its rendered parameters, or why it would
/// not render or be refused.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlannedStep {
    /// The step's id.
    pub id: String,
    /// Its type.
    pub uses: String,
    /// Whether it changes something.
    pub destructive: bool,
    /// `runs`, `skipped`, `depends` (needs an earlier step's output, known
    /// only during the run), `will_not_render` or `refused`.
    pub verdict: &'static str,
    /// The parameters it would get, when they render.
    pub with: Option<Value>,
    /// Why not, when it would not run.
    pub why: Option<String>,
}

/// The steps of `runbook` for `alert`, rendered and checked as the run
/// would: `when`, strict rendering, the configuration's defaults, the step
/// type's parameters, and `allowed_hosts`.
pub fn plan(
    runbook: &Runbook,
    alert: &Alert,
    defaults: &StepDefaults,
    hosts: Option<&HostAllowlist>,
    env: &BTreeMap<String, String>,
) -> Vec<PlannedStep> {
    let t = Templates::new();
    let ctx = context(
        alert,
        runbook.info(),
        "inc-explain",
        &serde_json::Map::new(),
        env,
    );
    let mut out = Vec::new();
    for s in runbook.steps.iter().chain(runbook.on_failure.iter()) {
        let mut p = PlannedStep {
            id: s.id.clone(),
            uses: s.kind.name().to_string(),
            destructive: s.kind.is_destructive(),
            verdict: "runs",
            with: None,
            why: None,
        };
        let needs_outputs = |text: &str| text.contains("steps.");
        if let Some(when) = &s.when {
            match t.eval_when(when, &ctx) {
                Ok(true) => {}
                Ok(false) => {
                    p.verdict = "skipped";
                    p.why = Some("its `when` is false for this alert".into());
                    out.push(p);
                    continue;
                }
                Err(_) if needs_outputs(when) => {
                    p.verdict = "depends";
                    p.why = Some("its `when` reads an earlier step's output".into());
                    out.push(p);
                    continue;
                }
                Err(e) => {
                    p.verdict = "will_not_render";
                    p.why = Some(format!("when: {e}"));
                    out.push(p);
                    continue;
                }
            }
        }
        let written = Value::Object(s.with.clone());
        let mut rendered = match t.render_value(&written, &ctx, &format!("{}.with", s.id)) {
            Ok(v) => v,
            Err(_) if needs_outputs(&written.to_string()) => {
                p.verdict = "depends";
                p.why = Some("its parameters read an earlier step's output".into());
                out.push(p);
                continue;
            }
            Err(e) => {
                p.verdict = "will_not_render";
                p.why = Some(e.to_string());
                out.push(p);
                continue;
            }
        };
        if let Value::Object(m) = &mut rendered {
            s.kind.fill_defaults(m, defaults);
        }
        let refused = match s.kind.check(&rendered) {
            Err(e) => Some(e.to_string()),
            Ok(c) => hosts.and_then(|h| {
                c.urls
                    .iter()
                    .find_map(|u| h.check_url(u).err().map(|e| e.to_string()))
            }),
        };
        if let Some(why) = refused {
            p.verdict = "refused";
            p.why = Some(why);
        }
        p.with = Some(rendered);
        out.push(p);
    }
    out
}
