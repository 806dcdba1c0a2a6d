//! `quench import FILE`: historical incidents into the knowledge base, so
//! search and similar-incident suggestions start with a history. JSON or
//! YAML (JSON is YAML). All records are checked first; any problem is
//! reported with its line and column and nothing is written; otherwise all
//! are written in one transaction.
//!
//! ```yaml
//! version: 1
//! incidents:
//!   - id: PD-4521                  # its id elsewhere (kept as external_id)
//!     title: Redis failover on cart
//!     service: cart
//!     severity: critical
//!     status: resolved             # resolved, escalated, failed or cancelled
//!     first_alert_at: 2025-03-02T10:00:00Z
//!     opened_at: 2025-03-02T10:01:00Z
//!     acknowledged_at: 2025-03-02T10:04:00Z   # optional, with acknowledged_by
//!     resolved_at: 2025-03-02T10:40:00Z       # required when resolved
//!     runbook: redis-down          # optional
//!     alerts:                      # optional; default: one alert from title, service, severity
//!       - labels: {alertname: RedisDown, service: cart}
//!         annotations: {summary: redis master unreachable}
//!     root_cause: sentinel failover took 40s
//!     resolution: raised the failover timeout
//!     commits: [a7f3b9c@shop/infra]
//!     tags: [redis, failover]
//!     timeline:                    # optional
//!       - {at: 2025-03-02T10:20:00Z, kind: note, detail: failover finished}
//! ```

use quench_knowledge::EventKind;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use quench_knowledge::{
    Acknowledgement, AlertRecord, AlertState, CommitRef, IncidentRecord, IncidentStatus, Notes,
    RunbookRef, TimelineEvent,
};
use serde::Deserialize;
use serde_saphyr::{MessageFormatter, Spanned};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportFile {
    version: Spanned<u32>,
    incidents: Vec<Spanned<ImportRecord>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRecord {
    #[serde(default)]
    id: Option<String>,
    title: Spanned<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    status: Spanned<String>,
    first_alert_at: Spanned<DateTime<Utc>>,
    opened_at: Spanned<DateTime<Utc>>,
    #[serde(default)]
    acknowledged_at: Option<Spanned<DateTime<Utc>>>,
    #[serde(default)]
    acknowledged_by: Option<String>,
    #[serde(default)]
    resolved_at: Option<Spanned<DateTime<Utc>>>,
    #[serde(default)]
    runbook: Option<String>,
    #[serde(default)]
    alerts: Vec<ImportAlert>,
    #[serde(default)]
    root_cause: Option<String>,
    #[serde(default)]
    resolution: Option<String>,
    #[serde(default)]
    commits: Vec<Spanned<String>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    #[serde(default)]
    timeline: Vec<ImportEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportAlert {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportEvent {
    at: DateTime<Utc>,
    kind: String,
    detail: String,
}

/// Why a commit reference is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Not 7 to 40 hex digits before the `@`.
    #[error("commit {0:?}: a SHA is 7 to 40 hex digits (SHA or SHA@repository)")]
    Sha(String),
    /// An empty, over-long or spaced repository after the `@`.
    #[error(
        "commit {0:?}: the repository after @ is empty, longer than 200 characters or has spaces"
    )]
    Repository(String),
}

/// A commit as `SHA` or `SHA@repository`.
pub fn parse_commit(c: &str) -> Result<CommitRef, CommitError> {
    let (sha, repo) = match c.split_once('@') {
        Some((s, r)) => (s, Some(r.to_string())),
        None => (c, None),
    };
    if !(7..=40).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CommitError::Sha(c.to_string()));
    }
    if repo
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.len() > 200 || r.chars().any(char::is_whitespace))
    {
        return Err(CommitError::Repository(c.to_string()));
    }
    Ok(CommitRef {
        sha: sha.to_ascii_lowercase(),
        repo,
    })
}

/// Whether a tag is acceptable: 1 to 64 letters, digits, `-_.:/`.
pub fn is_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
}

/// A problem of a record, at the field it is about.
type Problem = (serde_saphyr::Location, String);

fn record(r: &ImportRecord) -> Result<IncidentRecord, Vec<Problem>> {
    let mut problems: Vec<Problem> = Vec::new();
    let mut at = |loc: serde_saphyr::Location, m: String| problems.push((loc, m));
    if r.title.value.trim().is_empty() {
        at(r.title.referenced, "title is empty".into());
    }
    let status = match r.status.value.as_str() {
        "resolved" => Some(IncidentStatus::Resolved),
        "escalated" => Some(IncidentStatus::Escalated),
        "failed" => Some(IncidentStatus::Failed),
        "cancelled" => Some(IncidentStatus::Cancelled),
        other => {
            at(
                r.status.referenced,
                format!("status {other:?}: resolved, escalated, failed or cancelled"),
            );
            None
        }
    };
    let opened = r.opened_at.value;
    if opened < r.first_alert_at.value {
        at(
            r.opened_at.referenced,
            "opened_at is before first_alert_at".into(),
        );
    }
    match (status, &r.resolved_at) {
        (Some(IncidentStatus::Resolved), None) => at(
            r.status.referenced,
            "a resolved incident needs resolved_at".into(),
        ),
        (_, Some(t)) if t.value < opened => {
            at(t.referenced, "resolved_at is before opened_at".into())
        }
        _ => {}
    }
    if let Some(t) = r.acknowledged_at.as_ref().filter(|t| t.value < opened) {
        at(t.referenced, "acknowledged_at is before opened_at".into());
    }
    let mut commits = Vec::new();
    for c in &r.commits {
        match parse_commit(&c.value) {
            Ok(c) => commits.push(c),
            Err(e) => at(c.referenced, e.to_string()),
        }
    }
    for t in r.tags.iter().filter(|t| !is_tag(&t.value)) {
        at(
            t.referenced,
            format!(
                "tag {:?}: 1 to 64 letters, digits, '-', '_', '.', ':' or '/'",
                t.value
            ),
        );
    }
    let Some(status) = status.filter(|_| problems.is_empty()) else {
        return Err(problems);
    };
    let alerts: Vec<AlertRecord> = if r.alerts.is_empty() {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), r.title.value.clone());
        if let Some(s) = &r.service {
            labels.insert("service".into(), s.clone());
        }
        if let Some(s) = &r.severity {
            labels.insert("severity".into(), s.clone());
        }
        vec![(labels, BTreeMap::new())]
    } else {
        r.alerts
            .iter()
            .map(|a| (a.labels.clone(), a.annotations.clone()))
            .collect()
    }
    .into_iter()
    .enumerate()
    .map(|(i, (mut labels, annotations))| {
        if let Some(s) = &r.service {
            labels.entry("service".into()).or_insert_with(|| s.clone());
        }
        if let Some(s) = &r.severity {
            labels.entry("severity".into()).or_insert_with(|| s.clone());
        }
        AlertRecord {
            seq: 0,
            source: "import".into(),
            fingerprint: format!("{}-{i}", r.id.clone().unwrap_or_default()),
            state: AlertState::Resolved,
            labels,
            annotations,
            starts_at: Some(r.first_alert_at.value),
            ends_at: r.resolved_at.as_ref().map(|t| t.value),
            first_received_at: opened,
            notifications: 1,
        }
    })
    .collect();
    let mut timeline = vec![TimelineEvent {
        at: opened,
        kind: EventKind::Imported,
        detail: format!(
            "imported{}",
            r.id.as_ref()
                .map(|i| format!(" from {i}"))
                .unwrap_or_default()
        ),
    }];
    timeline.extend(r.timeline.iter().map(|e| TimelineEvent {
        at: e.at,
        kind: e.kind.clone().into(),
        detail: e.detail.clone(),
    }));
    timeline.sort_by_key(|e| e.at);
    Ok(IncidentRecord {
        schema: 0,
        id: String::new(),
        title: r.title.value.clone(),
        status,
        runbook: r.runbook.as_ref().map(|n| RunbookRef {
            name: n.clone(),
            path: format!("{n}.yaml"),
            commit: None,
        }),
        group_key: String::new(),
        resolve_with_alerts: true,
        match_explanation: Vec::new(),
        alerts,
        first_alert_at: r.first_alert_at.value,
        opened_at: opened,
        updated_at: r.resolved_at.as_ref().map_or(opened, |t| t.value),
        resolved_at: r.resolved_at.as_ref().map(|t| t.value),
        timeline,
        steps: Vec::new(),
        acknowledged: r.acknowledged_at.as_ref().map(|at| Acknowledgement {
            at: at.value,
            by: r.acknowledged_by.clone().unwrap_or_else(|| "import".into()),
        }),
        notes: Notes {
            root_cause: r.root_cause.clone(),
            resolution: r.resolution.clone(),
            commits,
            tags: r.tags.iter().map(|t| t.value.clone()).collect(),
            edited_at: None,
            edited_by: None,
        },
        external_id: r.id.clone(),
        similar: None,
        chaos: Vec::new(),
        run: None,
    })
}

/// The largest YAML or JSON import file (the request body); JSON Lines
/// have no limit but [`MAX_LINE_BYTES`] per record.
pub const MAX_FILE_BYTES: usize = 64 << 20;

/// The longest line of a JSON Lines import (one incident).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Parses and checks one line (line number `line`, 1-based) of a JSON
/// Lines import named `name`: one incident, the same fields as a record
/// of a YAML file. Problems come back as `name:line:column: ...` (the
/// column when the JSON parser knows it).
pub fn parse_line(name: &str, line: u64, text: &str) -> Result<IncidentRecord, Vec<String>> {
    let r: ImportRecord = serde_json::from_str(text)
        .map_err(|e| vec![format!("{name}:{line}:{}: {e}", e.column())])?;
    record(&r).map_err(|problems| {
        problems
            .into_iter()
            .map(|(_, e)| format!("{name}:{line}: {e}"))
            .collect()
    })
}

/// Whether an import named `name` (or sent as `content_type`) is JSON
/// Lines.
pub fn is_json_lines(name: &str, content_type: Option<&str>) -> bool {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    name.ends_with(".jsonl")
        || name.ends_with(".ndjson")
        || ct.starts_with("application/x-ndjson")
        || ct.starts_with("application/jsonl")
        || ct.starts_with("application/json-lines")
}

/// Parses and checks a whole import file named `name`: every record, or
/// every problem as `name:line:col: record N: ...`, each at the field it is
/// about. A record whose shape is wrong (a field of the wrong type, an
/// unknown field) does not hide the others: each record is read on its own
/// when the whole file does not read.
pub fn parse(name: &str, text: &str) -> Result<Vec<IncidentRecord>, Vec<String>> {
    // A whole file is at most MAX_FILE_BYTES: its YAML may have as many
    // nodes as that allows (the parser's own default stops at 250,000,
    // about 10,000 incidents).
    let options = serde_saphyr::options! {
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_nodes: MAX_FILE_BYTES / 4,
            max_events: MAX_FILE_BYTES / 2,
            max_total_scalar_bytes: MAX_FILE_BYTES,
        },
    };
    let say = |e: &serde_saphyr::Error, line_offset: u64, prefix: &str| {
        let at = e
            .location()
            .map(|l| format!("{name}:{}:{}", l.line() + line_offset, l.column()))
            .unwrap_or_else(|| name.to_string());
        let why = match e.without_snippet() {
            serde_saphyr::Error::Budget { breach, .. } => format!(
                "the file is over the import limit for one YAML or JSON file ({breach:?}); \
                 write it as JSON Lines (one incident per line, `jq -c '.incidents[]' FILE > FILE.jsonl`), \
                 which has no size limit"
            ),
            other => serde_saphyr::DefaultMessageFormatter
                .format_message(other)
                .into_owned(),
        };
        format!("{at}: {prefix}{why}")
    };
    let file: ImportFile = match serde_saphyr::from_str_with_options(text, options) {
        Ok(f) => f,
        Err(whole) => {
            return Err(recover(name, text, &say).unwrap_or_else(|| vec![say(&whole, 0, "")]));
        }
    };
    let mut errors = Vec::new();
    if file.version.value != 1 {
        errors.push(format!(
            "{name}:{}:{}: version {} is not supported (expected 1)",
            file.version.referenced.line(),
            file.version.referenced.column(),
            file.version.value
        ));
    }
    let mut out = Vec::new();
    for (i, r) in file.incidents.iter().enumerate() {
        match record(&r.value) {
            Ok(rec) => out.push(rec),
            Err(problems) => errors.extend(problems.into_iter().map(|(l, e)| {
                format!("{name}:{}:{}: record {}: {e}", l.line(), l.column(), i + 1)
            })),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The file does not read as a whole: find where each record starts, read
/// each one alone (its lines, as a one-item list) and report every
/// record's problems at their own lines. None when the file is not even a
/// YAML mapping with an `incidents` list (a syntax error): then the
/// parser's own error is all there is.
fn recover(
    name: &str,
    text: &str,
    say: &dyn Fn(&serde_saphyr::Error, u64, &str) -> String,
) -> Option<Vec<String>> {
    #[derive(Deserialize)]
    struct Loose {
        incidents: Vec<Spanned<serde_json::Value>>,
    }
    let loose: Loose = serde_saphyr::from_str(text).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = loose
        .incidents
        .iter()
        .map(|r| r.referenced.line() as usize)
        .collect();
    // Records in flow style share lines: nothing to cut along.
    if starts.windows(2).any(|w| w[0] >= w[1]) || starts.contains(&0) {
        return None;
    }
    let mut errors = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(lines.len() + 1);
        // The record's first line starts at its own column; from the `-`
        // before it, the slice is a one-item YAML list.
        let piece = lines.get(start - 1..end - 1)?;
        let col = loose.incidents[i].referenced.column() as usize;
        let is_item = col >= 3
            && piece
                .first()
                .and_then(|first| first.get(..col - 1))
                .is_some_and(|p| p.trim_end().ends_with('-'));
        if !is_item {
            return None;
        }
        let snippet = piece.join("\n");
        let prefix = format!("record {}: ", i + 1);
        let options = serde_saphyr::options! { strict_booleans: true };
        match serde_saphyr::from_str_with_options::<Vec<Spanned<ImportRecord>>>(&snippet, options) {
            Ok(mut one) if one.len() == 1 => {
                let r = one.remove(0);
                if let Err(problems) = record(&r.value) {
                    errors.extend(problems.into_iter().map(|(l, e)| {
                        format!(
                            "{name}:{}:{}: {prefix}{e}",
                            l.line() + start as u64 - 1,
                            l.column()
                        )
                    }));
                }
            }
            Ok(_) => return None,
            Err(e) => errors.push(say(&e, start as u64 - 1, &prefix)),
        }
    }
    if errors.is_empty() {
        None
    } else {
        Some(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(n: usize) -> String {
        let mut s = String::from("version: 1\nincidents:\n");
        for i in 1..=n {
            s.push_str(&format!(
                "  - id: PD-{i}\n    title: Redis failover {i}\n    service: cart\n    status: resolved\n    first_alert_at: 2025-03-02T10:00:00Z\n    opened_at: 2025-03-02T10:01:00Z\n    resolved_at: 2025-03-02T10:40:00Z\n    root_cause: sentinel failover\n    commits: [a7f3b9c@shop/infra]\n    tags: [redis]\n"
            ));
        }
        s
    }

    /// The YAML parser's default budget (250,000 nodes) stopped a JSON
    /// file of 10,000 incidents; a file up to MAX_FILE_BYTES now reads.
    #[test]
    fn a_file_over_the_parsers_default_node_budget_reads() {
        let rec = r#"{"id": "PD-N", "title": "Redis failover", "service": "cart", "status": "resolved", "first_alert_at": "2025-03-02T10:00:00Z", "opened_at": "2025-03-02T10:01:00Z", "resolved_at": "2025-03-02T10:40:00Z", "alerts": [{"labels": {"alertname": "RedisDown", "service": "cart"}, "annotations": {"summary": "down"}}], "root_cause": "sentinel", "commits": ["a7f3b9c"], "tags": ["redis", "failover"]}"#;
        let n = 12_000;
        let body: Vec<String> = (0..n)
            .map(|i| rec.replace("PD-N", &format!("PD-{i}")))
            .collect();
        let text = format!("{{\"version\": 1, \"incidents\": [{}]}}", body.join(",\n"));
        let records = parse("big.json", &text).unwrap();
        assert_eq!(records.len(), n);
    }

    #[test]
    fn json_lines_records_and_their_problems() {
        let ok = r#"{"id": "PD-1", "title": "x", "status": "failed", "first_alert_at": "2025-01-01T00:00:00Z", "opened_at": "2025-01-01T00:00:00Z"}"#;
        let r = parse_line("h.jsonl", 3, ok).unwrap();
        assert_eq!(r.external_id.as_deref(), Some("PD-1"));
        let e = parse_line("h.jsonl", 4, r#"{"title": 5}"#).unwrap_err();
        assert!(e[0].starts_with("h.jsonl:4:"), "{e:?}");
        let late = ok.replace("\"failed\"", "\"resolved\"");
        let e = parse_line("h.jsonl", 9, &late).unwrap_err();
        assert_eq!(e, ["h.jsonl:9: a resolved incident needs resolved_at"]);
        assert!(is_json_lines("x.jsonl", None));
        assert!(is_json_lines("x", Some("application/x-ndjson")));
        assert!(!is_json_lines("x.json", Some("application/json")));
    }

    #[test]
    fn a_good_file_becomes_records() {
        let r = parse("h.yaml", &good(3)).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].external_id.as_deref(), Some("PD-1"));
        assert_eq!(r[0].service(), "cart");
        assert_eq!(r[0].notes.commits[0].repo.as_deref(), Some("shop/infra"));
        let json = r#"{"version": 1, "incidents": [{"title": "x", "status": "failed", "first_alert_at": "2025-01-01T00:00:00Z", "opened_at": "2025-01-01T00:00:00Z"}]}"#;
        assert_eq!(
            parse("h.json", json).unwrap()[0].status,
            IncidentStatus::Failed
        );
    }

    #[test]
    fn bad_records_are_named_with_their_lines() {
        // Record 7 resolves before it opens.
        let text = good(10).replace(
            "  - id: PD-7\n    title: Redis failover 7\n    service: cart\n    status: resolved\n    first_alert_at: 2025-03-02T10:00:00Z\n    opened_at: 2025-03-02T10:01:00Z\n    resolved_at: 2025-03-02T10:40:00Z",
            "  - id: PD-7\n    title: Redis failover 7\n    service: cart\n    status: resolved\n    first_alert_at: 2025-03-02T10:00:00Z\n    opened_at: 2025-03-02T10:01:00Z\n    resolved_at: 2025-03-02T09:40:00Z",
        );
        let e = parse("h.yaml", &text).unwrap_err();
        assert_eq!(
            e,
            ["h.yaml:69:18: record 7: resolved_at is before opened_at"]
        );
        // Every problem of every record, each at its field; a record of the
        // wrong shape does not hide the others.
        let text = good(4)
            .replacen("status: resolved", "status: fixed", 1)
            .replacen("    title: Redis failover 2\n", "    title: Redis failover 2\n    owner: me\n", 1)
            .replacen("tags: [redis]", "tags: [redis, \"has space\"]", 1)
            .replace(
                "PD-3\n    title: Redis failover 3\n    service: cart\n    status: resolved\n    first_alert_at: 2025-03-02T10:00:00Z\n    opened_at: 2025-03-02T10:01:00Z",
                "PD-3\n    title: Redis failover 3\n    service: cart\n    status: resolved\n    first_alert_at: 2025-03-02T10:00:00Z\n    opened_at: soon",
            );
        let e = parse("h.yaml", &text).unwrap_err();
        for want in [
            "h.yaml:6:13: record 1: status \"fixed\"",
            "h.yaml:12:19: record 1: tag \"has space\"",
            "h.yaml:15:5: record 2: unknown field `owner`",
            "h.yaml:29:16: record 3: ",
        ] {
            assert!(e.iter().any(|l| l.starts_with(want)), "{want}: {e:#?}");
        }
        assert_eq!(e.len(), 4, "{e:#?}");
        let e = parse(
            "h.yaml",
            "version: 1\nincidents:\n  - title: x\n    status: resolved\n    opened_at: nope\n",
        )
        .unwrap_err();
        assert!(e[0].starts_with("h.yaml:"), "{e:?}");
    }
}
