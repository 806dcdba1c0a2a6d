//! `quench lint`, `test`, `explain` and `schema`: a runbook directory,
//! without a server.

use std::path::Path;

/// Loads a runbook directory, printing every diagnostic to stderr.
pub fn load_runbooks(
    dir: &std::path::Path,
    triage: Option<&str>,
) -> anyhow::Result<quench_runbooks::RunbookSet> {
    quench_runbooks::load_dir(dir, triage).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        anyhow::anyhow!("{} problem(s) in {}", errors.len(), dir.display())
    })
}

/// `quench lint`: runbooks and chaos experiments alike. With `json`, the
/// problems as a list of objects on stdout.
pub fn lint(dir: &Path, triage: Option<&str>, json: bool) -> anyhow::Result<()> {
    // Runbooks and chaos experiments (`*.chaos.yaml`) alike; every
    // problem of both is printed before the exit status says so.
    let runbooks = quench_runbooks::load_dir(dir, triage);
    let experiments = quench_chaos::load_experiments(dir);
    let mut errors = Vec::new();
    if let Err(e) = &runbooks {
        errors.extend(e.iter().cloned());
    }
    if let Err(e) = &experiments {
        errors.extend(e.iter().cloned());
    }
    let counts = (
        runbooks.map(|s| s.runbooks.len()).unwrap_or(0),
        experiments.map(|e| e.len()).unwrap_or(0),
    );
    if json {
        let problems: Vec<_> = errors
            .iter()
            .map(|e| {
                serde_json::json!({
                    "file": e.file.display().to_string(),
                    "line": e.line,
                    "column": e.column,
                    "code": e.code.as_str(),
                    "path": e.path,
                    "message": e.message,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "dir": dir.display().to_string(),
                "runbooks": counts.0,
                "chaos_experiments": counts.1,
                "problems": problems,
            }))?
        );
    } else {
        for e in &errors {
            eprintln!("{e}");
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{} problem(s) in {}", errors.len(), dir.display());
    }
    if !json {
        println!(
            "{}: {} runbooks, {} chaos experiments, no problems",
            dir.display(),
            counts.0,
            counts.1
        );
    }
    Ok(())
}

/// `quench steps [TYPE]`: the step types, or one of them in full.
pub fn steps(step: Option<&str>, json: bool, markdown: bool) -> anyhow::Result<()> {
    use quench_engine::steps_doc;
    let docs = match step {
        None => steps_doc::all(),
        Some(name) => match quench_connectors::steps::StepType::from_name(name) {
            Some(t) => vec![steps_doc::describe(t)],
            None => anyhow::bail!(
                "no step type {name:?}; the step types: {}",
                quench_connectors::steps::StepType::names()
            ),
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&docs)?);
    } else if markdown && step.is_none() {
        print!("{}", steps_doc::markdown_all());
    } else if markdown {
        docs.iter()
            .for_each(|d| print!("{}", steps_doc::markdown(d)));
    } else if step.is_some() {
        docs.iter().for_each(|d| print!("{}", steps_doc::text(d)));
    } else {
        for d in &docs {
            println!(
                "{:<20} {}{}",
                d.name,
                if d.destructive { "[changes] " } else { "" },
                d.description
            );
        }
        println!(
            "
`quench steps TYPE` shows a type's parameters, output and an example."
        );
    }
    Ok(())
}

/// `quench schema`: the runbook format's JSON schema.
pub fn schema() -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&quench_runbooks::model::schema())?
    );
    Ok(())
}

/// `quench test`: the tests embedded in the runbooks. With `json`, one
/// object per test on stdout.
pub fn test(dir: &Path, triage: Option<&str>, json: bool) -> anyhow::Result<()> {
    let set = load_runbooks(dir, triage)?;
    let results = quench_runbooks::testing::run_tests(&set, dir);
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    if json {
        let out: Vec<_> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "runbook": r.runbook,
                    "path": r.path,
                    "test": r.test,
                    "passed": r.failures.is_empty(),
                    "failures": r.failures,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for r in &results {
            if r.failures.is_empty() {
                println!("ok   {} ({}): {}", r.runbook, r.path, r.test);
            } else {
                println!("FAIL {} ({}): {}", r.runbook, r.path, r.test);
                for f in &r.failures {
                    println!("     {f}");
                }
            }
        }
        println!(
            "{} tests, {} passed, {failed} failed",
            results.len(),
            results.len() - failed
        );
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} tests failed", results.len());
    }
    Ok(())
}

/// `quench explain`: which runbooks an alert runs, and why not the others;
/// then each step of those, rendered for the alert and checked as the run
/// would (warnings for a step that will not render or will be refused).
pub fn explain(
    runbooks: &Path,
    triage: Option<&str>,
    json: bool,
    config: &quench_engine::config::Config,
    alert: &Path,
) -> anyhow::Result<()> {
    let set = load_runbooks(runbooks, triage)?;
    let bytes = std::fs::read(alert)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", alert.display()))?;
    let alerts = quench_engine::explain::read_alerts(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", alert.display()))?;
    let hosts = match &config.executor.allowed_hosts {
        Some(list) => Some(
            quench_connectors::hosts::HostAllowlist::parse(list)
                .map_err(|e| anyhow::anyhow!("executor.allowed_hosts: {e}"))?,
        ),
        None => None,
    };
    let defaults = config.step_defaults();
    let env: std::collections::BTreeMap<String, String> = config
        .executor
        .env_allowlist
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
        .collect();
    let plans = |a: &quench_connectors::Alert, names: &[&str]| {
        names
            .iter()
            .filter_map(|n| set.runbooks.iter().find(|r| r.name() == *n))
            .map(|r| {
                (
                    r.name().to_string(),
                    quench_engine::explain::plan(r, a, &defaults, hosts.as_ref(), &env),
                )
            })
            .collect::<Vec<_>>()
    };
    let all: Vec<_> = alerts.iter().map(|a| (a, set.explain(a))).collect();
    let mut warnings = 0;
    if json {
        let out: Vec<_> = all
            .iter()
            .map(|(a, e)| {
                let steps: serde_json::Map<String, serde_json::Value> = plans(a, &e.matched())
                    .into_iter()
                    .map(|(name, p)| (name, serde_json::json!(p)))
                    .collect();
                serde_json::json!({"labels": a.labels, "status": a.status, "runs": e.matched(), "explanation": e, "steps": steps})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for (a, e) in &all {
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        println!("{} alert {{{}}}", a.status.as_str(), labels.join(", "));
        let runs = e.matched();
        println!(
            "  runs: {}",
            if runs.is_empty() {
                "nothing".to_string()
            } else {
                runs.join(", ")
            }
        );
        for line in e.lines() {
            println!("  {line}");
        }
        if a.status == quench_connectors::AlertStatus::Resolved {
            continue;
        }
        for (name, steps) in plans(a, &runs) {
            println!("  {name} would run:");
            for p in steps {
                let what = format!("{} ({})", p.id, p.uses);
                match (p.verdict, &p.with, &p.why) {
                    ("runs", Some(w), _) => println!("    {what}: {w}"),
                    ("skipped" | "depends", _, Some(why)) => {
                        println!("    {what}: {} ({why})", p.verdict)
                    }
                    (_, _, Some(why)) => {
                        warnings += 1;
                        println!(
                            "    warning: {what} {}: {why}",
                            if p.verdict == "refused" {
                                "will be refused"
                            } else {
                                "will not render"
                            }
                        )
                    }
                    _ => println!("    {what}"),
                }
            }
        }
    }
    if warnings > 0 {
        println!("{warnings} step(s) would not run as written for this alert");
    }
    Ok(())
}
