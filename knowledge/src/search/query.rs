//! The query language's tree (`grammar.rs`) turned into tantivy queries,
//! and its hits.

use super::grammar::{self, Node, Scope, Value};
use super::*;
use tantivy::collector::Count;
use tantivy::query::{AllQuery, ConstScoreQuery, PhraseQuery};

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Hit {
    /// The incident.
    pub id: String,
    /// Its title.
    pub title: String,
    /// BM25.
    pub score: f32,
    /// Its status.
    pub status: String,
    /// Its service.
    pub service: String,
    /// The runbook's file, if one ran.
    pub runbook: Option<String>,
    /// When it opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// The matching words, `<b>`-highlighted, from the body or root cause.
    pub snippet: String,
    /// Its API address.
    pub link: String,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Page {
    /// How many incidents match in all.
    pub total: usize,
    /// This page's hits, best first.
    pub hits: Vec<Hit>,
}

/// The fields unscoped words search, with their boosts.
fn any_fields(f: &Fields) -> [(Field, f32); 4] {
    [
        (f.title, 2.0),
        (f.body, 1.0),
        (f.root_cause, 1.5),
        (f.resolution, 1.0),
    ]
}

/// Turns the parsed tree into a tantivy query, collecting the positive
/// text terms for the snippets.
struct Compiler<'a> {
    index: &'a SearchIndex,
    now: DateTime<Utc>,
    highlight: Vec<Box<dyn Query>>,
}

fn at(column: usize, message: String) -> SearchError {
    SearchError::Syntax(grammar::QueryError { column, message })
}

impl Compiler<'_> {
    /// `None`: the node holds no words at all (`-` alone, punctuation), and
    /// constrains nothing.
    fn node(&mut self, n: &Node, positive: bool) -> Result<Option<Box<dyn Query>>, SearchError> {
        match n {
            Node::Term(t) => self.term(t, positive),
            Node::Not(inner) => {
                let Some(q) = self.node(inner, !positive)? else {
                    return Ok(None);
                };
                Ok(Some(Box::new(BooleanQuery::new(vec![
                    (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                    (Occur::MustNot, q),
                ]))))
            }
            Node::And(items) => {
                let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for item in items {
                    match item {
                        Node::Not(inner) => {
                            if let Some(q) = self.node(inner, !positive)? {
                                clauses.push((Occur::MustNot, q));
                            }
                        }
                        other => {
                            if let Some(q) = self.node(other, positive)? {
                                clauses.push((Occur::Must, q));
                            }
                        }
                    }
                }
                if clauses.is_empty() {
                    return Ok(None);
                }
                if clauses.iter().all(|(o, _)| *o == Occur::MustNot) {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                Ok(Some(Box::new(BooleanQuery::new(clauses))))
            }
            Node::Or(items) => {
                let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for item in items {
                    if let Some(q) = self.node(item, positive)? {
                        clauses.push((Occur::Should, q));
                    }
                }
                if clauses.is_empty() {
                    return Ok(None);
                }
                Ok(Some(Box::new(BooleanQuery::new(clauses))))
            }
        }
    }

    /// The words of `text` as `field`'s tokenizer cuts them.
    fn tokens(&self, field: Field, text: &str) -> Result<Vec<String>, SearchError> {
        let mut analyzer = self.index.index.tokenizer_for_field(field)?;
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        stream.process(&mut |t| out.push(t.text.clone()));
        Ok(out)
    }

    /// A word or phrase in one text field: a term, or a phrase when the
    /// tokenizer cuts it in several (`runtime.mallocgc`).
    fn words_in(&self, field: Field, text: &str) -> Result<Option<Box<dyn Query>>, SearchError> {
        let words = self.tokens(field, text)?;
        Ok(match words.len() {
            0 => None,
            1 => Some(Box::new(TermQuery::new(
                Term::from_field_text(field, &words[0]),
                IndexRecordOption::WithFreqs,
            ))),
            _ => Some(Box::new(PhraseQuery::new(
                words
                    .iter()
                    .map(|w| Term::from_field_text(field, w))
                    .collect(),
            ))),
        })
    }

    fn text(
        &mut self,
        fields: &[(Field, f32)],
        value: &Value,
        positive: bool,
    ) -> Result<Option<Box<dyn Query>>, SearchError> {
        let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for &(field, boost) in fields {
            let q: Option<Box<dyn Query>> = match value {
                Value::Word(w) | Value::Phrase(w) => self.words_in(field, w)?,
                Value::Prefix(p) => Some(Box::new(RegexQuery::from_pattern(
                    &format!("{}.*", regex_escape(p)),
                    field,
                )?)),
            };
            if let Some(q) = q {
                let q: Box<dyn Query> = if boost == 1.0 {
                    q
                } else {
                    Box::new(BoostQuery::new(q, boost))
                };
                any.push((Occur::Should, q));
            }
        }
        if any.is_empty() {
            return Ok(None);
        }
        let q: Box<dyn Query> = if any.len() == 1 {
            any.pop().expect("one").1
        } else {
            Box::new(BooleanQuery::new(any))
        };
        if positive {
            self.highlight.push(q.box_clone());
        }
        Ok(Some(q))
    }

    fn term(
        &mut self,
        t: &grammar::Term,
        positive: bool,
    ) -> Result<Option<Box<dyn Query>>, SearchError> {
        let f = self.index.f;
        let exact = |field: Field, v: &str| -> Option<Box<dyn Query>> {
            Some(Box::new(ConstScoreQuery::new(
                Box::new(TermQuery::new(
                    Term::from_field_text(field, v),
                    IndexRecordOption::Basic,
                )),
                0.0,
            )))
        };
        let opened = |from: Bound<i64>, to: Bound<i64>| -> Option<Box<dyn Query>> {
            let term = |b: Bound<i64>| b.map(|t| Term::from_field_i64(f.opened, t));
            Some(Box::new(ConstScoreQuery::new(
                Box::new(RangeQuery::new(term(from), term(to))),
                0.0,
            )))
        };
        let (Value::Word(v) | Value::Phrase(v) | Value::Prefix(v)) = &t.value;
        let name = grammar::Scope::NAMES
            .iter()
            .find(|(_, s)| *s == t.scope)
            .map_or("", |(n, _)| *n);
        Ok(match t.scope {
            Scope::Any => return self.text(&any_fields(&f), &t.value, positive),
            Scope::Title => return self.text(&[(f.title, 1.0)], &t.value, positive),
            Scope::RootCause => return self.text(&[(f.root_cause, 1.0)], &t.value, positive),
            Scope::Resolution => return self.text(&[(f.resolution, 1.0)], &t.value, positive),
            Scope::Labels => return self.text(&[(f.label_words, 1.0)], &t.value, positive),
            Scope::Annotations => return self.text(&[(f.annotations, 1.0)], &t.value, positive),
            Scope::Evidence => return self.text(&[(f.evidence, 1.0)], &t.value, positive),
            Scope::Service => exact(f.service, v),
            Scope::Runbook => exact(f.runbook, v),
            Scope::Status => exact(f.status, v),
            Scope::Label => exact(f.labels, v),
            Scope::Tag => exact(f.tags, v),
            Scope::Chaos => exact(f.chaos, v),
            Scope::Commit => {
                let v = v.to_ascii_lowercase();
                if v.len() < 7 || v.len() > 40 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(at(t.column, format!("commit:{v}: give 7 to 40 hex digits")));
                }
                Some(Box::new(ConstScoreQuery::new(
                    Box::new(RegexQuery::from_pattern(
                        &format!("{v}[0-9a-f]*"),
                        f.commits,
                    )?),
                    0.0,
                )))
            }
            Scope::Since => {
                let from = duration(v)
                    .and_then(|d| self.now.checked_sub_signed(d))
                    .ok_or_else(|| {
                        at(
                            t.column,
                            format!("since:{v}: a duration such as 30m, 12h, 7d or 2w"),
                        )
                    })?;
                opened(Bound::Included(from.timestamp()), Bound::Unbounded)
            }
            Scope::After | Scope::Before => {
                let when = instant(v).ok_or_else(|| {
                    at(
                        t.column,
                        format!(
                            "{name}:{v}: a date (2025-04-01) or an RFC 3339 time (2025-04-01T12:00:00Z)"
                        ),
                    )
                })?;
                if t.scope == Scope::After {
                    opened(Bound::Included(when), Bound::Unbounded)
                } else {
                    opened(Bound::Unbounded, Bound::Excluded(when))
                }
            }
        })
    }
}

/// `2025-04-01` (its midnight, UTC) or an RFC 3339 time, as epoch seconds.
fn instant(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}

/// Prefixes are letters and digits (the grammar checks), but a letter of
/// another script may still mean something to the regex engine.
fn regex_escape(p: &str) -> String {
    p.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\x{{{:x}}}", c as u32)
            }
        })
        .collect()
}

impl SearchIndex {
    /// Searches (see docs/KNOWLEDGE.md for the language): the first
    /// `limit` hits, best first.
    pub fn search(
        &self,
        q: &str,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Hit>, SearchError> {
        Ok(self.search_page(q, 0, limit, now)?.hits)
    }

    /// One page of a search: `limit` hits after the first `offset`, and
    /// how many match in all.
    pub fn search_page(
        &self,
        q: &str,
        offset: usize,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Page, SearchError> {
        let f = self.f;
        let Some(tree) = grammar::parse(q)? else {
            return Ok(Page {
                total: 0,
                hits: Vec::new(),
            });
        };
        let mut c = Compiler {
            index: self,
            now,
            highlight: Vec::new(),
        };
        let Some(query) = c.node(&tree, true)? else {
            return Ok(Page {
                total: 0,
                hits: Vec::new(),
            });
        };
        let highlight: Option<Box<dyn Query>> = match c.highlight.len() {
            0 => None,
            _ => Some(Box::new(BooleanQuery::new(
                c.highlight
                    .into_iter()
                    .map(|q| (Occur::Should, q))
                    .collect(),
            ))),
        };
        let searcher = self.reader.searcher();
        let limit = limit.max(1);
        // A few more than the page, so that equal scores can go to the
        // newer incident across the page's edge.
        let want = offset.saturating_add(limit).saturating_add(limit * 3);
        // The search library's own checks (debug assertions, found by
        // fuzzing: a negated phrase trips one in tantivy 0.27's `Exclude`
        // although the answer is right without them) must not take a
        // request, or the process, down with them: a panic in there is
        // this query's error.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            searcher.search(&query, &(TopDocs::with_limit(want).order_by_score(), Count))
        }));
        let (top, total) = match run {
            Ok(found) => found?,
            Err(_) => {
                return Err(SearchError::Query(format!(
                    "{q:?}: the search library failed on this query; rephrase it (a NOT before a phrase can do this in a debug build)"
                )));
            }
        };
        let snippets = match &highlight {
            Some(t) => Some((
                SnippetGenerator::create(&searcher, &**t, f.body)?,
                SnippetGenerator::create(&searcher, &**t, f.root_cause)?,
            )),
            None => None,
        };
        let mut found = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let opened = searcher
                .segment_reader(addr.segment_ord)
                .fast_fields()
                .i64("opened")
                .ok()
                .and_then(|col| col.first(addr.doc_id));
            found.push((score, opened, addr));
        }
        // BM25 first; equal scores to the newer incident.
        found.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        let mut hits = Vec::new();
        for (score, opened, addr) in found.into_iter().skip(offset).take(limit) {
            let d: TantivyDocument = searcher.doc(addr)?;
            let text = |field: Field| {
                d.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let snippet = match &snippets {
                Some((body, rc)) => {
                    let s = body.snippet_from_doc(&d).to_html();
                    if s.contains("<b>") {
                        s
                    } else {
                        rc.snippet_from_doc(&d).to_html()
                    }
                }
                None => String::new(),
            };
            let id = text(f.id);
            hits.push(Hit {
                link: format!("/api/v1/incidents/{id}"),
                id,
                title: text(f.title),
                score,
                status: text(f.status),
                service: text(f.service),
                runbook: d
                    .get_first(f.runbook_path)
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
                opened_at: opened.and_then(|t| DateTime::from_timestamp(t, 0)),
                snippet,
            });
        }
        Ok(Page { total, hits })
    }
}

/// `30m`, `12h`, `7d`, `2w`.
pub(super) fn duration(s: &str) -> Option<chrono::Duration> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    match unit {
        // A number too large for a duration is no duration (the plain
        // constructors panic on it).
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        "w" => chrono::Duration::try_weeks(n),
        _ => None,
    }
}
