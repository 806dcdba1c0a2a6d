//! Templates in runbooks: handlebars in strict mode.
//!
//! A missing variable is an error, never an empty string: `{{alert.labels.pod}}`
//! on an alert without `pod` fails the step instead of acting on `""`.
//! Rendered values come from alert labels, which are untrusted, so the
//! helpers that turn them into something an API will act on validate them:
//!
//! - `{{k8s_name alert.labels.pod}}`: a DNS-1123 name (lowercase letters,
//!   digits, `-` and `.`, at most 253 characters) or the render fails;
//! - `{{duration alert.labels.window}}`: a duration such as `5m`;
//! - `{{json steps.scale.output.revert}}`: a value as JSON text, for a
//!   step that takes a whole object (`k8s.revert`).
//!
//! No step type takes a shell string: `k8s.exec` takes an argv list whose
//! elements are rendered one by one, so a label value can never become a
//! second command.
//!
//! The context a template sees: `alert` (`labels`, `annotations`,
//! `fingerprint`, `status`, `source`, `startsAt`), `incident`,
//! `steps.<id>.output`, `env` (an allowlist) and `runbook`.

use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};
use std::collections::BTreeMap;

use quench_connectors::Alert;
use serde_json::{Value, json};

/// The runbook a template belongs to, as templates see it
/// (`{{runbook.name}}`, `{{runbook.path}}`).
#[derive(Debug, Clone, Copy)]
pub struct RunbookInfo<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its file, relative to the runbook directory.
    pub path: &'a str,
}

/// Why a template does not compile or render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template does not parse (a missing `}}`, say), at line:column.
    #[error("{}", syntax_message(.at, .reason))]
    Syntax {
        /// Line and column in the template, when known.
        at: Option<(usize, usize)>,
        /// What the parser said.
        reason: String,
    },
    /// A variable the alert does not have (templates are strict).
    #[error("{0} is not defined for this alert (templates are strict)")]
    Missing(String),
    /// Another rendering failure (a helper refused its argument, say).
    #[error("{0}")]
    Render(String),
    /// `when` rendered to something other than true or false.
    #[error("`when` must render to true or false, got {0:?}")]
    NotABool(String),
    /// The failure of one value of a `with` block, with its path.
    #[error("{path}: {source}")]
    At {
        /// `steps[0].with.url`.
        path: String,
        /// What failed there.
        source: Box<TemplateError>,
    },
}

fn syntax_message(at: &Option<(usize, usize)>, reason: &str) -> String {
    match at {
        Some((line, col)) => format!("template error at {line}:{col}: {reason}"),
        None => format!("template error: {reason}"),
    }
}

/// A `{{` with no `}}` after it, said in words (handlebars' parser only
/// says what token it expected), at its line and column.
fn unclosed(text: &str) -> Option<TemplateError> {
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find("{{") {
        let open = offset + i;
        let after = &rest[i + 2..];
        match after.find("}}") {
            // Another `{{` before this one closes: this one is unclosed.
            Some(j) if !after[..j].contains("{{") => {
                offset = open + 2 + j + 2;
                rest = &after[j + 2..];
            }
            _ => {
                let snippet: String = text[open..].chars().take(40).collect();
                return Some(TemplateError::Syntax {
                    at: Some(line_col(text, open)),
                    reason: format!("`{snippet}` opens with {{{{ and never closes: add }}}}"),
                });
            }
        }
    }
    // Blocks: every `{{#name` needs its `{{/name}}`.
    let mut open_blocks: Vec<(&str, usize)> = Vec::new();
    let mut at = 0;
    while let Some(i) = text[at..].find("{{") {
        let start = at + i;
        let tag = &text[start + 2..];
        let name = |t: &'static str, tag: &str| -> Option<usize> {
            tag.strip_prefix(t).map(|r| {
                r.find(|c: char| c.is_whitespace() || c == '}' || c == '~')
                    .unwrap_or(r.len())
            })
        };
        if let Some(n) = name("#", tag) {
            open_blocks.push((&tag[1..1 + n], start));
        } else if let Some(n) = name("/", tag) {
            let closing = &tag[1..1 + n];
            match open_blocks.pop() {
                Some((opened, _)) if opened == closing => {}
                Some((opened, pos)) => {
                    return Some(TemplateError::Syntax {
                        at: Some(line_col(text, start)),
                        reason: format!(
                            "`{{{{/{closing}}}}}` closes `{{{{#{opened}` (opened at column {})",
                            line_col(text, pos).1
                        ),
                    });
                }
                None => {
                    return Some(TemplateError::Syntax {
                        at: Some(line_col(text, start)),
                        reason: format!("`{{{{/{closing}}}}}` closes a block that never opened"),
                    });
                }
            }
        }
        at = start + 2;
    }
    if let Some((opened, pos)) = open_blocks.pop() {
        return Some(TemplateError::Syntax {
            at: Some(line_col(text, pos)),
            reason: format!("the `{{{{#{opened}` block never closes: add `{{{{/{opened}}}}}`"),
        });
    }
    None
}

/// 1-based line and column of byte `pos` in `text`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The template context for an alert: what `{{...}}` can reach. `vars`
/// becomes `env`: only allowlisted variables; the caller decides which.
pub fn context(
    alert: &Alert,
    runbook: RunbookInfo<'_>,
    incident_id: &str,
    outputs: &serde_json::Map<String, Value>,
    vars: &BTreeMap<String, String>,
) -> Value {
    let steps: serde_json::Map<String, Value> = outputs
        .iter()
        .map(|(id, out)| (id.clone(), json!({ "output": out })))
        .collect();
    json!({
        "alert": {
            "labels": alert.labels,
            "annotations": alert.annotations,
            "fingerprint": alert.fingerprint,
            "status": alert.status.as_str(),
            "source": alert.source.to_string(),
            "startsAt": alert.starts_at,
        },
        "runbook": {"name": runbook.name, "path": runbook.path},
        "incident": {"id": incident_id},
        "steps": steps,
        "env": vars,
    })
}

/// A strict handlebars registry with quench's helpers.
pub struct Templates {
    hb: Handlebars<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

/// Whether `s` is a DNS-1123 subdomain, the rule for most Kubernetes names.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// `{{json value}}`: the value as JSON text, so a step can receive a whole
/// object from an earlier step's output (`k8s.revert`'s record).
struct Json;

impl HelperDef for Json {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let v = h
            .param(0)
            .ok_or_else(|| RenderErrorReason::Other("json takes one value".into()))?;
        if v.is_value_missing() {
            let path = v.relative_path().map(String::as_str).unwrap_or("a value");
            return Err(RenderErrorReason::Other(format!(
                "{path} is not defined for this alert (templates are strict)"
            ))
            .into());
        }
        Ok(ScopedJson::Derived(Value::String(v.value().to_string())))
    }
}

struct Validate {
    what: &'static str,
    ok: fn(&str) -> bool,
    /// What the value becomes once it is valid (escaping), if anything.
    escape: Option<fn(&str) -> String>,
}

/// Whether `s` is `host` or `host:port`, as Prometheus' `instance` label
/// holds it: a DNS name, an IPv4 address or a bracketed IPv6 address, and
/// a port of 1 to 65535. Nothing else (no scheme, user, path or query) can
/// slip into the URL it is put in.
pub fn is_host_port(s: &str) -> bool {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, after)) => {
                if h.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match after {
                    "" => return true,
                    p => match p.strip_prefix(':') {
                        Some(p) => ("x", p),
                        None => return false,
                    },
                }
            }
            None => return false,
        },
        None => match s.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (s, ""),
        },
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    let port_ok = port.is_empty()
        || (port.len() <= 5
            && port.chars().all(|c| c.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)));
    host_ok && port_ok
}

/// A label value inside a PromQL string literal (`"..."`): backslashes,
/// double quotes and line breaks escaped, so the value cannot end the
/// string and add to the query.
fn promql_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

impl HelperDef for Validate {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let v = h
            .param(0)
            .ok_or_else(|| RenderErrorReason::Other(format!("{} takes one value", h.name())))?;
        // Strict mode does not cover helper arguments; a missing one is as
        // much an error here as anywhere.
        if v.is_value_missing() {
            let path = v.relative_path().map(String::as_str).unwrap_or("a value");
            return Err(RenderErrorReason::Other(format!(
                "{path} is not defined for this alert (templates are strict)"
            ))
            .into());
        }
        let s = match v.value() {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(RenderErrorReason::Other(format!(
                    "{}: {} is not a string",
                    h.name(),
                    other
                ))
                .into());
            }
        };
        if (self.ok)(&s) {
            let s = match self.escape {
                Some(f) => f(&s),
                None => s,
            };
            Ok(ScopedJson::Derived(Value::String(s)))
        } else {
            Err(RenderErrorReason::Other(format!("{s:?} is not a valid {}", self.what)).into())
        }
    }
}

impl Templates {
    /// A registry in strict mode, without HTML escaping, with `k8s_name`,
    /// `duration`, `host_port` (a URL's host from a label) and `promql_str`
    /// (a label value inside a PromQL `"..."`).
    pub fn new() -> Templates {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        hb.register_helper(
            "k8s_name",
            Box::new(Validate {
                what: "Kubernetes name (DNS-1123: lowercase letters, digits, '-', '.')",
                ok: is_dns1123_subdomain,
                escape: None,
            }),
        );
        hb.register_helper(
            "duration",
            Box::new(Validate {
                what: "duration (30s, 5m, 1h30m)",
                ok: |s| crate::duration::parse(s).is_ok(),
                escape: None,
            }),
        );
        hb.register_helper(
            "host_port",
            Box::new(Validate {
                what: "host or host:port (a DNS name or an IP address, and a port)",
                ok: is_host_port,
                escape: None,
            }),
        );
        hb.register_helper(
            "promql_str",
            Box::new(Validate {
                what: "label value",
                ok: |_| true,
                escape: Some(promql_escape),
            }),
        );
        hb.register_helper("json", Box::new(Json));
        Templates { hb }
    }

    /// Checks a template's syntax without rendering it.
    pub fn check(text: &str) -> Result<(), TemplateError> {
        if let Some(e) = unclosed(text) {
            return Err(e);
        }
        handlebars::Template::compile(text)
            .map(|_| ())
            .map_err(|e| TemplateError::Syntax {
                at: e.pos(),
                reason: e.reason().to_string(),
            })
    }

    /// Renders one template.
    pub fn render(&self, text: &str, ctx: &Value) -> Result<String, TemplateError> {
        self.hb
            .render_template(text, ctx)
            .map_err(|e| match e.reason() {
                RenderErrorReason::MissingVariable(Some(v)) => TemplateError::Missing(v.clone()),
                other => TemplateError::Render(other.to_string()),
            })
    }

    /// Renders every string of a `with` block that holds a template; other
    /// values are kept as written. `path` names the block in errors.
    pub fn render_value(&self, v: &Value, ctx: &Value, path: &str) -> Result<Value, TemplateError> {
        Ok(match v {
            Value::String(s) if s.contains("{{") => {
                Value::String(self.render(s, ctx).map_err(|e| TemplateError::At {
                    path: path.to_string(),
                    source: Box::new(e),
                })?)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| self.render_value(x, ctx, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, x)| {
                        Ok((
                            k.clone(),
                            self.render_value(x, ctx, &format!("{path}.{k}"))?,
                        ))
                    })
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Evaluates a `when` condition: a template that renders to `true` or
    /// `false`, such as `{{eq alert.labels.severity "critical"}}`.
    pub fn eval_when(&self, text: &str, ctx: &Value) -> Result<bool, TemplateError> {
        match self.render(text, ctx)?.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(TemplateError::NotABool(other.to_string())),
        }
    }

    /// Every template string in a `with` block, with its path.
    pub fn strings<'v>(v: &'v Value, path: String, out: &mut Vec<(String, &'v str)>) {
        match v {
            Value::String(s) if s.contains("{{") => out.push((path, s)),
            Value::Array(items) => {
                for (i, x) in items.iter().enumerate() {
                    Templates::strings(x, format!("{path}[{i}]"), out);
                }
            }
            Value::Object(map) => {
                for (k, x) in map {
                    Templates::strings(x, format!("{path}.{k}"), out);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> Value {
        json!({"alert": {"labels": {"pod": "web-1", "bad": "web; rm -rf /", "up": "../x", "sev": "critical", "win": "5m"}}})
    }

    #[test]
    fn strict_mode_refuses_missing_variables() {
        let t = Templates::new();
        assert_eq!(t.render("{{alert.labels.pod}}", &ctx()).unwrap(), "web-1");
        let err = t
            .render("{{alert.labels.namespace}}", &ctx())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("alert.labels.namespace") && err.contains("not defined"),
            "{err}"
        );
    }

    #[test]
    fn json_renders_a_whole_value_as_json_text() {
        let t = Templates::new();
        let c = json!({"steps": {"scale": {"output": {"revert": {"patch": {"spec": {"replicas": 2}}, "note": "a \"q\""}}}}});
        let text = t.render("{{json steps.scale.output.revert}}", &c).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c["steps"]["scale"]["output"]["revert"]);
        let err = t
            .render("{{json steps.nope.output}}", &c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not defined"), "{err}");
    }

    #[test]
    fn no_html_escaping() {
        let t = Templates::new();
        assert_eq!(
            t.render("{{alert.labels.bad}}", &ctx()).unwrap(),
            "web; rm -rf /"
        );
    }

    #[test]
    fn k8s_name_rejects_untrusted_values() {
        let t = Templates::new();
        assert_eq!(
            t.render("{{k8s_name alert.labels.pod}}", &ctx()).unwrap(),
            "web-1"
        );
        for label in ["bad", "up"] {
            let err = t
                .render(&format!("{{{{k8s_name alert.labels.{label}}}}}"), &ctx())
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a valid Kubernetes name"), "{err}");
        }
        assert!(is_dns1123_subdomain("a.b-c.d"));
        for bad in ["", "A", "-a", "a-", "a..b", "a_b", &"a".repeat(64)] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
        assert_eq!(
            t.render("{{duration alert.labels.win}}", &ctx()).unwrap(),
            "5m"
        );
        assert!(t.render("{{duration alert.labels.pod}}", &ctx()).is_err());
        let err = t
            .render("{{k8s_name alert.labels.namespace}}", &ctx())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("alert.labels.namespace is not defined"),
            "{err}"
        );
    }

    #[test]
    fn renders_with_blocks_and_when() {
        let t = Templates::new();
        let with = json!({"pod": "{{alert.labels.pod}}", "argv": ["reset", "{{alert.labels.bad}}"], "n": 3});
        assert_eq!(
            t.render_value(&with, &ctx(), "steps[0].with").unwrap(),
            json!({"pod": "web-1", "argv": ["reset", "web; rm -rf /"], "n": 3})
        );
        let err = t
            .render_value(&json!({"x": ["{{nope}}"]}), &ctx(), "steps[0].with")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("steps[0].with.x[0]: "), "{err}");
        assert!(
            t.eval_when(r#"{{eq alert.labels.sev "critical"}}"#, &ctx())
                .unwrap()
        );
        assert!(
            !t.eval_when(r#"{{eq alert.labels.sev "page"}}"#, &ctx())
                .unwrap()
        );
        assert!(t.eval_when("{{alert.labels.pod}}", &ctx()).is_err());
        assert!(Templates::check("{{#if x}}unclosed").is_err());
        assert!(Templates::check("{{alert.labels.pod}}").is_ok());
    }

    #[test]
    fn a_missing_closing_brace_pair_is_said_in_words() {
        let e = Templates::check("{{alert.labels.x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "template error at 1:1: `{{alert.labels.x` opens with {{ and never closes: add }}"
        );
        let e = Templates::check("ok {{a}} then {{b c").unwrap_err();
        assert!(
            e.to_string().starts_with("template error at 1:15: `{{b c`"),
            "{e}"
        );
        let e = Templates::check("{{a {{b}}").unwrap_err();
        assert!(e.to_string().contains("`{{a {{b}}` opens with"), "{e}");
        assert!(Templates::check("{{a}} and {{b}}").is_ok());
        let e = Templates::check("{{#if alert.labels.x}}true").unwrap_err();
        assert_eq!(
            e.to_string(),
            "template error at 1:1: the `{{#if` block never closes: add `{{/if}}`"
        );
        let e = Templates::check("{{#if a}}x{{/each}}").unwrap_err();
        assert!(e.to_string().contains("`{{/each}}` closes `{{#if`"), "{e}");
        assert!(Templates::check("{{#if a}}{{#each b}}x{{/each}}{{/if}}").is_ok());
    }

    #[test]
    fn host_port_and_promql_str_keep_labels_in_their_place() {
        for ok in [
            "10.0.0.7:6060",
            "checkout-1.shop.svc:8080",
            "localhost",
            "[::1]:9090",
            "[fe80::1]",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.com/x",
            "user@evil.com:80",
            "http://x:1",
            "x:0",
            "x:99999",
            "x:80?y",
            "[::1",
            "-bad:80",
            "a b:80",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
        let t = Templates::new();
        let ctx = serde_json::json!({"alert": {"labels": {"instance": "10.0.0.7:6060", "svc": "a\"}) or vector(1) # \\"}}});
        assert_eq!(
            t.render("http://{{host_port alert.labels.instance}}/debug", &ctx)
                .unwrap(),
            "http://10.0.0.7:6060/debug"
        );
        let q = t
            .render(r#"up{service="{{promql_str alert.labels.svc}}"}"#, &ctx)
            .unwrap();
        assert_eq!(q, r#"up{service="a\"}) or vector(1) # \\"}"#);
        let bad = serde_json::json!({"alert": {"labels": {"instance": "evil.com/steal?x="}}});
        assert!(
            t.render("http://{{host_port alert.labels.instance}}", &bad)
                .unwrap_err()
                .to_string()
                .contains("is not a valid host or host:port")
        );
    }
}
