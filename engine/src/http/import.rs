//! `POST /api/v1/import`: historical incidents, all or none by default.
//!
//! A YAML or JSON file (`engine/src/import.rs`) is read whole, up to
//! [`MAX_FILE_BYTES`]. JSON Lines (`?name=FILE.jsonl` or `Content-Type:
//! application/x-ndjson`) are read as they arrive, one incident per line,
//! with memory independent of the file's size: each line is checked and
//! copied to a spool file in the data directory; only when every line is
//! good are they written, in transactions of [`CHUNK`] incidents. With
//! `?batch=N` each N incidents (lines that are not blank) are checked and
//! written on their own instead, and the answer says which lines were
//! written and which were not.

use super::*;
use crate::api::{AlreadyImported, ImportAnswer, ImportBatch};
use crate::import::{MAX_FILE_BYTES, MAX_LINE_BYTES};
use http_body_util::BodyExt;
use quench_knowledge::{AuditAction, IncidentRecord};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Incidents written per transaction when importing JSON Lines.
const CHUNK: usize = 1_000;
/// Lines checked per trip to the blocking pool.
const CHECK: usize = 2_000;
/// Problems listed in an answer; the rest are counted.
const MAX_PROBLEMS: usize = 100;
/// Ids listed in an answer; `first` and `last` name the range.
const MAX_IDS: usize = 1_000;

#[derive(serde::Deserialize)]
pub(super) struct ImportQuery {
    name: Option<String>,
    /// JSON Lines only: check and write every N incidents on their own.
    batch: Option<usize>,
}

/// `POST /api/v1/import[?name=FILE][&batch=N]` (admin).
pub(super) async fn import_incidents(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    Query(q): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let name = q.name.clone().unwrap_or_else(|| "import".into());
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if crate::import::is_json_lines(&name, ct) {
        return json_lines(s, caller.name, name, q.batch, body).await;
    }
    if q.batch.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "batch_needs_json_lines",
            "batch= works with JSON Lines only (name the file *.jsonl or send application/x-ndjson)",
            Value::Null,
        );
    }
    let bytes = match read_body(&headers, body, MAX_FILE_BYTES).await {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "{name}: a YAML or JSON import is at most {} MiB (MAX_FILE_BYTES); write it as JSON Lines (one incident per line: `jq -c '.incidents[]' {name} > history.jsonl`, then `quench import history.jsonl`), which has no size limit",
                    MAX_FILE_BYTES >> 20
                ),
                json!({"limit": MAX_FILE_BYTES}),
            );
        }
        Err(r) => return r,
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return error(
            StatusCode::BAD_REQUEST,
            "not_utf8",
            "the file is not UTF-8",
            Value::Null,
        );
    };
    let parsed = {
        let (name, text) = (name.clone(), text.to_string());
        tokio::task::spawn_blocking(move || crate::import::parse(&name, &text)).await
    };
    match parsed {
        Err(e) => internal(e),
        Ok(Err(problems)) => invalid(problems.len(), problems),
        Ok(Ok(records)) => {
            let mut tally = Tally::default();
            if let Err(e) = tally.write(&s, records).await {
                return internal(e);
            }
            tally.finish(&s, caller.name, name).await
        }
    }
}

fn invalid(count: usize, problems: Vec<String>) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_import",
        format!("{count} problem(s); nothing was imported"),
        json!({"problems": problems, "problem_count": count}),
    )
}

/// What an import wrote so far.
#[derive(Default)]
struct Tally {
    imported: usize,
    ids: Vec<String>,
    first: Option<String>,
    last: Option<String>,
    already: Vec<AlreadyImported>,
    already_count: usize,
    batches: Vec<ImportBatch>,
    problem_count: usize,
}

impl Tally {
    async fn write(
        &mut self,
        s: &AppState,
        records: Vec<IncidentRecord>,
    ) -> Result<usize, quench_knowledge::StoreError> {
        let done = s.incidents.import(records).await?;
        let n = done.new.len();
        self.imported += n;
        if self.first.is_none() {
            self.first = done.new.first().cloned();
        }
        if let Some(l) = done.new.last() {
            self.last = Some(l.clone());
        }
        let room = MAX_IDS.saturating_sub(self.ids.len());
        self.ids.extend(done.new.into_iter().take(room));
        self.already_count += done.existing.len();
        let room = MAX_IDS.saturating_sub(self.already.len());
        self.already.extend(
            done.existing
                .into_iter()
                .take(room)
                .map(|(external_id, incident)| AlreadyImported {
                    external_id,
                    incident,
                }),
        );
        Ok(n)
    }

    async fn finish(self, s: &AppState, actor: String, name: String) -> Response {
        audit(
            s,
            quench_knowledge::AuditEntry {
                seq: 0,
                at: s.clock.now(),
                actor,
                action: AuditAction::IncidentImport,
                incident: None,
                step: None,
                target: Some(name),
                detail: format!(
                    "{} incidents: {} to {}; {} already imported{}",
                    self.imported,
                    self.first.clone().unwrap_or_default(),
                    self.last.clone().unwrap_or_default(),
                    self.already_count,
                    if self.batches.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; {} of {} batches written",
                            self.batches.iter().filter(|b| b.written).count(),
                            self.batches.len()
                        )
                    }
                ),
                prev: None,
                lease_epoch: None,
            },
        )
        .await;
        axum::Json(ImportAnswer {
            imported: self.imported,
            ids_truncated: self.imported > self.ids.len(),
            ids: self.ids,
            first: self.first,
            last: self.last,
            already_count: self.already_count,
            already: self.already,
            batches: self.batches,
            problem_count: self.problem_count,
        })
        .into_response()
    }
}

/// The lines of a request body as they arrive, each at most
/// [`MAX_LINE_BYTES`].
struct Lines {
    body: Body,
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    start: usize,
    /// Up to where `buf` has been searched for a newline.
    scanned: usize,
    done: bool,
    line: u64,
}

enum LinesError {
    TooLong(u64),
    NotUtf8(u64),
    Body(String),
}

impl Lines {
    fn new(body: Body) -> Lines {
        Lines {
            body,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            done: false,
            line: 0,
        }
    }

    /// The next line that is not blank, with its number.
    async fn next(&mut self) -> Result<Option<(u64, String)>, LinesError> {
        loop {
            let found = self.buf[self.scanned..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|p| self.scanned + p);
            let line_end = match found {
                Some(nl) => Some((nl, nl + 1)),
                None if self.done && self.start < self.buf.len() => {
                    Some((self.buf.len(), self.buf.len()))
                }
                None => None,
            };
            if let Some((end, next)) = line_end {
                self.line += 1;
                if end - self.start > MAX_LINE_BYTES {
                    return Err(LinesError::TooLong(self.line));
                }
                let raw = &self.buf[self.start..end];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let Ok(text) = String::from_utf8(raw.to_vec()) else {
                    return Err(LinesError::NotUtf8(self.line));
                };
                self.start = next;
                self.scanned = next;
                if text.trim().is_empty() {
                    continue;
                }
                return Ok(Some((self.line, text)));
            }
            if self.done {
                return Ok(None);
            }
            self.scanned = self.buf.len();
            if self.buf.len() - self.start > MAX_LINE_BYTES {
                return Err(LinesError::TooLong(self.line + 1));
            }
            // Drop what was read before reading more.
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(LinesError::Body(e.to_string())),
                None => self.done = true,
            }
        }
    }
}

/// Checks lines off the async workers: the records, or every problem.
async fn check(
    name: &str,
    lines: Vec<(u64, String)>,
) -> Result<(Vec<IncidentRecord>, Vec<String>), tokio::task::JoinError> {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let mut records = Vec::with_capacity(lines.len());
        let mut problems = Vec::new();
        for (n, text) in &lines {
            match crate::import::parse_line(&name, *n, text) {
                Ok(r) => records.push(r),
                Err(p) => problems.extend(p),
            }
        }
        (records, problems)
    })
    .await
}

fn line_error(name: &str, e: LinesError) -> Response {
    match e {
        LinesError::TooLong(n) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "line_too_long",
            format!(
                "{name}:{n}: a line is over {} MiB (MAX_LINE_BYTES), the most one incident may take; nothing was imported (with batch=, the batches before it were)",
                MAX_LINE_BYTES >> 20
            ),
            json!({"line": n, "limit": MAX_LINE_BYTES}),
        ),
        LinesError::NotUtf8(n) => error(
            StatusCode::BAD_REQUEST,
            "not_utf8",
            format!(
                "{name}:{n}: the line is not UTF-8; nothing was imported (with batch=, the batches before it were)"
            ),
            json!({"line": n}),
        ),
        LinesError::Body(m) => error(
            StatusCode::BAD_REQUEST,
            "body_unreadable",
            format!("could not read the request body: {m}"),
            Value::Null,
        ),
    }
}

async fn json_lines(
    s: AppState,
    actor: String,
    name: String,
    batch: Option<usize>,
    body: Body,
) -> Response {
    match batch {
        Some(0) => error(
            StatusCode::BAD_REQUEST,
            "batch",
            "batch= is a number of incidents, 1 or more",
            Value::Null,
        ),
        Some(n) => batched(s, actor, name, n, body).await,
        None => all_or_nothing(s, actor, name, body).await,
    }
}

/// Every `n` incidents checked and written on their own.
async fn batched(s: AppState, actor: String, name: String, n: usize, body: Body) -> Response {
    let mut lines = Lines::new(body);
    let mut tally = Tally::default();
    let mut problems_shown = Vec::new();
    loop {
        let mut group = Vec::with_capacity(n.min(CHUNK));
        let mut end = false;
        while group.len() < n {
            match lines.next().await {
                Ok(Some(l)) => group.push(l),
                Ok(None) => {
                    end = true;
                    break;
                }
                Err(e) => {
                    // What was written stays written; say so.
                    let mut r = line_error(&name, e);
                    if tally.imported > 0 {
                        r.headers_mut().insert(
                            "x-quench-imported",
                            HeaderValue::from(tally.imported as u64),
                        );
                    }
                    return r;
                }
            }
        }
        if group.is_empty() {
            break;
        }
        let (first_line, last_line) = (group[0].0, group[group.len() - 1].0);
        let (records, problems) = match check(&name, group).await {
            Ok(r) => r,
            Err(e) => return internal(e),
        };
        let written = problems.is_empty();
        let mut count = 0;
        if written {
            for chunk in chunks(records) {
                match tally.write(&s, chunk).await {
                    Ok(k) => count += k,
                    Err(e) => return internal(e),
                }
            }
        }
        tally.problem_count += problems.len();
        let room = MAX_PROBLEMS.saturating_sub(problems_shown.len());
        let shown: Vec<String> = problems.into_iter().take(room).collect();
        problems_shown.extend(shown.iter().cloned());
        tally.batches.push(ImportBatch {
            first_line,
            last_line,
            written,
            imported: count,
            problems: shown,
        });
        if end {
            break;
        }
    }
    tally.finish(&s, actor, name).await
}

fn chunks(mut records: Vec<IncidentRecord>) -> Vec<Vec<IncidentRecord>> {
    let mut out = Vec::new();
    while records.len() > CHUNK {
        let rest = records.split_off(CHUNK);
        out.push(std::mem::replace(&mut records, rest));
    }
    if !records.is_empty() {
        out.push(records);
    }
    out
}

/// A spool file in the data directory, removed when dropped.
struct Spool(std::path::PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Every line checked first (and spooled); then all written, or none.
async fn all_or_nothing(s: AppState, actor: String, name: String, body: Body) -> Response {
    let dir = s.config.data_dir.join("import-spool");
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        return internal(format!("creating {}: {e}", dir.display()));
    }
    // Spools an earlier process left behind (it stopped mid-import) go.
    let mine = format!("{}-", std::process::id());
    if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            if !e.file_name().to_string_lossy().starts_with(&mine) {
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let spool = Spool(dir.join(format!(
        "{}-{}.jsonl",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )));
    let file = match tokio::fs::File::create(&spool.0).await {
        Ok(f) => f,
        Err(e) => return internal(format!("creating {}: {e}", spool.0.display())),
    };
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut lines = Lines::new(body);
    let mut problems = Vec::new();
    let mut problem_count = 0;
    let mut good = 0usize;
    let mut end = false;
    while !end {
        let mut group = Vec::with_capacity(CHECK);
        while group.len() < CHECK {
            match lines.next().await {
                Ok(Some(l)) => group.push(l),
                Ok(None) => {
                    end = true;
                    break;
                }
                Err(e) => return line_error(&name, e),
            }
        }
        if group.is_empty() {
            break;
        }
        // Spool the text as it came (one line each), then check it.
        for (_, text) in &group {
            if let Err(e) = out.write_all(text.as_bytes()).await {
                return internal(format!("writing {}: {e}", spool.0.display()));
            }
            if let Err(e) = out.write_all(b"\n").await {
                return internal(format!("writing {}: {e}", spool.0.display()));
            }
        }
        match check(&name, group).await {
            Ok((records, p)) => {
                good += records.len();
                problem_count += p.len();
                let room = MAX_PROBLEMS.saturating_sub(problems.len());
                problems.extend(p.into_iter().take(room));
            }
            Err(e) => return internal(e),
        }
    }
    if problem_count > 0 {
        return invalid(problem_count, problems);
    }
    if let Err(e) = out.flush().await {
        return internal(format!("writing {}: {e}", spool.0.display()));
    }
    drop(out);
    tracing::info!(file = %name, incidents = good, "import checked; writing");
    // Every line is good: read the spool back and write it in chunks.
    let file = match tokio::fs::File::open(&spool.0).await {
        Ok(f) => f,
        Err(e) => return internal(format!("reading {}: {e}", spool.0.display())),
    };
    let mut reader = tokio::io::BufReader::with_capacity(1 << 20, file).lines();
    let mut tally = Tally::default();
    let mut n = 0u64;
    // The next chunk is parsed while this one is written.
    let mut next = None;
    loop {
        let mut group = Vec::with_capacity(CHUNK);
        while group.len() < CHUNK {
            match reader.next_line().await {
                Ok(Some(text)) => {
                    n += 1;
                    group.push((n, text));
                }
                Ok(None) => break,
                Err(e) => return internal(format!("reading {}: {e}", spool.0.display())),
            }
        }
        let parsing = (!group.is_empty()).then(|| {
            let name = name.clone();
            tokio::spawn(async move { check(&name, group).await })
        });
        let Some(current) = std::mem::replace(&mut next, parsing) else {
            if next.is_none() {
                break;
            }
            continue;
        };
        let records = match current.await {
            Ok(Ok((records, p))) if p.is_empty() => records,
            Ok(Ok((_, p))) => {
                return internal(format!("the spooled import changed: {}", p.join("; ")));
            }
            Ok(Err(e)) => return internal(e),
            Err(e) => return internal(e),
        };
        if let Err(e) = tally.write(&s, records).await {
            // Chunks before this one are written; importing the file again
            // skips them (same external ids) and writes the rest.
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "import_interrupted",
                format!(
                    "{name}: writing failed after {} incidents ({e}); import the file again: records with an id are not imported twice",
                    tally.imported
                ),
                json!({"imported": tally.imported}),
            );
        }
    }
    tally.finish(&s, actor, name).await
}
