//! The `quench` command.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use quench_engine::client::{self, Client};
use quench_engine::config::{Config, DEFAULT_LISTEN};

/// sled allocates and frees many short-lived buffers per write; glibc's
/// malloc spends a third of the intake writer's time on them (and faults in
/// fresh pages for every large one). mimalloc reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "quench",
    version,
    about = "Incident-response orchestration: alerts in, evidence and remediation out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: webhooks, incidents, API.
    Serve {
        /// YAML configuration file; flags override it.
        #[arg(long, env = "QUENCH_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address [default: 127.0.0.1:9797].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory [default: ./.quench].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Runbook directory [default: ./runbooks/examples].
        #[arg(long)]
        runbooks: Option<PathBuf>,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Read incidents from a running server.
    Incidents {
        #[command(subcommand)]
        command: IncidentsCommand,
        #[command(flatten)]
        remote: Remote,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Answer an approval gate: approve (or --reject) a waiting step.
    Approve {
        /// The incident, for example inc-7.
        incident: String,
        /// The step id.
        step: String,
        /// Reject instead of approve.
        #[arg(long)]
        reject: bool,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Kill switch: stop every destructive step until `quench resume`.
    Pause {
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Lift the kill switch.
    Resume {
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Chaos experiments: list, run, abort, schedule, history.
    Chaos {
        #[command(subcommand)]
        command: ChaosCommand,
    },
    /// Acknowledge an incident: a human has it (counts for MTTA).
    Ack {
        /// The incident.
        incident: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Record what humans know about an incident; each edit is audited.
    Annotate {
        /// The incident.
        incident: String,
        /// What caused it.
        #[arg(long)]
        root_cause: Option<String>,
        /// What fixed it.
        #[arg(long)]
        resolution: Option<String>,
        /// A commit that caused or fixed it: SHA or SHA@repository (repeatable).
        #[arg(long = "commit")]
        commits: Vec<String>,
        /// A tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// MTTD, MTTA, MTTR, auto-closure, human-intervention and runbook
    /// success rates over a window.
    Stats {
        /// The window, such as 7d or 24h.
        #[arg(long, default_value = "30d")]
        since: String,
        /// Split by service or runbook.
        #[arg(long)]
        by: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// An incident as a Markdown postmortem (`quench postmortem inc-7 > pm.md`).
    Postmortem {
        /// The incident.
        incident: String,
        /// A handlebars template instead of the default
        /// (engine/templates/postmortem.md.hbs shows every field).
        #[arg(long)]
        template: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Import historical incidents (YAML or JSON; see docs/KNOWLEDGE.md).
    /// All or nothing (admin).
    Import {
        /// The file.
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Search past incidents: words, "phrases", prefix*, and filters
    /// service: runbook: status: label:k=v tag: since:7d commit:SHA.
    Search {
        /// The query.
        query: String,
        /// At most this many.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Rebuild the search index from the incident records (admin).
    Reindex {
        #[command(flatten)]
        remote: Remote,
    },
    /// The audit log, newest first.
    Audit {
        /// Only this incident.
        #[arg(long)]
        incident: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        remote: Remote,
    },
    /// Check a runbook directory and list every problem, as
    /// `file:line:col: error[RBnnn]: ...`. Exits 1 when there is one.
    Lint {
        /// The runbook directory.
        #[arg(default_value = "runbooks/examples")]
        dir: PathBuf,
        /// The triage runbook, which must exist in the directory.
        #[arg(long)]
        triage: Option<String>,
    },
    /// Print the JSON schema of the runbook format (for editors).
    Schema,
    /// Read Go profiles without Go: top table, flame graph, diff.
    Pprof {
        #[command(subcommand)]
        command: PprofCommand,
    },
    /// Run the tests embedded in runbooks (nothing is executed). Exits 1
    /// when one fails.
    Test {
        /// The runbook directory.
        #[arg(default_value = "runbooks/examples")]
        dir: PathBuf,
        /// The triage runbook.
        #[arg(long)]
        triage: Option<String>,
    },
    /// Which runbooks an alert would run, and why each other one would not.
    Explain {
        /// The runbook directory.
        #[arg(long, default_value = "runbooks/examples")]
        runbooks: PathBuf,
        /// The triage runbook.
        #[arg(long)]
        triage: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// An Alertmanager webhook payload, or `{"labels": {...}}` (or a list).
        alert: PathBuf,
    },
}

/// Where the server is and how to authenticate.
#[derive(clap::Args)]
struct Remote {
    /// The server's base URL.
    #[arg(long, global = true, env = "QUENCH_SERVER", default_value_t = format!("http://{DEFAULT_LISTEN}"))]
    server: String,
    /// An API token (or QUENCH_TOKEN).
    #[arg(long, global = true, env = "QUENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Remote {
    fn client(&self) -> Client {
        Client::new(&self.server).with_token(self.token.clone())
    }
}

#[derive(Subcommand)]
enum ChaosCommand {
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

#[derive(Subcommand)]
enum PprofCommand {
    /// The `go tool pprof -top` table.
    Top {
        /// A profile (gzip-compressed protobuf, as net/http/pprof serves it).
        file: PathBuf,
        /// Rows to show; 0 shows every row, as `go tool pprof -top` does.
        #[arg(long, default_value_t = 0)]
        nodecount: usize,
        /// The sample type to rank by (inuse_space, alloc_objects, ...).
        #[arg(long)]
        sample_index: Option<String>,
    },
    /// An SVG flame graph.
    Flame {
        /// The profile.
        file: PathBuf,
        /// Where to write the SVG.
        #[arg(short, long)]
        output: PathBuf,
        /// The sample type to draw.
        #[arg(long)]
        sample_index: Option<String>,
    },
    /// Which functions grew between a baseline and a new profile.
    Diff {
        /// The baseline profile.
        base: PathBuf,
        /// The new profile.
        new: PathBuf,
        /// Rows to show.
        #[arg(long, default_value_t = 10)]
        nodecount: usize,
    },
}

/// Reads and decodes a profile, and picks the sample type.
fn load_profile(
    file: &std::path::Path,
    sample_index: Option<&str>,
) -> anyhow::Result<(quench_connectors::pprof::proto::Profile, usize)> {
    use quench_connectors::pprof;
    let bytes =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let p = pprof::decode(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let index = match sample_index {
        None => pprof::top::default_index(&p),
        Some(name) => p
            .sample_type
            .iter()
            .position(|t| {
                p.string_table
                    .get(t.r#type as usize)
                    .is_some_and(|s| s == name)
            })
            .ok_or_else(|| {
                let names: Vec<&str> = p
                    .sample_type
                    .iter()
                    .filter_map(|t| p.string_table.get(t.r#type as usize).map(String::as_str))
                    .collect();
                anyhow::anyhow!(
                    "{}: no sample type {name:?} (it has {})",
                    file.display(),
                    names.join(", ")
                )
            })?,
    };
    Ok((p, index))
}

#[derive(Subcommand)]
enum IncidentsCommand {
    /// Newest first.
    List {
        /// Only this status (`open` means not yet closed).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One incident with its alerts and timeline.
    Show {
        /// The incident id, for example inc-1.
        id: String,
    },
}

/// Loads a runbook directory, printing every diagnostic to stderr.
fn load_runbooks(
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

async fn chaos_command(command: ChaosCommand) -> anyhow::Result<()> {
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

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("QUENCH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// mimalloc's settings for a long-running server on a small host, as
/// environment variables (they can only be set before the allocator starts,
/// and setting them from inside would take `unsafe`): give freed memory back
/// to the kernel at once instead of 10 ms later (arenas: 100 ms), and commit
/// an arena's memory when it is used rather than when it is reserved. With
/// 100,000 incidents indexed and searched, RSS drops from 243 to 131 MB
/// (`scripts/bench-memory.sh`); intake and executor figures are unchanged.
/// An operator's own value of either variable wins.
const ALLOCATOR_ENV: [(&str, &str); 2] = [
    ("MIMALLOC_PURGE_DELAY", "0"),
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
];

/// `quench serve` starts itself again with [`ALLOCATOR_ENV`] (same pid,
/// same arguments) unless the environment already has those variables.
/// If that fails, it goes on with mimalloc's defaults.
fn serve_with_allocator_settings() {
    use std::os::unix::process::CommandExt;
    if std::env::args_os().nth(1).is_none_or(|a| a != "serve")
        || ALLOCATOR_ENV
            .iter()
            .all(|(k, _)| std::env::var_os(k).is_some())
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1));
    for (k, v) in ALLOCATOR_ENV {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    // Returns only if the exec failed.
    let e = cmd.exec();
    eprintln!("quench: could not apply the allocator settings ({e}); going on without them");
}

fn main() -> anyhow::Result<()> {
    serve_with_allocator_settings();
    // Blocking-pool threads each keep an allocator heap of their own; 64
    // are plenty for the store reads they run, and bound that memory.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    quench_engine::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data,
            runbooks,
            log_json,
        } => {
            init_logging(log_json);
            let mut cfg = match &config {
                Some(path) => Config::from_file(path)?,
                None => Config::default(),
            };
            if let Some(l) = listen {
                cfg.listen = l;
            }
            if let Some(d) = data {
                cfg.data_dir = d;
            }
            if let Some(r) = runbooks {
                cfg.runbooks = r;
            }
            quench_engine::serve(cfg, |addr| {
                // One machine-readable line on stdout, for scripts and tests.
                println!("quench listening on http://{addr}");
            })
            .await?;
        }
        Command::Approve {
            incident,
            step,
            reject,
            reason,
            remote,
        } => {
            let decision = if reject { "reject" } else { "approve" };
            let v: serde_json::Value = remote
                .client()
                .post(
                    &client::api_path(&["incidents", &incident, "approvals"], &[]),
                    &serde_json::json!({"step": step, "decision": decision, "reason": reason}),
                )
                .await?;
            println!(
                "{incident} {step}: {decision}d by {}",
                v["by"].as_str().unwrap_or("?")
            );
        }
        Command::Pause { reason, remote } => {
            let _: serde_json::Value = remote
                .client()
                .post(
                    "/api/v1/control/pause",
                    &serde_json::json!({ "reason": reason }),
                )
                .await?;
            println!("paused: no destructive step will run until `quench resume`");
        }
        Command::Resume { reason, remote } => {
            let _: serde_json::Value = remote
                .client()
                .post(
                    "/api/v1/control/resume",
                    &serde_json::json!({ "reason": reason }),
                )
                .await?;
            println!("resumed");
        }
        Command::Chaos { command } => chaos_command(command).await?,
        Command::Postmortem {
            incident,
            template,
            remote,
        } => {
            let record = remote.client().incident(&incident).await?;
            let template =
                match &template {
                    Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                        anyhow::anyhow!("cannot read template {}: {e}", p.display())
                    })?),
                    None => None,
                };
            let similar: Vec<serde_json::Value> = record
                .similar
                .iter()
                .flatten()
                .filter_map(|s| serde_json::to_value(s).ok())
                .collect();
            let page = quench_engine::postmortem::render(&record, &similar, template.as_deref())
                .map_err(|e| anyhow::anyhow!("postmortem template: {e}"))?;
            print!("{page}");
        }
        Command::Import { file, remote } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let name = file.display().to_string();
            let (status, v) = remote
                .client()
                .post_text(&client::api_path(&["import"], &[("name", &name)]), text)
                .await?;
            if status != 200 {
                for p in v["error"]["problems"].as_array().into_iter().flatten() {
                    eprintln!("{}", p.as_str().unwrap_or(""));
                }
                anyhow::bail!(
                    "{}",
                    v["error"]["message"].as_str().unwrap_or("import refused")
                );
            }
            println!(
                "imported {} incidents: {} to {}",
                v["imported"],
                v["ids"][0].as_str().unwrap_or("-"),
                v["ids"]
                    .as_array()
                    .and_then(|a| a.last())
                    .and_then(|x| x.as_str())
                    .unwrap_or("-")
            );
        }
        Command::Search {
            query,
            limit,
            json,
            remote,
        } => {
            let v: serde_json::Value = remote
                .client()
                .get_json(&client::api_path(
                    &["search"],
                    &[("q", &query), ("limit", &limit.to_string())],
                ))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for h in v["hits"].as_array().into_iter().flatten() {
                    println!(
                        "{:<8} {:>6.2}  {:<10} {:<28} {}",
                        h["id"].as_str().unwrap_or(""),
                        h["score"].as_f64().unwrap_or(0.0),
                        h["status"].as_str().unwrap_or(""),
                        h["title"].as_str().unwrap_or(""),
                        h["snippet"]
                            .as_str()
                            .unwrap_or("")
                            .replace("<b>", "*")
                            .replace("</b>", "*")
                            .replace('\n', " ")
                    );
                }
            }
        }
        Command::Reindex { remote } => {
            let v: serde_json::Value = remote
                .client()
                .post("/api/v1/reindex", &serde_json::json!({}))
                .await?;
            println!("reindexed {} incidents", v["indexed"]);
        }
        Command::Ack { incident, remote } => {
            let v: serde_json::Value = remote
                .client()
                .post(
                    &client::api_path(&["incidents", &incident, "ack"], &[]),
                    &serde_json::json!({}),
                )
                .await?;
            println!(
                "{incident}: acknowledged by {} at {}",
                v["acknowledged"]["by"].as_str().unwrap_or("?"),
                v["acknowledged"]["at"].as_str().unwrap_or("?")
            );
        }
        Command::Annotate {
            incident,
            root_cause,
            resolution,
            commits,
            tags,
            remote,
        } => {
            let mut body = serde_json::json!({"commits": commits, "tags": tags});
            if let Some(r) = root_cause {
                body["root_cause"] = serde_json::json!(r);
            }
            if let Some(r) = resolution {
                body["resolution"] = serde_json::json!(r);
            }
            let v: serde_json::Value = remote
                .client()
                .post(
                    &client::api_path(&["incidents", &incident, "annotations"], &[]),
                    &body,
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&v["notes"])?);
        }
        Command::Stats {
            since,
            by,
            json,
            remote,
        } => {
            let mut query = vec![("since", since.as_str())];
            query.extend(by.as_deref().map(|b| ("by", b)));
            let path = client::api_path(&["stats"], &query);
            let v: serde_json::Value = remote.client().get_json(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let dur = |x: &serde_json::Value| match x.as_f64() {
                    Some(s) if s >= 3600.0 => format!("{:.1}h", s / 3600.0),
                    Some(s) if s >= 60.0 => format!("{:.1}m", s / 60.0),
                    Some(s) => format!("{s:.1}s"),
                    None => "-".into(),
                };
                let pct = |x: &serde_json::Value| match x.as_f64() {
                    Some(r) => format!("{:.0}%", r * 100.0),
                    None => "-".into(),
                };
                println!(
                    "{:<24} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8}",
                    "group", "incidents", "MTTD", "MTTA", "MTTR", "auto", "human", "runbook"
                );
                for (name, k) in v["groups"].as_object().into_iter().flatten() {
                    println!(
                        "{:<24} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8}",
                        name,
                        k["incidents"],
                        dur(&k["mttd_seconds"]),
                        dur(&k["mtta_seconds"]),
                        dur(&k["mttr_seconds"]),
                        pct(&k["auto_closure_rate"]),
                        pct(&k["human_intervention_rate"]),
                        pct(&k["runbook_success_rate"])
                    );
                }
            }
        }
        Command::Audit {
            incident,
            limit,
            remote,
        } => {
            let limit = limit.to_string();
            let mut query = vec![("limit", limit.as_str())];
            query.extend(incident.as_deref().map(|i| ("incident", i)));
            let path = client::api_path(&["audit"], &query);
            let v: serde_json::Value = remote.client().get_json(&path).await?;
            for e in v["audit"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<10} {:<18} {:<8} {:<10} {}",
                    e["at"].as_str().unwrap_or(""),
                    e["actor"].as_str().unwrap_or(""),
                    e["action"].as_str().unwrap_or(""),
                    e["incident"].as_str().unwrap_or("-"),
                    e["step"].as_str().unwrap_or("-"),
                    e["detail"].as_str().unwrap_or("")
                );
            }
        }
        Command::Incidents {
            command,
            remote,
            json,
        } => {
            let c = remote.client();
            match command {
                IncidentsCommand::List { status, limit } => {
                    let list = c.incidents(status.as_deref(), limit).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&list)?);
                    } else {
                        print!("{}", client::format_list(&list));
                    }
                }
                IncidentsCommand::Show { id } => {
                    let r = c.incident(&id).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&r)?);
                    } else {
                        print!("{}", client::format_incident(&r));
                    }
                }
            }
        }
        Command::Lint { dir, triage } => {
            // Runbooks and chaos experiments (`*.chaos.yaml`) alike; every
            // problem of both is printed before the exit status says so.
            let runbooks = quench_runbooks::load_dir(&dir, triage.as_deref());
            let experiments = quench_chaos::load_experiments(&dir);
            let mut errors = Vec::new();
            if let Err(e) = &runbooks {
                errors.extend(e.iter().cloned());
            }
            if let Err(e) = &experiments {
                errors.extend(e.iter().cloned());
            }
            if !errors.is_empty() {
                for e in &errors {
                    eprintln!("{e}");
                }
                anyhow::bail!("{} problem(s) in {}", errors.len(), dir.display());
            }
            println!(
                "{}: {} runbooks, {} chaos experiments, no problems",
                dir.display(),
                runbooks.map(|s| s.runbooks.len()).unwrap_or(0),
                experiments.map(|e| e.len()).unwrap_or(0)
            );
        }
        Command::Pprof { command } => {
            use quench_connectors::pprof::{flame, top};
            match command {
                PprofCommand::Top {
                    file,
                    nodecount,
                    sample_index,
                } => {
                    let (p, i) = load_profile(&file, sample_index.as_deref())?;
                    let t = top::top(&p, i)?;
                    print!("{}", top::render(&t, &p, nodecount));
                }
                PprofCommand::Flame {
                    file,
                    output,
                    sample_index,
                } => {
                    let (p, i) = load_profile(&file, sample_index.as_deref())?;
                    let t = top::top(&p, i)?;
                    let svg = flame::svg(
                        &flame::folded(&p, i)?,
                        &format!("{} ({})", file.display(), t.sample_type),
                        &t.unit,
                    )?;
                    std::fs::write(&output, svg)?;
                    println!("wrote {}", output.display());
                }
                PprofCommand::Diff {
                    base,
                    new,
                    nodecount,
                } => {
                    let (b, bi) = load_profile(&base, None)?;
                    let (n, ni) = load_profile(&new, None)?;
                    let changes = flame::diff(&top::top(&b, bi)?, &top::top(&n, ni)?);
                    println!("{:>8} {:>8} {:>8}  function", "base%", "new%", "change");
                    for c in changes.iter().take(nodecount) {
                        println!(
                            "{:>7.2}% {:>7.2}% {:>+7.2}%  {}",
                            c.base_pct,
                            c.new_pct,
                            c.new_pct - c.base_pct,
                            c.function
                        );
                    }
                }
            }
        }
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&quench_runbooks::model::schema())?
            );
        }
        Command::Test { dir, triage } => {
            let set = load_runbooks(&dir, triage.as_deref())?;
            let results = quench_runbooks::testing::run_tests(&set, &dir);
            let mut failed = 0;
            for r in &results {
                if r.failures.is_empty() {
                    println!("ok   {} ({}): {}", r.runbook, r.path, r.test);
                } else {
                    failed += 1;
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
            if failed > 0 {
                std::process::exit(1);
            }
        }
        Command::Explain {
            runbooks,
            triage,
            json,
            alert,
        } => {
            let set = load_runbooks(&runbooks, triage.as_deref())?;
            let bytes = std::fs::read(&alert)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", alert.display()))?;
            let alerts = quench_engine::explain::read_alerts(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", alert.display()))?;
            let all: Vec<_> = alerts.iter().map(|a| (a, set.explain(a))).collect();
            if json {
                let out: Vec<_> = all
                    .iter()
                    .map(|(a, e)| serde_json::json!({"labels": a.labels, "status": a.status, "runs": e.matched(), "explanation": e}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for (a, e) in &all {
                    let labels: Vec<String> =
                        a.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
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
                }
            }
        }
    }
    Ok(())
}
