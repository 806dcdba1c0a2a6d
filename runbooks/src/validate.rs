//! Validating one runbook file into the typed model: every problem, each
//! with its file:line:column and a stable code.

use std::path::Path;
use std::time::Duration;

use quench_connectors::Source;
use quench_connectors::steps::StepType;
use serde_saphyr::{Location, MessageFormatter, Spanned};

use crate::diag::{Code, Diagnostic};
use crate::matcher::{Matcher, is_label_name};
use crate::model::{RunbookFile, StepFile};
use crate::runbook::{Gate, Retry, Runbook, Step, Verify};
use crate::template::Templates;

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

/// RB019 for one `with` (or none): the parameters as written must fit the
/// step type. A template stands in as the string it will render to (each
/// `{{...}}` as `1`), so a template where a number, a list or a secret is
/// expected is caught now, as it would fail then; the configuration's
/// defaults (`prometheus.url`) count as given.
fn check_param_values(w: &WithAt<'_>, out: &mut Vec<Diagnostic>) {
    let WithAt { kind, with, .. } = *w;
    let written = with.as_ref().map(|w| w.value.clone()).unwrap_or_default();
    // Unknown keys are RB018's; leave them out so each problem is said once.
    let mut probe: serde_json::Map<String, serde_json::Value> = written
        .iter()
        .filter(|(k, _)| kind.unknown_param(k).is_none())
        .map(|(k, v)| (k.clone(), stand_in(v)))
        .collect();
    kind.fill_defaults(
        &mut probe,
        &quench_connectors::steps::StepDefaults {
            prometheus_url: Some("http://prometheus".into()),
            ..Default::default()
        },
    );
    // serde stops at the first problem: take the field out (or give it a
    // valid value) and look again, so every problem is said in one run.
    let mut said: Vec<String> = Vec::new();
    for _ in 0..=written.len() {
        let Err(e) = kind.lint(&serde_json::Value::Object(probe.clone())) else {
            return;
        };
        let first_choice = e
            .message
            .strip_prefix("unknown variant ")
            .and_then(|m| m.split_once("expected one of `"))
            .and_then(|(_, rest)| rest.split('`').next())
            .map(str::to_string);
        let templated = e
            .field
            .as_ref()
            .and_then(|f| written.get(f))
            .is_some_and(|v| v.as_str().is_some_and(|s| s.contains("{{")));
        match (&e.field, &first_choice) {
            // A template where one of several words goes: known once
            // rendered (`quench test` and the run check it then).
            (Some(f), Some(choice)) if templated => {
                probe.insert(f.clone(), serde_json::Value::String(choice.clone()));
                continue;
            }
            _ => {}
        }
        if e.message.starts_with("missing field")
            && said.iter().any(|f| e.message.contains(&format!("`{f}`")))
        {
            return;
        }
        out.push(param_diagnostic(w, &written, &e, templated));
        match (&e.field, first_choice) {
            (Some(f), Some(choice)) => {
                probe.insert(f.clone(), serde_json::Value::String(choice));
                said.push(f.clone());
            }
            (Some(f), None) if probe.contains_key(f) => {
                probe.remove(f);
                said.push(f.clone());
            }
            _ => return,
        }
    }
}

/// A step's `with` and where it is, for RB019.
#[derive(Clone, Copy)]
struct WithAt<'a> {
    file: &'a Path,
    text: &'a str,
    kind: StepType,
    with: &'a Option<Spanned<serde_json::Map<String, serde_json::Value>>>,
    /// The step's `uses:`, where a missing `with` is reported.
    at_step: &'a serde_saphyr::Location,
    /// `steps[2]`, `verify`.
    base: &'a str,
}

/// One RB019, at the offending key when there is one.
fn param_diagnostic(
    w: &WithAt<'_>,
    written: &serde_json::Map<String, serde_json::Value>,
    e: &quench_connectors::steps::ParamError,
    templated: bool,
) -> Diagnostic {
    let WithAt {
        file,
        text,
        kind,
        with,
        at_step,
        base,
    } = *w;
    let message = match (&e.field, templated) {
        (Some(f), true) => match e.message.split_once("expected ") {
            Some((_, expected)) => {
                format!("{kind}: {f}: a template renders to a string, and {f} takes {expected}")
            }
            None => format!("{kind}: {e} (a template renders to a string)"),
        },
        _ => format!("{kind}: {e}"),
    };
    let (line, column) = match (&e.field, with) {
        (Some(f), Some(w)) if written.contains_key(f) => {
            crate::diag::key_position(text, &w.referenced, f)
        }
        (_, Some(w)) => (w.referenced.line(), w.referenced.column()),
        (_, None) => (at_step.line(), at_step.column()),
    };
    let path = match &e.field {
        Some(f) => format!("{base}.with.{f}"),
        None => format!("{base}.with"),
    };
    Diagnostic {
        file: file.to_path_buf(),
        line,
        column,
        code: Code::Params,
        path,
        message,
    }
}

/// A written value as the lint sees it: every `{{...}}` in a string as
/// `1`, since that is a string too after rendering.
fn stand_in(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) if s.contains("{{") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(i) = rest.find("{{") {
                out.push_str(&rest[..i]);
                out.push('1');
                rest = match rest[i..].find("}}") {
                    Some(j) => &rest[i + j + 2..],
                    None => "",
                };
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(stand_in).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), stand_in(v))).collect())
        }
        other => other.clone(),
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
            out.push(spanned_at(file, d, Code::Duration, path, e.to_string()));
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
        if let Some(kind) = kind {
            let at = WithAt {
                file,
                text,
                kind,
                with: &s.with,
                at_step: &s.uses.referenced,
                base: &base,
            };
            check_param_values(&at, out);
        }
        if let Some(with) = &s.with {
            let value = serde_json::Value::Object(with.value.clone());
            let mut strings = Vec::new();
            Templates::strings(&value, format!("{base}.with"), &mut strings);
            for (path, text) in strings {
                if let Err(e) = Templates::check(text) {
                    out.push(spanned_at(file, with, Code::Template, path, e.to_string()));
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
                e.to_string(),
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

/// Parses YAML into `T`, going on past shape problems where it can: the
/// entry a problem points at (an unknown key, a value of the wrong type)
/// is blanked out, with its nested lines, and the file read again, so each
/// problem of a file is reported in one run, at its own line. Returns what
/// was read once nothing more was in the way (None when a syntax error or
/// a missing field stops it) and every problem found. A file that reads
/// as it is returns no problems.
pub fn parse_yaml_recovering<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> (Option<T>, Vec<Diagnostic>) {
    let read = |t: &str| {
        let options = serde_saphyr::options! { strict_booleans: true };
        serde_saphyr::from_str_with_options::<T>(t, options)
    };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut out = Vec::new();
    let mut blanked = 0;
    // Each round blanks at least one line: at most as many rounds as lines.
    for round in 0..=lines.len() {
        let attempt = if round == 0 {
            text.to_string()
        } else {
            lines.join("\n")
        };
        let e = match read(&attempt) {
            Ok(t) => return (Some(t), out),
            Err(e) => e,
        };
        let loc = e.location().unwrap_or(Location::UNKNOWN);
        let message = serde_saphyr::DefaultMessageFormatter
            .format_message(e.without_snippet())
            .into_owned();
        let line = loc.line() as usize;
        // serde reports problems in the order of the document: after
        // blanking line L, a problem at or before L (a parent left empty, a
        // field now missing) comes from the blanking, not from the file.
        if round > 0 && (line <= blanked || message.contains("missing field")) {
            return (None, out);
        }
        let stop = line == 0
            || line > lines.len()
            || message.contains("missing field")
            || lines[line - 1].trim().is_empty();
        out.push(at(file, &loc, Code::Syntax, "", message));
        if stop {
            return (None, out);
        }
        // Blank the entry and what is nested under it.
        let indent = |l: &str| l.len() - l.trim_start().len();
        let own = indent(&lines[line - 1]);
        let is_item = lines[line - 1].trim_start().starts_with("- ");
        lines[line - 1] = String::new();
        blanked = line;
        let mut next = line;
        while next < lines.len()
            && (lines[next].trim().is_empty()
                || indent(&lines[next]) > own + if is_item { 1 } else { 0 })
        {
            lines[next] = String::new();
            next += 1;
        }
    }
    (None, out)
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

/// Parses and validates one runbook. `file` names it in diagnostics, `rel`
/// is its path inside the runbook directory. Reports every problem.
pub fn parse_runbook(file: &Path, rel: &str, text: &str) -> Result<Runbook, Vec<Diagnostic>> {
    // A shape problem does not hide the file's other problems: what can be
    // read past it is checked too.
    let (parsed, mut out) = parse_yaml_recovering::<RunbookFile>(file, text);
    let Some(parsed) = parsed else {
        return Err(out);
    };
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
                e.to_string(),
            )),
        }
    }
    let mut source = None;
    if let Some(src) = &parsed.matching.source {
        match src.value.parse::<Source>() {
            Ok(s) => source = Some(s),
            Err(e) => out.push(spanned_at(
                file,
                src,
                Code::Source,
                "match.source",
                e.to_string(),
            )),
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
                    e.to_string(),
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
        if let Some(kind) = StepType::from_name(&v.uses.value) {
            let at = WithAt {
                file,
                text,
                kind,
                with: &v.with,
                at_step: &v.uses.referenced,
                base: "verify",
            };
            check_param_values(&at, &mut out);
        }
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
                    out.push(spanned_at(file, with, Code::Template, path, e.to_string()));
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
        // When the shape was wrong somewhere, what was read past it may
        // lack what was blanked: a parameter check would only repeat it.
        if out.iter().any(|d| d.code == Code::Syntax) {
            out.retain(|d| d.code != Code::Params);
        }
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
