//! Similar past incidents: the same alert and service weigh most, then
//! shared labels, then the words of annotations and evidence.

use super::*;

impl SearchIndex {
    /// The incidents most like `r`: the same alert name and service weigh
    /// most, then shared labels, then the words of its annotations and
    /// evidence. `r` itself is left out.
    pub fn similar(&self, r: &IncidentRecord, limit: usize) -> Result<Vec<Similar>, SearchError> {
        let f = self.f;
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let term = |field: Field, v: &str, boost: f32| -> (Occur, Box<dyn Query>) {
            (
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(
                        Term::from_field_text(field, v),
                        IndexRecordOption::Basic,
                    )),
                    boost,
                )),
            )
        };
        let labels: Vec<(String, String)> = r
            .alerts
            .iter()
            .flat_map(|a| a.labels.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect();
        let alertname = labels
            .iter()
            .find(|(k, _)| k == "alertname")
            .map(|(_, v)| v.clone());
        if let Some(a) = &alertname {
            should.push(term(f.labels, &format!("alertname={a}"), 4.0));
        }
        let service = r.service();
        if !service.is_empty() {
            should.push(term(f.service, &service, 3.0));
        }
        for (k, v) in &labels {
            if k != "alertname" {
                should.push(term(f.labels, &format!("{k}={v}"), 1.0));
            }
        }
        // Words of annotations and evidence, any of them.
        let words: String = r
            .alerts
            .iter()
            .flat_map(|a| a.annotations.values().cloned())
            .chain(std::iter::once(body_text(r)))
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { ' ' })
            .collect();
        let words: Vec<&str> = words
            .split_whitespace()
            .filter(|w| w.len() > 2)
            .take(64)
            .collect();
        if !words.is_empty() {
            let parser = QueryParser::for_index(&self.index, vec![f.title, f.body, f.root_cause]);
            if let Ok(q) = parser.parse_query(&words.join(" ")) {
                should.push((Occur::Should, Box::new(BoostQuery::new(q, 0.5))));
            }
        }
        if should.is_empty() {
            return Ok(Vec::new());
        }
        let mut all = should;
        all.push((
            Occur::MustNot,
            Box::new(TermQuery::new(
                Term::from_field_text(f.id, &r.id),
                IndexRecordOption::Basic,
            )),
        ));
        let query = BooleanQuery::new(all);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(limit.max(1)).order_by_score())?;
        let mut out = Vec::new();
        for (score, addr) in top {
            let d: TantivyDocument = searcher.doc(addr)?;
            let text = |field: Field| {
                d.get_first(field)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            let mut matched = Vec::new();
            let body = text(f.body).unwrap_or_default();
            if let Some(a) = &alertname
                && body.contains(&format!("alertname={a}"))
            {
                matched.push("alertname".to_string());
            }
            if !service.is_empty() && text(f.service).as_deref() == Some(service.as_str()) {
                matched.push("service".to_string());
            }
            let shared = labels
                .iter()
                .filter(|(k, _)| k != "alertname")
                .filter(|(k, v)| body.contains(&format!("{k}={v}")))
                .count();
            if shared > 0 {
                matched.push(format!("labels ({shared})"));
            }
            if matched.is_empty() {
                matched.push("text".to_string());
            }
            out.push(Similar {
                id: text(f.id).unwrap_or_default(),
                title: text(f.title).unwrap_or_default(),
                score,
                matched,
                root_cause: text(f.root_cause),
                resolution: text(f.resolution),
            });
        }
        Ok(out)
    }

    /// Likely root causes of `r`, best first: the root causes of the
    /// incidents most like it, each scored by the sum of their similarity,
    /// with the incidents that support it and the resolution of the best
    /// of them.
    pub fn hypotheses(
        &self,
        r: &IncidentRecord,
        limit: usize,
    ) -> Result<Vec<Hypothesis>, SearchError> {
        let mut by_cause: Vec<Hypothesis> = Vec::new();
        for s in self.similar(r, HYPOTHESIS_NEIGHBOURS)? {
            let Some(cause) = s.root_cause.as_deref().map(key_text) else {
                continue;
            };
            if cause.is_empty() {
                continue;
            }
            match by_cause.iter_mut().find(|h| h.cause == cause) {
                Some(h) => {
                    h.score += s.score;
                    if h.support.len() < 5 {
                        h.support.push(s.id);
                    }
                    if h.resolution.is_none() {
                        h.resolution = s.resolution;
                    }
                }
                None => by_cause.push(Hypothesis {
                    cause,
                    score: s.score,
                    support: vec![s.id],
                    resolution: s.resolution,
                }),
            }
        }
        by_cause.sort_by(|a, b| b.score.total_cmp(&a.score));
        by_cause.truncate(limit);
        Ok(by_cause)
    }
}

/// How many similar incidents vote on the hypotheses.
const HYPOTHESIS_NEIGHBOURS: usize = 25;

/// A likely root cause.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Hypothesis {
    /// The root cause, in lower case with spaces collapsed.
    pub cause: String,
    /// The summed similarity of the incidents that had it.
    pub score: f32,
    /// Those incidents (the five most similar).
    pub support: Vec<String>,
    /// How the most similar of them was resolved.
    pub resolution: Option<String>,
}
