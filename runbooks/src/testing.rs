//! `quench test`: runs the tests embedded in runbooks. Nothing is executed:
//! a test checks that its alert is (or is not) matched by the runbook, as
//! the whole set decides it, and that the runbook's steps render, with the
//! given steps rendering to exactly the expected `with`.

use std::collections::BTreeMap;
use std::path::Path;

use http::HeaderMap;
use quench_connectors::inbound::{self, alertmanager, datadog, pagerduty};
use quench_connectors::{Alert, AlertStatus, Source};
use serde_json::Value;

use crate::load::{Runbook, RunbookSet};
use crate::model::TestCase;
use crate::template::{Templates, context};
use quench_connectors::steps::StepType;

/// One test's result.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// The runbook.
    pub runbook: String,
    /// Its file.
    pub path: String,
    /// The test's name.
    pub test: String,
    /// What went wrong; empty when it passed.
    pub failures: Vec<String>,
}

/// Test mode signs payloads with a throwaway secret and checks them with the
/// same parsers as production, so no parser needs a way around its checks.
const TEST_SECRET: &str = "quench-test";

/// Why a test case has no alert to try.
#[derive(Debug, thiserror::Error)]
pub enum TestAlertError {
    /// `alert.source` or `payload.source` names no source.
    #[error(transparent)]
    Source(#[from] quench_connectors::alert::UnknownSource),
    /// `alert.status` is neither `firing` nor `resolved`.
    #[error("unknown status {0:?} (firing or resolved)")]
    Status(String),
    /// A payload from a source test mode cannot sign and parse.
    #[error("unknown payload source {0:?} (alertmanager, pagerduty or datadog)")]
    PayloadSource(String),
    /// Neither `alert` nor `payload`.
    #[error("the test has no alert")]
    Missing,
    /// The payload file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The payload is refused by the parser production uses.
    #[error("{path}: {source}")]
    Payload {
        /// The file.
        path: String,
        /// The parser's answer.
        #[source]
        source: inbound::IntakeError,
    },
    /// The payload parses but holds no alert.
    #[error("{0} holds no alert")]
    Empty(String),
}

fn alerts_of(dir: &Path, runbook: &Runbook, case: &TestCase) -> Result<Vec<Alert>, TestAlertError> {
    if let Some(a) = &case.alert {
        let source: Source = a.source.as_deref().unwrap_or("alertmanager").parse()?;
        let status = match a.status.as_deref().unwrap_or("firing") {
            "firing" => AlertStatus::Firing,
            "resolved" => AlertStatus::Resolved,
            other => return Err(TestAlertError::Status(other.to_string())),
        };
        return Ok(vec![Alert {
            fingerprint: quench_connectors::alert::fingerprint_of(&source, &a.labels),
            source,
            status,
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: None,
            ends_at: None,
            meta: BTreeMap::new(),
            idempotency_key: String::new(),
            raw_ref: String::new(),
        }]);
    }
    let Some(p) = &case.payload else {
        return Err(TestAlertError::Missing);
    };
    let base = dir.join(&runbook.path);
    let file = base.parent().unwrap_or(dir).join(&p.file);
    let body = std::fs::read(&file).map_err(|source| TestAlertError::Read {
        path: file.display().to_string(),
        source,
    })?;
    let mut headers = HeaderMap::new();
    let parsed = match p.source.as_str() {
        "alertmanager" => alertmanager::parse(&Default::default(), &headers, &body),
        "pagerduty" => {
            let sig = format!(
                "v1={}",
                inbound::hmac_sha256_hex(TEST_SECRET.as_bytes(), &body)
            );
            headers.insert(
                "x-pagerduty-signature",
                http::HeaderValue::from_str(&sig).expect("hex is a valid header value"),
            );
            // Recorded payloads are old on purpose: no age check here.
            pagerduty::parse_at(
                &pagerduty::Config {
                    secrets: vec![TEST_SECRET.into()],
                    ..Default::default()
                },
                &headers,
                &body,
                None,
            )
        }
        "datadog" => {
            headers.insert(
                datadog::DEFAULT_SECRET_HEADER,
                http::HeaderValue::from_static(TEST_SECRET),
            );
            datadog::parse(
                &datadog::Config {
                    secret: Some(TEST_SECRET.into()),
                    header: None,
                },
                &headers,
                &body,
            )
        }
        other => return Err(TestAlertError::PayloadSource(other.to_string())),
    };
    let alerts = parsed
        .map_err(|source| TestAlertError::Payload {
            path: file.display().to_string(),
            source,
        })?
        .alerts;
    if alerts.is_empty() {
        return Err(TestAlertError::Empty(file.display().to_string()));
    }
    Ok(alerts)
}

/// A step as `quench test` renders it: its id, `when`, step type and
/// `with`.
struct TestStep<'a> {
    id: &'a str,
    when: Option<&'a str>,
    kind: StepType,
    with: &'a serde_json::Map<String, Value>,
}

/// Every step of a runbook: main steps, `on_failure`, then `verify`.
fn steps(r: &Runbook) -> Vec<TestStep<'_>> {
    let mut out: Vec<_> = r
        .steps
        .iter()
        .chain(r.on_failure.iter())
        .map(|s| TestStep {
            id: &s.id,
            when: s.when.as_deref(),
            kind: s.kind,
            with: &s.with,
        })
        .collect();
    if let Some(v) = &r.verify {
        out.push(TestStep {
            id: "verify",
            when: None,
            kind: v.kind,
            with: &v.with,
        });
    }
    out
}

fn run_case(
    set: &RunbookSet,
    dir: &Path,
    runbook: &Runbook,
    case: &TestCase,
    t: &Templates,
) -> Vec<String> {
    let alerts = match alerts_of(dir, runbook, case) {
        Ok(a) => a,
        Err(e) => return vec![e.to_string()],
    };
    let mut failures = Vec::new();
    for alert in &alerts {
        let why = set.explain(alert);
        let runs = why.matched().contains(&runbook.name());
        if runs != case.should_match {
            failures.push(format!(
                "expected the runbook {}to run, but {}",
                if case.should_match { "" } else { "not " },
                why.lines()
                    .into_iter()
                    .find(|l| l.starts_with(&format!("{} (", runbook.name())))
                    .unwrap_or_else(|| format!("it {}", if runs { "ran" } else { "did not run" })),
            ));
            continue;
        }
        if !runs {
            continue;
        }
        let ctx = context(alert, runbook.info(), "inc-test", &case.outputs, &case.env);
        for TestStep {
            id,
            when,
            kind,
            with,
        } in steps(runbook)
        {
            // As in a run: a step whose `when` is false is skipped, and its
            // `with` is not rendered.
            match when.map(|w| t.eval_when(w, &ctx)) {
                Some(Err(e)) => {
                    failures.push(format!("step {id}: when: {e}"));
                    continue;
                }
                Some(Ok(false)) => {
                    if case.with.contains_key(id) {
                        failures.push(format!(
                            "step {id} is skipped for this alert (its `when` is false), but the test expects it to render"
                        ));
                    }
                    continue;
                }
                _ => {}
            }
            let rendered =
                match t.render_value(&Value::Object(with.clone()), &ctx, &format!("{id}.with")) {
                    Ok(v) => v,
                    Err(e) => {
                        failures.push(format!("step {id} does not render: {e}"));
                        continue;
                    }
                };
            if let Some(want) = case.with.get(id)
                && &rendered != want
            {
                failures.push(format!("step {id} renders {rendered}, expected {want}"));
            }
            // What the step would be given, checked as it would be before
            // it ran (the configuration's defaults count as given).
            let mut given = rendered.as_object().cloned().unwrap_or_default();
            kind.fill_defaults(
                &mut given,
                &quench_connectors::steps::StepDefaults {
                    prometheus_url: Some("http://prometheus".into()),
                    ..Default::default()
                },
            );
            if let Err(e) = kind.check(&Value::Object(given)) {
                failures.push(format!("step {id} ({kind}) would be refused: {e}"));
            }
        }
    }
    failures
}

/// Runs every embedded test of every runbook of the set. `dir` is the
/// runbook directory (payload files are relative to their runbook).
pub fn run_tests(set: &RunbookSet, dir: &Path) -> Vec<TestResult> {
    let t = Templates::new();
    let mut out = Vec::new();
    for r in &set.runbooks {
        for case in &r.file.tests {
            out.push(TestResult {
                runbook: r.name().to_string(),
                path: r.path.clone(),
                test: case.name.value.clone(),
                failures: run_case(set, dir, r, case, &t),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::load::load_dir;

    fn run(dir: &Path) -> Vec<TestResult> {
        let set = load_dir(dir, None).unwrap_or_else(|e| panic!("{e:#?}"));
        run_tests(&set, dir)
    }

    #[test]
    fn every_shipped_example_passes_its_tests() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
        let results = run(&dir);
        assert!(results.len() >= 10, "{results:#?}");
        let failed: Vec<_> = results.iter().filter(|r| !r.failures.is_empty()).collect();
        assert!(failed.is_empty(), "{failed:#?}");
        let runbooks: std::collections::BTreeSet<_> =
            results.iter().map(|r| r.runbook.as_str()).collect();
        assert_eq!(
            runbooks.len(),
            6,
            "every example carries tests: {runbooks:?}"
        );
    }

    #[test]
    fn failures_say_what_went_wrong() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/tests");
        let results = run(&dir);
        let by = |name: &str| {
            results
                .iter()
                .find(|r| r.test == name)
                .unwrap_or_else(|| panic!("no test {name}"))
                .failures
                .join("\n")
        };
        assert_eq!(by("passes"), "");
        assert!(
            by("hostile label").contains(r#""cart; rm -rf /" is not a valid Kubernetes name"#),
            "{}",
            by("hostile label")
        );
        assert!(
            by("missing label").contains("alert.labels.namespace is not defined"),
            "{}",
            by("missing label")
        );
        assert!(
            by("wrong expectation").contains(r#"expected {"name":"cart","namespace":"prod"}"#),
            "{}",
            by("wrong expectation")
        );
        assert!(
            by("wrong match expectation")
                .contains(r#"alertname="Leak" does not hold (saw "Other")"#),
            "{}",
            by("wrong match expectation")
        );
        // the PagerDuty payload parsed (signed by the test runner) and did not match
        assert_eq!(by("pagerduty payload"), "");
        // Each step is checked as its type would check it before running.
        assert_eq!(by("a known profile kind"), "");
        assert!(
            by("an unknown profile kind")
                .contains("step capture (pprof.capture) would be refused: invalid parameters: kind: unknown variant `cpux`"),
            "{}",
            by("an unknown profile kind")
        );
    }
}
