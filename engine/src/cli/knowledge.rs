//! `quench import`, `search`, `reindex`, `stats` and `audit`: the
//! knowledge store, through the API.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use quench_engine::{api, client};

use super::Remote;

/// `quench import`: a file of past incidents, all or nothing (or, for
/// JSON Lines with `--batch N`, every N lines on their own).
pub async fn import(file: &Path, batch: Option<usize>, remote: &Remote) -> anyhow::Result<()> {
    let name = file.display().to_string();
    let lines = quench_engine::import::is_json_lines(&name, None);
    if batch.is_some() && !lines {
        anyhow::bail!("--batch works with JSON Lines files (*.jsonl, one incident per line)");
    }
    let mut query = vec![("name", name.clone())];
    query.extend(batch.map(|n| ("batch", n.to_string())));
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let path = client::api_path(&["import"], &query);
    let answer: Result<api::ImportAnswer, _> = if lines {
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        let size = f.metadata().await.map(|m| m.len()).unwrap_or(0);
        remote
            .client()
            .post_stream(&path, progress_body(f, size), "application/x-ndjson")
            .await
    } else {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        remote.client().post_text(&path, text).await
    };
    let done = match answer {
        Ok(done) => done,
        Err(client::ClientError::Status {
            message, problems, ..
        }) => {
            for p in &problems {
                eprintln!("{p}");
            }
            anyhow::bail!("{message}");
        }
        Err(e) => return Err(e.into()),
    };
    for b in &done.batches {
        if b.written {
            println!(
                "lines {}-{}: written, {} new incidents",
                b.first_line, b.last_line, b.imported
            );
        } else {
            println!(
                "lines {}-{}: NOT written, {} problem(s):",
                b.first_line,
                b.last_line,
                b.problems.len()
            );
            for p in &b.problems {
                println!("  {p}");
            }
        }
    }
    if done.imported > 0 {
        println!(
            "imported {} incidents: {} to {}",
            done.imported,
            done.first.as_deref().unwrap_or("-"),
            done.last.as_deref().unwrap_or("-")
        );
    } else {
        println!("imported nothing new");
    }
    if done.already_count > 0 {
        println!(
            "{} already imported (same external id), left as they are: {}",
            done.already_count,
            done.already
                .iter()
                .take(5)
                .map(|a| format!("{} = {}", a.external_id, a.incident))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// `quench search`: incidents by words, phrases and filters.
pub async fn search(
    query: &str,
    limit: usize,
    offset: usize,
    json: bool,
    remote: &Remote,
) -> anyhow::Result<()> {
    let found: api::SearchResponse = remote
        .client()
        .get_json(&client::api_path(
            &["search"],
            &[
                ("q", query),
                ("limit", &limit.to_string()),
                ("offset", &offset.to_string()),
            ],
        ))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else if found.total == 0 {
        println!("no incident matches {query:?}");
    } else if found.hits.is_empty() {
        println!(
            "{} incidents match {query:?}; none after the first {offset}",
            found.total
        );
    } else {
        let shown = (offset + 1, offset + found.hits.len());
        println!(
            "{} incident{} match{}; {}-{} shown",
            found.total,
            if found.total == 1 { "" } else { "s" },
            if found.total == 1 { "es" } else { "" },
            shown.0,
            shown.1
        );
        for h in &found.hits {
            println!(
                "{:<8} {:>6.2}  {:<10} {:<28} {}",
                h.id,
                h.score,
                h.status,
                h.title,
                h.snippet
                    .replace("<b>", "*")
                    .replace("</b>", "*")
                    .replace('\n', " ")
            );
        }
    }
    Ok(())
}

/// `quench graph service:cart`: the knowledge graph from one node.
pub async fn graph(node: &str, json: bool, remote: &Remote) -> anyhow::Result<()> {
    let (kind, name) = node.split_once(':').ok_or_else(|| {
        anyhow::anyhow!(
            "{node:?}: walk from service:NAME, cause:WORDS, function:NAME or runbook:NAME"
        )
    })?;
    let name = name.trim().trim_matches('"');
    let view: quench_knowledge::search::graph::View = remote
        .client()
        .get_json(&client::api_path(&["graph", kind, name], &[]))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    println!(
        "{} {}: {} incident{}, {} with a human step",
        view.kind,
        view.name,
        view.incidents,
        if view.incidents == 1 { "" } else { "s" },
        view.human_count
    );
    if view.incidents == 0 {
        return Ok(());
    }
    let months: Vec<String> = view
        .by_month
        .iter()
        .rev()
        .take(12)
        .rev()
        .map(|c| format!("{} {}", c.name, c.incidents))
        .collect();
    println!("by month (last 12): {}", months.join(", "));
    let list = |title: &str, items: &[quench_knowledge::search::graph::Count]| {
        if items.is_empty() {
            return;
        }
        println!("{title}:");
        for c in items {
            println!("  {:>6}  {}", c.incidents, c.name);
        }
    };
    if view.kind != "service" {
        list("services", &view.services);
    }
    list("root causes", &view.causes);
    list("resolutions that worked", &view.resolutions);
    list("hot functions", &view.functions);
    if !view.runbooks.is_empty() {
        println!("runbooks:");
        for r in &view.runbooks {
            let rate = r
                .success_rate
                .map(|x| format!("{:.0}%", x * 100.0))
                .unwrap_or_else(|| "-".into());
            let ttr = r
                .median_ttr_seconds
                .map(|t| format!("{}m{:02}s", t / 60, t % 60))
                .unwrap_or_else(|| "-".into());
            println!(
                "  {:>6} runs  {rate:>5} succeeded  median TTR {ttr:>8}  {}",
                r.runs, r.name
            );
        }
    }
    list("commits", &view.commits);
    let incidents = |title: &str, items: &[quench_knowledge::search::graph::Linked]| {
        if items.is_empty() {
            return;
        }
        println!("{title}:");
        for l in items {
            let at = l
                .opened_at
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default();
            println!(
                "  {:<10} {at}  {:<10} {:<10} {}",
                l.id, l.status, l.service, l.title
            );
        }
    };
    incidents("recent incidents", &view.recent);
    incidents("where a human stepped in", &view.human);
    Ok(())
}

/// `quench reindex`: the search index rebuilt from the records.
pub async fn reindex(remote: &Remote) -> anyhow::Result<()> {
    let done: api::ReindexAnswer = remote
        .client()
        .post(&client::api_path(&["reindex"], &[]), &serde_json::json!({}))
        .await?;
    println!("reindexed {} incidents", done.indexed);
    Ok(())
}

/// `quench stats`: MTTD, MTTA, MTTR and the automation rates. `auto` is
/// the share of incidents resolved after a run that succeeded with no
/// human step; `runbook` the share of judged runs (succeeded, failed,
/// escalated, interrupted) that succeeded.
pub async fn stats(
    since: &str,
    by: Option<&str>,
    json: bool,
    remote: &Remote,
) -> anyhow::Result<()> {
    let mut query = vec![("since", since)];
    query.extend(by.map(|b| ("by", b)));
    let path = client::api_path(&["stats"], &query);
    let stats: api::StatsResponse = remote.client().get_json(&path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        let dur = |x: Option<f64>| match x {
            Some(s) if s >= 3600.0 => format!("{:.1}h", s / 3600.0),
            Some(s) if s >= 60.0 => format!("{:.1}m", s / 60.0),
            Some(s) => format!("{s:.1}s"),
            None => "-".into(),
        };
        let pct = |x: Option<f64>| match x {
            Some(r) => format!("{:.0}%", r * 100.0),
            None => "-".into(),
        };
        println!(
            "{:<24} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>5} {:>9}",
            "group",
            "incidents",
            "MTTD",
            "MTTA",
            "MTTR",
            "auto",
            "human",
            "runbook",
            "runs",
            "escalated"
        );
        for (name, k) in &stats.groups {
            println!(
                "{:<24} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>5} {:>9}",
                name,
                k.incidents,
                dur(k.mttd_seconds),
                dur(k.mtta_seconds),
                dur(k.mttr_seconds),
                pct(k.auto_closure_rate),
                pct(k.human_intervention_rate),
                pct(k.runbook_success_rate),
                k.runs,
                k.escalations
            );
        }
    }
    Ok(())
}

/// `quench audit`: the audit log, newest first.
pub async fn audit(
    incident: Option<&str>,
    limit: usize,
    json: bool,
    remote: &Remote,
) -> anyhow::Result<()> {
    let limit = limit.to_string();
    let mut query = vec![("limit", limit.as_str())];
    query.extend(incident.map(|i| ("incident", i)));
    let path = client::api_path(&["audit"], &query);
    let list: api::AuditList = remote.client().get_json(&path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.audit.is_empty() {
        println!("no audit entries");
    }
    for e in &list.audit {
        println!(
            "{}  {:<10} {:<18} {:<8} {:<10} {}",
            e.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            e.actor,
            e.action,
            e.incident.as_deref().unwrap_or("-"),
            e.step.as_deref().unwrap_or("-"),
            e.detail
        );
    }
    Ok(())
}

/// `quench audit verify`: exits 1 when the chain is broken.
pub async fn verify_audit(remote: &Remote) -> anyhow::Result<()> {
    let check: quench_knowledge::ChainCheck = remote
        .client()
        .get_json(&client::api_path(&["audit", "verify"], &[]))
        .await?;
    match check.broken {
        None => {
            println!("audit log: {} entries, the chain holds", check.entries);
            Ok(())
        }
        Some((seq, why)) => anyhow::bail!(
            "audit log: entry {seq} {why} ({} entries read up to it)",
            check.entries
        ),
    }
}

/// The file as a streamed body; on a terminal, a progress line on stderr
/// (bytes and lines sent, rate) that ends when the server has the whole
/// file and is writing.
fn progress_body(file: tokio::fs::File, size: u64) -> reqwest::Body {
    use tokio::io::AsyncReadExt;
    struct State {
        file: tokio::fs::File,
        sent: u64,
        lines: u64,
        size: u64,
        started: Instant,
        shown: Instant,
        tty: bool,
    }
    let state = State {
        file,
        sent: 0,
        lines: 0,
        size,
        started: Instant::now(),
        shown: Instant::now(),
        tty: std::io::stderr().is_terminal(),
    };
    let show = |s: &State, last: bool| {
        if !s.tty {
            return;
        }
        let secs = s.started.elapsed().as_secs_f64().max(0.001);
        let pct = (s.sent * 100).checked_div(s.size).unwrap_or(100);
        eprint!(
            "\r{pct:>3}% {:.1}/{:.1} MB, {} incidents sent, {:.0}/s{}",
            s.sent as f64 / 1e6,
            s.size as f64 / 1e6,
            s.lines,
            s.lines as f64 / secs,
            if last {
                "; the server is writing them...\n"
            } else {
                "   "
            }
        );
    };
    let stream = futures_util::stream::unfold(Some(state), move |state| async move {
        let mut s = state?;
        let mut buf = vec![0u8; 256 << 10];
        match s.file.read(&mut buf).await {
            Ok(0) => {
                show(&s, true);
                None
            }
            Ok(n) => {
                buf.truncate(n);
                s.sent += n as u64;
                s.lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
                if s.shown.elapsed().as_millis() >= 200 {
                    show(&s, false);
                    s.shown = Instant::now();
                }
                Some((Ok::<_, std::io::Error>(buf), Some(s)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    reqwest::Body::wrap_stream(stream)
}
