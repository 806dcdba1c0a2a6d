//! `quench chaos`: experiments, runs and schedules, through the API.

use std::path::PathBuf;

use clap::Subcommand;
use quench_engine::{api, client};

use super::Remote;

#[derive(Subcommand)]
pub enum ChaosCommand {
    /// The experiments in force and what is running.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Starts a run (admin). With --dry-run, renders every fault and the
    /// targets it would select, and injects nothing.
    Run {
        /// The experiment's name (its file name without .chaos.yaml).
        name: String,
        /// Inject nothing.
        #[arg(long)]
        dry_run: bool,
        /// Wait for the verdict and print it; exit 1 unless it passed.
        #[arg(long)]
        wait: bool,
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
        #[command(flatten)]
        remote: Remote,
    },
}

/// Runs a `quench chaos` command.
pub async fn run(command: ChaosCommand) -> anyhow::Result<()> {
    match command {
        ChaosCommand::List { remote } | ChaosCommand::Schedule { remote } => {
            let list: api::ChaosList = remote
                .client()
                .get_json(&client::api_path(&["chaos"], &[]))
                .await?;
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
            remote,
        } => {
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
                        println!("{}", serde_json::to_string_pretty(&v)?);
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
            remote,
        } => {
            let list: api::ChaosRuns = remote
                .client()
                .get_json(&client::api_path(
                    &["chaos", "runs"],
                    &[("limit", &limit.to_string())],
                ))
                .await?;
            for r in list.runs.iter().map(|r| &r.verdict) {
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
