//! `quench incidents`: lists and single incidents, through the API.

use clap::Subcommand;
use quench_engine::{api, client};

use super::Remote;

#[derive(Subcommand)]
pub enum IncidentsCommand {
    /// Newest first.
    List {
        /// Only this status: unresolved (anything not resolved or
        /// cancelled), open, diagnosing, remediating, verifying, resolved,
        /// escalated, failed, cancelled or interrupted.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(api::status_names()))]
        status: Option<String>,
        /// At most this many (1 or more).
        #[arg(long, default_value_t = 50, value_parser = super::at_least_one)]
        limit: usize,
    },
    /// One incident with its alerts and timeline.
    Show {
        /// The incident id, for example inc-1.
        id: String,
    },
    /// Run the runbook in force again for an open incident (after a fix
    /// to it, say), now (responder).
    Rerun {
        /// The incident id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
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
                if r.notes.root_cause.is_none() {
                    let h: serde_json::Value = c
                        .get_json(&client::api_path(&["incidents", &id, "hypotheses"], &[]))
                        .await?;
                    let list = h["hypotheses"].as_array().cloned().unwrap_or_default();
                    if !list.is_empty() {
                        println!("likely root causes (from similar past incidents):");
                        for x in list {
                            let support: Vec<&str> = x["support"]
                                .as_array()
                                .map(|v| v.iter().filter_map(|s| s.as_str()).collect())
                                .unwrap_or_default();
                            println!(
                                "  {:>6.1}  {}  (like {}){}",
                                x["score"].as_f64().unwrap_or(0.0),
                                x["cause"].as_str().unwrap_or(""),
                                support.join(", "),
                                x["resolution"]
                                    .as_str()
                                    .map(|r| format!("; fixed by: {r}"))
                                    .unwrap_or_default()
                            );
                        }
                    }
                }
            }
        }
        IncidentsCommand::Rerun { id, reason } => {
            let answer: api::RerunAnswer = c
                .post(
                    &client::api_path(&["incidents", &id, "rerun"], &[]),
                    &api::ReasonRequest { reason },
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!(
                    "{}: {} runs again{}",
                    answer.incident,
                    answer.runbook,
                    answer
                        .commit
                        .map(|c| format!(" (commit {})", &c[..c.len().min(12)]))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// `quench approve`: answers a waiting approval gate.
pub async fn approve(
    incident: &str,
    step: &str,
    reject: bool,
    reason: String,
    remote: &Remote,
) -> anyhow::Result<()> {
    let decision = if reject { "reject" } else { "approve" };
    let answer: api::ApprovalAnswer = remote
        .client()
        .post(
            &client::api_path(&["incidents", incident, "approvals"], &[]),
            &api::ApprovalRequest {
                step: step.to_string(),
                decision: decision.into(),
                reason,
            },
        )
        .await?;
    println!("{incident} {step}: {decision}d by {}", answer.by);
    Ok(())
}

/// `quench postmortem`: the incident as a Markdown page.
pub async fn postmortem(
    incident: &str,
    template: Option<&std::path::Path>,
    remote: &Remote,
) -> anyhow::Result<()> {
    let record = remote.client().incident(incident).await?;
    let template = match &template {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read template {}: {e}", p.display()))?,
        ),
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
    Ok(())
}

/// `quench ack`: a human has the incident.
pub async fn ack(incident: &str, remote: &Remote) -> anyhow::Result<()> {
    let answer: api::AckAnswer = remote
        .client()
        .post(
            &client::api_path(&["incidents", incident, "ack"], &[]),
            &serde_json::json!({}),
        )
        .await?;
    match answer.acknowledged {
        Some(a) => println!(
            "{incident}: acknowledged by {} at {}",
            a.by,
            a.at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => println!("{incident}: not acknowledged"),
    }
    Ok(())
}

/// `quench annotate`: root cause, resolution, commits and tags.
pub async fn annotate(
    incident: &str,
    body: &api::AnnotationRequest,
    remote: &Remote,
) -> anyhow::Result<()> {
    let answer: api::NotesAnswer = remote
        .client()
        .post(
            &client::api_path(&["incidents", incident, "annotations"], &[]),
            body,
        )
        .await?;
    println!("{}", serde_json::to_string_pretty(&answer.notes)?);
    Ok(())
}
