//! Diagnostics: every problem in a runbook, with its place and a stable code.
//!
//! Printed the way compilers print them, so editors and CI annotate the
//! line: `runbooks/cpu.yaml:12:11: error[RB006]: steps[1].uses: ...`.
//! The codes are stable; `docs/RUNBOOK-ERRORS.md` lists them all.

use std::fmt;
use std::path::PathBuf;

/// A stable error code. Never renumber; retire a code instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Code {
    /// RB001: not YAML, or not the runbook format (unknown field, wrong type,
    /// missing field).
    Syntax,
    /// RB002: a `version` other than 1.
    Version,
    /// RB003: a name that is empty or not lowercase letters, digits, `-`, `_`.
    Name,
    /// RB004: a label matcher that does not parse or compile.
    Matcher,
    /// RB005: two steps with the same id.
    DuplicateStep,
    /// RB006: a `uses:` that names no step type.
    UnknownStep,
    /// RB007: two runbooks with the same name.
    DuplicateRunbook,
    /// RB008: a duration that does not parse (`30s`, `5m`, `1h30m`).
    Duration,
    /// RB009: a `group_by` entry that is not a label name.
    GroupBy,
    /// RB010: a `match.source` that names no sender.
    Source,
    /// RB011: a step id that is not lowercase letters, digits and `_`.
    StepId,
    /// RB012: the file or directory could not be read.
    Io,
    /// RB013: a template that does not compile, in `with` or `when`.
    Template,
    /// RB014: an embedded test that is not well formed.
    Test,
    /// RB015: `active_time` or `mute_time` names an interval that
    /// `time-intervals.yaml` does not define.
    UnknownInterval,
    /// RB016: a time interval that does not parse (weekday, time, zone).
    Interval,
    /// RB017: a `verify` check that uses a destructive step type.
    DestructiveVerify,
    /// RB018: a `with` key (of a step or of `verify`) the step type has no
    /// parameter for.
    UnknownParam,
    /// RB019: a `with` that does not fit its step type: a required
    /// parameter missing, a value of the wrong type (a template renders to
    /// a string), a value that is not one of the choices, a secret not
    /// written as `{env: NAME}` or `{file: PATH}`, a range.
    Params,
    /// CH001: a chaos probe that is not exactly one of `promql`, `http`,
    /// `k8s_ready`, or whose bounds make no sense.
    ChaosProbe,
    /// CH002: a blast radius that is missing, has no cap, or names bad
    /// namespaces, selector or mode.
    BlastRadius,
    /// CH003: a schedule whose cron expression, timezone or blackout does
    /// not parse.
    Schedule,
    /// CH004: a method or rollback step that is not a fault or step type.
    ChaosStep,
}

impl Code {
    /// `RB001` and so on.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "RB001",
            Code::Version => "RB002",
            Code::Name => "RB003",
            Code::Matcher => "RB004",
            Code::DuplicateStep => "RB005",
            Code::UnknownStep => "RB006",
            Code::DuplicateRunbook => "RB007",
            Code::Duration => "RB008",
            Code::GroupBy => "RB009",
            Code::Source => "RB010",
            Code::StepId => "RB011",
            Code::Io => "RB012",
            Code::Template => "RB013",
            Code::Test => "RB014",
            Code::UnknownInterval => "RB015",
            Code::Interval => "RB016",
            Code::DestructiveVerify => "RB017",
            Code::UnknownParam => "RB018",
            Code::Params => "RB019",
            Code::ChaosProbe => "CH001",
            Code::BlastRadius => "CH002",
            Code::Schedule => "CH003",
            Code::ChaosStep => "CH004",
        }
    }
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, 0 when the problem has no place (an unreadable file).
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// The stable code.
    pub code: Code,
    /// Where in the document: `steps[2].with.replicas`; empty for the whole file.
    pub path: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": error[{}]: ", self.code.as_str())?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        // Text from the file is echoed in messages; keep control characters
        // from reaching the terminal.
        for c in self.message.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Where `key` is written in the YAML mapping that starts at `map` (the
/// place serde-saphyr gives a mapping: its first key, or its `{`): the
/// line and column of the key itself, so a misspelt parameter is reported
/// where it is. Falls back to `map` when the key cannot be found.
pub fn key_position(text: &str, map: &serde_saphyr::Location, key: &str) -> (u64, u64) {
    let fallback = (map.line(), map.column());
    let (Ok(line), Ok(column)) = (usize::try_from(map.line()), usize::try_from(map.column()))
    else {
        return fallback;
    };
    if line == 0 || column == 0 {
        return fallback;
    }
    let lines: Vec<&str> = text.lines().collect();
    let Some(first) = lines.get(line - 1) else {
        return fallback;
    };
    let indent = column - 1;
    let is_key = |rest: &str| {
        [
            format!("{key}:"),
            format!("\"{key}\":"),
            format!("'{key}':"),
        ]
        .iter()
        .any(|k| rest.starts_with(k.as_str()))
    };
    if first.get(indent..).is_some_and(|r| r.starts_with('{')) {
        // A flow mapping: the key after `{` or `,`, on this line or the next.
        for (n, l) in lines.iter().enumerate().skip(line - 1).take(20) {
            let from = if n == line - 1 { indent } else { 0 };
            let bytes = l.as_bytes();
            for i in from..l.len() {
                let after_sep = i == 0 || matches!(bytes[i - 1], b'{' | b',' | b' ' | b'\t');
                if after_sep && l.get(i..).is_some_and(is_key) {
                    return ((n + 1) as u64, (i + 1) as u64);
                }
            }
            if l.contains('}') && n > line - 1 {
                break;
            }
        }
        return fallback;
    }
    // A block mapping: keys at the first key's indentation, until a line
    // that is indented less.
    for (n, l) in lines.iter().enumerate().skip(line - 1) {
        let trimmed = l.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let here = l.len() - trimmed.len();
        if n > line - 1 && here < indent {
            break;
        }
        if here == indent && is_key(trimmed) {
            return ((n + 1) as u64, column as u64);
        }
    }
    fallback
}
