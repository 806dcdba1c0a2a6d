//! The response KPIs from the index's columns: each incident's
//! [`Fact`](crate::kpi::Fact) is kept in five fast fields, so the KPIs of
//! 100,000 incidents are a sum over a few numbers each, with no record read.
//! The same sums as [`crate::kpi::stats`] over the records (a test holds
//! them equal), as of what the index has taken in.

use super::*;
use crate::kpi::{By, Fact, Kpis, Sum, group_name};
use std::collections::{BTreeMap, HashMap};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

struct KpiCollector {
    by: By,
}

struct SegmentKpis {
    by: By,
    detect: Column<i64>,
    ack: Column<i64>,
    resolve: Column<i64>,
    run: Column<u64>,
    flags: Column<u64>,
    /// The service or runbook column, by [`By`].
    group: Option<StrColumn>,
    /// Sums per term ordinal of `group` (`None`: no value).
    sums: HashMap<Option<u64>, Sum>,
}

impl Collector for KpiCollector {
    type Fruit = BTreeMap<String, Sum>;
    type Child = SegmentKpis;

    fn for_segment(&self, _: SegmentOrdinal, r: &SegmentReader) -> tantivy::Result<SegmentKpis> {
        let ff = r.fast_fields();
        Ok(SegmentKpis {
            by: self.by,
            detect: ff.i64("detect_ms")?,
            ack: ff.i64("ack_ms")?,
            resolve: ff.i64("resolve_ms")?,
            run: ff.u64("run_bits")?,
            flags: ff.u64("flags")?,
            group: match self.by {
                By::Overall => None,
                By::Service => ff.str("service")?,
                By::Runbook => ff.str("runbook")?,
            },
            sums: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<BTreeMap<String, Sum>>) -> tantivy::Result<Self::Fruit> {
        let mut all: BTreeMap<String, Sum> = BTreeMap::new();
        for f in fruits {
            for (k, s) in f {
                all.entry(k).or_default().merge(&s);
            }
        }
        Ok(all)
    }
}

impl SegmentCollector for SegmentKpis {
    type Fruit = BTreeMap<String, Sum>;

    fn collect(&mut self, doc: DocId, _: Score) {
        let mut fact = Fact {
            detect_ms: self.detect.first(doc).unwrap_or(0),
            ack_ms: self.ack.first(doc),
            resolve_ms: self.resolve.first(doc),
            ..Fact::default()
        };
        fact.set_bits(
            self.run.first(doc).unwrap_or(0),
            self.flags.first(doc).unwrap_or(0),
        );
        let group = self.group.as_ref().and_then(|c| c.term_ords(doc).next());
        self.sums.entry(group).or_default().add(&fact);
    }

    fn harvest(self) -> Self::Fruit {
        let mut out: BTreeMap<String, Sum> = BTreeMap::new();
        for (ord, sum) in self.sums {
            let mut name = String::new();
            if let (Some(c), Some(ord)) = (&self.group, ord) {
                let _ = c.ord_to_str(ord, &mut name);
            }
            let key = match self.by {
                By::Runbook => group_name(self.by, "", Some(&name)),
                _ => group_name(self.by, &name, None),
            };
            out.entry(key).or_default().merge(&sum);
        }
        out
    }
}

impl SearchIndex {
    /// The KPIs of the incidents opened since `since` (to the second),
    /// split by `by`, from the index's columns.
    pub fn kpis(
        &self,
        since: DateTime<Utc>,
        by: By,
    ) -> Result<BTreeMap<String, Kpis>, SearchError> {
        let query = RangeQuery::new(
            Bound::Included(Term::from_field_i64(self.f.opened, since.timestamp())),
            Bound::Unbounded,
        );
        let sums = self
            .reader
            .searcher()
            .search(&query, &KpiCollector { by })?;
        Ok(sums.into_iter().map(|(k, s)| (k, s.kpis())).collect())
    }
}
