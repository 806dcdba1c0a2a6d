//! Choosing the runbooks for an alert, with a reason for every decision:
//! Alertmanager's matching order, `continue`, suppression and the triage
//! runbook. The index for large sets is in `index.rs`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use quench_connectors::{Alert, AlertStatus};
use serde::Serialize;

use crate::model::StatusFilter;
use crate::runbook::Runbook;
use crate::suppress::{IntervalSpec, interval_contains};

/// Why a runbook did not apply to an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Skip {
    /// The alert's status is not the one the runbook reacts to.
    Status {
        /// `firing`, `resolved` or `any`.
        wanted: String,
        /// The alert's status.
        got: String,
    },
    /// The alert came from another sender.
    Source {
        /// The runbook's `match.source`.
        wanted: String,
        /// The alert's source.
        got: String,
    },
    /// A matcher failed.
    Matcher {
        /// The matcher, as written.
        matcher: String,
        /// The label value it saw (`""` for a missing label).
        seen: String,
    },
    /// An earlier runbook matched and did not say `continue: true`.
    Stopped {
        /// That runbook.
        by: String,
    },
    /// It matched, but another firing alert inhibits it.
    Inhibited {
        /// The inhibiting alert (`alertname{equal labels}`).
        by: String,
    },
    /// It matched, but one of its `mute_time` intervals holds.
    Muted {
        /// The interval.
        interval: String,
    },
    /// It matched, but none of its `active_time` intervals holds.
    Inactive {
        /// The intervals.
        intervals: Vec<String>,
    },
}

impl Skip {
    /// True when the runbook matched and was suppressed: it still ends the
    /// search (and keeps the triage runbook away), as a muted route does in
    /// Alertmanager.
    pub fn is_suppression(&self) -> bool {
        matches!(
            self,
            Skip::Inhibited { .. } | Skip::Muted { .. } | Skip::Inactive { .. }
        )
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Status { wanted, got } => write!(f, "status is {got}, runbook wants {wanted}"),
            Skip::Source { wanted, got } => write!(f, "source is {got}, runbook wants {wanted}"),
            Skip::Matcher { matcher, seen } => write!(f, "{matcher} does not hold (saw {seen:?})"),
            Skip::Stopped { by } => write!(f, "not tried: {by} matched first without continue"),
            Skip::Inhibited { by } => write!(f, "suppressed: inhibited by firing {by}"),
            Skip::Muted { interval } => write!(f, "suppressed: muted during {interval}"),
            Skip::Inactive { intervals } => {
                write!(
                    f,
                    "suppressed: outside its active time ({})",
                    intervals.join(", ")
                )
            }
        }
    }
}

/// One runbook's decision for one alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The runbook.
    pub runbook: String,
    /// Its file.
    pub path: String,
    /// `None` when it matched.
    pub skipped: Option<Skip>,
}

/// Every runbook's decision for one alert, in the order they were tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// One per runbook, highest priority first.
    pub decisions: Vec<Decision>,
    /// The triage runbook, when nothing matched and one is configured.
    pub triage: Option<String>,
}

impl Explanation {
    /// The runbooks that matched, in order (the triage runbook if none did).
    pub fn matched(&self) -> Vec<&str> {
        let m: Vec<&str> = self
            .decisions
            .iter()
            .filter(|d| d.skipped.is_none())
            .map(|d| d.runbook.as_str())
            .collect();
        if m.is_empty() {
            self.triage.iter().map(String::as_str).collect()
        } else {
            m
        }
    }

    /// One line per decision, for humans.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .decisions
            .iter()
            .map(|d| match &d.skipped {
                None => format!("{} ({}): matched", d.runbook, d.path),
                Some(s) => format!("{} ({}): skipped, {s}", d.runbook, d.path),
            })
            .collect();
        if let Some(t) = &self.triage {
            out.push(format!("{t}: triage runbook, nothing else matched"));
        }
        out
    }
}

impl Runbook {
    /// Why this runbook does not apply to the alert, or `None` if it does.
    pub fn check(&self, alert: &Alert) -> Option<Skip> {
        let status = alert.status;
        let wanted = self.file.matching.status;
        let ok = match wanted {
            StatusFilter::Firing => status == AlertStatus::Firing,
            StatusFilter::Resolved => status == AlertStatus::Resolved,
            StatusFilter::Any => true,
        };
        if !ok {
            return Some(Skip::Status {
                wanted: format!("{wanted:?}").to_lowercase(),
                got: status.as_str().to_string(),
            });
        }
        self.check_source_and_labels(alert)
    }

    /// [`Runbook::check`] without the why: no allocation, for the index.
    pub fn applies(&self, alert: &Alert) -> bool {
        let status = match self.file.matching.status {
            StatusFilter::Firing => alert.status == AlertStatus::Firing,
            StatusFilter::Resolved => alert.status == AlertStatus::Resolved,
            StatusFilter::Any => true,
        };
        status
            && self.source.as_ref().is_none_or(|s| *s == alert.source)
            && self.matchers.iter().all(|m| m.matches(&alert.labels))
    }

    fn check_source_and_labels(&self, alert: &Alert) -> Option<Skip> {
        if let Some(src) = &self.source
            && *src != alert.source
        {
            return Some(Skip::Source {
                wanted: src.to_string(),
                got: alert.source.to_string(),
            });
        }
        self.matchers
            .iter()
            .find(|m| !m.matches(&alert.labels))
            .map(|m| Skip::Matcher {
                matcher: m.to_string(),
                seen: m.seen(&alert.labels).to_string(),
            })
    }

    /// Why this matching runbook must not run now: inhibited by another
    /// firing alert, muted, or outside its active time.
    pub fn suppression(
        &self,
        alert: &Alert,
        now: DateTime<Utc>,
        intervals: &BTreeMap<String, Vec<IntervalSpec>>,
        firing: &[&Alert],
    ) -> Option<Skip> {
        for (matchers, equal) in &self.inhibit {
            let inhibitor = firing.iter().find(|other| {
                other.fingerprint != alert.fingerprint
                    && other.status == AlertStatus::Firing
                    && matchers.iter().all(|m| m.matches(&other.labels))
                    && equal.iter().all(|l| {
                        other.labels.get(l).map(String::as_str).unwrap_or("")
                            == alert.labels.get(l).map(String::as_str).unwrap_or("")
                    })
            });
            if let Some(other) = inhibitor {
                let eq: Vec<String> = equal
                    .iter()
                    .map(|l| {
                        format!(
                            "{l}={:?}",
                            other.labels.get(l).map(String::as_str).unwrap_or("")
                        )
                    })
                    .collect();
                return Some(Skip::Inhibited {
                    by: format!("{}{{{}}}", other.name(), eq.join(", ")),
                });
            }
        }
        let holds = |name: &str| {
            intervals
                .get(name)
                .is_some_and(|s| interval_contains(s, now))
        };
        if let Some(m) = self.file.mute_time.iter().find(|m| holds(&m.value)) {
            return Some(Skip::Muted {
                interval: m.value.clone(),
            });
        }
        if !self.file.active_time.is_empty()
            && !self.file.active_time.iter().any(|a| holds(&a.value))
        {
            return Some(Skip::Inactive {
                intervals: self
                    .file
                    .active_time
                    .iter()
                    .map(|a| a.value.clone())
                    .collect(),
            });
        }
        None
    }

    /// Whether source and matchers hold, whatever the alert's status. A
    /// resolved notification finds the incident its firing twin opened
    /// this way.
    pub fn matches_labels(&self, alert: &Alert) -> bool {
        self.check_source_and_labels(alert).is_none()
    }

    /// The key alerts of one incident share: the runbook name and the values
    /// of its `group_by` labels.
    pub fn group_key(&self, alert: &Alert) -> String {
        let mut key = self.name().to_string();
        for label in &self.file.group_by {
            key.push('\u{1f}');
            key.push_str(&label.value);
            key.push('=');
            key.push_str(
                alert
                    .labels
                    .get(&label.value)
                    .map(String::as_str)
                    .unwrap_or(""),
            );
        }
        key
    }
}

/// Every runbook of a directory, highest priority first.
#[derive(Debug, Clone, Default)]
pub struct RunbookSet {
    /// The runbooks in match order.
    pub runbooks: Vec<Runbook>,
    /// The runbook for alerts nothing else matches.
    pub triage: Option<String>,
    /// Named time intervals (`time-intervals.yaml`).
    pub intervals: BTreeMap<String, Vec<IntervalSpec>>,
    /// The index over equality matchers, built on first use.
    pub index: std::sync::OnceLock<crate::index::MatchIndex>,
}

impl RunbookSet {
    /// Every runbook's decision for the alert, now, with no other alert
    /// firing.
    pub fn explain(&self, alert: &Alert) -> Explanation {
        self.explain_at(alert, Utc::now(), &[])
    }

    /// Every runbook's decision for the alert at `now`, while `firing`
    /// alerts fire (for `inhibit_when`).
    pub fn explain_at(&self, alert: &Alert, now: DateTime<Utc>, firing: &[&Alert]) -> Explanation {
        let mut decisions = Vec::with_capacity(self.runbooks.len());
        let mut stopped_by: Option<&str> = None;
        for r in &self.runbooks {
            if Some(r.name()) == self.triage.as_deref() {
                continue;
            }
            let skipped = match stopped_by {
                Some(by) => Some(Skip::Stopped { by: by.to_string() }),
                None => r
                    .check(alert)
                    .or_else(|| r.suppression(alert, now, &self.intervals, firing)),
            };
            let matched = skipped.as_ref().is_none_or(Skip::is_suppression);
            if matched && !r.file.continue_matching {
                stopped_by = Some(r.name());
            }
            decisions.push(Decision {
                runbook: r.name().to_string(),
                path: r.path.clone(),
                skipped,
            });
        }
        let none_matched = decisions
            .iter()
            .all(|d| d.skipped.as_ref().is_some_and(|s| !s.is_suppression()));
        let triage = match &self.triage {
            Some(t) if none_matched && alert.status == AlertStatus::Firing => Some(t.clone()),
            _ => None,
        };
        Explanation { decisions, triage }
    }

    /// The runbooks that apply to the alert, in order (the triage runbook
    /// when nothing else does).
    pub fn select(&self, alert: &Alert) -> Vec<&Runbook> {
        self.explain(alert)
            .matched()
            .into_iter()
            .filter_map(|n| self.by_name(n))
            .collect()
    }

    /// The runbook whose incident a resolved (or firing) alert belongs to.
    /// Goes through the index: only runbooks filed under the alert's label
    /// values (and the unfiled ones, and triage) are tried.
    pub fn select_by_labels(&self, alert: &Alert) -> Vec<&Runbook> {
        let index = self.index();
        let mut positions = index.candidates(alert);
        if let Some(p) = index.triage.and_then(|p| u32::try_from(p).ok()) {
            positions.push(p);
            positions.sort_unstable();
        }
        positions
            .into_iter()
            .filter_map(|p| self.runbooks.get(p as usize))
            .filter(|r| r.matches_labels(alert))
            .collect()
    }

    /// The runbook called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Runbook> {
        self.runbooks.iter().find(|r| r.name() == name)
    }
}
