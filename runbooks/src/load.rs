//! Loading runbooks: parse, validate (every problem, with its place), and
//! choose the runbooks for an alert, with a reason for every decision.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use quench_connectors::steps::StepType;
use quench_connectors::{Alert, AlertStatus, Source};
use serde::Serialize;
use serde_saphyr::{Location, MessageFormatter, Spanned};

use crate::diag::{Code, Diagnostic};
use crate::matcher::{Matcher, is_label_name};
use crate::model::{RunbookFile, StatusFilter, StepFile};
pub use crate::runbook::Runbook;
use crate::runbook::{Gate, Retry, Step, Verify};
use crate::suppress::{IntervalSpec, IntervalsFile, interval_contains};
use crate::template::Templates;

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
    /// The runbook's name.
    pub fn name(&self) -> &str {
        &self.file.name.value
    }

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
        let index = self.index.get_or_init(|| {
            crate::index::MatchIndex::build(&self.runbooks, self.triage.as_deref())
        });
        let mut positions = index.candidates(alert);
        if let Some(t) = self.triage.as_deref()
            && let Some(p) = self.runbooks.iter().position(|r| r.name() == t)
            && let Ok(p) = u32::try_from(p)
        {
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

/// A diagnostic at a YAML location.
pub fn at(
    file: &Path,
    loc: &Location,
    code: Code,
    path: impl Into<String>,
    message: impl Into<String>,
) -> Diagnostic {
    Diagnostic {
        file: file.to_path_buf(),
        line: loc.line(),
        column: loc.column(),
        code,
        path: path.into(),
        message: message.into(),
    }
}

/// A diagnostic at a spanned value's place.
pub fn spanned_at<T>(
    file: &Path,
    s: &Spanned<T>,
    code: Code,
    path: impl Into<String>,
    message: impl Into<String>,
) -> Diagnostic {
    at(file, &s.referenced, code, path, message)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// RB018 for one `with` map: each key must name a parameter of the step
/// type (values are not checked, they may be templates). An unknown step
/// type is reported elsewhere.
fn check_param_names(
    file: &Path,
    text: &str,
    uses: &str,
    with: &Option<Spanned<serde_json::Map<String, serde_json::Value>>>,
    base: &str,
    out: &mut Vec<Diagnostic>,
) {
    let (Some(with), Some(t)) = (with, StepType::from_name(uses)) else {
        return;
    };
    for key in with.value.keys() {
        if let Some(e) = t.unknown_param(key) {
            let mut d = spanned_at(
                file,
                with,
                Code::UnknownParam,
                format!("{base}.with.{key}"),
                format!("{t}: {e}"),
            );
            (d.line, d.column) = crate::diag::key_position(text, &with.referenced, key);
            out.push(d);
        }
    }
}

fn check_duration(
    file: &Path,
    d: &Option<Spanned<String>>,
    path: &str,
    out: &mut Vec<Diagnostic>,
) -> Option<Duration> {
    let d = d.as_ref()?;
    match crate::duration::parse(&d.value) {
        Ok(v) => Some(v),
        Err(e) => {
            out.push(spanned_at(file, d, Code::Duration, path, e));
            None
        }
    }
}

/// Checks a list of steps; returns those that are valid, in types.
fn check_steps(
    file: &Path,
    text: &str,
    list: &str,
    steps: &[StepFile],
    ids: &mut Vec<String>,
    out: &mut Vec<Diagnostic>,
) -> Vec<Step> {
    let mut typed = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let base = format!("{list}[{i}]");
        let id = &s.id.value;
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            out.push(spanned_at(file, &s.id, Code::StepId, format!("{base}.id"), format!("step id {id:?} must be lowercase letters, digits and '_' (templates use steps.<id>)")));
        } else if ids.contains(id) {
            out.push(spanned_at(
                file,
                &s.id,
                Code::DuplicateStep,
                format!("{base}.id"),
                format!("step id {id:?} is used twice"),
            ));
        } else {
            ids.push(id.clone());
        }
        let kind = StepType::from_name(&s.uses.value);
        if kind.is_none() {
            out.push(spanned_at(
                file,
                &s.uses,
                Code::UnknownStep,
                format!("{base}.uses"),
                format!(
                    "unknown step type {:?}; valid step types: {}",
                    s.uses.value,
                    StepType::names()
                ),
            ));
        }
        check_param_names(file, text, &s.uses.value, &s.with, &base, out);
        if let Some(with) = &s.with {
            let value = serde_json::Value::Object(with.value.clone());
            let mut strings = Vec::new();
            Templates::strings(&value, format!("{base}.with"), &mut strings);
            for (path, text) in strings {
                if let Err(e) = Templates::check(text) {
                    out.push(spanned_at(file, with, Code::Template, path, e));
                }
            }
        }
        if let Some(when) = &s.when
            && let Err(e) = Templates::check(&when.value)
        {
            out.push(spanned_at(
                file,
                when,
                Code::Template,
                format!("{base}.when"),
                e,
            ));
        }
        let timeout = check_duration(file, &s.timeout, &format!("{base}.timeout"), out);
        let backoff = s.retries.as_ref().and_then(|r| {
            check_duration(file, &r.backoff, &format!("{base}.retries.backoff"), out)
        });
        let gate_timeout = s.approval.as_ref().and_then(|a| {
            check_duration(file, &a.timeout, &format!("{base}.approval.timeout"), out)
        });
        if let Some(kind) = kind {
            typed.push(Step {
                id: id.clone(),
                kind,
                with: s.with.as_ref().map(|w| w.value.clone()).unwrap_or_default(),
                when: s.when.as_ref().map(|w| w.value.clone()),
                timeout,
                retry: Retry {
                    attempts: s.retries.as_ref().map_or(0, |r| r.attempts),
                    backoff: backoff.unwrap_or(crate::runbook::DEFAULT_BACKOFF),
                },
                continue_on_error: s.continue_on_error,
                approval: s.approval.as_ref().filter(|a| a.required).map(|a| Gate {
                    timeout: gate_timeout,
                    on_timeout: a.on_timeout,
                }),
            });
        }
    }
    typed
}

/// Parses YAML straight into `T`; a syntax or shape error is RB001 at its
/// position.
/// Parses YAML into `T` (strict booleans), a syntax or shape problem as
/// one RB001 diagnostic with its place.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, Vec<Diagnostic>> {
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let loc = e.location().unwrap_or(Location::UNKNOWN);
        let message = serde_saphyr::DefaultMessageFormatter
            .format_message(e.without_snippet())
            .into_owned();
        vec![at(file, &loc, Code::Syntax, "", message)]
    })
}

/// Every file format here is `version: 1`.
pub fn check_version(file: &Path, version: &Spanned<u32>, out: &mut Vec<Diagnostic>) {
    if version.value != 1 {
        out.push(spanned_at(
            file,
            version,
            Code::Version,
            "version",
            format!("version {} is not supported (expected 1)", version.value),
        ));
    }
}

/// Whether a file is a chaos experiment (`*.chaos.yaml`), which lives in
/// the same repository as the runbooks and is loaded by the chaos crate.
pub fn is_experiment(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".chaos.yaml") || n.ends_with(".chaos.yml"))
}

/// Parses and validates one runbook. `file` names it in diagnostics, `rel`
/// is its path inside the runbook directory. Reports every problem.
pub fn parse_runbook(file: &Path, rel: &str, text: &str) -> Result<Runbook, Vec<Diagnostic>> {
    let parsed: RunbookFile = parse_yaml(file, text)?;
    let mut out = Vec::new();
    check_version(file, &parsed.version, &mut out);
    if !is_name(&parsed.name.value) {
        out.push(spanned_at(
            file,
            &parsed.name,
            Code::Name,
            "name",
            format!(
                "runbook name {:?} must be lowercase letters, digits, '-' or '_'",
                parsed.name.value
            ),
        ));
    }
    let mut matchers = Vec::new();
    for (i, m) in parsed.matching.matchers.iter().enumerate() {
        match Matcher::parse(&m.value) {
            Ok(m) => matchers.push(m),
            Err(e) => out.push(spanned_at(
                file,
                m,
                Code::Matcher,
                format!("match.matchers[{i}]"),
                e,
            )),
        }
    }
    let mut source = None;
    if let Some(src) = &parsed.matching.source {
        match src.value.parse::<Source>() {
            Ok(s) => source = Some(s),
            Err(e) => out.push(spanned_at(file, src, Code::Source, "match.source", e)),
        }
    }
    for (i, g) in parsed.group_by.iter().enumerate() {
        if !is_label_name(&g.value) {
            out.push(spanned_at(
                file,
                g,
                Code::GroupBy,
                format!("group_by[{i}]"),
                format!("{:?} is not a label name", g.value),
            ));
        }
    }
    let mut inhibit = Vec::new();
    for (i, rule) in parsed.inhibit_when.iter().enumerate() {
        let mut ms = Vec::new();
        for (j, m) in rule.matchers.iter().enumerate() {
            match Matcher::parse(&m.value) {
                Ok(m) => ms.push(m),
                Err(e) => out.push(spanned_at(
                    file,
                    m,
                    Code::Matcher,
                    format!("inhibit_when[{i}].matchers[{j}]"),
                    e,
                )),
            }
        }
        for (j, l) in rule.equal.iter().enumerate() {
            if !is_label_name(&l.value) {
                out.push(spanned_at(
                    file,
                    l,
                    Code::GroupBy,
                    format!("inhibit_when[{i}].equal[{j}]"),
                    format!("{:?} is not a label name", l.value),
                ));
            }
        }
        inhibit.push((ms, rule.equal.iter().map(|l| l.value.clone()).collect()));
    }
    let cooldown = check_duration(file, &parsed.cooldown, "cooldown", &mut out);
    let mut ids = Vec::new();
    let steps = check_steps(file, text, "steps", &parsed.steps, &mut ids, &mut out);
    let mut verify = None;
    if let Some(v) = &parsed.verify {
        match StepType::from_name(&v.uses.value) {
            None => out.push(spanned_at(file, &v.uses, Code::UnknownStep, "verify.uses", format!("unknown step type {:?}; valid step types: {}", v.uses.value, StepType::names()))),
            Some(t) if t.is_destructive() => out.push(spanned_at(file, &v.uses, Code::DestructiveVerify, "verify.uses", format!("{t} changes things; a check must only read, such as promql.verify (http.request counts as changing things)"))),
            Some(_) => {}
        }
        check_param_names(file, text, &v.uses.value, &v.with, "verify", &mut out);
        let every = check_duration(file, &v.every, "verify.every", &mut out);
        let timeout = check_duration(file, &v.timeout, "verify.timeout", &mut out);
        if let Some(kind) = StepType::from_name(&v.uses.value) {
            verify = Some(Verify {
                kind,
                with: v.with.as_ref().map(|w| w.value.clone()).unwrap_or_default(),
                every: every.unwrap_or(crate::runbook::DEFAULT_VERIFY_EVERY),
                timeout: timeout.unwrap_or(crate::runbook::DEFAULT_VERIFY_TIMEOUT),
            });
        }
        if let Some(with) = &v.with {
            let value = serde_json::Value::Object(with.value.clone());
            let mut strings = Vec::new();
            Templates::strings(&value, "verify.with".into(), &mut strings);
            for (path, text) in strings {
                if let Err(e) = Templates::check(text) {
                    out.push(spanned_at(file, with, Code::Template, path, e));
                }
            }
        }
    }
    let on_failure = check_steps(
        file,
        text,
        "on_failure",
        &parsed.on_failure,
        &mut ids,
        &mut out,
    );
    for (i, t) in parsed.tests.iter().enumerate() {
        let base = format!("tests[{i}]");
        let test_err = |msg: String| Diagnostic {
            file: file.to_path_buf(),
            line: t.name.referenced.line(),
            column: t.name.referenced.column(),
            code: Code::Test,
            path: base.clone(),
            message: format!("test {:?}: {msg}", t.name.value),
        };
        match (&t.alert, &t.payload) {
            (Some(_), Some(_)) | (None, None) => {
                out.push(test_err("give either `alert` or `payload`".into()))
            }
            (_, Some(p))
                if !matches!(p.source.as_str(), "alertmanager" | "pagerduty" | "datadog") =>
            {
                out.push(test_err(format!(
                    "payload source {:?}: alertmanager, pagerduty or datadog",
                    p.source
                )))
            }
            _ => {}
        }
        for id in t.with.keys() {
            if !ids.contains(id) {
                out.push(test_err(format!(
                    "`with` names step {id:?}, which this runbook does not have"
                )));
            }
        }
    }
    if !out.is_empty() {
        out.sort_by_key(|d| (d.line, d.column));
        return Err(out);
    }
    Ok(Runbook {
        file: parsed,
        path: rel.to_string(),
        matchers,
        source,
        cooldown,
        steps,
        on_failure,
        verify,
        inhibit,
    })
}

/// Loads every `*.yaml` and `*.yml` file under `dir` (recursively, in path
/// order). Returns every problem of every file, and no set at all if any
/// file is broken: half a runbook set is worse than the last good one.
/// `triage` names the runbook for alerts nothing else matches.
pub fn load_dir(dir: &Path, triage: Option<&str>) -> Result<RunbookSet, Vec<Diagnostic>> {
    let io = |path: &Path, e: std::io::Error| Diagnostic {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        code: Code::Io,
        path: String::new(),
        message: format!("cannot read: {e}"),
    };
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| vec![io(&d, e)])?;
        for entry in entries {
            let p = entry.map_err(|e| vec![io(&d, e)])?.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                && !is_experiment(&p)
            {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut runbooks: Vec<Runbook> = Vec::new();
    let mut errors = Vec::new();
    let mut intervals = BTreeMap::new();
    let is_intervals = |p: &Path| {
        p.parent() == Some(dir)
            && matches!(
                p.file_name().and_then(|n| n.to_str()),
                Some("time-intervals.yaml" | "time-intervals.yml")
            )
    };
    for p in files.iter().filter(|p| is_intervals(p)) {
        match std::fs::read_to_string(p) {
            Ok(text) => match load_intervals(p, &text) {
                Ok(i) => intervals = i,
                Err(e) => errors.extend(e),
            },
            Err(e) => errors.push(io(p, e)),
        }
    }
    for p in files.into_iter().filter(|p| !is_intervals(p)) {
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) => {
                errors.push(io(&p, e));
                continue;
            }
        };
        let rel = p
            .strip_prefix(dir)
            .unwrap_or(&p)
            .to_string_lossy()
            .into_owned();
        match parse_runbook(&p, &rel, &text) {
            Ok(r) => {
                if let Some(other) = runbooks.iter().find(|o| o.name() == r.name()) {
                    errors.push(spanned_at(
                        &p,
                        &r.file.name,
                        Code::DuplicateRunbook,
                        "name",
                        format!("runbook name {:?} is also used by {}", r.name(), other.path),
                    ));
                } else {
                    runbooks.push(r);
                }
            }
            Err(e) => errors.extend(e),
        }
    }
    for r in &runbooks {
        for (field, names) in [
            ("active_time", &r.file.active_time),
            ("mute_time", &r.file.mute_time),
        ] {
            for (i, n) in names.iter().enumerate() {
                if !intervals.contains_key(&n.value) {
                    errors.push(spanned_at(
                        &dir.join(&r.path),
                        n,
                        Code::UnknownInterval,
                        format!("{field}[{i}]"),
                        format!("no time interval {:?} in time-intervals.yaml", n.value),
                    ));
                }
            }
        }
    }
    if let Some(t) = triage
        && errors.is_empty()
        && !runbooks.iter().any(|r| r.name() == t)
    {
        errors.push(Diagnostic {
            file: dir.to_path_buf(),
            line: 0,
            column: 0,
            code: Code::Name,
            path: String::new(),
            message: format!("the triage runbook {t:?} is not in this directory"),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    runbooks.sort_by(|a, b| {
        b.file
            .priority
            .cmp(&a.file.priority)
            .then_with(|| a.name().cmp(b.name()))
    });
    Ok(RunbookSet {
        runbooks,
        triage: triage.map(str::to_string),
        intervals,
        index: Default::default(),
    })
}

/// Parses `time-intervals.yaml`.
fn load_intervals(
    file: &Path,
    text: &str,
) -> Result<BTreeMap<String, Vec<IntervalSpec>>, Vec<Diagnostic>> {
    let parsed: IntervalsFile = parse_yaml(file, text)?;
    let mut out = Vec::new();
    check_version(file, &parsed.version, &mut out);
    let mut intervals = BTreeMap::new();
    for (name, specs) in &parsed.time_intervals {
        let mut built = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            match IntervalSpec::build(spec) {
                Ok(s) => built.push(s),
                Err(errs) => out.extend(errs.into_iter().map(|(loc, e)| {
                    at(
                        file,
                        &loc,
                        Code::Interval,
                        format!("time_intervals.{name}[{i}]"),
                        e,
                    )
                })),
            }
        }
        intervals.insert(name.clone(), built);
    }
    if out.is_empty() {
        Ok(intervals)
    } else {
        Err(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use quench_connectors::Source;
    use serde_json::Value;

    use super::*;

    fn testdata() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
    }

    fn alert_from(v: &Value) -> Alert {
        let labels: BTreeMap<String, String> =
            serde_json::from_value(v["labels"].clone()).unwrap_or_default();
        Alert {
            source: match v["source"].as_str().unwrap_or("alertmanager") {
                "pagerduty" => Source::Pagerduty,
                "datadog" => Source::Datadog,
                _ => Source::Alertmanager,
            },
            fingerprint: "f".into(),
            status: if v["status"] == "resolved" {
                AlertStatus::Resolved
            } else {
                AlertStatus::Firing
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

    /// Each `testdata/bad/X.yaml` must produce exactly `X.expected`
    /// (paths relative to testdata/bad).
    #[test]
    fn bad_runbooks_produce_their_exact_errors() {
        let dir = testdata().join("bad");
        let mut checked = 0;
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for yaml in files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        {
            let name = yaml.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(yaml).unwrap();
            let errs = parse_runbook(Path::new(&name), &name, &text).expect_err(&name);
            let got: String = errs.iter().map(|e| format!("{e}\n")).collect();
            let want = std::fs::read_to_string(yaml.with_extension("expected"))
                .unwrap_or_else(|_| panic!("{name} has no .expected file; it produced:\n{got}"));
            assert_eq!(got, want, "{name}");
            checked += 1;
        }
        assert!(checked >= 5);
    }

    #[test]
    fn alerts_match_the_runbooks_their_fixtures_name() {
        let dir = testdata().join("match");
        let set = load_dir(&dir.join("runbooks"), Some("triage")).unwrap();
        let cases: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap())
                .unwrap();
        assert!(cases.len() >= 10);
        for case in &cases {
            let alert = alert_from(&case["alert"]);
            let got: Vec<&str> = set.select(&alert).iter().map(|r| r.name()).collect();
            let want: Vec<&str> = case["expect"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(
                got,
                want,
                "{}: {:#?}",
                case["name"],
                set.explain(&alert).lines()
            );
        }
    }

    #[test]
    fn explain_names_the_failing_matcher_and_the_value_seen() {
        let set = load_dir(&testdata().join("match/runbooks"), Some("triage")).unwrap();
        let alert = alert_from(
            &serde_json::json!({"labels": {"alertname": "HighCPU", "severity": "info", "pod": "canary-1"}}),
        );
        let e = set.explain(&alert);
        let by = |n: &str| e.decisions.iter().find(|d| d.runbook == n).unwrap();
        assert_eq!(by("high-cpu-canary").skipped, None);
        assert_eq!(
            by("high-cpu").skipped,
            Some(Skip::Matcher {
                matcher: r#"severity=~"critical|page""#.into(),
                seen: "info".into()
            })
        );
        assert_eq!(
            by("not-db-team").skipped,
            Some(Skip::Matcher {
                matcher: r#"alertname=~"Disk.*""#.into(),
                seen: "HighCPU".into()
            })
        );
        assert!(matches!(
            by("on-resolve").skipped,
            Some(Skip::Status { .. })
        ));
        assert_eq!(e.triage, None, "something matched, so no triage");
        let lines = e.lines().join("\n");
        assert!(lines.contains(r#"high-cpu (a-high-cpu.yaml): skipped, severity=~"critical|page" does not hold (saw "info")"#), "{lines}");

        // A first match without `continue` stops the search.
        let alert = alert_from(
            &serde_json::json!({"labels": {"alertname": "HighCPU", "severity": "page"}}),
        );
        let e = set.explain(&alert);
        let by = |n: &str| e.decisions.iter().find(|d| d.runbook == n).unwrap();
        assert_eq!(
            by("not-db-team").skipped,
            Some(Skip::Stopped {
                by: "high-cpu".into()
            })
        );
    }

    #[test]
    fn loads_the_shipped_examples() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let set = load_dir(&dir, None).unwrap();
        assert!(set.runbooks.len() >= 2);
        let a = alert_from(
            &serde_json::json!({"labels": {"alertname": "HighCPU", "severity": "page", "service": "checkout"}}),
        );
        let r = set.select(&a);
        assert_eq!(r[0].name(), "go-high-cpu");
        assert_eq!(
            r[0].group_key(&a),
            "go-high-cpu\u{1f}alertname=HighCPU\u{1f}service=checkout"
        );
        assert_eq!(r[0].cooldown, Some(Duration::from_secs(1800)));
        assert_eq!(
            r[0].step_types(),
            [StepType::PprofCapture, StepType::PromqlQuery]
        );
    }

    #[test]
    fn every_file_of_a_directory_is_reported_and_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "version: 1\nname: same\nmatch: {}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "version: 1\nname: same\nmatch: {}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("c.yml"),
            "version: 1\nname: c\nmatch: {matchers: ['x=~\"(\"']}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a runbook").unwrap();
        let errs = load_dir(dir.path(), None).unwrap_err();
        let codes: Vec<Code> = errs.iter().map(|e| e.code).collect();
        assert_eq!(codes, [Code::DuplicateRunbook, Code::Matcher], "{errs:#?}");
        assert_eq!(errs[0].line, 2);
        assert!(errs[0].message.contains("a.yaml"));
        let errs = load_dir(&dir.path().join("missing"), None).unwrap_err();
        assert_eq!(errs[0].code, Code::Io);
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        std::fs::remove_file(dir.path().join("c.yml")).unwrap();
        let errs = load_dir(dir.path(), Some("triage")).unwrap_err();
        assert!(errs[0].message.contains("triage"), "{errs:#?}");
    }

    #[test]
    fn suppression_inhibits_mutes_and_keeps_triage_away() {
        use chrono::TimeZone;
        let set = load_dir(&testdata().join("suppress"), Some("triage")).unwrap();
        let friday_noon = Utc.with_ymd_and_hms(2026, 11, 27, 11, 0, 0).unwrap();
        let latency = alert_from(
            &serde_json::json!({"labels": {"alertname": "Latency", "service": "checkout"}}),
        );
        let mut breaker = alert_from(
            &serde_json::json!({"labels": {"alertname": "CircuitBreakerOpen", "service": "checkout"}}),
        );
        breaker.fingerprint = "breaker".into();
        let mut other_breaker = breaker.clone();
        other_breaker
            .labels
            .insert("service".into(), "search".into());

        let e = set.explain_at(&latency, friday_noon, &[&breaker]);
        assert!(
            e.matched().is_empty(),
            "inhibited, and no triage either: {:#?}",
            e.lines()
        );
        assert_eq!(
            e.decisions[0].skipped,
            Some(Skip::Inhibited {
                by: r#"CircuitBreakerOpen{service="checkout"}"#.into()
            })
        );
        assert_eq!(
            set.explain_at(&latency, friday_noon, &[&other_breaker])
                .matched(),
            ["latency"]
        );
        // An alert never inhibits itself, even when it matches the rule.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "version: 1\nname: a\nmatch: {}\ninhibit_when: [{matchers: ['severity=\"page\"'], equal: [service]}]\n",
        )
        .unwrap();
        let own = load_dir(dir.path(), None).unwrap();
        let page = alert_from(&serde_json::json!({"labels": {"severity": "page", "service": "x"}}));
        assert_eq!(
            own.explain_at(&page, friday_noon, &[&page]).matched(),
            ["a"]
        );
        let mut twin = page.clone();
        twin.fingerprint = "twin".into();
        assert!(
            own.explain_at(&page, friday_noon, &[&twin])
                .matched()
                .is_empty()
        );

        let sunday_3am = Utc.with_ymd_and_hms(2026, 11, 29, 3, 0, 0).unwrap();
        let e = set.explain_at(&latency, sunday_3am, &[]);
        assert_eq!(
            e.decisions[0].skipped,
            Some(Skip::Muted {
                interval: "maintenance".into()
            })
        );
        assert!(
            e.lines()[0].contains("suppressed: muted during maintenance"),
            "{:?}",
            e.lines()
        );

        let office = alert_from(&serde_json::json!({"labels": {"alertname": "Office"}}));
        assert_eq!(
            set.explain_at(&office, friday_noon, &[]).matched(),
            ["office-hours-only"]
        );
        let saturday = Utc.with_ymd_and_hms(2026, 11, 28, 11, 0, 0).unwrap();
        let e = set.explain_at(&office, saturday, &[]);
        let d = e
            .decisions
            .iter()
            .find(|d| d.runbook == "office-hours-only")
            .unwrap();
        assert_eq!(
            d.skipped,
            Some(Skip::Inactive {
                intervals: vec!["business_hours".into()]
            })
        );
        assert!(e.matched().is_empty());
    }

    #[test]
    fn unknown_intervals_and_bad_interval_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "version: 1\nname: a\nmatch: {}\nmute_time: [lunch]\n",
        )
        .unwrap();
        let errs = load_dir(dir.path(), None).unwrap_err();
        assert_eq!(errs[0].code, Code::UnknownInterval);
        assert_eq!((errs[0].line, errs[0].column), (4, 13));
        std::fs::write(
            dir.path().join("time-intervals.yaml"),
            "version: 1\ntime_intervals:\n  lunch:\n    - location: Moon/Base\n",
        )
        .unwrap();
        let errs = load_dir(dir.path(), None).unwrap_err();
        assert_eq!(errs[0].code, Code::Interval, "{errs:#?}");
        assert_eq!(errs[0].line, 4);
        assert!(errs[0].to_string().contains("Moon/Base"));
    }
}
