//! The document: one per incident, its fields and its body text.

use super::*;

#[derive(Clone, Copy)]
pub(super) struct Fields {
    pub(super) id: Field,
    pub(super) title: Field,
    pub(super) body: Field,
    pub(super) root_cause: Field,
    pub(super) resolution: Field,
    pub(super) label_words: Field,
    pub(super) annotations: Field,
    pub(super) evidence: Field,
    pub(super) service: Field,
    pub(super) runbook: Field,
    pub(super) runbook_path: Field,
    pub(super) status: Field,
    pub(super) labels: Field,
    pub(super) tags: Field,
    pub(super) commits: Field,
    pub(super) chaos: Field,
    pub(super) opened: Field,
    pub(super) cause: Field,
    pub(super) fix: Field,
    pub(super) functions: Field,
    pub(super) outcome: Field,
    pub(super) commit_refs: Field,
    pub(super) human: Field,
    pub(super) ttr: Field,
    pub(super) detect_ms: Field,
    pub(super) ack_ms: Field,
    pub(super) resolve_ms: Field,
    pub(super) run_bits: Field,
    pub(super) flags: Field,
}

pub(super) fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let f = Fields {
        id: b.add_text_field("id", STRING | STORED),
        title: b.add_text_field("title", TEXT | STORED),
        body: b.add_text_field("body", TEXT | STORED),
        root_cause: b.add_text_field("root_cause", TEXT | STORED),
        resolution: b.add_text_field("resolution", TEXT | STORED),
        // The scoped text fields `labels:`, `annotations:`, `evidence:`
        // (the same words are in the body too, for unscoped words).
        label_words: b.add_text_field("label_words", TEXT),
        annotations: b.add_text_field("annotations", TEXT),
        evidence: b.add_text_field("evidence", TEXT),
        service: b.add_text_field("service", STRING | STORED | FAST),
        runbook: b.add_text_field("runbook", STRING | FAST),
        runbook_path: b.add_text_field("runbook_path", STORED),
        status: b.add_text_field("status", STRING | STORED),
        labels: b.add_text_field("labels", STRING),
        tags: b.add_text_field("tags", STRING),
        commits: b.add_text_field("commits", STRING),
        chaos: b.add_text_field("chaos", STRING),
        opened: b.add_i64_field(
            "opened",
            tantivy::schema::INDEXED | tantivy::schema::FAST | STORED,
        ),
        // The knowledge graph's columns (`graph.rs`): exact values read
        // per matching incident without touching the stored documents.
        cause: b.add_text_field("cause", STRING | FAST),
        fix: b.add_text_field("fix", FAST),
        functions: b.add_text_field("functions", STRING | FAST),
        outcome: b.add_text_field("outcome", FAST),
        commit_refs: b.add_text_field("commit_refs", FAST),
        human: b.add_u64_field("human", FAST),
        ttr: b.add_i64_field("ttr", FAST),
        // The response KPIs' columns (`kpis.rs`, [`crate::kpi::Fact`]).
        detect_ms: b.add_i64_field("detect_ms", FAST),
        ack_ms: b.add_i64_field("ack_ms", FAST),
        resolve_ms: b.add_i64_field("resolve_ms", FAST),
        run_bits: b.add_u64_field("run_bits", FAST),
        flags: b.add_u64_field("flags", FAST),
    };
    (b.build(), f)
}

/// A root cause or resolution as a graph key: lower case, spaces
/// collapsed, at most 200 characters.
pub fn key_text(s: &str) -> String {
    let mut out = String::new();
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&w.to_lowercase());
    }
    let mut end = out.len().min(200);
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out.trim_end_matches(['.', ' ']).to_string()
}

/// The five hottest functions of each captured profile.
pub(super) fn hot_functions(r: &IncidentRecord) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for s in &r.steps {
        for row in s.output["top"].as_array().into_iter().flatten().take(5) {
            if let Some(f) = row["function"].as_str()
                && !out.contains(&f)
            {
                out.push(f);
            }
        }
    }
    out
}

/// The words of the alerts' labels (`key=value value`).
pub(super) fn label_text(r: &IncidentRecord) -> String {
    let mut parts = Vec::new();
    for a in &r.alerts {
        for (k, v) in &a.labels {
            parts.push(format!("{k}={v} {v}"));
        }
    }
    parts.join("\n")
}

/// The alerts' annotation values.
pub(super) fn annotation_text(r: &IncidentRecord) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for a in &r.alerts {
        parts.extend(a.annotations.values().map(String::as_str));
    }
    parts.join("\n")
}

/// The evidence summaries: each profile's five hottest functions and the
/// summary lines (goroutine groups, Kubernetes events, PromQL answers).
pub(super) fn evidence_text(r: &IncidentRecord) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for s in &r.steps {
        let o = &s.output;
        for row in o["top"].as_array().into_iter().flatten().take(5) {
            if let Some(f) = row["function"].as_str() {
                parts.push(f);
            }
        }
        for line in o["summary"].as_array().into_iter().flatten() {
            if let Some(l) = line.as_str() {
                parts.push(l);
            }
        }
    }
    parts.join("\n")
}

/// The words of an incident that unscoped words search, besides its own
/// fields: labels, annotations, steps, evidence, tags, chaos, external id.
pub(super) fn body_text(r: &IncidentRecord) -> String {
    let mut parts: Vec<String> = vec![label_text(r), annotation_text(r)];
    for s in &r.steps {
        parts.push(format!("{} {}", s.id, s.uses));
    }
    parts.push(evidence_text(r));
    parts.extend(r.notes.tags.iter().cloned());
    parts.extend(r.chaos.iter().map(|c| format!("chaos {}", c.experiment)));
    // Its id elsewhere (`PD-4521`): searching for it finds it.
    parts.extend(r.external_id.iter().cloned());
    parts.join("\n")
}
