//! `quench incidents`: lists and single incidents, through the API.

use clap::Subcommand;
use quench_engine::client;

use super::Remote;

#[derive(Subcommand)]
pub enum IncidentsCommand {
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

/// Runs a `quench incidents` command.
pub async fn run(command: IncidentsCommand, remote: &Remote, json: bool) -> anyhow::Result<()> {
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
    Ok(())
}
