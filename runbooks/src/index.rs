//! Matching at scale: an index over the runbooks' equality matchers.
//!
//! A runbook with an equality matcher on a non-empty value (`alertname="X"`)
//! can only apply to alerts that carry that exact label value, so it is
//! filed under it; the others are tried for every alert. For an alert the
//! candidates are the runbooks filed under its own label values plus the
//! unfiled ones, tried in the set's order with the same rules as
//! [`RunbookSet::explain_at`]. A runbook that is not a candidate fails a
//! matcher, so it can neither match nor stop the runbooks after it: the
//! result is the same as trying every runbook (a property test checks
//! this), at a cost that grows with the candidates, not with the set.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use quench_connectors::{Alert, AlertStatus};

use crate::load::{Decision, RunbookSet};
use crate::matcher::MatchOp;
use crate::runbook::Runbook;

/// Runbook positions by label and value, and those always tried.
#[derive(Debug, Clone, Default)]
pub struct MatchIndex {
    filed: HashMap<String, HashMap<String, Vec<u32>>>,
    always: Vec<u32>,
    /// Where the triage runbook is, if the set has one.
    pub triage: Option<usize>,
}

impl MatchIndex {
    /// Files every runbook but the triage one.
    pub fn build(runbooks: &[Runbook], triage: Option<&str>) -> MatchIndex {
        let mut index = MatchIndex::default();
        for (i, r) in runbooks.iter().enumerate() {
            if Some(r.name()) == triage {
                index.triage = Some(i);
                continue;
            }
            let Ok(pos) = u32::try_from(i) else {
                break;
            };
            // `alertname` first: it is the most selective label there is.
            let key = r
                .matchers
                .iter()
                .filter(|m| m.op == MatchOp::Equal && !m.value.is_empty())
                .min_by_key(|m| m.name != "alertname");
            match key {
                Some(m) => index
                    .filed
                    .entry(m.name.clone())
                    .or_default()
                    .entry(m.value.clone())
                    .or_default()
                    .push(pos),
                None => index.always.push(pos),
            }
        }
        index
    }

    /// The positions of the runbooks that may apply to `alert`, in order.
    pub fn candidates(&self, alert: &Alert) -> Vec<u32> {
        let mut out = self.always.clone();
        for (label, value) in &alert.labels {
            if let Some(list) = self.filed.get(label).and_then(|v| v.get(value)) {
                out.extend_from_slice(list);
            }
        }
        out.sort_unstable();
        out
    }
}

/// What the index decided for one alert.
#[derive(Debug, Clone)]
pub struct Matching<'a> {
    /// The runbooks that apply, in order (the triage runbook when nothing
    /// else does and the alert fires).
    pub runbooks: Vec<&'a Runbook>,
    /// The decisions for the runbooks whose matchers hold (matched, or
    /// suppressed), in order.
    pub decisions: Vec<Decision>,
    /// Runbooks tried or ruled out by the index whose matchers do not hold.
    pub ruled_out: usize,
    /// Runbooks after one that matched without `continue`.
    pub not_tried: usize,
    /// The runbook that stopped the others.
    pub stopped_by: Option<String>,
    /// The triage runbook, when it is the one that applies.
    pub triage: Option<String>,
}

impl RunbookSet {
    /// The index over the set's equality matchers, built on first use.
    pub fn index(&self) -> &MatchIndex {
        self.index
            .get_or_init(|| MatchIndex::build(&self.runbooks, self.triage.as_deref()))
    }

    /// The runbooks that apply to the alert at `now` while `firing` alerts
    /// fire, through the index: the same as [`RunbookSet::explain_at`]'s
    /// matches, with decisions only for the runbooks whose matchers hold
    /// and counts for the rest.
    pub fn matching_at(
        &self,
        alert: &Alert,
        now: DateTime<Utc>,
        firing: &[&Alert],
    ) -> Matching<'_> {
        let index = self.index();
        let triage_pos = index.triage;
        let tried = self.runbooks.len() - usize::from(triage_pos.is_some());
        let mut out = Matching {
            runbooks: Vec::new(),
            decisions: Vec::new(),
            ruled_out: 0,
            not_tried: 0,
            stopped_by: None,
            triage: None,
        };
        for pos in index.candidates(alert) {
            let Some(r) = self.runbooks.get(pos as usize) else {
                continue;
            };
            if !r.applies(alert) {
                continue;
            }
            let skipped = r.suppression(alert, now, &self.intervals, firing);
            if skipped.is_none() {
                out.runbooks.push(r);
            }
            out.decisions.push(Decision {
                runbook: r.name().to_string(),
                path: r.path.clone(),
                skipped,
            });
            if !r.file.continue_matching {
                // Matched without `continue`: the rest are not tried.
                let pos = pos as usize;
                out.not_tried = self.runbooks.len()
                    - pos
                    - 1
                    - usize::from(triage_pos.is_some_and(|t| t > pos));
                out.stopped_by = Some(r.name().to_string());
                break;
            }
        }
        out.ruled_out = tried - out.decisions.len() - out.not_tried;
        if out.decisions.is_empty()
            && alert.status == AlertStatus::Firing
            && let Some(t) = triage_pos.and_then(|p| self.runbooks.get(p))
        {
            out.runbooks.push(t);
            out.triage = Some(t.name().to_string());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use proptest::prelude::*;
    use quench_connectors::Source;

    use super::*;
    use crate::load::Skip;

    const MATCHERS: &[&str] = &[
        "alertname=\"A\"",
        "alertname=\"B\"",
        "service=\"x\"",
        "service=\"y\"",
        "service=\"\"",
        "severity=~\"crit|warn\"",
        "team!=\"ops\"",
        "env!~\"dev.*\"",
        "alertname=~\"A|C\"",
    ];

    fn set_of(specs: &[(Vec<usize>, i32, bool, u8)], triage: bool) -> RunbookSet {
        let mut runbooks = Vec::new();
        for (i, (ms, priority, cont, status)) in specs.iter().enumerate() {
            let matchers: Vec<String> = ms.iter().map(|m| format!("'{}'", MATCHERS[*m])).collect();
            let status = ["firing", "resolved", "any"][*status as usize % 3];
            let yaml = format!(
                "version: 1\nname: r{i}\npriority: {priority}\ncontinue: {cont}\nmatch:\n  status: {status}\n  matchers: [{}]\nsteps: []\n",
                matchers.join(", ")
            );
            let name = format!("r{i}.yaml");
            runbooks.push(crate::parse_runbook(Path::new(&name), &name, &yaml).unwrap());
        }
        if triage {
            let yaml = "version: 1\nname: triage\nmatch: {}\nsteps: []\n";
            runbooks.push(crate::parse_runbook(Path::new("t.yaml"), "t.yaml", yaml).unwrap());
        }
        runbooks.sort_by(|a, b| {
            b.file
                .priority
                .cmp(&a.file.priority)
                .then_with(|| a.name().cmp(b.name()))
        });
        RunbookSet {
            runbooks,
            triage: triage.then(|| "triage".to_string()),
            ..Default::default()
        }
    }

    fn alert_of(labels: &[(usize, usize)], firing: bool) -> Alert {
        const NAMES: &[&str] = &["alertname", "service", "severity", "team", "env"];
        const VALUES: &[&str] = &["A", "B", "C", "x", "y", "crit", "warn", "ops", "dev1", ""];
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(n, v)| (NAMES[*n].to_string(), VALUES[*v].to_string()))
            .collect();
        Alert {
            source: Source::Alertmanager,
            fingerprint: "f".into(),
            status: if firing {
                AlertStatus::Firing
            } else {
                AlertStatus::Resolved
            },
            labels,
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            meta: BTreeMap::new(),
            idempotency_key: "k".into(),
            raw_ref: String::new(),
        }
    }

    proptest! {
        #[test]
        fn the_index_selects_what_trying_every_runbook_selects(
            specs in proptest::collection::vec(
                (proptest::collection::vec(0..MATCHERS.len(), 0..3), -2..3i32, any::<bool>(), 0..3u8),
                0..12,
            ),
            triage in any::<bool>(),
            labels in proptest::collection::vec((0..5usize, 0..10usize), 0..5),
            firing in any::<bool>(),
        ) {
            let set = set_of(&specs, triage);
            let alert = alert_of(&labels, firing);
            let now = Utc::now();
            let slow = set.explain_at(&alert, now, &[]);
            let fast = set.matching_at(&alert, now, &[]);
            let fast_names: Vec<&str> = fast.runbooks.iter().map(|r| r.name()).collect();
            prop_assert_eq!(fast_names, slow.matched());
            // Every decision the index wrote is the one trying all made,
            // and the counts account for the others.
            for d in &fast.decisions {
                prop_assert!(slow.decisions.contains(d), "{:?}", d);
            }
            let stopped = slow
                .decisions
                .iter()
                .filter(|d| matches!(d.skipped, Some(Skip::Stopped { .. })))
                .count();
            prop_assert_eq!(fast.not_tried, stopped);
            prop_assert_eq!(
                fast.decisions.len() + fast.ruled_out + fast.not_tried,
                slow.decisions.len()
            );
            // Resolved alerts find their runbooks by labels alone.
            let by_labels: Vec<&str> = set.select_by_labels(&alert).iter().map(|r| r.name()).collect();
            let all: Vec<&str> = set
                .runbooks
                .iter()
                .filter(|r| r.matches_labels(&alert))
                .map(|r| r.name())
                .collect();
            prop_assert_eq!(by_labels, all);
        }
    }

    #[test]
    fn equality_matchers_file_runbooks_and_empty_values_do_not() {
        let set = set_of(
            &[
                (vec![0, 2], 0, false, 0),
                (vec![4], 0, false, 0),
                (vec![5], 0, false, 0),
            ],
            false,
        );
        let index = MatchIndex::build(&set.runbooks, None);
        // r0 is filed under alertname=A; `service=""` matches a missing
        // label, and a regex files nothing: r1 and r2 are always tried.
        assert_eq!(index.always.len(), 2);
        assert_eq!(index.filed["alertname"]["A"].len(), 1);
        assert_eq!(index.candidates(&alert_of(&[(0, 1)], true)).len(), 2);
        assert_eq!(index.candidates(&alert_of(&[(0, 0)], true)).len(), 3);
    }
}
