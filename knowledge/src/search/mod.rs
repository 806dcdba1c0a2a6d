//! Full-text search over incidents (tantivy), and similar past incidents:
//! the index and its upkeep here, the document in `schema.rs`, the query
//! language in `query.rs`, similar incidents in `similar.rs`.
//!
//! One document per incident: title, alert names, labels (as `key=value`
//! and as words), annotations, steps, evidence summaries (profile function
//! names, goroutine groups, Kubernetes events), root cause, resolution and
//! tags are text; service, runbook, status, labels, tags and commits are
//! exact terms for the filters; the opening time is a fast field for
//! `since:` and for recency.
//!
//! Query language: words (all must match), `"a phrase"`, `prefix*`, and
//! the filters `service:checkout`, `runbook:cpu-profile`, `status:resolved`,
//! `label:severity=critical`, `tag:redis`, `since:7d`, `commit:a7f3b9c`
//! (any prefix of at least 7 digits). Ranking is BM25; equal scores go to
//! the newer incident.
//!
//! The sled records are the truth; the index can always be rebuilt from
//! them (`rebuild`), and is, when it is missing or does not open.

pub mod grammar;
pub mod graph;
mod kpis;
mod query;
mod schema;
mod similar;

pub use crate::record::Similar;
pub use query::{Hit, Page};
pub use schema::key_text;
use schema::{
    Fields, annotation_text, body_text, evidence_text, hot_functions, label_text, schema,
};
pub use similar::Hypothesis;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::{
    BooleanQuery, BoostQuery, Occur, Query, QueryParser, RangeQuery, RegexQuery, TermQuery,
};
use tantivy::schema::{FAST, Field, IndexRecordOption, STORED, STRING, Schema, TEXT, Value as _};
use tantivy::snippet::SnippetGenerator;
use tantivy::{Index, IndexReader, IndexWriter, TantivyDocument, Term, doc};

use crate::record::IncidentRecord;

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query does not parse, or asks for something impossible.
    #[error("query: {0}")]
    Syntax(#[from] grammar::QueryError),
    /// The query does not parse.
    #[error("query: {0}")]
    Query(String),
    /// The index failed.
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// The index directory.
    #[error("search index directory: {0}")]
    Io(#[from] std::io::Error),
    /// The records could not be read while rebuilding.
    #[error("reading the records: {0}")]
    Records(String),
}

/// The index.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    f: Fields,
}

/// Commits, with the change-feed position as the commit's payload, so the
/// index and its position can never disagree after a crash.
fn commit_at(w: &mut IndexWriter, position: Option<u64>) -> Result<(), SearchError> {
    let mut prepared = w.prepare_commit()?;
    if let Some(p) = position {
        prepared.set_payload(&format!("changes:{p}"));
    }
    prepared.commit()?;
    Ok(())
}

/// The index's writer: one indexing thread with a 30 MB budget (the index
/// follows the records in batches and a small host keeps its memory).
/// Measured on 1,000,000 imported incidents (bench-import) with the second
/// core busy: 15 MB made them searchable in 67.7 s (peak RSS 323 MB), 30 MB
/// in 59.5 s (359 MB), 60 MB in 62.0 s (563 MB); quiet, 30 MB takes 47 s
/// (docs/KNOWLEDGE.md).
///
/// tantivy (0.27) gives the first operation of a reopened writer the
/// opstamp of the last commit, which is also the delete opstamp of every
/// segment that commit deleted from. A merge started before the next
/// commit then skips those segments as "up to date" while the merged
/// segment takes another input's delete cursor, already past that first
/// operation: when it was a delete, the old document comes back next to
/// its replacement (seen after kill -9 restarts in a storm: one incident
/// indexed twice). A delete of an id no incident has takes that opstamp
/// before anything else can.
fn writer(index: &Index, id: Field) -> Result<IndexWriter, SearchError> {
    let w = index.writer_with_num_threads(1, 30_000_000)?;
    w.delete_term(Term::from_field_text(id, ""));
    Ok(w)
}

impl SearchIndex {
    /// Opens the index in `dir`, or creates it. An index that does not open
    /// (corrupt, an older schema) is set aside and a new one created; the
    /// second value says the caller must rebuild it from the records.
    pub fn open(dir: &Path) -> Result<(SearchIndex, bool), SearchError> {
        let (schema, f) = schema();
        std::fs::create_dir_all(dir)?;
        let fresh_dir = std::fs::read_dir(dir)?.next().is_none();
        let opened = tantivy::directory::MmapDirectory::open(dir)
            .map_err(tantivy::TantivyError::from)
            .and_then(|d| Index::open_or_create(d, schema.clone()));
        let (index, fresh) = match opened {
            Ok(i) => (i, fresh_dir),
            Err(_) => {
                std::fs::remove_dir_all(dir)?;
                std::fs::create_dir_all(dir)?;
                (Index::create_in_dir(dir, schema)?, true)
            }
        };
        let writer = writer(&index, f.id)?;
        // Hits are read from the doc store once per result page: a small
        // block cache per segment is plenty, and keeps a large index's
        // memory down.
        let reader = index
            .reader_builder()
            .doc_store_cache_num_blocks(4)
            .try_into()?;
        Ok((
            SearchIndex {
                index,
                reader,
                writer: Mutex::new(writer),
                f,
            },
            fresh,
        ))
    }

    fn document(&self, r: &IncidentRecord) -> TantivyDocument {
        let f = self.f;
        let mut d = doc!(
            f.id => r.id.clone(),
            f.title => r.title.clone(),
            f.body => body_text(r),
            f.label_words => label_text(r),
            f.annotations => annotation_text(r),
            f.evidence => evidence_text(r),
            f.service => r.service(),
            f.status => r.status.as_str(),
            f.opened => r.opened_at.timestamp(),
        );
        if let Some(rc) = &r.notes.root_cause {
            d.add_text(f.root_cause, rc);
        }
        if let Some(res) = &r.notes.resolution {
            d.add_text(f.resolution, res);
        }
        if let Some(b) = &r.runbook {
            d.add_text(f.runbook, &b.name);
            d.add_text(f.runbook_path, &b.path);
        }
        for a in &r.alerts {
            for (k, v) in &a.labels {
                d.add_text(f.labels, format!("{k}={v}"));
            }
        }
        for t in &r.notes.tags {
            d.add_text(f.tags, t);
        }
        for c in &r.notes.commits {
            d.add_text(f.commits, &c.sha);
        }
        for c in &r.chaos {
            d.add_text(f.chaos, &c.experiment);
        }
        if let Some(rc) = r.notes.root_cause.as_deref().map(key_text)
            && !rc.is_empty()
        {
            d.add_text(f.cause, rc);
        }
        if let Some(fix) = r.notes.resolution.as_deref().map(key_text)
            && !fix.is_empty()
        {
            d.add_text(f.fix, fix);
        }
        for func in hot_functions(r) {
            d.add_text(f.functions, func);
        }
        let outcome = match &r.run {
            Some(run) => run.outcome.as_str(),
            None => r.status.as_str(),
        };
        d.add_text(f.outcome, outcome);
        for c in &r.notes.commits {
            match &c.repo {
                Some(repo) => d.add_text(f.commit_refs, format!("{}@{repo}", c.sha)),
                None => d.add_text(f.commit_refs, &c.sha),
            }
        }
        let fact = crate::kpi::Fact::of(r);
        d.add_u64(f.human, u64::from(fact.human));
        if let Some(done) = r.resolved_at {
            d.add_i64(f.ttr, (done - r.first_alert_at).num_seconds().max(0));
        }
        d.add_i64(f.detect_ms, fact.detect_ms);
        if let Some(a) = fact.ack_ms {
            d.add_i64(f.ack_ms, a);
        }
        if let Some(x) = fact.resolve_ms {
            d.add_i64(f.resolve_ms, x);
        }
        d.add_u64(f.run_bits, fact.run_bits());
        d.add_u64(f.flags, fact.flag_bits());
        d
    }

    /// Adds or replaces incidents, and makes them searchable.
    pub fn upsert(&self, records: &[IncidentRecord]) -> Result<(), SearchError> {
        self.upsert_at(records, None)
    }

    /// Adds or replaces incidents and records, in the same commit, the
    /// position in the records' change feed they bring the index to.
    pub fn upsert_at(
        &self,
        records: &[IncidentRecord],
        position: Option<u64>,
    ) -> Result<(), SearchError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for r in records {
            w.delete_term(Term::from_field_text(self.f.id, &r.id));
            w.add_document(self.document(r))?;
        }
        commit_at(&mut w, position)?;
        drop(w);
        self.reader.reload()?;
        Ok(())
    }

    /// Adds or replaces incidents without committing: they become
    /// searchable with the next [`SearchIndex::commit_at`].
    pub fn stage(&self, records: &[IncidentRecord]) -> Result<(), SearchError> {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for r in records {
            w.delete_term(Term::from_field_text(self.f.id, &r.id));
            w.add_document(self.document(r))?;
        }
        Ok(())
    }

    /// Commits what was staged, recording the change-feed position it
    /// brings the index to, and makes it searchable.
    pub fn commit_at(&self, position: Option<u64>) -> Result<(), SearchError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        commit_at(&mut w, position)?;
        drop(w);
        self.reader.reload()?;
        Ok(())
    }

    /// Replaces the whole index with `records`.
    pub fn rebuild(&self, records: &[IncidentRecord]) -> Result<(), SearchError> {
        self.rebuild_at(records, None)
    }

    /// Replaces the whole index with `records`, read at change `position`
    /// of the feed (or later).
    pub fn rebuild_at(
        &self,
        records: &[IncidentRecord],
        position: Option<u64>,
    ) -> Result<(), SearchError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.delete_all_documents()?;
        for r in records {
            w.add_document(self.document(r))?;
        }
        commit_at(&mut w, position)?;
        drop(w);
        self.reader.reload()?;
        Ok(())
    }

    /// Replaces the whole index with the records `records` yields, one at a
    /// time (a history of millions is never held in memory at once), read
    /// at change `position` of the feed (or later).
    pub fn rebuild_streaming<E: std::fmt::Display>(
        &self,
        records: impl Iterator<Item = Result<IncidentRecord, E>>,
        position: Option<u64>,
    ) -> Result<u64, SearchError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.delete_all_documents()?;
        let mut n = 0;
        for r in records {
            let r = r.map_err(|e| SearchError::Records(e.to_string()))?;
            w.add_document(self.document(&r))?;
            n += 1;
        }
        commit_at(&mut w, position)?;
        drop(w);
        self.reader.reload()?;
        Ok(n)
    }

    /// The change-feed position of the last commit, if it recorded one.
    pub fn position(&self) -> Option<u64> {
        self.index
            .load_metas()
            .ok()?
            .payload
            .and_then(|p| p.strip_prefix("changes:")?.parse().ok())
    }

    /// How many incidents the index holds.
    pub fn count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::*;

    fn now() -> DateTime<Utc> {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    struct Spec<'a> {
        id: &'a str,
        title: &'a str,
        labels: &'a [(&'a str, &'a str)],
        summary: &'a str,
        days_ago: i64,
        status: IncidentStatus,
        root_cause: Option<&'a str>,
        top: &'a [&'a str],
        commit: Option<&'a str>,
        runbook: Option<&'a str>,
    }

    fn incident(s: &Spec) -> IncidentRecord {
        let opened = now() - chrono::Duration::days(s.days_ago);
        let mut annotations = std::collections::BTreeMap::new();
        annotations.insert("summary".to_string(), s.summary.to_string());
        IncidentRecord {
            schema: 1,
            id: s.id.into(),
            title: s.title.into(),
            status: s.status,
            runbook: s.runbook.map(|n| RunbookRef {
                name: n.into(),
                path: format!("{n}.yaml"),
                commit: None,
            }),
            group_key: String::new(),
            resolve_with_alerts: true,
            match_explanation: Vec::new(),
            alerts: vec![AlertRecord {
                seq: 1,
                source: "alertmanager".into(),
                fingerprint: s.id.into(),
                state: AlertState::Firing,
                labels: s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                annotations,
                starts_at: Some(opened),
                ends_at: None,
                first_received_at: opened,
                notifications: 1,
            }],
            first_alert_at: opened,
            opened_at: opened,
            updated_at: opened,
            resolved_at: None,
            timeline: Vec::new(),
            steps: if s.top.is_empty() {
                Vec::new()
            } else {
                vec![StepRecord {
                    id: "cpu".into(),
                    uses: "pprof.capture".into(),
                    destructive: false,
                    state: StepState::Succeeded,
                    attempts: 1,
                    attempt_key: String::new(),
                    rendered: serde_json::Value::Null,
                    output: serde_json::json!({"top": s.top.iter().map(|f| serde_json::json!({"function": f})).collect::<Vec<_>>()}),
                    reason: String::new(),
                    started_at: Some(opened),
                    ended_at: Some(opened),
                }]
            },
            acknowledged: None,
            notes: Notes {
                root_cause: s.root_cause.map(str::to_string),
                commits: s
                    .commit
                    .map(|c| {
                        vec![CommitRef {
                            sha: c.into(),
                            repo: None,
                        }]
                    })
                    .unwrap_or_default(),
                tags: Vec::new(),
                ..Notes::default()
            },
            external_id: None,
            similar: None,
            chaos: Vec::new(),
            run: None,
        }
    }

    fn corpus() -> Vec<IncidentRecord> {
        use IncidentStatus::*;
        let spec =
            |id, title, labels, summary, days_ago, status, root_cause, top, commit, runbook| Spec {
                id,
                title,
                labels,
                summary,
                days_ago,
                status,
                root_cause,
                top,
                commit,
                runbook,
            };
        [
            spec(
                "inc-1",
                "RedisDown cart",
                &[
                    ("alertname", "RedisDown"),
                    ("service", "cart"),
                    ("severity", "critical"),
                ][..],
                "redis master unreachable",
                10,
                Resolved,
                Some("redis sentinel failover took 40s"),
                &[][..],
                Some("a7f3b9c1d2"),
                Some("redis-down"),
            ),
            spec(
                "inc-2",
                "RedisDown cart",
                &[
                    ("alertname", "RedisDown"),
                    ("service", "cart"),
                    ("severity", "warning"),
                ][..],
                "redis memory high",
                2,
                Resolved,
                Some("redis memory full, keys evicted"),
                &[][..],
                None,
                Some("redis-down"),
            ),
            spec(
                "inc-3",
                "HighCPU checkout",
                &[("alertname", "HighCPU"), ("service", "checkout")][..],
                "cpu above 90%",
                4,
                Resolved,
                Some("a hot loop in the price cache"),
                &["main.burnCPU", "runtime.mallocgc"][..],
                None,
                Some("cpu-profile"),
            ),
            spec(
                "inc-4",
                "GoroutineLeak checkout",
                &[("alertname", "GoroutineLeak"), ("service", "checkout")][..],
                "250 goroutines blocked in main.leakyWorker",
                1,
                Escalated,
                None,
                &[][..],
                None,
                Some("goroutine-leak"),
            ),
            spec(
                "inc-5",
                "DiskFull search",
                &[
                    ("alertname", "DiskFull"),
                    ("service", "search"),
                    ("severity", "critical"),
                ][..],
                "disk 95% full",
                20,
                Resolved,
                Some("logs not rotated"),
                &[][..],
                None,
                None,
            ),
            spec(
                "inc-6",
                "LatencyHigh search",
                &[("alertname", "LatencyHigh"), ("service", "search")][..],
                "the sentinel page was slow after the failover drill",
                3,
                Resolved,
                None,
                &[][..],
                None,
                None,
            ),
        ]
        .iter()
        .map(incident)
        .collect()
    }

    fn index(records: &[IncidentRecord]) -> (tempfile::TempDir, SearchIndex) {
        let dir = tempfile::tempdir().unwrap();
        let (idx, fresh) = SearchIndex::open(&dir.path().join("index")).unwrap();
        assert!(fresh);
        idx.rebuild(records).unwrap();
        (dir, idx)
    }

    fn ids(hits: &[Hit]) -> Vec<String> {
        hits.iter().map(|h| h.id.clone()).collect()
    }

    /// Found by fuzzing (`fuzz/artifacts`, search_query): a negated
    /// phrase over a small index trips a debug assertion inside tantivy
    /// 0.27. The answer is right without the assertion; with it, the query
    /// gets an error and nothing panics.
    #[test]
    fn a_negated_phrase_never_panics() {
        let all = corpus();
        for n in 1..=all.len() {
            let (_d, idx) = index(&all[..n]);
            for q in [
                "-\"sentinel failover\"",
                "-1\u{0}1",
                "redis -\"sentinel failover\"",
            ] {
                let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    idx.search(q, 10, now())
                }))
                .unwrap_or_else(|_| panic!("{q:?} over {n} incidents panicked"));
                match answer {
                    Ok(hits) => assert!(
                        hits.iter().all(|h| h.id != "inc-1") || q.starts_with("-1"),
                        "{q:?} over {n}: inc-1 has the phrase and must be excluded"
                    ),
                    Err(e) => assert!(
                        cfg!(debug_assertions) && e.to_string().contains("rephrase"),
                        "{q:?} over {n}: {e}"
                    ),
                }
            }
        }
    }

    #[test]
    fn words_filters_phrases_and_prefixes() {
        let (_d, idx) = index(&corpus());
        assert_eq!(idx.count(), 6);
        let q = |s: &str| idx.search(s, 10, now()).unwrap();
        let mut redis = ids(&q("redis"));
        redis.sort();
        assert_eq!(redis, ["inc-1", "inc-2"]);
        assert_eq!(ids(&q("service:cart memory")), ["inc-2"]);
        // The phrase: adjacent words in inc-1's root cause, scattered in inc-6.
        assert_eq!(ids(&q("\"sentinel failover\"")), ["inc-1"]);
        let mut both = ids(&q("sentinel failover"));
        both.sort();
        assert_eq!(both, ["inc-1", "inc-6"]);
        let mut prefix = ids(&q("redi*"));
        prefix.sort();
        assert_eq!(prefix, ["inc-1", "inc-2"]);
        let mut critical = ids(&q("label:severity=critical"));
        critical.sort();
        assert_eq!(critical, ["inc-1", "inc-5"]);
        let mut recent = ids(&q("since:3d"));
        recent.sort();
        assert_eq!(recent, ["inc-2", "inc-4", "inc-6"]);
        assert_eq!(ids(&q("commit:a7f3b9c")), ["inc-1"]);
        assert_eq!(ids(&q("status:escalated")), ["inc-4"]);
        assert_eq!(ids(&q("runbook:cpu-profile")), ["inc-3"]);
        // Evidence is searchable: a function name from a profile, a goroutine group.
        assert_eq!(ids(&q("burncpu")), ["inc-3"]);
        assert_eq!(ids(&q("leakyworker")), ["inc-4"]);
        assert!(q("nothing-like-this").is_empty());
        assert!(idx.search("commit:abc", 10, now()).is_err());
        assert!(idx.search("since:soon", 10, now()).is_err());
    }

    #[test]
    fn or_not_groups_fields_and_dates() {
        let (_d, idx) = index(&corpus());
        let q = |s: &str| {
            let mut v = ids(&idx.search(s, 10, now()).unwrap());
            v.sort();
            v
        };
        assert_eq!(q("redis OR disk"), ["inc-1", "inc-2", "inc-5"]);
        assert_eq!(q("redis NOT evicted"), ["inc-1"]);
        assert_eq!(q("redis -evicted"), ["inc-1"]);
        assert_eq!(q("NOT redis"), ["inc-3", "inc-4", "inc-5", "inc-6"]);
        assert_eq!(q("(redis OR disk) service:search"), ["inc-5"]);
        assert_eq!(q("redis OR (disk AND NOT rotated)"), ["inc-1", "inc-2"]);
        // Scoped words: only in that field.
        assert_eq!(q("sentinel"), ["inc-1", "inc-6"]);
        assert!(q("title:sentinel").is_empty());
        assert_eq!(q("root_cause:sentinel"), ["inc-1"]);
        assert_eq!(q("annotations:sentinel"), ["inc-6"]);
        assert_eq!(q("title:latencyhigh"), ["inc-6"]);
        assert_eq!(q("labels:critical"), ["inc-1", "inc-5"]);
        assert_eq!(q("resolution:anything"), Vec::<String>::new());
        // A function name is cut into words and matched as a phrase.
        assert_eq!(q("evidence:runtime.mallocgc"), ["inc-3"]);
        assert_eq!(q("evidence:\"main.burnCPU\""), ["inc-3"]);
        assert_eq!(q("evidence:mallo*"), ["inc-3"]);
        assert!(q("evidence:leakyworker").is_empty());
        assert_eq!(q("annotations:leakyworker"), ["inc-4"]);
        // Absolute ranges: `after` includes its instant, `before` does not.
        assert_eq!(q("after:2026-11-23"), ["inc-2", "inc-3", "inc-4", "inc-6"]);
        assert_eq!(q("before:2026-11-23"), ["inc-1", "inc-5"]);
        assert_eq!(q("after:2026-11-23T12:00:01Z"), ["inc-2", "inc-4", "inc-6"]);
        assert_eq!(
            q("service:search after:2026-11-01 before:2026-11-20"),
            ["inc-5"]
        );
    }

    #[test]
    fn totals_pages_and_order() {
        let (_d, idx) = index(&corpus());
        let all = idx.search_page("NOT nothingatall", 0, 100, now()).unwrap();
        assert_eq!(all.total, 6);
        let mut seen = Vec::new();
        for offset in [0, 2, 4, 6] {
            let page = idx
                .search_page("NOT nothingatall", offset, 2, now())
                .unwrap();
            assert_eq!(page.total, 6);
            assert_eq!(page.hits.len(), if offset < 6 { 2 } else { 0 });
            seen.extend(ids(&page.hits));
        }
        assert_eq!(seen, ids(&all.hits), "pages are the whole list, in order");
        // Equal scores (filters only): the newer incident first.
        assert_eq!(
            ids(&idx.search("service:search", 10, now()).unwrap()),
            ["inc-6", "inc-5"]
        );
        let p = idx.search_page("redis", 0, 1, now()).unwrap();
        assert_eq!((p.total, p.hits.len()), (2, 1));
    }

    #[test]
    fn impossible_queries_name_the_column() {
        let (_d, idx) = index(&corpus());
        let col = |s: &str| match idx.search(s, 10, now()) {
            Err(SearchError::Syntax(e)) => e.column,
            other => panic!("{s}: {other:?}"),
        };
        // Too far back for a date: an error, not a panic.
        assert_eq!(col("x since:99999999999999w"), 3);
        assert_eq!(col("x since:9223372036854775807m"), 3);
        assert_eq!(col("after:yesterday"), 1);
        assert_eq!(col("redis OR"), 7);
        assert_eq!(col("redis commit:abc"), 7);
    }

    #[test]
    fn the_graph_links_services_causes_functions_and_runbooks() {
        let mut records = corpus();
        // inc-2 was resolved 30 minutes after its first alert, by a human.
        records[1].resolved_at = Some(records[1].first_alert_at + chrono::Duration::minutes(30));
        records[1].notes.resolution = Some("Raised  maxmemory.".into());
        records[1].acknowledged = Some(Acknowledgement {
            at: records[1].opened_at,
            by: "ana".into(),
        });
        let (_d, idx) = index(&records);
        use graph::Node;
        let cart = idx.graph(&Node::Service("cart".into())).unwrap();
        assert_eq!(cart.incidents, 2);
        let causes: Vec<&str> = cart.causes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            causes,
            [
                "redis memory full, keys evicted",
                "redis sentinel failover took 40s"
            ]
        );
        assert_eq!(cart.resolutions.len(), 1);
        assert_eq!(cart.resolutions[0].name, "raised maxmemory");
        assert_eq!(cart.runbooks.len(), 1);
        let rb = &cart.runbooks[0];
        assert_eq!(
            (rb.name.as_str(), rb.runs, rb.judged, rb.succeeded),
            ("redis-down", 2, 2, 2)
        );
        assert_eq!(rb.median_ttr_seconds, Some(1800));
        assert_eq!(cart.commits[0].name, "a7f3b9c1d2");
        assert_eq!(
            cart.by_month,
            [graph::Count {
                name: "2026-11".into(),
                incidents: 2
            }]
        );
        assert_eq!(ids_of(&cart.recent), ["inc-2", "inc-1"], "newest first");
        assert_eq!(cart.human_count, 1);
        assert_eq!(ids_of(&cart.human), ["inc-2"]);

        let f = idx
            .graph(&Node::Function("runtime.mallocgc".into()))
            .unwrap();
        assert_eq!(
            (f.incidents, ids_of(&f.recent)),
            (1, vec!["inc-3".to_string()])
        );
        assert_eq!(f.services[0].name, "checkout");
        let funcs: Vec<&str> = f.functions.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(funcs, ["main.burnCPU", "runtime.mallocgc"]);

        // A cause is words of the root cause, in order.
        let c = idx.graph(&Node::Cause("sentinel failover".into())).unwrap();
        assert_eq!(ids_of(&c.recent), ["inc-1"]);
        assert_eq!(c.services[0].name, "cart");
        let c = idx.graph(&Node::Cause("redis".into())).unwrap();
        assert_eq!(c.incidents, 2);
        assert_eq!(c.resolutions[0].name, "raised maxmemory");

        let r = idx.graph(&Node::Runbook("cpu-profile".into())).unwrap();
        assert_eq!((r.incidents, r.runbooks[0].runs), (1, 1));
        let none = idx.graph(&Node::Service("nosuch".into())).unwrap();
        assert_eq!((none.incidents, none.recent.len()), (0, 0));
    }

    fn ids_of(v: &[graph::Linked]) -> Vec<String> {
        v.iter().map(|l| l.id.clone()).collect()
    }

    #[test]
    fn chaos_links_are_a_filter_and_words() {
        let mut records = corpus();
        records[3].chaos.push(crate::ChaosLink {
            experiment: "checkout-pod-kill".into(),
            run: "run-1".into(),
        });
        let (_d, idx) = index(&records);
        let q = |s: &str| ids(&idx.search(s, 10, now()).unwrap());
        assert_eq!(q("chaos:checkout-pod-kill"), ["inc-4"]);
        assert!(q("chaos:other").is_empty());
        assert_eq!(q("chaos service:checkout"), ["inc-4"]);
    }

    /// An index written with an older schema (here: one field) is set
    /// aside and reported fresh, so start-up rebuilds it from the records.
    #[test]
    fn an_index_with_another_schema_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        std::fs::create_dir_all(&path).unwrap();
        let mut b = Schema::builder();
        b.add_text_field("id", STRING | STORED);
        Index::create_in_dir(&path, b.build()).unwrap();
        let (idx, fresh) = SearchIndex::open(&path).unwrap();
        assert!(fresh);
        idx.rebuild(&corpus()).unwrap();
        assert_eq!(idx.count(), 6);
    }

    #[test]
    fn hits_carry_snippets_runbook_and_link() {
        let (_d, idx) = index(&corpus());
        let hits = idx.search("evicted", 10, now()).unwrap();
        assert_eq!(hits[0].id, "inc-2");
        assert!(
            hits[0].snippet.contains("<b>evicted</b>"),
            "{:?}",
            hits[0].snippet
        );
        assert_eq!(hits[0].runbook.as_deref(), Some("redis-down.yaml"));
        assert_eq!(hits[0].link, "/api/v1/incidents/inc-2");
    }

    #[test]
    fn equal_scores_go_to_the_newer_incident() {
        let mut older = corpus().remove(1);
        older.id = "inc-10".into();
        older.opened_at = now() - chrono::Duration::days(30);
        let mut newer = older.clone();
        newer.id = "inc-11".into();
        newer.opened_at = now() - chrono::Duration::days(1);
        let (_d, idx) = index(&[older, newer]);
        let hits = idx.search("memory", 10, now()).unwrap();
        assert_eq!(hits[0].score, hits[1].score);
        assert_eq!(ids(&hits), ["inc-11", "inc-10"]);
    }

    #[test]
    fn a_new_alert_gets_the_past_incident_it_resembles() {
        let (_d, idx) = index(&corpus());
        let new = incident(&Spec {
            id: "inc-7",
            title: "RedisDown cart",
            labels: &[
                ("alertname", "RedisDown"),
                ("service", "cart"),
                ("severity", "critical"),
            ],
            summary: "redis master unreachable after failover",
            days_ago: 0,
            status: IncidentStatus::Open,
            root_cause: None,
            top: &[],
            commit: None,
            runbook: None,
        });
        let similar = idx.similar(&new, 3).unwrap();
        assert_eq!(similar[0].id, "inc-1", "{similar:#?}");
        assert!(similar[0].matched.contains(&"alertname".to_string()));
        assert!(similar[0].matched.contains(&"service".to_string()));
        assert_eq!(
            similar[0].root_cause.as_deref(),
            Some("redis sentinel failover took 40s")
        );
        assert!(similar.iter().all(|s| s.id != "inc-7"));
        assert_eq!(similar.len(), 3);
    }

    /// The tantivy bug behind [`writer`]: without its first delete, the
    /// merge below keeps the old `inc-1` next to the new one.
    #[test]
    fn a_reopened_writer_never_brings_a_replaced_document_back() {
        use tantivy::indexer::NoMergePolicy;
        let dir = tempfile::tempdir().unwrap();
        let (schema, f) = schema();
        let index = Index::create_in_dir(dir.path(), schema).unwrap();
        let term = |id: &str| Term::from_field_text(f.id, id);
        {
            let mut w = writer(&index, f.id).unwrap();
            w.set_merge_policy(Box::new(NoMergePolicy));
            w.add_document(doc!(f.id => "inc-1")).unwrap();
            w.add_document(doc!(f.id => "inc-2")).unwrap();
            w.commit().unwrap();
            // This commit deletes from the first segment (whose delete
            // opstamp becomes the commit's) and adds one without deletes.
            w.delete_term(term("inc-2"));
            w.add_document(doc!(f.id => "inc-3")).unwrap();
            w.commit().unwrap();
        }
        let mut w = writer(&index, f.id).unwrap();
        w.set_merge_policy(Box::new(NoMergePolicy));
        w.delete_term(term("inc-1"));
        w.add_document(doc!(f.id => "inc-1")).unwrap();
        // The segment without deletes first: the merged segment takes its
        // delete cursor.
        let mut segments = index.load_metas().unwrap().segments;
        segments.sort_by_key(|s| s.delete_opstamp().is_some());
        let ids: Vec<_> = segments.iter().map(|s| s.id()).collect();
        w.merge(&ids).wait().unwrap();
        w.commit().unwrap();
        let reader = index.reader().unwrap();
        let copies = |id: &str| {
            let q = tantivy::query::TermQuery::new(term(id), IndexRecordOption::Basic);
            reader
                .searcher()
                .search(&q, &tantivy::collector::Count)
                .unwrap()
        };
        assert_eq!(copies("inc-1"), 1, "inc-1 is indexed once");
        assert_eq!((copies("inc-2"), copies("inc-3")), (0, 1));
    }

    #[test]
    fn a_corrupt_index_is_replaced_and_reported_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        {
            let (idx, _) = SearchIndex::open(&path).unwrap();
            idx.rebuild(&corpus()).unwrap();
        }
        std::fs::write(path.join("meta.json"), b"{ not json").unwrap();
        let (idx, fresh) = SearchIndex::open(&path).unwrap();
        assert!(fresh, "the caller must rebuild");
        assert_eq!(idx.count(), 0);
        idx.rebuild(&corpus()).unwrap();
        assert_eq!(idx.count(), 6);
    }
}
