//! The CLI side of the HTTP API. `quench incidents ...` asks the running
//! server rather than opening the database, which the server holds locked.

use std::fmt::Write;

use quench_knowledge::IncidentRecord;

/// A request to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error(
        "cannot reach quench at {url}: {reason}{}",
        if *.refused {
            "\n  is `quench serve` running there? Point the command at it with --server URL (or QUENCH_SERVER)"
        } else {
            ""
        }
    )]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Why, down to the deepest cause (`Connection refused`).
        reason: String,
        /// Nothing answered at that address.
        refused: bool,
    },
    /// The server answered with an error.
    #[error(
        "quench answered {status} for {url}: {message}{}",
        match status {
            401 => "\n  give an API token with --token TOKEN (or QUENCH_TOKEN)",
            403 => "\n  the token's role may not do this; ask for a responder or admin token",
            _ => "",
        }
    )]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's error message.
        message: String,
        /// Each problem, when the server listed several.
        problems: Vec<String>,
    },
    /// A request body that does not serialise.
    #[error("cannot encode the request: {0}")]
    Body(String),
    /// The answer did not decode.
    #[error("unexpected answer from {url}: {source}")]
    Decode {
        /// The URL asked.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
}

/// Why a request got no answer, with the deepest cause in words
/// (reqwest's own message is only "error sending request").
fn unreachable(url: &str, e: &reqwest::Error) -> ClientError {
    let mut reason = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        reason = c.to_string();
        cause = c.source();
    }
    ClientError::Unreachable {
        url: url.to_string(),
        reason,
        refused: e.is_connect(),
    }
}

/// A server address as typed: `localhost:9797` means
/// `http://localhost:9797`.
pub fn with_scheme(server: &str) -> String {
    if server.starts_with("http://") || server.starts_with("https://") {
        server.to_string()
    } else {
        format!("http://{server}")
    }
}

/// A request body.
enum Body {
    Json(serde_json::Value),
    Text(String),
    /// A streamed body and its content type.
    Stream(reqwest::Body, &'static str),
}

/// Talks to one quench server.
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// A client for the server at `base` (for example `http://127.0.0.1:9797`).
    pub fn new(base: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    /// A GET of any JSON document.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ClientError> {
        self.get(path).await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// A POST with a JSON body.
    pub async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_value(body).map_err(|e| ClientError::Body(e.to_string()))?;
        self.call(reqwest::Method::POST, path, Some(Body::Json(body)))
            .await
    }

    /// POSTs a text body (an import file).
    pub async fn post_text<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: String,
    ) -> Result<T, ClientError> {
        self.call(reqwest::Method::POST, path, Some(Body::Text(body)))
            .await
    }

    /// POSTs a streamed body (a JSON Lines import); the answer may take up
    /// to an hour.
    pub async fn post_stream<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: reqwest::Body,
        content_type: &'static str,
    ) -> Result<T, ClientError> {
        self.call(
            reqwest::Method::POST,
            path,
            Some(Body::Stream(body, content_type)),
        )
        .await
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Some(Body::Json(b)) => req.json(&b),
            Some(Body::Text(t)) => req
                .header(reqwest::header::CONTENT_TYPE, "application/yaml")
                .body(t),
            // An import of a large history takes as long as it takes.
            Some(Body::Stream(b, ct)) => req
                .header(reqwest::header::CONTENT_TYPE, ct)
                .timeout(std::time::Duration::from_secs(3600))
                .body(b),
            None => req,
        };
        let resp = req.send().await.map_err(|e| unreachable(&url, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let (message, problems) = match resp.json::<crate::api::ErrorAnswer>().await {
                Ok(e) => (e.error.message, e.error.problems),
                Err(_) => ("no error message".to_string(), Vec::new()),
            };
            return Err(ClientError::Status {
                url,
                status: status.as_u16(),
                message,
                problems,
            });
        }
        resp.json()
            .await
            .map_err(|source| ClientError::Decode { url, source })
    }

    /// `GET /api/v1/incidents`.
    pub async fn incidents(
        &self,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<IncidentRecord>, ClientError> {
        let limit = limit.to_string();
        let mut query = vec![("limit", limit.as_str())];
        query.extend(status.map(|s| ("status", s)));
        let path = api_path(&["incidents"], &query);
        Ok(self.get::<crate::api::IncidentList>(&path).await?.incidents)
    }

    /// `GET /api/v1/incidents/{id}`.
    pub async fn incident(&self, id: &str) -> Result<IncidentRecord, ClientError> {
        self.get(&api_path(&["incidents", id], &[])).await
    }
}

/// One line per incident.
pub fn format_list(list: &[IncidentRecord]) -> String {
    let mut out = format!(
        "{:<10} {:<10} {:<22} {:>6}  {:<20}  {}\n",
        "ID", "STATUS", "RUNBOOK", "ALERTS", "OPENED (UTC)", "TITLE"
    );
    for r in list {
        let _ = writeln!(
            out,
            "{:<10} {:<10} {:<22} {:>6}  {:<20}  {}",
            r.id,
            r.status.as_str(),
            r.runbook.as_ref().map(|r| r.name.as_str()).unwrap_or("-"),
            r.alerts.len(),
            r.opened_at.format("%Y-%m-%d %H:%M:%S"),
            r.title
        );
    }
    out
}

/// One incident, for a human.
pub fn format_incident(r: &IncidentRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}  {}  {}", r.id, r.status.as_str(), r.title);
    if let Some(rb) = &r.runbook {
        let commit = rb.commit.as_deref().unwrap_or("not from git");
        let _ = writeln!(out, "runbook: {} ({}, {commit})", rb.name, rb.path);
    }
    let _ = writeln!(out, "opened:  {}", r.opened_at.to_rfc3339());
    if let Some(t) = r.resolved_at {
        let _ = writeln!(out, "closed:  {}", t.to_rfc3339());
    }
    let _ = writeln!(out, "\nalerts:");
    for a in &r.alerts {
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        let _ = writeln!(
            out,
            "  {} {:<8} {} {{{}}}",
            a.fingerprint,
            format!("{:?}", a.state).to_lowercase(),
            a.source,
            labels.join(", ")
        );
    }
    if !r.steps.is_empty() {
        let _ = writeln!(out, "\nsteps:");
        for st in &r.steps {
            let state = serde_json::to_value(st.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let mut line = format!("  {:<14} {:<20} {:<17}", st.id, st.uses, state);
            if st.attempts > 1 {
                let _ = write!(line, " attempts {}", st.attempts);
            }
            if !st.reason.is_empty() {
                let _ = write!(line, " {}", st.reason);
            }
            let _ = writeln!(out, "{}", line.trim_end());
            for l in st.evidence_summary() {
                let _ = writeln!(out, "      {l}");
            }
        }
    }
    if let Some(run) = &r.run {
        let _ = writeln!(
            out,
            "\nrun: {}{}",
            run.outcome.as_str(),
            if run.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", run.detail)
            }
        );
    }
    if let Some(rc) = &r.notes.root_cause {
        let _ = writeln!(out, "\nroot cause: {rc}");
    }
    if let Some(res) = &r.notes.resolution {
        let _ = writeln!(out, "resolution: {res}");
    }
    for c in &r.chaos {
        let _ = writeln!(
            out,
            "opened during chaos experiment {} (run {})",
            c.experiment, c.run
        );
    }
    if let Some(similar) = r.similar.as_ref().filter(|s| !s.is_empty()) {
        let _ = writeln!(out, "\nsimilar past incidents:");
        for s in similar {
            let _ = writeln!(
                out,
                "  {:<8} {:>6.2}  {:<28} matched {}{}",
                s.id,
                s.score,
                s.title,
                s.matched.join(", "),
                s.root_cause
                    .as_ref()
                    .map(|rc| format!("; root cause: {rc}"))
                    .unwrap_or_default()
            );
        }
    }
    let _ = writeln!(out, "\ntimeline:");
    for e in &r.timeline {
        let _ = writeln!(
            out,
            "  {}  {:<8} {}",
            e.at.format("%H:%M:%S%.3f"),
            e.kind,
            e.detail
        );
    }
    out
}

/// An API path, `/api/v1/` then `segments` (each percent-encoded as one
/// path segment, so an id with `/` or `?` in it stays one) and the query
/// pairs, form-encoded. Nothing from the command line reaches a URL
/// unencoded.
pub fn api_path(segments: &[&str], query: &[(&str, &str)]) -> String {
    let Ok(mut url) = reqwest::Url::parse("http://quench/api/v1") else {
        return String::new();
    };
    if let Ok(mut path) = url.path_segments_mut() {
        path.extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

#[cfg(test)]
mod path_tests {
    use super::api_path;

    #[test]
    fn segments_and_query_values_are_encoded() {
        assert_eq!(
            api_path(&["incidents", "inc-1"], &[]),
            "/api/v1/incidents/inc-1"
        );
        assert_eq!(
            api_path(&["incidents", "a/b?c"], &[]),
            "/api/v1/incidents/a%2Fb%3Fc"
        );
        assert_eq!(
            api_path(&["stats"], &[("since", "7d"), ("by", "service&x=1")]),
            "/api/v1/stats?since=7d&by=service%26x%3D1"
        );
        assert_eq!(
            api_path(&["search"], &[("q", "redis failover \"pool\"")]),
            "/api/v1/search?q=redis+failover+%22pool%22"
        );
    }
}
