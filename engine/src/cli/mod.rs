//! The `quench` command line: the commands and their flags here, each
//! area's handlers in its own file. `main.rs` only sets up the process.

mod chaos;
mod incidents;
mod knowledge;
mod pprof;
mod runbooks;

use chaos::ChaosCommand;
use incidents::IncidentsCommand;
use pprof::PprofCommand;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use quench_engine::api;
use quench_engine::client::{self, Client};
use quench_engine::config::{Config, DEFAULT_LISTEN};

#[derive(Parser)]
#[command(
    name = "quench",
    version,
    about = "Incident-response orchestration: alerts in, evidence and remediation out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Show an error's backtrace (with RUST_BACKTRACE=1); without it, an
    /// error is one message, whatever RUST_BACKTRACE says.
    #[arg(long, global = true)]
    debug: bool,
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
    /// Import historical incidents (YAML, JSON, or JSON Lines: one
    /// incident per line, any size; see docs/KNOWLEDGE.md). All or nothing
    /// (admin).
    Import {
        /// The file (*.jsonl or *.ndjson: JSON Lines, streamed).
        file: PathBuf,
        /// JSON Lines: check and write every N incidents on their own, and
        /// say which lines were written.
        #[arg(long, value_parser = at_least_one)]
        batch: Option<usize>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Walk the knowledge graph from service:NAME, cause:WORDS,
    /// function:NAME or runbook:NAME: incidents over time, root causes,
    /// resolutions, hot functions, runbooks with success rate and TTR,
    /// commits, recent incidents and where a human stepped in.
    Graph {
        /// The start, such as service:cart or function:runtime.mallocgc.
        node: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Search past incidents: words, "phrases", prefix*, OR, NOT, -word,
    /// (groups), fields title: root_cause: resolution: labels:
    /// annotations: evidence:, filters service: runbook: status:
    /// label:k=v tag: chaos: commit:SHA since:7d after:DATE before:DATE
    /// (docs/KNOWLEDGE.md).
    Search {
        /// The query.
        query: String,
        /// At most this many (1 or more).
        #[arg(long, default_value_t = 10, value_parser = at_least_one)]
        limit: usize,
        /// Skip this many matches (the next page: --offset 10).
        #[arg(long, default_value_t = 0)]
        offset: usize,
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
    /// The configuration's weak points, worst first, each with its fix;
    /// exits 1 on a high one.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// What the server is doing: version, kill switch, runbook set, lags.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// The audit log, newest first; `quench audit verify` checks its hash
    /// chain (an entry changed or removed after the fact is named).
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        verify: Option<AuditCommand>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Only this incident.
        #[arg(long)]
        incident: Option<String>,
        /// At most this many (1 or more).
        #[arg(long, default_value_t = 50, value_parser = at_least_one)]
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
        /// Print the problems as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON schema of the runbook format (for editors).
    Schema,
    /// The step types; with a TYPE, its parameters, defaults, output and
    /// an example.
    Steps {
        /// A step type, such as pprof.capture.
        #[arg(value_name = "TYPE")]
        step: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Print the Markdown reference of docs/RUNBOOKS.md.
        #[arg(long)]
        markdown: bool,
    },
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
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
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
        /// The configuration the steps would run with (`prometheus.url`,
        /// `executor.allowed_hosts`); its embedded defaults without it.
        #[arg(long, env = "QUENCH_CONFIG")]
        config: Option<PathBuf>,
        /// An Alertmanager webhook payload, or `{"labels": {...}}` (or a list).
        alert: PathBuf,
    },
}

/// Where the server is and how to authenticate.
#[derive(clap::Args)]
pub struct Remote {
    /// The server's base URL.
    #[arg(long, global = true, env = "QUENCH_SERVER", default_value_t = format!("http://{DEFAULT_LISTEN}"))]
    server: String,
    /// An API token (or QUENCH_TOKEN).
    #[arg(long, global = true, env = "QUENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Remote {
    pub fn client(&self) -> Client {
        Client::new(&client::with_scheme(&self.server)).with_token(self.token.clone())
    }
}

/// `quench config ...`.
#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration (the embedded defaults without --config).
    Check {
        /// The configuration file.
        #[arg(long, env = "QUENCH_CONFIG")]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `quench config check`.
fn config_check(path: Option<&std::path::Path>, json: bool) -> anyhow::Result<()> {
    let cfg = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
            Config::from_yaml_unchecked(p, &text)?
        }
        None => Config::default(),
    };
    let findings = cfg.findings();
    if json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else if findings.is_empty() {
        println!("no findings");
    } else {
        for f in &findings {
            let level = match f.severity {
                quench_engine::config::Severity::High => "HIGH  ",
                quench_engine::config::Severity::Medium => "MEDIUM",
                quench_engine::config::Severity::Low => "LOW   ",
            };
            println!("{level} {}\n       fix: {}", f.what, f.fix);
        }
    }
    if findings
        .iter()
        .any(|f| f.severity == quench_engine::config::Severity::High)
    {
        anyhow::bail!("the configuration has a high finding");
    }
    Ok(())
}

/// `quench audit verify`.
#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain.
    Verify {
        #[command(flatten)]
        remote: Remote,
    },
}

/// `quench status`.
async fn status(json: bool, remote: &Remote) -> anyhow::Result<()> {
    let st: api::StatusAnswer = remote
        .client()
        .get_json(&client::api_path(&["status"], &[]))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    println!("quench {}", st.version);
    match (&st.control.paused, &st.control.last_change) {
        (true, Some(c)) => println!(
            "kill switch: ON, no destructive step runs (paused by {} at {}: {})",
            c.by,
            c.at.format("%Y-%m-%d %H:%M:%S UTC"),
            c.reason
        ),
        (true, None) => println!("kill switch: ON, no destructive step runs"),
        (false, _) => println!("kill switch: off"),
    }
    let rb = &st.runbooks;
    println!(
        "runbooks: {} from {}{}{}",
        rb.count,
        rb.source,
        rb.commit
            .as_ref()
            .map(|c| format!(" at {}", &c[..c.len().min(12)]))
            .unwrap_or_default(),
        rb.loaded_at
            .map(|t| format!(", loaded {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default()
    );
    if let Some(errors) = &rb.last_error {
        println!("  the last attempt to load a newer set was refused; the set above stays:");
        for e in errors {
            println!("    {e}");
        }
    }
    println!(
        "lags: pipeline {} alerts, search index {} changes, store writer queue {}",
        st.pipeline_lag_alerts, st.index_lag_changes, st.store_writer_queue
    );
    println!(
        "runs going on: {}; unresolved incidents: {}; chaos schedules: {}",
        st.runs_active,
        st.unresolved_incidents,
        if st.chaos_schedule { "on" } else { "off" }
    );
    Ok(())
}

/// `--limit`: a count of 1 or more (0 would list nothing and say so
/// nowhere).
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be 1 or more".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
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
        // Alert labels and sender errors reach the log: a value with a
        // line break must not forge a log line of its own.
        use tracing_subscriber::field::MakeExt;
        builder
            .fmt_fields(
                tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                    let text = escape_control(&format!("{value:?}"));
                    if field.name() == "message" {
                        write!(w, "{text}")
                    } else {
                        write!(w, "{field}={text}")
                    }
                })
                .delimited(" "),
            )
            .init();
    }
}

/// Line breaks and other control characters as escapes (`\n`), so one
/// event is one line of the log.
fn escape_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Parses the command line and runs the command.
pub async fn run() -> anyhow::Result<()> {
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
        } => incidents::approve(&incident, &step, reject, reason, &remote).await?,
        Command::Pause { reason, remote } => {
            let _: api::ControlAnswer = remote
                .client()
                .post(
                    &client::api_path(&["control", "pause"], &[]),
                    &api::ReasonRequest { reason },
                )
                .await?;
            println!("paused: no destructive step will run until `quench resume`");
        }
        Command::Resume { reason, remote } => {
            let _: api::ControlAnswer = remote
                .client()
                .post(
                    &client::api_path(&["control", "resume"], &[]),
                    &api::ReasonRequest { reason },
                )
                .await?;
            println!("resumed");
        }
        Command::Chaos { command } => chaos::run(command).await?,
        Command::Postmortem {
            incident,
            template,
            remote,
        } => incidents::postmortem(&incident, template.as_deref(), &remote).await?,
        Command::Import {
            file,
            batch,
            remote,
        } => knowledge::import(&file, batch, &remote).await?,
        Command::Search {
            query,
            limit,
            offset,
            json,
            remote,
        } => knowledge::search(&query, limit, offset, json, &remote).await?,
        Command::Reindex { remote } => knowledge::reindex(&remote).await?,
        Command::Graph { node, json, remote } => knowledge::graph(&node, json, &remote).await?,
        Command::Ack { incident, remote } => incidents::ack(&incident, &remote).await?,
        Command::Annotate {
            incident,
            root_cause,
            resolution,
            commits,
            tags,
            remote,
        } => {
            if root_cause.is_none() && resolution.is_none() && commits.is_empty() && tags.is_empty()
            {
                anyhow::bail!(
                    "nothing to annotate {incident} with: give --root-cause, --resolution, --commit or --tag"
                );
            }
            let body = api::AnnotationRequest {
                root_cause,
                resolution,
                commits,
                tags,
            };
            incidents::annotate(&incident, &body, &remote).await?
        }
        Command::Stats {
            since,
            by,
            json,
            remote,
        } => knowledge::stats(&since, by.as_deref(), json, &remote).await?,
        Command::Audit {
            verify: Some(AuditCommand::Verify { remote }),
            ..
        } => knowledge::verify_audit(&remote).await?,
        Command::Audit {
            verify: None,
            json,
            incident,
            limit,
            remote,
        } => knowledge::audit(incident.as_deref(), limit, json, &remote).await?,
        Command::Status { json, remote } => status(json, &remote).await?,
        Command::Config {
            command: ConfigCommand::Check { config, json },
        } => config_check(config.as_deref(), json)?,
        Command::Incidents {
            command,
            remote,
            json,
        } => incidents::run(command, &remote, json).await?,
        Command::Lint { dir, triage, json } => runbooks::lint(&dir, triage.as_deref(), json)?,
        Command::Pprof { command } => pprof::run(command)?,
        Command::Schema => runbooks::schema()?,
        Command::Steps {
            step,
            json,
            markdown,
        } => runbooks::steps(step.as_deref(), json, markdown)?,
        Command::Test { dir, triage, json } => runbooks::test(&dir, triage.as_deref(), json)?,
        Command::Explain {
            runbooks: dir,
            triage,
            json,
            config,
            alert,
        } => {
            let cfg = match &config {
                Some(path) => Config::from_file(path)?,
                None => Config::default(),
            };
            runbooks::explain(&dir, triage.as_deref(), json, &cfg, &alert)?
        }
    }
    Ok(())
}
