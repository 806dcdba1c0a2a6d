//! `quench chaos`: experiments, runs and schedules, through the API.

use std::path::PathBuf;

use clap::Subcommand;
use quench_engine::{api, client};

use super::Remote;

#[derive(Subcommand)]
pub enum ChaosCommand {
    /// The experiments in force and what is running.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Starts a run (admin). With --dry-run, works out every fault, the
    /// targets it would select now, the steps and rollbacks, injects
    /// nothing, and prints it.
    Run {
        /// The experiment's name (its file name without .chaos.yaml).
        name: String,
        /// Inject nothing; print what would happen (waits for it).
        #[arg(long)]
        dry_run: bool,
        /// Wait for the verdict and print it; exit 1 unless it passed (or,
        /// for a dry run, unless everything could be worked out).
        #[arg(long)]
        wait: bool,
        /// Print the verdict as JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stops a run; its rollbacks run.
    Abort {
        /// The run id.
        run: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// The next runs of every scheduled experiment.
    Schedule {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Verdicts, newest first.
    History {
        /// At most this many (1 or more).
        #[arg(long, default_value_t = 20, value_parser = super::at_least_one)]
        limit: usize,
        /// Also write them as JUnit XML, one test case per run, so a CI
        /// pipeline can gate a deploy on them.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Runs a `quench chaos` command.
pub async fn run(command: ChaosCommand) -> anyhow::Result<()> {
    match command {
        ChaosCommand::List { json, remote } | ChaosCommand::Schedule { json, remote } => {
            let list: api::ChaosList = remote
                .client()
                .get_json(&client::api_path(&["chaos"], &[]))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            if !list.schedules_on {
                println!(
                    "schedules are off (chaos.schedule: false): experiments run only when started"
                );
            }
            for e in &list.experiments {
                println!("{:<28} {}", e.name, e.title);
                if let Some(s) = &e.schedule
                    && !list.schedules_on
                {
                    println!("    schedule {} ({}): off", s.cron, s.describe);
                } else if let Some(s) = &e.schedule {
                    println!(
                        "    {} ({}, {}); next: {}",
                        s.cron,
                        s.describe,
                        s.timezone,
                        s.next
                            .iter()
                            .map(|t| t.to_rfc3339())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                for r in &e.running {
                    println!("    running: {r}");
                }
            }
        }
        ChaosCommand::Run {
            name,
            dry_run,
            wait,
            json,
            remote,
        } => {
            let wait = wait || dry_run;
            let client = remote.client();
            let query: &[(&str, &str)] = if dry_run { &[("dry_run", "true")] } else { &[] };
            let path = client::api_path(&["chaos", &name, "run"], query);
            let started: api::ChaosStarted = client.post(&path, &serde_json::json!({})).await?;
            let run = started.run;
            println!("{run}");
            if wait {
                loop {
                    let answer: api::ChaosRunAnswer = client
                        .get_json(&client::api_path(&["chaos", "runs", &run], &[]))
                        .await?;
                    if let api::ChaosRunAnswer::Done(v) = answer {
                        if json {
                            println!("{}", serde_json::to_string_pretty(&v)?);
                        } else {
                            print!("{}", format_report(&v));
                        }
                        if !v.verdict.outcome.is_success() {
                            anyhow::bail!("chaos run {run}: {}", v.verdict.outcome.as_str());
                        }
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
        ChaosCommand::Abort { run, remote } => {
            let _: api::ChaosAborting = remote
                .client()
                .post(
                    &client::api_path(&["chaos", "runs", &run, "abort"], &[]),
                    &serde_json::json!({}),
                )
                .await?;
            println!("{run}: aborting; its rollbacks run");
        }
        ChaosCommand::History {
            limit,
            junit,
            json,
            remote,
        } => {
            let list: api::ChaosRuns = remote
                .client()
                .get_json(&client::api_path(
                    &["chaos", "runs"],
                    &[("limit", &limit.to_string())],
                ))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            }
            for r in list.runs.iter().map(|r| &r.verdict).filter(|_| !json) {
                println!(
                    "{:<40} {:<10} {}",
                    r.run,
                    r.outcome.as_str(),
                    r.abort_reason.as_deref().unwrap_or("")
                );
            }
            if let Some(path) = junit {
                std::fs::write(&path, quench_engine::chaos::junit(&list.runs))?;
                println!("JUnit XML: {}", path.display());
            }
        }
    }
    Ok(())
}

/// A run's report for a human: the steady state, each fault with its
/// targets, the steps, the rollbacks, and why it ended as it did.
fn format_report(r: &quench_engine::chaos::RunReport) -> String {
    use std::fmt::Write;
    let v = &r.verdict;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "chaos run {} of {} ({}): {}",
        v.run,
        v.experiment,
        r.title,
        v.outcome.as_str()
    );
    if let Some(why) = &v.abort_reason {
        let _ = writeln!(out, "  {why}");
    }
    let probes = |out: &mut String, title: &str, list: &[quench_chaos::run::ProbeResult]| {
        if list.is_empty() {
            return;
        }
        let _ = writeln!(out, "{title}:");
        for p in list {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                if p.ok { "holds " } else { "FAILS " },
                p.name,
                p.value
            );
        }
    };
    probes(&mut out, "steady state before", &v.before);
    if !v.faults.is_empty() {
        let _ = writeln!(out, "faults:");
        for f in &v.faults {
            let name = f["fault"].as_str().unwrap_or("?");
            let matched = f["matched"].as_u64();
            let line = if let Some(e) = f["error"].as_str() {
                format!("cannot be worked out: {e}")
            } else if let Some(pods) = f["would_kill"].as_array() {
                format!("would kill {}", list(pods))
            } else if let Some(pods) = f["killed"].as_array() {
                format!("killed {}", list(pods))
            } else if let Some(pods) = f["in"].as_array() {
                format!("would run {} in {}", f["would_run"], list(pods))
            } else if f["would_create"].is_object() {
                format!(
                    "would create {} {}",
                    f["would_create"]["kind"].as_str().unwrap_or("an object"),
                    f["would_create"]["metadata"]["name"].as_str().unwrap_or("")
                )
            } else {
                f.to_string()
            };
            let _ = writeln!(
                out,
                "  {name}: {line}{}",
                matched
                    .map(|m| format!(" ({m} pods match the blast radius)"))
                    .unwrap_or_default()
            );
        }
    }
    let steps = |out: &mut String, title: &str, list: &[quench_chaos::run::StepResult]| {
        if list.is_empty() {
            return;
        }
        let _ = writeln!(out, "{title}:");
        for s in list {
            let what = if s.output["would_run"].is_string() {
                format!("would run with {}", s.output["with"])
            } else if s.ok {
                "ok".to_string()
            } else {
                format!("FAILED: {}", s.output["error"].as_str().unwrap_or(""))
            };
            let _ = writeln!(out, "  {} ({}): {what}", s.id, s.uses);
        }
    };
    steps(&mut out, "method steps", &v.method);
    steps(&mut out, "rollbacks", &v.rollbacks);
    probes(&mut out, "steady state after", &v.after);
    for d in &r.defects {
        let _ = writeln!(out, "defect: {d}");
    }
    for i in &r.incidents {
        let _ = writeln!(
            out,
            "incident {} ({}): {}",
            i.id,
            i.title,
            if i.remediated_before_verdict {
                "resolved before the verdict"
            } else {
                "not resolved before the verdict"
            }
        );
    }
    out
}

/// `["a", "b"]` as `a, b`.
fn list(v: &[serde_json::Value]) -> String {
    let names: Vec<&str> = v.iter().filter_map(|x| x.as_str()).collect();
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}
