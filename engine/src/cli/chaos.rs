//! `quench chaos`: experiments, runs and schedules, through the API.

use std::path::PathBuf;

use clap::Subcommand;
use quench_engine::client;

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
        /// At most this many.
        #[arg(long, default_value_t = 20)]
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
            let v: serde_json::Value = remote
                .client()
                .get_json(&client::api_path(&["chaos"], &[]))
                .await?;
            for e in v["experiments"].as_array().into_iter().flatten() {
                let schedule = &e["schedule"];
                println!(
                    "{:<28} {}",
                    e["name"].as_str().unwrap_or(""),
                    e["title"].as_str().unwrap_or("")
                );
                if schedule.is_object() {
                    println!(
                        "    {} ({}, {}); next: {}",
                        schedule["cron"].as_str().unwrap_or(""),
                        schedule["describe"].as_str().unwrap_or(""),
                        schedule["timezone"].as_str().unwrap_or(""),
                        schedule["next"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                for r in e["running"].as_array().into_iter().flatten() {
                    println!("    running: {}", r.as_str().unwrap_or(""));
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
            let v: serde_json::Value = client.post(&path, &serde_json::json!({})).await?;
            let run = v["run"].as_str().unwrap_or("").to_string();
            println!("{run}");
            if wait {
                loop {
                    let v: serde_json::Value = client
                        .get_json(&client::api_path(&["chaos", "runs", &run], &[]))
                        .await?;
                    if v["state"] != "running" {
                        println!("{}", serde_json::to_string_pretty(&v)?);
                        let outcome = v["outcome"].as_str().unwrap_or("");
                        if outcome != "passed" && outcome != "dry-run" {
                            anyhow::bail!("chaos run {run}: {outcome}");
                        }
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
        ChaosCommand::Abort { run, remote } => {
            let _: serde_json::Value = remote
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
            let v: serde_json::Value = remote
                .client()
                .get_json(&client::api_path(
                    &["chaos", "runs"],
                    &[("limit", &limit.to_string())],
                ))
                .await?;
            let runs = v["runs"].as_array().cloned().unwrap_or_default();
            for r in &runs {
                println!(
                    "{:<40} {:<10} {}",
                    r["run"].as_str().unwrap_or(""),
                    r["outcome"].as_str().unwrap_or(""),
                    r["abort_reason"].as_str().unwrap_or("")
                );
            }
            if let Some(path) = junit {
                std::fs::write(&path, quench_engine::chaos::junit(&runs))?;
                println!("JUnit XML: {}", path.display());
            }
        }
    }
    Ok(())
}
