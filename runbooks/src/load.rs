//! Loading a runbook directory: every file parsed and validated, the time
//! intervals, the set in priority order. Half a set is never loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::{Code, Diagnostic};
use crate::suppress::{IntervalSpec, IntervalsFile};

pub use crate::runbook::Runbook;
pub use crate::select::{Decision, Explanation, RunbookSet, Skip};
pub use crate::validate::{at, check_version, parse_runbook, parse_yaml, spanned_at};

/// Whether a file is a chaos experiment (`*.chaos.yaml`), which lives in
/// the same repository as the runbooks and is loaded by the chaos crate.
pub fn is_experiment(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".chaos.yaml") || n.ends_with(".chaos.yml"))
}

/// The files under `dir` that `keep` wants, sorted, read from the
/// directory itself: a symbolic link (which could lead anywhere on the
/// host, such as a commit that links `x -> /`) is refused, named.
pub fn walk(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>, Vec<Diagnostic>> {
    let io = |path: &Path, message: String| Diagnostic {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        code: Code::Io,
        path: String::new(),
        message,
    };
    let mut files = Vec::new();
    let mut refused = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| vec![io(&d, format!("cannot read: {e}"))])?;
        for entry in entries {
            let entry = entry.map_err(|e| vec![io(&d, format!("cannot read: {e}"))])?;
            let p = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| vec![io(&p, format!("cannot read: {e}"))])?;
            if kind.is_symlink() {
                refused.push(io(
                    &p,
                    "a symbolic link: runbooks are read from the directory itself, and a link could lead anywhere on the host".into(),
                ));
            } else if kind.is_dir() {
                stack.push(p);
            } else if keep(&p) {
                files.push(p);
            }
        }
    }
    if !refused.is_empty() {
        refused.sort_by(|a, b| a.file.cmp(&b.file));
        return Err(refused);
    }
    files.sort();
    Ok(files)
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
    let files = walk(dir, |p| {
        matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) && !is_experiment(p)
    })?;
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
                        e.to_string(),
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

    use std::time::Duration;

    use chrono::Utc;
    use quench_connectors::steps::StepType;
    use quench_connectors::{Alert, AlertStatus};

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
            &serde_json::json!({"labels": {"alertname": "HighCPU", "severity": "page", "service": "checkout", "instance": "10.0.0.7:6060"}}),
        );
        let r = set.select(&a);
        assert_eq!(r[0].name(), "go-high-cpu");
        assert_eq!(
            r[0].group_key(&a),
            "go-high-cpu\u{1f}alertname=HighCPU\u{1f}service=checkout\u{1f}instance=10.0.0.7:6060"
        );
        assert_eq!(r[0].cooldown, Some(Duration::from_secs(1800)));
        assert_eq!(
            r[0].step_types(),
            [
                StepType::PprofCapture,
                StepType::PprofCapture,
                StepType::PromqlQuery
            ]
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

    /// A symbolic link in the runbook directory (a commit with `x -> /`)
    /// is refused, named; nothing behind it is read.
    #[test]
    fn symbolic_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ok.yaml"),
            "version: 1\nname: ok\nmatch: {}\nsteps:\n  - id: w\n    uses: wait\n    with: {seconds: 0}\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("host")).unwrap();
        let errs = load_dir(dir.path(), None).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].file.ends_with("host"), "{errs:#?}");
        assert!(errs[0].message.contains("symbolic link"), "{errs:#?}");
    }
}
