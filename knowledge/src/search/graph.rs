//! The knowledge graph: services, root causes, hot functions, runbooks and
//! commits, linked through the incidents that carry them, and walked from
//! any one of them. Computed from the search index's columns (fast
//! fields), so a walk reads a few numbers per matching incident and never
//! the stored records; only the handful of incidents it lists are read.

use super::*;
use std::collections::{BTreeMap, HashMap};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

/// Where a walk starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `service:cart`
    Service(String),
    /// `cause:dns` — incidents whose root cause has these words, in order.
    Cause(String),
    /// `function:runtime.mallocgc` — among a profile's five hottest.
    Function(String),
    /// `runbook:redis-down`
    Runbook(String),
}

impl Node {
    /// `service:cart`, `cause:"dns timeout"`, `function:main.(*Pool).Get`,
    /// `runbook:redis-down`.
    pub fn parse(s: &str) -> Result<Node, SearchError> {
        let bad = || {
            SearchError::Query(format!(
                "{s:?}: walk from service:NAME, cause:WORDS, function:NAME or runbook:NAME"
            ))
        };
        let (kind, value) = s.split_once(':').ok_or_else(bad)?;
        let value = value.trim().trim_matches('"').trim();
        if value.is_empty() || value.len() > 512 {
            return Err(bad());
        }
        let value = value.to_string();
        Ok(match kind {
            "service" => Node::Service(value),
            "cause" => Node::Cause(value),
            "function" => Node::Function(value),
            "runbook" => Node::Runbook(value),
            _ => return Err(bad()),
        })
    }
}

/// A value and how many incidents link to it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Count {
    /// The service, cause, function, resolution, commit, ...
    pub name: String,
    /// Incidents.
    pub incidents: usize,
}

/// A runbook as seen from a walk.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RunbookStats {
    /// Its name.
    pub name: String,
    /// Incidents it ran for.
    pub runs: usize,
    /// Runs that can be judged (not cancelled, not a dry run).
    pub judged: usize,
    /// Of those, how many succeeded (for a run from a record: the
    /// outcome; for an imported incident without one: resolved).
    pub succeeded: usize,
    /// `succeeded / judged`, when anything was judged.
    pub success_rate: Option<f64>,
    /// Median seconds from the first alert to resolution.
    pub median_ttr_seconds: Option<i64>,
    /// Mean of the same (MTTR).
    pub mttr_seconds: Option<f64>,
    /// Each outcome (succeeded, failed, escalated, resolved, ...).
    pub outcomes: Vec<Count>,
}

/// One incident a walk lists.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Linked {
    /// The incident.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its service.
    pub service: String,
    /// Its status.
    pub status: String,
    /// When it opened.
    pub opened_at: Option<DateTime<Utc>>,
}

/// What a walk finds.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct View {
    /// `service`, `cause`, `function` or `runbook`.
    pub kind: String,
    /// The start.
    pub name: String,
    /// Incidents linked to it.
    pub incidents: usize,
    /// Incidents per month (`2025-04`), oldest first.
    pub by_month: Vec<Count>,
    /// Services, most incidents first.
    pub services: Vec<Count>,
    /// Root causes, most frequent first.
    pub causes: Vec<Count>,
    /// Resolutions of the resolved incidents, most frequent first.
    pub resolutions: Vec<Count>,
    /// Functions hot in their profiles, most incidents first.
    pub functions: Vec<Count>,
    /// Runbooks that ran for them.
    pub runbooks: Vec<RunbookStats>,
    /// Commits linked to them.
    pub commits: Vec<Count>,
    /// The most recent of them.
    pub recent: Vec<Linked>,
    /// The most recent where a human acknowledged or approved.
    pub human: Vec<Linked>,
    /// How many had a human step in.
    pub human_count: usize,
}

/// How many entries each list of a view keeps.
const TOP: usize = 10;

#[derive(Default)]
struct RunAgg {
    runs: usize,
    judged: usize,
    succeeded: usize,
    ttrs: Vec<i64>,
    outcomes: HashMap<String, usize>,
}

#[derive(Default)]
struct Agg {
    count: usize,
    months: BTreeMap<String, usize>,
    services: HashMap<String, usize>,
    causes: HashMap<String, usize>,
    resolutions: HashMap<String, usize>,
    functions: HashMap<String, usize>,
    commits: HashMap<String, usize>,
    runbooks: HashMap<String, RunAgg>,
    /// (opened, doc): the newest TOP.
    recent: Vec<(i64, DocAddress)>,
    human: Vec<(i64, DocAddress)>,
    human_count: usize,
}

fn keep_newest(v: &mut Vec<(i64, DocAddress)>, item: (i64, DocAddress)) {
    if v.len() < TOP {
        v.push(item);
    } else if let Some((i, oldest)) = v
        .iter()
        .enumerate()
        .min_by_key(|(_, x)| x.0)
        .map(|(i, x)| (i, x.0))
        && oldest < item.0
    {
        v[i] = item;
    }
}

fn add_all<K: std::hash::Hash + Eq>(into: &mut HashMap<K, usize>, from: HashMap<K, usize>) {
    for (k, n) in from {
        *into.entry(k).or_default() += n;
    }
}

impl Agg {
    fn merge(&mut self, o: Agg) {
        self.count += o.count;
        for (k, n) in o.months {
            *self.months.entry(k).or_default() += n;
        }
        add_all(&mut self.services, o.services);
        add_all(&mut self.causes, o.causes);
        add_all(&mut self.resolutions, o.resolutions);
        add_all(&mut self.functions, o.functions);
        add_all(&mut self.commits, o.commits);
        for (k, r) in o.runbooks {
            let e = self.runbooks.entry(k).or_default();
            e.runs += r.runs;
            e.judged += r.judged;
            e.succeeded += r.succeeded;
            e.ttrs.extend(r.ttrs);
            add_all(&mut e.outcomes, r.outcomes);
        }
        for x in o.recent {
            keep_newest(&mut self.recent, x);
        }
        for x in o.human {
            keep_newest(&mut self.human, x);
        }
        self.human_count += o.human_count;
    }
}

struct GraphCollector;

struct Columns {
    opened: Column<i64>,
    ttr: Column<i64>,
    human: Column<u64>,
    service: Option<StrColumn>,
    runbook: Option<StrColumn>,
    cause: Option<StrColumn>,
    fix: Option<StrColumn>,
    functions: Option<StrColumn>,
    outcome: Option<StrColumn>,
    commits: Option<StrColumn>,
}

struct SegmentGraph {
    segment: SegmentOrdinal,
    c: Columns,
    agg: Agg,
    /// Counted by term ordinal in the segment, named at harvest.
    services: HashMap<u64, usize>,
    causes: HashMap<u64, usize>,
    fixes: HashMap<u64, usize>,
    functions: HashMap<u64, usize>,
    commits: HashMap<u64, usize>,
    /// (runbook ord, outcome ord, ttr)
    runs: Vec<(u64, Option<u64>, Option<i64>)>,
}

impl Collector for GraphCollector {
    type Fruit = Agg;
    type Child = SegmentGraph;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        r: &SegmentReader,
    ) -> tantivy::Result<SegmentGraph> {
        let ff = r.fast_fields();
        Ok(SegmentGraph {
            segment,
            c: Columns {
                opened: ff.i64("opened")?,
                ttr: ff.i64("ttr")?,
                human: ff.u64("human")?,
                service: ff.str("service")?,
                runbook: ff.str("runbook")?,
                cause: ff.str("cause")?,
                fix: ff.str("fix")?,
                functions: ff.str("functions")?,
                outcome: ff.str("outcome")?,
                commits: ff.str("commit_refs")?,
            },
            agg: Agg::default(),
            services: HashMap::new(),
            causes: HashMap::new(),
            fixes: HashMap::new(),
            functions: HashMap::new(),
            commits: HashMap::new(),
            runs: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Agg>) -> tantivy::Result<Agg> {
        let mut all = Agg::default();
        for f in fruits {
            all.merge(f);
        }
        Ok(all)
    }
}

fn first_ord(col: &Option<StrColumn>, doc: DocId) -> Option<u64> {
    col.as_ref().and_then(|c| c.term_ords(doc).next())
}

fn count_ords(col: &Option<StrColumn>, doc: DocId, into: &mut HashMap<u64, usize>) {
    if let Some(c) = col {
        for ord in c.term_ords(doc) {
            *into.entry(ord).or_default() += 1;
        }
    }
}

fn name_of(col: &Option<StrColumn>, ord: u64) -> String {
    let mut s = String::new();
    if let Some(c) = col {
        let _ = c.ord_to_str(ord, &mut s);
    }
    s
}

fn named(col: &Option<StrColumn>, counts: HashMap<u64, usize>) -> HashMap<String, usize> {
    counts
        .into_iter()
        .map(|(ord, n)| (name_of(col, ord), n))
        .collect()
}

impl SegmentCollector for SegmentGraph {
    type Fruit = Agg;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let c = &self.c;
        self.agg.count += 1;
        let opened = c.opened.first(doc).unwrap_or(0);
        if let Some(t) = DateTime::from_timestamp(opened, 0) {
            *self
                .agg
                .months
                .entry(t.format("%Y-%m").to_string())
                .or_default() += 1;
        }
        let addr = DocAddress::new(self.segment, doc);
        keep_newest(&mut self.agg.recent, (opened, addr));
        if c.human.first(doc).unwrap_or(0) == 1 {
            self.agg.human_count += 1;
            keep_newest(&mut self.agg.human, (opened, addr));
        }
        count_ords(&c.service, doc, &mut self.services);
        count_ords(&c.cause, doc, &mut self.causes);
        count_ords(&c.functions, doc, &mut self.functions);
        count_ords(&c.commits, doc, &mut self.commits);
        let ttr = c.ttr.first(doc);
        if ttr.is_some() {
            count_ords(&c.fix, doc, &mut self.fixes);
        }
        if let Some(rb) = first_ord(&c.runbook, doc) {
            self.runs.push((rb, first_ord(&c.outcome, doc), ttr));
        }
    }

    fn harvest(mut self) -> Agg {
        let c = &self.c;
        self.agg.services = named(&c.service, self.services);
        self.agg.causes = named(&c.cause, self.causes);
        self.agg.resolutions = named(&c.fix, self.fixes);
        self.agg.functions = named(&c.functions, self.functions);
        self.agg.commits = named(&c.commits, self.commits);
        let mut outcome_names: HashMap<u64, String> = HashMap::new();
        let mut runbook_names: HashMap<u64, String> = HashMap::new();
        for (rb, outcome, ttr) in self.runs {
            let name = runbook_names
                .entry(rb)
                .or_insert_with(|| name_of(&c.runbook, rb))
                .clone();
            let outcome = outcome
                .map(|o| {
                    outcome_names
                        .entry(o)
                        .or_insert_with(|| name_of(&c.outcome, o))
                        .clone()
                })
                .unwrap_or_default();
            let e = self.agg.runbooks.entry(name).or_default();
            e.runs += 1;
            // A run's outcome, or an imported incident's status.
            let (judged, ok) = match outcome.as_str() {
                "succeeded" | "resolved" => (true, true),
                "failed" | "escalated" | "interrupted" => (true, false),
                _ => (false, false),
            };
            e.judged += usize::from(judged);
            e.succeeded += usize::from(ok);
            if let Some(t) = ttr {
                e.ttrs.push(t);
            }
            *e.outcomes.entry(outcome).or_default() += 1;
        }
        self.agg
    }
}

fn top(m: HashMap<String, usize>) -> Vec<Count> {
    let mut v: Vec<Count> = m
        .into_iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(name, incidents)| Count { name, incidents })
        .collect();
    v.sort_by(|a, b| {
        b.incidents
            .cmp(&a.incidents)
            .then_with(|| a.name.cmp(&b.name))
    });
    v.truncate(TOP);
    v
}

impl SearchIndex {
    /// Walks the graph from `node`.
    pub fn graph(&self, node: &Node) -> Result<View, SearchError> {
        let f = self.f;
        let exact = |field: Field, v: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, v),
                IndexRecordOption::Basic,
            ))
        };
        let (kind, name, query): (&str, &str, Box<dyn Query>) = match node {
            Node::Service(s) => ("service", s, exact(f.service, s)),
            Node::Runbook(r) => ("runbook", r, exact(f.runbook, r)),
            Node::Function(func) => ("function", func, exact(f.functions, func)),
            Node::Cause(words) => {
                let q = self.phrase_in(f.root_cause, words)?;
                ("cause", words, q)
            }
        };
        let searcher = self.reader.searcher();
        let agg = searcher.search(&*query, &GraphCollector)?;
        let linked = |mut docs: Vec<(i64, DocAddress)>| -> Result<Vec<Linked>, SearchError> {
            docs.sort_by_key(|d| std::cmp::Reverse(d.0));
            let mut out = Vec::new();
            for (opened, addr) in docs {
                let d: TantivyDocument = searcher.doc(addr)?;
                let text = |field: Field| {
                    d.get_first(field)
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_string()
                };
                out.push(Linked {
                    id: text(f.id),
                    title: text(f.title),
                    service: text(f.service),
                    status: text(f.status),
                    opened_at: DateTime::from_timestamp(opened, 0),
                });
            }
            Ok(out)
        };
        let mut runbooks: Vec<RunbookStats> = agg
            .runbooks
            .into_iter()
            .map(|(name, mut r)| {
                r.ttrs.sort_unstable();
                RunbookStats {
                    name,
                    runs: r.runs,
                    judged: r.judged,
                    succeeded: r.succeeded,
                    success_rate: (r.judged > 0).then(|| r.succeeded as f64 / r.judged as f64),
                    median_ttr_seconds: r.ttrs.get(r.ttrs.len() / 2).copied(),
                    mttr_seconds: (!r.ttrs.is_empty())
                        .then(|| r.ttrs.iter().sum::<i64>() as f64 / r.ttrs.len() as f64),
                    outcomes: top(r.outcomes),
                }
            })
            .collect();
        runbooks.sort_by(|a, b| b.runs.cmp(&a.runs).then_with(|| a.name.cmp(&b.name)));
        runbooks.truncate(TOP);
        Ok(View {
            kind: kind.into(),
            name: name.into(),
            incidents: agg.count,
            by_month: agg
                .months
                .into_iter()
                .map(|(name, incidents)| Count { name, incidents })
                .collect(),
            services: top(agg.services),
            causes: top(agg.causes),
            resolutions: top(agg.resolutions),
            functions: top(agg.functions),
            runbooks,
            commits: top(agg.commits),
            recent: linked(agg.recent)?,
            human: linked(agg.human)?,
            human_count: agg.human_count,
        })
    }

    /// The words of `text` in `field`, in order (one word: a term).
    fn phrase_in(&self, field: Field, text: &str) -> Result<Box<dyn Query>, SearchError> {
        let mut analyzer = self.index.tokenizer_for_field(field)?;
        let mut stream = analyzer.token_stream(text);
        let mut words = Vec::new();
        stream.process(&mut |t| words.push(Term::from_field_text(field, &t.text)));
        Ok(match words.len() {
            0 => {
                return Err(SearchError::Query(format!(
                    "cause:{text:?} has no words to look for"
                )));
            }
            1 => Box::new(TermQuery::new(words.remove(0), IndexRecordOption::Basic)),
            _ => Box::new(tantivy::query::PhraseQuery::new(words)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_parse_and_bad_ones_say_how() {
        assert_eq!(
            Node::parse("service:cart").unwrap(),
            Node::Service("cart".into())
        );
        assert_eq!(
            Node::parse("cause:\"dns timeout\"").unwrap(),
            Node::Cause("dns timeout".into())
        );
        assert_eq!(
            Node::parse("function:main.(*Pool).Get").unwrap(),
            Node::Function("main.(*Pool).Get".into())
        );
        for bad in ["cart", "team:x", "service:", "service:\"\""] {
            let e = Node::parse(bad).unwrap_err().to_string();
            assert!(e.contains("walk from service:NAME"), "{bad}: {e}");
        }
    }
}
