//! The query language (words, phrases, prefixes, filters) and its hits.

use super::*;

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

impl SearchIndex {
    fn text_query(&self, text: &str) -> Result<Option<Box<dyn Query>>, SearchError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let f = self.f;
        let mut parser = QueryParser::for_index(
            &self.index,
            vec![f.title, f.body, f.root_cause, f.resolution],
        );
        parser.set_conjunction_by_default();
        parser.set_field_boost(f.title, 2.0);
        parser.set_field_boost(f.root_cause, 1.5);
        parser
            .parse_query(text)
            .map(Some)
            .map_err(|e| SearchError::Query(e.to_string()))
    }

    /// Searches: words, phrases, `prefix*` and filters (see the module).
    pub fn search(
        &self,
        q: &str,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Hit>, SearchError> {
        let f = self.f;
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut words = Vec::new();
        for token in split(q) {
            let filter = token.split_once(':').filter(|(k, _)| {
                matches!(
                    *k,
                    "service"
                        | "runbook"
                        | "status"
                        | "label"
                        | "since"
                        | "commit"
                        | "tag"
                        | "chaos"
                )
            });
            if let Some((key, value)) = filter {
                let term = |field: Field, v: &str| -> Box<dyn Query> {
                    Box::new(TermQuery::new(
                        Term::from_field_text(field, v),
                        IndexRecordOption::Basic,
                    ))
                };
                let q: Box<dyn Query> = match key {
                    "service" => term(f.service, value),
                    "runbook" => term(f.runbook, value),
                    "status" => term(f.status, value),
                    "label" => term(f.labels, value),
                    "tag" => term(f.tags, value),
                    "chaos" => term(f.chaos, value),
                    "commit" => {
                        let v = value.to_ascii_lowercase();
                        if v.len() < 7 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                            return Err(SearchError::Query(format!(
                                "commit:{value}: give at least 7 hex digits"
                            )));
                        }
                        Box::new(RegexQuery::from_pattern(
                            &format!("{v}[0-9a-f]*"),
                            f.commits,
                        )?)
                    }
                    "since" => {
                        let d = duration(value).ok_or_else(|| {
                            SearchError::Query(format!(
                                "since:{value}: a duration such as 7d or 12h"
                            ))
                        })?;
                        let from = (now - d).timestamp();
                        Box::new(RangeQuery::new(
                            Bound::Included(Term::from_field_i64(f.opened, from)),
                            Bound::Unbounded,
                        ))
                    }
                    _ => unreachable!("filtered above"),
                };
                must.push((Occur::Must, q));
            } else if let Some(prefix) = token.strip_suffix('*').filter(|p| !p.starts_with('"')) {
                let p = prefix.to_lowercase();
                if p.is_empty() || !p.chars().all(|c| c.is_alphanumeric()) {
                    return Err(SearchError::Query(format!(
                        "{token}: a prefix is letters and digits followed by *"
                    )));
                }
                let any: Vec<(Occur, Box<dyn Query>)> =
                    [f.title, f.body, f.root_cause, f.resolution]
                        .into_iter()
                        .map(|field| -> Result<(Occur, Box<dyn Query>), SearchError> {
                            Ok((
                                Occur::Should,
                                Box::new(RegexQuery::from_pattern(&format!("{p}.*"), field)?),
                            ))
                        })
                        .collect::<Result<_, _>>()?;
                must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
            } else {
                words.push(token);
            }
        }
        let text = words.join(" ");
        let text_query = self.text_query(&text)?;
        if let Some(t) = &text_query {
            must.push((Occur::Must, t.box_clone()));
        }
        if must.is_empty() {
            return Ok(Vec::new());
        }
        let query = BooleanQuery::new(must);
        let searcher = self.reader.searcher();
        let top = searcher.search(
            &query,
            &TopDocs::with_limit(limit.max(1) * 4).order_by_score(),
        )?;
        let snippets = match &text_query {
            Some(t) => Some((
                SnippetGenerator::create(&searcher, &**t, f.body)?,
                SnippetGenerator::create(&searcher, &**t, f.root_cause)?,
            )),
            None => None,
        };
        let mut hits = Vec::new();
        for (score, addr) in top {
            let d: TantivyDocument = searcher.doc(addr)?;
            let text = |field: Field| {
                d.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let opened = d.get_first(f.opened).and_then(|v| v.as_i64());
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
        // BM25 first; equal scores to the newer incident.
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| b.opened_at.cmp(&a.opened_at))
        });
        hits.truncate(limit);
        Ok(hits)
    }
}

/// Splits a query into words, keeping `"quoted phrases"` (and
/// `key:"quoted value"`) whole.
pub(super) fn split(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in q.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `30m`, `12h`, `7d`, `2w`.
pub(super) fn duration(s: &str) -> Option<chrono::Duration> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    match unit {
        "m" => Some(chrono::Duration::minutes(n)),
        "h" => Some(chrono::Duration::hours(n)),
        "d" => Some(chrono::Duration::days(n)),
        "w" => Some(chrono::Duration::weeks(n)),
        _ => None,
    }
}
