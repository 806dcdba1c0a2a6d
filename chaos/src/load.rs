//! Loading and validating experiments: every problem of every file, each
//! at its line and column, with the codes runbooks use (RB001 syntax, RB002
//! version, RB005/RB011 step ids, RB008 durations, RB018 parameters) and
//! the chaos codes CH001–CH004.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::NaiveDateTime;
use quench_connectors::steps::StepType;
use quench_runbooks::Code;
use quench_runbooks::Diagnostic;
use quench_runbooks::load::{at, check_version, is_experiment, parse_yaml, spanned_at};
use serde_saphyr::Spanned;

use crate::faults::Fault;
use crate::model::{BlastRadius, ChaosStep, ExperimentFile, Mode, Probe};

/// The most pods an experiment may ever name as its cap.
pub const MAX_CAP: u32 = 1000;

/// A validated experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Its name: the file name without `.chaos.yaml`.
    pub name: String,
    /// Its path inside the directory.
    pub path: String,
    /// The file as written.
    pub file: ExperimentFile,
    /// The blast radius (present and capped: validation made sure).
    pub blast: BlastRadius,
    /// `duration`, parsed.
    pub duration: Option<Duration>,
    /// The schedule, parsed.
    pub schedule: Option<ParsedSchedule>,
}

/// A schedule whose parts parsed.
#[derive(Debug, Clone)]
pub struct ParsedSchedule {
    /// The cron expression.
    pub cron: croner::Cron,
    /// Its timezone.
    pub tz: chrono_tz::Tz,
    /// Periods without runs, in that timezone.
    pub blackouts: Vec<(NaiveDateTime, NaiveDateTime)>,
    /// Whether runs may overlap.
    pub concurrency: crate::model::Concurrency,
}

/// An experiment's name from its file name.
pub fn name_of(path: &Path) -> String {
    let f = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    f.trim_end_matches(".yaml")
        .trim_end_matches(".yml")
        .trim_end_matches(".chaos")
        .to_string()
}

fn check_steps(
    file: &Path,
    text: &str,
    section: &str,
    steps: &[ChaosStep],
    ids: &mut std::collections::HashSet<String>,
    out: &mut Vec<Diagnostic>,
) {
    for (i, s) in steps.iter().enumerate() {
        let base = format!("{section}[{i}]");
        let id = &s.id.value;
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            out.push(spanned_at(
                file,
                &s.id,
                Code::StepId,
                format!("{base}.id"),
                format!("step id {id:?} must be lowercase letters, digits and '_'"),
            ));
        } else if !ids.insert(id.clone()) {
            out.push(spanned_at(
                file,
                &s.id,
                Code::DuplicateStep,
                format!("{base}.id"),
                format!("step id {id:?} is used twice"),
            ));
        }
        let uses = s.uses.value.as_str();
        let with = s.with.as_ref().map(|w| &w.value);
        if let Some(fault) = Fault::from_name(uses) {
            if let Err(e) = fault.check(with) {
                let place = s
                    .with
                    .as_ref()
                    .map(|w| &w.referenced)
                    .unwrap_or(&s.uses.referenced);
                out.push(at(
                    file,
                    place,
                    Code::UnknownParam,
                    format!("{base}.with"),
                    e.to_string(),
                ));
            }
        } else if let Some(t) = StepType::from_name(uses) {
            for key in with.into_iter().flat_map(|w| w.keys()) {
                if let Some(why) = t.unknown_param(key) {
                    let place = s
                        .with
                        .as_ref()
                        .map(|w| &w.referenced)
                        .unwrap_or(&s.uses.referenced);
                    let mut d = at(
                        file,
                        place,
                        Code::UnknownParam,
                        format!("{base}.with.{key}"),
                        format!("{uses}: {why}"),
                    );
                    (d.line, d.column) = quench_runbooks::diag::key_position(text, place, key);
                    out.push(d);
                }
            }
        } else {
            out.push(spanned_at(
                file,
                &s.uses,
                Code::ChaosStep,
                format!("{base}.uses"),
                format!(
                    "unknown fault or step type {uses:?}; faults: {}; or any runbook step type",
                    Fault::names()
                ),
            ));
        }
    }
}

fn check_probe(file: &Path, section: &str, p: &Probe, out: &mut Vec<Diagnostic>) {
    let kinds = [p.promql.is_some(), p.http.is_some(), p.k8s_ready.is_some()]
        .iter()
        .filter(|k| **k)
        .count();
    let mut bad = |why: String| out.push(spanned_at(file, &p.name, Code::ChaosProbe, section, why));
    if kinds != 1 {
        bad(format!(
            "probe {:?} needs exactly one of promql, http or k8s_ready",
            p.name.value
        ));
        return;
    }
    if let Some(q) = &p.promql {
        if q.min.is_none() && q.max.is_none() {
            bad(format!("probe {:?}: promql needs min or max", p.name.value));
        }
        if let (Some(a), Some(b)) = (q.min, q.max)
            && a > b
        {
            bad(format!(
                "probe {:?}: min {a} is above max {b}",
                p.name.value
            ));
        }
        if !(q.url.starts_with("http://") || q.url.starts_with("https://")) {
            bad(format!(
                "probe {:?}: url must be http:// or https://",
                p.name.value
            ));
        }
    }
    if let Some(h) = &p.http
        && !(h.url.starts_with("http://") || h.url.starts_with("https://"))
    {
        bad(format!(
            "probe {:?}: url must be http:// or https://",
            p.name.value
        ));
    }
    if let Some(r) = &p.k8s_ready {
        if !["Deployment", "StatefulSet"].contains(&r.kind.as_str()) {
            bad(format!(
                "probe {:?}: k8s_ready kind must be Deployment or StatefulSet",
                p.name.value
            ));
        }
        if quench_connectors::k8s::names::subdomain("name", &r.name).is_err()
            || quench_connectors::k8s::names::label("namespace", &r.namespace).is_err()
        {
            bad(format!(
                "probe {:?}: name and namespace must be Kubernetes names",
                p.name.value
            ));
        }
    }
}

fn check_blast(file: &Path, b: &Spanned<BlastRadius>, out: &mut Vec<Diagnostic>) {
    let mut bad = |why: String| {
        out.push(spanned_at(file, b, Code::BlastRadius, "blast_radius", why));
    };
    match b.value.max_pods {
        None => bad("blast_radius needs max_pods, the hard cap on pods affected".into()),
        Some(0) => bad("max_pods must be at least 1".into()),
        Some(n) if n > MAX_CAP => bad(format!("max_pods {n} is above {MAX_CAP}")),
        _ => {}
    }
    if b.value.namespaces.is_empty() {
        bad("blast_radius needs at least one namespace".into());
    }
    let words = |e: quench_connectors::steps::StepError| match e {
        quench_connectors::steps::StepError::Params(m) => m,
        other => other.to_string(),
    };
    for ns in &b.value.namespaces {
        if let Err(e) = quench_connectors::k8s::names::label("namespace", ns) {
            bad(words(e.into()));
        }
    }
    if let Err(e) = quench_connectors::steps::k8s_delete_pod::check_selector(&b.value.selector) {
        bad(words(e));
    }
    match b.value.mode {
        Mode::Fixed(0) => bad("mode fixed needs at least 1".into()),
        Mode::Percent(p) if p == 0 || p > 100 => bad(format!("mode percent {p} must be 1 to 100")),
        _ => {}
    }
}

/// Parses and validates one experiment. Reports every problem.
pub fn parse_experiment(file: &Path, rel: &str, text: &str) -> Result<Experiment, Vec<Diagnostic>> {
    let parsed: ExperimentFile = parse_yaml(file, text)?;
    let mut out = Vec::new();
    check_version(file, &parsed.version, &mut out);
    if parsed.title.value.trim().is_empty() {
        out.push(spanned_at(
            file,
            &parsed.title,
            Code::Name,
            "title",
            "title is empty",
        ));
    }
    match &parsed.blast_radius {
        None => out.push(spanned_at(
            file,
            &parsed.version,
            Code::BlastRadius,
            "blast_radius",
            "an experiment needs a blast_radius with max_pods, the hard cap on pods affected",
        )),
        Some(b) => check_blast(file, b, &mut out),
    }
    for (i, p) in parsed.steady_state.probes.iter().enumerate() {
        check_probe(file, &format!("steady_state.probes[{i}]"), p, &mut out);
    }
    for (i, p) in parsed.abort_when.iter().enumerate() {
        check_probe(file, &format!("abort_when[{i}]"), p, &mut out);
    }
    if parsed.method.is_empty() {
        out.push(spanned_at(
            file,
            &parsed.title,
            Code::ChaosStep,
            "method",
            "method has no steps",
        ));
    }
    let mut ids = std::collections::HashSet::new();
    check_steps(file, text, "method", &parsed.method, &mut ids, &mut out);
    check_steps(
        file,
        text,
        "rollbacks",
        &parsed.rollbacks,
        &mut ids,
        &mut out,
    );
    check_steps(file, text, "escalate", &parsed.escalate, &mut ids, &mut out);
    let duration = match &parsed.duration {
        None => None,
        Some(d) => match quench_runbooks::duration::parse(&d.value) {
            Ok(v) => Some(v),
            Err(e) => {
                out.push(spanned_at(
                    file,
                    d,
                    Code::Duration,
                    "duration",
                    e.to_string(),
                ));
                None
            }
        },
    };
    let schedule = parsed.schedule.as_ref().and_then(|s| {
        let cron = match croner::Cron::from_str(&s.cron.value) {
            Ok(c) => Some(c),
            Err(e) => {
                out.push(spanned_at(
                    file,
                    &s.cron,
                    Code::Schedule,
                    "schedule.cron",
                    format!("cron {:?}: {e}", s.cron.value),
                ));
                None
            }
        };
        let tz = match &s.timezone {
            None => Some(chrono_tz::UTC),
            Some(t) => match t.value.parse::<chrono_tz::Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    out.push(spanned_at(
                        file,
                        t,
                        Code::Schedule,
                        "schedule.timezone",
                        format!(
                            "timezone {:?} is not an IANA timezone (Europe/Paris, UTC)",
                            t.value
                        ),
                    ));
                    None
                }
            },
        };
        let mut blackouts = Vec::new();
        for (i, b) in s.blackouts.iter().enumerate() {
            let parse = |v: &Spanned<String>, what: &str, out: &mut Vec<Diagnostic>| {
                NaiveDateTime::parse_from_str(&v.value, "%Y-%m-%dT%H:%M")
                    .map_err(|_| {
                        out.push(spanned_at(
                            file,
                            v,
                            Code::Schedule,
                            format!("schedule.blackouts[{i}].{what}"),
                            format!("{:?} is not a local time like 2026-12-20T00:00", v.value),
                        ))
                    })
                    .ok()
            };
            let from = parse(&b.from, "from", &mut out);
            let to = parse(&b.to, "to", &mut out);
            if let (Some(f), Some(t)) = (from, to) {
                if f >= t {
                    out.push(spanned_at(
                        file,
                        &b.to,
                        Code::Schedule,
                        format!("schedule.blackouts[{i}]"),
                        "a blackout must end after it starts",
                    ));
                } else {
                    blackouts.push((f, t));
                }
            }
        }
        Some(ParsedSchedule {
            cron: cron?,
            tz: tz?,
            blackouts,
            concurrency: s.concurrency,
        })
    });
    if !out.is_empty() {
        // In file order, as an editor lists them.
        out.sort_by_key(|d| (d.line, d.column));
        return Err(out);
    }
    let blast = parsed
        .blast_radius
        .as_ref()
        .map(|b| b.value.clone())
        .expect("checked above");
    Ok(Experiment {
        name: name_of(file),
        path: rel.to_string(),
        file: parsed,
        blast,
        duration,
        schedule,
    })
}

/// Every `*.chaos.yaml` under `dir`, validated; every problem of every file.
pub fn load_experiments(dir: &Path) -> Result<Vec<Experiment>, Vec<Diagnostic>> {
    let io = |p: &Path, e: std::io::Error| Diagnostic {
        file: p.to_path_buf(),
        line: 0,
        column: 0,
        code: Code::Io,
        path: String::new(),
        message: format!("cannot read: {e}"),
    };
    let files = quench_runbooks::load::walk(dir, is_experiment)?;
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for p in files {
        let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
        match std::fs::read_to_string(&p) {
            Ok(text) => match parse_experiment(&p, &rel, &text) {
                Ok(e) => all.push(e),
                Err(e) => errors.extend(e),
            },
            Err(e) => errors.push(io(&p, e)),
        }
    }
    if errors.is_empty() {
        Ok(all)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let dir = root().join("runbooks/examples");
        let all = load_experiments(&dir).unwrap_or_else(|e| panic!("{e:#?}"));
        assert_eq!(all.len(), 1);
        let e = &all[0];
        assert_eq!(e.name, "checkout-pod-kill");
        assert_eq!(e.blast.max_pods, Some(2));
        assert_eq!(e.duration, Some(Duration::from_secs(120)));
        let s = e.schedule.as_ref().unwrap();
        assert_eq!(s.tz, chrono_tz::Europe::Paris);
        assert_eq!(s.blackouts.len(), 1);
    }

    /// Each bad fixture gives exactly its `.expected` output (positions
    /// checked by hand).
    #[test]
    fn bad_experiments_produce_their_exact_errors() {
        let dir = root().join("chaos/testdata/bad");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if !is_experiment(&p) {
                continue;
            }
            n += 1;
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let text = std::fs::read_to_string(&p).unwrap();
            let errors = parse_experiment(Path::new(&name), &name, &text).unwrap_err();
            let got: String = errors.iter().map(|e| format!("{e}\n")).collect();
            let want = std::fs::read_to_string(dir.join(name.replace(".chaos.yaml", ".expected")))
                .unwrap();
            assert_eq!(got, want, "{name}");
        }
        assert!(n >= 2);
    }

    #[test]
    fn runbook_loading_skips_experiments() {
        // The examples hold an experiment that is not a valid runbook, so
        // the directory loads only because experiments are skipped.
        let dir = root().join("runbooks/examples");
        let exp = dir.join("chaos/checkout-pod-kill.chaos.yaml");
        let text = std::fs::read_to_string(&exp).unwrap();
        assert!(quench_runbooks::parse_runbook(&exp, "x", &text).is_err());
        let set = quench_runbooks::load_dir(&dir, None).unwrap();
        let mut paths: Vec<&str> = set.runbooks.iter().map(|r| r.path.as_str()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "connection-pool.yaml",
                "error-rate-after-deploy.yaml",
                "go-high-cpu.yaml",
                "goroutine-leak.yaml",
                "p99-latency.yaml",
                "triage.yaml"
            ]
        );
    }
}
