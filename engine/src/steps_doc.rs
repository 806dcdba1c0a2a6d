//! `quench steps`: each step type's parameters, defaults, output and an
//! example, from the same definitions the code checks `with` against (the
//! params structs' schemas and the registry). `docs/RUNBOOKS.md` carries
//! the same text, and a test keeps the two equal.

use std::fmt::Write;

use quench_connectors::steps::StepType;
use serde_json::Value;

/// One parameter of a step type.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Param {
    /// Its name in `with`.
    pub name: String,
    /// Its type in words: `string`, `integer`, `one of cpu, heap, ...`,
    /// `secret ({env} or {file})`.
    pub kind: String,
    /// Whether a runbook must give it.
    pub required: bool,
    /// Its default, when it has one worth saying.
    pub default: Option<Value>,
    /// What it is.
    pub description: String,
}

/// A step type, described.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepDoc {
    /// The name after `uses:`.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Whether it changes something (guards, approvals, budgets apply).
    pub destructive: bool,
    /// Whether `executor.dry_run` asks its server.
    pub server_dry_run: bool,
    /// Its parameters, required first.
    pub params: Vec<Param>,
    /// What `steps.<id>.output` holds.
    pub output: &'static str,
    /// A step using it, as YAML.
    pub example: String,
}

/// The words a parameter takes, when it is a choice: `enum`, or `oneOf`
/// of `const`s (how a documented enum comes out of the schema).
fn choices(p: &Value) -> Vec<&str> {
    if let Some(e) = p["enum"].as_array() {
        return e.iter().filter_map(Value::as_str).collect();
    }
    p["oneOf"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["const"].as_str().or_else(|| v["enum"][0].as_str()))
        .collect()
}

fn kind_of(p: &Value) -> String {
    let c = choices(p);
    if !c.is_empty() {
        return format!("one of {}", c.join(", "));
    }
    if p["properties"]["env"].is_object() && p["properties"]["file"].is_object() {
        return "secret: {env: NAME} or {file: PATH}".into();
    }
    let types: Vec<&str> = match &p["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    match types.as_slice() {
        [] if p["oneOf"].is_array() || p["anyOf"].is_array() => "see the schema".into(),
        [] => "any".into(),
        ["integer", "string"] | ["string", "integer"] => "integer (or a template)".into(),
        ["array"] => match p["items"]["type"].as_str() {
            Some(t) => format!("list of {t}"),
            None => "list".into(),
        },
        ["object"] => "map".into(),
        t => t.join(" or "),
    }
}

/// A value for the example: something a runbook would write.
fn example_value(name: &str, p: &Value) -> Value {
    if let Some(first) = choices(p).first() {
        return Value::String(first.to_string());
    }
    if p["properties"]["env"].is_object() {
        return serde_json::json!({"env": format!("{}_SECRET", name.to_ascii_uppercase())});
    }
    let s = |v: &str| Value::String(v.into());
    match name {
        "url" | "server" => s("http://checkout:6060"),
        "namespace" => s("{{k8s_name alert.labels.namespace}}"),
        "name" | "deployment" | "app" => s("{{k8s_name alert.labels.deployment}}"),
        "pod" => s("{{k8s_name alert.labels.pod}}"),
        "node" => s("{{k8s_name alert.labels.node}}"),
        "query" => s("up{job=\"checkout\"}"),
        "condition" => s("== 1"),
        "kind" => s("Deployment"),
        "for" => s("available"),
        "argv" => serde_json::json!(["/bin/true"]),
        "title" | "summary" => s("{{alert.labels.alertname}} on {{alert.labels.service}}"),
        _ => match kind_of(p).as_str() {
            k if k.starts_with("integer") => p["minimum"]
                .as_u64()
                .filter(|m| *m > 0)
                .map_or(Value::from(1), Value::from),
            "number" => Value::from(1),
            "boolean" => Value::Bool(false),
            "map" => serde_json::json!({}),
            k if k.starts_with("list") => serde_json::json!([]),
            _ => s("..."),
        },
    }
}

fn d_has_required(params: &[Param], name: &str) -> bool {
    params.iter().any(|p| p.required && p.name == name)
}

/// Every step type, described.
pub fn all() -> Vec<StepDoc> {
    StepType::ALL.iter().map(|t| describe(*t)).collect()
}

/// One step type, described.
pub fn describe(t: StepType) -> StepDoc {
    let schema = serde_json::to_value(t.with_schema()).unwrap_or_default();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut params: Vec<Param> = schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, p)| Param {
            name: name.clone(),
            kind: kind_of(p),
            required: required.contains(&name.as_str()),
            default: p.get("default").filter(|d| !d.is_null()).cloned(),
            description: p["description"]
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect();
    params.sort_by_key(|p| !p.required);
    let mut with = serde_json::Map::new();
    // The required parameters, and a target where the step takes one of
    // several (a URL, for the evidence steps).
    let target = |p: &&Param| !p.required && p.name == "url" && !d_has_required(&params, "pod");
    for p in params.iter().filter(|p| p.required || target(p)) {
        with.insert(
            p.name.clone(),
            example_value(&p.name, &schema["properties"][&p.name]),
        );
    }
    let id = t.name().replace('.', "_");
    let example = format!(
        "- id: {id}\n  uses: {}\n  with: {}\n",
        t.name(),
        serde_json::to_string(&Value::Object(with)).unwrap_or_default()
    );
    StepDoc {
        name: t.name(),
        description: t.describe(),
        destructive: t.is_destructive(),
        server_dry_run: t.server_dry_run(),
        params,
        output: t.output(),
        example,
    }
}

/// One step type as Markdown, the way `docs/RUNBOOKS.md` lists them.
pub fn markdown(d: &StepDoc) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### `{}`\n", d.name);
    let mut line = d.description.to_string();
    if d.destructive {
        line.push_str(
            " Changes things: the guards apply (dry run, approval, budget, kill switch).",
        );
    }
    if d.server_dry_run {
        line.push_str(" With `executor.dry_run`, its server checks it and changes nothing.");
    }
    let _ = writeln!(out, "{line}\n");
    let _ = writeln!(out, "| parameter | type | default | |\n|---|---|---|---|");
    for p in &d.params {
        let default = match (&p.default, p.required) {
            (_, true) => "required".to_string(),
            (Some(v), _) => format!("`{v}`"),
            (None, false) => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {default} | {} |",
            p.name,
            p.kind.replace('|', "\\|"),
            p.description.replace('|', "\\|")
        );
    }
    if !d.output.is_empty() {
        let _ = writeln!(out, "\nOutput: {}", d.output);
    }
    let _ = writeln!(out, "\n```yaml\n{}```\n", d.example);
    out
}

/// The `## Step types` section of `docs/RUNBOOKS.md`.
pub fn markdown_all() -> String {
    let mut out = String::from(
        "## Step types\n\nGenerated by `quench steps --markdown` from the step types' own definitions; a test keeps this section equal to it.\n\n",
    );
    for d in all() {
        out.push_str(&markdown(&d));
    }
    out
}

/// One step type for a terminal.
pub fn text(d: &StepDoc) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: {}", d.name, d.description);
    if d.destructive {
        let _ = writeln!(
            out,
            "changes things: dry run, approval, budget and kill switch apply"
        );
    }
    if d.server_dry_run {
        let _ = writeln!(
            out,
            "with executor.dry_run, its server checks it and changes nothing"
        );
    }
    let _ = writeln!(out, "\nparameters:");
    for p in &d.params {
        let default = match (&p.default, p.required) {
            (_, true) => "required".to_string(),
            (Some(v), _) => format!("default {v}"),
            (None, false) => "optional".to_string(),
        };
        let _ = writeln!(out, "  {:<16} {:<28} {default}", p.name, p.kind);
        if !p.description.is_empty() {
            let _ = writeln!(out, "  {:<16} {}", "", p.description);
        }
    }
    if !d.output.is_empty() {
        let _ = writeln!(out, "\noutput (steps.<id>.output): {}", d.output);
    }
    let _ = writeln!(out, "\nexample:\n{}", d.example);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/RUNBOOKS.md lists the step types exactly as `quench steps
    /// --markdown` prints them.
    #[test]
    fn the_runbook_docs_list_every_step_type_as_the_code_defines_it() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/RUNBOOKS.md");
        let docs = std::fs::read_to_string(&path).unwrap();
        let want = markdown_all();
        assert!(
            docs.contains(&want),
            "docs/RUNBOOKS.md is out of date: replace its `## Step types` section with the output of `quench steps --markdown`"
        );
    }

    /// Every example passes the lint's own check, and every step type says
    /// what it outputs.
    #[test]
    fn every_example_is_valid_and_every_output_is_described() {
        for d in all() {
            assert!(
                !d.output.is_empty(),
                "{} says nothing of its output",
                d.name
            );
            assert!(!d.description.is_empty(), "{}", d.name);
            let dir = tempfile::tempdir().unwrap();
            let steps: String = d.example.lines().map(|l| format!("  {l}\n")).collect();
            std::fs::write(
                dir.path().join("r.yaml"),
                format!("version: 1\nname: r\nmatch: {{}}\nsteps:\n{steps}"),
            )
            .unwrap();
            if let Err(e) = quench_runbooks::load_dir(dir.path(), None) {
                panic!("{}: {e:#?}\n{}", d.name, d.example);
            }
        }
    }
}
