//! Label matchers in Alertmanager's string form: `name="value"`,
//! `name!="value"`, or unquoted `name=value`. A missing label counts as `""`,
//! as in Alertmanager.

use std::collections::BTreeMap;
use std::fmt;

/// The comparison a matcher makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`: the label equals the value.
    Equal,
    /// `!=`: the label differs from the value.
    NotEqual,
}

/// One label matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value compared against.
    pub value: String,
}

impl Matcher {
    /// Parses `name="value"`, `name!="value"` or `name=value`.
    pub fn parse(s: &str) -> Result<Matcher, String> {
        let s = s.trim();
        let Some(idx) = s.find(['=', '!']) else {
            return Err(format!(
                "matcher {s:?} has no operator (expected name=\"value\")"
            ));
        };
        let name = s[..idx].trim();
        let rest = &s[idx..];
        let (op, value) = if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, v)
        } else if rest.starts_with("=~") || rest.starts_with("!~") {
            return Err(format!(
                "matcher {s:?}: regex operators (=~, !~) are not supported yet; use = or !="
            ));
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Equal, v)
        } else {
            return Err(format!("matcher {s:?}: unknown operator"));
        };
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!("matcher {s:?}: {name:?} is not a valid label name"));
        }
        let value = value.trim();
        let value = if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            unescape(&value[1..value.len() - 1])
                .ok_or_else(|| format!("matcher {s:?}: bad escape in quoted value"))?
        } else if value.contains('"') {
            return Err(format!("matcher {s:?}: unbalanced quotes"));
        } else {
            value.to_string()
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value,
        })
    }

    /// Whether the labels satisfy this matcher. A missing label is `""`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                'n' => out.push('\n'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
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
        let m = Matcher::parse(r#"alertname="High CPU""#).unwrap();
        assert_eq!(
            (m.name.as_str(), m.op, m.value.as_str()),
            ("alertname", MatchOp::Equal, "High CPU")
        );
        let m = Matcher::parse("severity != page").unwrap();
        assert_eq!((m.op, m.value.as_str()), (MatchOp::NotEqual, "page"));
        let m = Matcher::parse(r#"msg="a \"q\"""#).unwrap();
        assert_eq!(m.value, "a \"q\"");
        assert!(Matcher::parse("novalue").is_err());
        assert!(Matcher::parse(r#"sev=~"crit.*""#).is_err());
        assert!(Matcher::parse(r#"9bad="x""#).is_err());
        assert!(Matcher::parse(r#"a="x"#).is_err());
    }

    #[test]
    fn missing_label_is_empty() {
        let l = labels(&[("alertname", "X")]);
        assert!(Matcher::parse(r#"team="""#).unwrap().matches(&l));
        assert!(!Matcher::parse(r#"team!="""#).unwrap().matches(&l));
        assert!(Matcher::parse(r#"team!="db""#).unwrap().matches(&l));
        assert!(Matcher::parse("alertname=X").unwrap().matches(&l));
    }
}
