//! Label matchers with Alertmanager's semantics.
//!
//! - Operators: `=`, `!=`, `=~`, `!~`.
//! - Regexes are fully anchored: `=~"web"` matches `web`, not `web-1`.
//! - A missing label counts as `""`: `team=""` matches an alert without
//!   `team`, and `team!~".+"` does too.
//! - The string form is Alertmanager's: `name op value`, the value either
//!   double-quoted (with `\"`, `\\` and `\n` escapes) or bare.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// The comparison a matcher makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`: the label equals the value.
    Equal,
    /// `!=`: the label differs from the value.
    NotEqual,
    /// `=~`: the whole label matches the regex.
    Regex,
    /// `!~`: the whole label does not match the regex.
    NotRegex,
}

impl MatchOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value (or regex source) compared against.
    pub value: String,
    /// The anchored regex, for `=~` and `!~`.
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

/// Compiled regexes are bounded, so a hostile runbook cannot make the
/// engine build an enormous automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a matcher does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    /// The label name breaks Prometheus's rules.
    #[error("{0:?} is not a valid label name (letters, digits and '_', not starting with a digit)")]
    LabelName(String),
    /// The regex does not compile (or is too large).
    #[error("invalid regex {0:?}: {1}")]
    Regex(String, String),
    /// The text does not start with a label name.
    #[error("matcher {0:?} does not start with a label name")]
    NoName(String),
    /// No operator after the name.
    #[error("matcher {0:?} has no operator after {1:?} (expected =, !=, =~ or !~)")]
    NoOperator(String, String),
    /// `"value` without its closing quote.
    #[error("matcher {0:?}: the quoted value is not closed")]
    Unclosed(String),
    /// An escape other than `\"`, `\\` or `\n`.
    #[error("matcher {0:?}: bad escape in the quoted value (use \\\", \\\\ or \\n)")]
    Escape(String),
    /// A quote inside an unquoted value.
    #[error("matcher {0:?}: unbalanced quotes in the value")]
    Quotes(String),
    /// The matcher `{0}` is well formed but its name or regex is not.
    #[error("matcher {0:?}: {1}")]
    In(String, Box<MatcherError>),
}

impl Matcher {
    /// Builds a matcher, compiling the anchored regex for `=~` and `!~`.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, MatcherError> {
        if !is_label_name(name) {
            return Err(MatcherError::LabelName(name.to_string()));
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                regex::RegexBuilder::new(&format!("^(?:{value})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        MatcherError::Regex(
                            value.to_string(),
                            first_line(&e.to_string()).to_string(),
                        )
                    })?,
            ),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Parses Alertmanager's string form, such as `severity=~"critical|page"`.
    pub fn parse(s: &str) -> Result<Matcher, MatcherError> {
        let t = s.trim();
        let name_end = t
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(t.len());
        let name = &t[..name_end];
        if name.is_empty() {
            return Err(MatcherError::NoName(s.to_string()));
        }
        let rest = t[name_end..].trim_start();
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Regex, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchOp::NotRegex, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Equal, v)
        } else {
            return Err(MatcherError::NoOperator(s.to_string(), name.to_string()));
        };
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('"') {
            let inner = inner
                .strip_suffix('"')
                .filter(|_| value.len() >= 2)
                .ok_or_else(|| MatcherError::Unclosed(s.to_string()))?;
            unescape(inner).ok_or_else(|| MatcherError::Escape(s.to_string()))?
        } else if value.contains('"') {
            return Err(MatcherError::Quotes(s.to_string()));
        } else {
            value.to_string()
        };
        Matcher::new(name, op, &value).map_err(|e| MatcherError::In(s.to_string(), Box::new(e)))
    }

    /// The label value this matcher looks at: the label, or `""` if missing.
    pub fn seen<'a>(&self, labels: &'a BTreeMap<String, String>) -> &'a str {
        labels.get(&self.name).map(String::as_str).unwrap_or("")
    }

    /// Whether the labels satisfy this matcher.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = self.seen(labels);
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(r)) => r.is_match(v),
            (MatchOp::NotRegex, Some(r)) => !r.is_match(v),
            (MatchOp::Regex | MatchOp::NotRegex, None) => {
                unreachable!("regex matchers are built with their regex")
            }
        }
    }
}

/// The regex crate's messages end with a line `error: <what>`; keep <what>.
fn first_line(s: &str) -> &str {
    let last = s.lines().last().unwrap_or(s).trim();
    last.strip_prefix("error: ").unwrap_or(last)
}

/// Prometheus label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                _ => return None,
            },
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_the_string_form() {
        let cases = [
            (
                r#"alertname="High CPU""#,
                "alertname",
                MatchOp::Equal,
                "High CPU",
            ),
            ("severity != page", "severity", MatchOp::NotEqual, "page"),
            (
                r#"severity=~"critical|page""#,
                "severity",
                MatchOp::Regex,
                "critical|page",
            ),
            (
                r#"pod !~ "canary-.*""#,
                "pod",
                MatchOp::NotRegex,
                "canary-.*",
            ),
            (
                r#"msg="a \"q\" \\ b""#,
                "msg",
                MatchOp::Equal,
                "a \"q\" \\ b",
            ),
            (r#"team="""#, "team", MatchOp::Equal, ""),
            ("team=", "team", MatchOp::Equal, ""),
        ];
        for (text, name, op, value) in cases {
            let m = Matcher::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (m.name.as_str(), m.op, m.value.as_str()),
                (name, op, value),
                "{text}"
            );
        }
        for bad in [
            "novalue",
            r#"=~"x""#,
            r#"9bad="x""#,
            r#"a="x"#,
            r#"a="x"y""#,
            r#"a=~"(unclosed""#,
            r#"a="\q""#,
            "a<b",
        ] {
            assert!(Matcher::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn alertmanager_semantics() {
        let l = labels(&[("alertname", "X"), ("pod", "web-1"), ("sev", "page")]);
        let yes = |s: &str| Matcher::parse(s).unwrap().matches(&l);
        // missing label is ""
        assert!(yes(r#"team="""#));
        assert!(!yes(r#"team!="""#));
        assert!(yes(r#"team!="db""#));
        assert!(yes(r#"team!~".+""#));
        assert!(yes(r#"team=~".*""#));
        // anchoring
        assert!(!yes(r#"pod=~"web""#));
        assert!(yes(r#"pod=~"web-.*""#));
        assert!(
            yes(r#"pod=~"web-1|db-1""#),
            "alternation is anchored as a whole"
        );
        assert!(!yes(r#"pod=~"eb-1""#));
        assert!(yes(r#"pod!~"web""#));
        assert!(yes(r#"sev=~"critical|page""#));
        assert!(!yes(r#"sev=~"crit|pag""#));
    }

    /// The reference: each regex of the test set written out by hand as
    /// the set of strings it fully matches, so the check does not lean on
    /// the regex engine or on our anchoring.
    fn reference_full_match(regex: &str, v: &str) -> bool {
        let all = |set: &str| v.chars().all(|c| set.contains(c));
        match regex {
            "" => v.is_empty(),
            "a" => v == "a",
            "ab" => v == "ab",
            "a.*" => v.starts_with('a'),
            "a|ab" => v == "a" || v == "ab",
            "b+" => !v.is_empty() && all("b"),
            "(a|b)c?" => ["a", "b", "ac", "bc"].contains(&v),
            ".*" => true,
            ".+" => !v.is_empty(),
            "[ab]{2}" => v.chars().count() == 2 && all("ab"),
            other => unreachable!("no reference for {other}"),
        }
    }

    fn reference(op: MatchOp, value: &str, label: Option<&str>) -> bool {
        let v = label.unwrap_or("");
        match op {
            MatchOp::Equal => v == value,
            MatchOp::NotEqual => v != value,
            MatchOp::Regex => reference_full_match(value, v),
            MatchOp::NotRegex => !reference_full_match(value, v),
        }
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_the_reference(
            op in proptest::sample::select(vec![MatchOp::Equal, MatchOp::NotEqual, MatchOp::Regex, MatchOp::NotRegex]),
            value in proptest::sample::select(vec!["", "a", "ab", "a.*", "a|ab", "b+", "(a|b)c?", ".*", ".+", "[ab]{2}"]),
            label in proptest::option::of("[abc]{0,3}"),
            other in proptest::collection::btree_map("[a-z]{1,3}", "[abc]{0,3}", 0..4),
        ) {
            // Random other labels around the one matched (possibly missing).
            let mut l: BTreeMap<String, String> = other.into_iter().filter(|(k, _)| k != "x").collect();
            if let Some(v) = &label { l.insert("x".to_string(), v.clone()); }
            let m = Matcher::new("x", op, value).unwrap();
            proptest::prop_assert_eq!(m.matches(&l), reference(op, value, label.as_deref()));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,40}") {
            let _ = Matcher::parse(&s);
        }

        #[test]
        fn display_round_trips(
            op in proptest::sample::select(vec![MatchOp::Equal, MatchOp::NotEqual, MatchOp::Regex, MatchOp::NotRegex]),
            value in "[a-z\"\\\\ ]{0,8}",
        ) {
            if let Ok(m) = Matcher::new("x", op, &value) {
                let back = Matcher::parse(&m.to_string()).unwrap();
                proptest::prop_assert_eq!(back, m);
            }
        }
    }
}
