//! `quench postmortem ID`: an incident as a Markdown page, from a
//! handlebars template (the default ships in `engine/templates/`; a custom
//! one can be given). Summary, aligned timeline, evidence with top tables,
//! actions with their before-state, root cause, resolution, commits and
//! similar incidents.

use quench_knowledge::IncidentRecord;
use serde_json::{Value, json};

/// The template quench ships.
pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/postmortem.md.hbs");

fn span(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> String {
    let s = (to - from).num_seconds().max(0);
    match s {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// Everything a template can use. Every key is present (null when there
/// is nothing), so templates render in strict mode.
pub fn context(r: &IncidentRecord, similar: &[Value]) -> Value {
    let evidence: Vec<Value> = r
        .steps
        .iter()
        .filter(|s| !s.destructive && s.output.is_object())
        .filter(|s| {
            let o = &s.output;
            o["top"].is_array()
                || o["summary"].is_array()
                || o["groups"].is_array()
                || o["window"].is_object()
        })
        .map(|s| {
            let o = &s.output;
            let top: Vec<Value> = o["top"]
                .as_array()
                .into_iter()
                .flatten()
                .take(5)
                .map(|row| {
                    json!({
                        "function": row["function"],
                        "flat_pct": row["flat_pct"].as_f64().map(|v| format!("{v:.2}%")),
                        "cum_pct": row["cum_pct"].as_f64().map(|v| format!("{v:.2}%")),
                    })
                })
                .collect();
            json!({
                "step": s.id,
                "uses": s.uses,
                "target": o["target"],
                "window": if o["window"].is_object() { o["window"].clone() } else { Value::Null },
                "top": if top.is_empty() { Value::Null } else { json!(top) },
                // What grew since the baseline, the goroutine groups and
                // the step's summary (the top table is above).
                "lines": s.evidence_notes(),
            })
        })
        .collect();
    let actions: Vec<Value> = r
        .steps
        .iter()
        .filter(|s| s.destructive)
        .map(|s| {
            json!({
                "step": s.id,
                "uses": s.uses,
                "state": format!("{:?}", s.state).to_lowercase(),
                "reason": if s.reason.is_empty() { Value::Null } else { json!(s.reason) },
                "before": if s.output["before"].is_null() { Value::Null } else { json!(s.output["before"].to_string()) },
            })
        })
        .collect();
    let timeline: Vec<Value> = r
        .aligned()
        .into_iter()
        .map(|e| json!({"at": e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "lane": e.lane, "what": e.what, "detail": e.detail}))
        .collect();
    let none = |s: String| if s.is_empty() { "-".to_string() } else { s };
    json!({
        "incident": {
            "id": r.id,
            "title": r.title,
            "status": r.status.as_str(),
            "first_alert_at": r.first_alert_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "opened_at": r.opened_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
        "service": none(r.service()),
        "severity": none(r.severity()),
        "outcome": serde_json::to_value(r.outcome()).unwrap_or_default(),
        "runbook": r.runbook.as_ref().map(|b| match &b.commit {
            Some(c) => format!("{} ({} at {})", b.name, b.path, &c[..c.len().min(12)]),
            None => format!("{} ({})", b.name, b.path),
        }).unwrap_or_else(|| "none matched".into()),
        "mttd": span(r.first_alert_at, r.opened_at),
        "acked": r.acknowledged_or_acted_at()
            .map(|t| format!("{}, {} after opening", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), span(r.opened_at, t)))
            .unwrap_or_else(|| "not yet".into()),
        "resolved": r.resolved_at
            .map(|t| format!("{}, {} after the first alert", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), span(r.first_alert_at, t)))
            .unwrap_or_else(|| "not yet".into()),
        "timeline": timeline,
        "evidence": evidence,
        "actions": actions,
        "root_cause": r.notes.root_cause.clone().unwrap_or_else(|| "Not recorded yet (`quench annotate ID --root-cause ...`).".into()),
        "resolution": r.notes.resolution.clone().unwrap_or_else(|| "Not recorded yet.".into()),
        "commits": r.notes.commits,
        "tags": r.notes.tags,
        "similar": similar,
        "chaos": r.chaos,
    })
}

/// Renders the page; `template` replaces the default.
pub fn render(
    r: &IncidentRecord,
    similar: &[Value],
    template: Option<&str>,
) -> Result<String, quench_runbooks::template::TemplateError> {
    quench_runbooks::template::Templates::new()
        .render(template.unwrap_or(DEFAULT_TEMPLATE), &context(r, similar))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page for a fixed incident, compared with the reviewed snapshot
    /// (`engine/testdata/postmortem.md`).
    #[test]
    fn postmortem_snapshot() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let r: IncidentRecord = serde_json::from_str(
            &std::fs::read_to_string(dir.join("postmortem-incident.json")).unwrap(),
        )
        .unwrap();
        let similar =
            [json!({"id": "inc-3", "title": "RedisDown", "root_cause": "sentinel quorum lost"})];
        let page = render(&r, &similar, None).unwrap();
        let want = std::fs::read_to_string(dir.join("postmortem.md")).unwrap_or_default();
        if std::env::var("QUENCH_UPDATE_SNAPSHOTS").is_ok() {
            std::fs::write(dir.join("postmortem.md"), &page).unwrap();
            return;
        }
        assert_eq!(
            page, want,
            "run with QUENCH_UPDATE_SNAPSHOTS=1 after a deliberate change, then review the diff"
        );
    }

    #[test]
    fn a_custom_template_and_a_broken_one() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let r: IncidentRecord = serde_json::from_str(
            &std::fs::read_to_string(dir.join("postmortem-incident.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            render(&r, &[], Some("{{incident.id}}: {{root_cause}}")).unwrap(),
            "inc-7: redis sentinel failover took 40s"
        );
        assert!(
            render(&r, &[], Some("{{incident.nope}}"))
                .unwrap_err()
                .to_string()
                .contains("not defined")
        );
    }
}
