//! Webhook parsers, one file per sender.
//!
//! Each parser is a pure function from the raw body and the request headers to
//! a list of [`Alert`]s. Authentication (a bearer token, a shared-secret
//! header, an HMAC signature) is checked first, on the raw bytes, before any
//! JSON is read. The engine maps [`IntakeError`] to an HTTP status with
//! [`IntakeError::http_status`].

pub mod alertmanager;
pub mod datadog;
pub mod generic;
pub mod pagerduty;

use chrono::{DateTime, TimeZone, Utc};
use http::HeaderMap;
use serde::de::DeserializeOwned;

use crate::Alert;

/// Why a webhook delivery was refused. Every variant names what was wrong
/// precisely enough for the sender's operator to fix it.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The body is not JSON at all.
    #[error("malformed json at line {line} column {column}: {message}")]
    Syntax {
        /// 1-based line of the first bad byte.
        line: usize,
        /// 1-based column of the first bad byte.
        column: usize,
        /// What the JSON reader expected.
        message: String,
    },
    /// The body is JSON but not the shape this sender produces.
    #[error("invalid field `{path}`: {message}")]
    Shape {
        /// Path of the offending field, for example `alerts[0].status`.
        path: String,
        /// What was wrong with it.
        message: String,
    },
    /// The token, shared secret or signature is missing or wrong.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A signed delivery older than the sender's allowed age: a replay, or
    /// a retry past any use.
    #[error("stale: {0}")]
    Stale(String),
}

impl IntakeError {
    /// The HTTP status a sender should see. Senders retry on 5xx only (some on
    /// any non-2xx), so every refusal here is a 4xx: retrying cannot fix it.
    pub fn http_status(&self) -> u16 {
        match self {
            IntakeError::Syntax { .. } => 400,
            IntakeError::Shape { .. } => 422,
            IntakeError::Unauthorized(_) => 401,
            IntakeError::Stale(_) => 422,
        }
    }

    /// A short, stable reason for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            IntakeError::Syntax { .. } => "malformed_json",
            IntakeError::Shape { .. } => "invalid_shape",
            IntakeError::Unauthorized(_) => "unauthorized",
            IntakeError::Stale(_) => "stale",
        }
    }

    pub(crate) fn shape(path: impl Into<String>, message: impl Into<String>) -> Self {
        IntakeError::Shape {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// What one delivery turned into.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The alerts, in the order the sender listed them. May be empty (a
    /// PagerDuty ping, a non-incident event).
    pub alerts: Vec<Alert>,
}

/// Decodes JSON into `T`, telling a syntax error (400, with its position)
/// apart from a shape error (422, with the path of the field).
///
/// The common case, a well-formed body, is decoded without path tracking;
/// only a failure pays for decoding again to find the path.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, IntakeError> {
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(path, e.into_inner())
    })?;
    de.end().map_err(|e| json_error(String::new(), e))?;
    Ok(value)
}

fn json_error(path: String, e: serde_json::Error) -> IntakeError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => {
            // serde_json appends " at line L column C"; the path says more.
            let msg = e.to_string();
            let msg = match msg.rfind(" at line ") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            IntakeError::shape(if path == "." { String::new() } else { path }, msg)
        }
        Category::Syntax | Category::Eof | Category::Io => {
            let msg = e.to_string();
            let message = match msg.rfind(" at line ") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            IntakeError::Syntax {
                line: e.line(),
                column: e.column(),
                message,
            }
        }
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    diff == 0
}

/// Whether `signature` is the HMAC-SHA256 of `body` under `secret`,
/// compared in constant time.
pub fn hmac_sha256_matches(secret: &[u8], body: &[u8], signature: &[u8]) -> bool {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(signature).is_ok()
}

/// The hex HMAC-SHA256 of `body` under `secret`, as signers send it.
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a GitHub-style `X-Hub-Signature-256: sha256=<hex>` header.
pub fn check_github_signature(
    headers: &HeaderMap,
    secret: &str,
    body: &[u8],
) -> Result<(), IntakeError> {
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| {
            IntakeError::Unauthorized(
                "missing or malformed X-Hub-Signature-256 (expected sha256=<hex>)".into(),
            )
        })?;
    if hmac_sha256_matches(secret.as_bytes(), body, &sig) {
        Ok(())
    } else {
        Err(IntakeError::Unauthorized(
            "X-Hub-Signature-256 does not match".into(),
        ))
    }
}

/// Checks `Authorization: Bearer <token>` against the expected token.
pub fn check_bearer(headers: &HeaderMap, expected: &str) -> Result<(), IntakeError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(IntakeError::Unauthorized(
            "missing Authorization bearer token".into(),
        ));
    };
    let value = value.as_bytes();
    let token = value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))
        .ok_or_else(|| IntakeError::Unauthorized("Authorization is not a bearer token".into()))?;
    if constant_time_eq(token, expected.as_bytes()) {
        Ok(())
    } else {
        Err(IntakeError::Unauthorized(
            "bearer token does not match".into(),
        ))
    }
}

/// Checks a shared-secret header (senders that sign nothing, like Datadog).
pub fn check_secret_header(
    headers: &HeaderMap,
    name: &str,
    expected: &str,
) -> Result<(), IntakeError> {
    match headers.get(name) {
        None => Err(IntakeError::Unauthorized(format!("missing {name} header"))),
        Some(v) if constant_time_eq(v.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(IntakeError::Unauthorized(format!(
            "{name} header does not match"
        ))),
    }
}

/// Parses an RFC 3339 timestamp. Go's zero time (`0001-01-01T00:00:00Z`),
/// which Alertmanager sends for "not ended", and the empty string mean none.
pub(crate) fn parse_time(path: &str, s: &str) -> Result<Option<DateTime<Utc>>, IntakeError> {
    if s.is_empty() {
        return Ok(None);
    }
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| IntakeError::shape(path, format!("not an RFC 3339 timestamp ({e}): {s:?}")))?
        .with_timezone(&Utc);
    if t.timestamp() <= Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap().timestamp() {
        return Ok(None);
    }
    Ok(Some(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct T {
        a: Vec<u32>,
    }

    #[test]
    fn syntax_errors_carry_position_and_shape_errors_carry_path() {
        match decode::<T>(b"{\n  \"a\": [1,\n  }") {
            Err(IntakeError::Syntax { line, column, .. }) => {
                assert_eq!(line, 3);
                assert_eq!(column, 3);
            }
            other => panic!("expected syntax error, got {other:?}"),
        }
        match decode::<T>(br#"{"a": [1, "x"]}"#) {
            Err(IntakeError::Shape { path, message }) => {
                assert_eq!(path, "a[1]");
                assert!(message.contains("invalid type"), "{message}");
            }
            other => panic!("expected shape error, got {other:?}"),
        }
        assert!(matches!(
            decode::<T>(br#"{"a": []} trailing"#),
            Err(IntakeError::Syntax { .. })
        ));
    }

    #[test]
    fn go_zero_time_means_none() {
        assert_eq!(parse_time("x", "0001-01-01T00:00:00Z").unwrap(), None);
        assert!(
            parse_time("x", "2026-11-27T10:00:00.123+01:00")
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            parse_time("endsAt", "yesterday"),
            Err(IntakeError::Shape { path, .. }) if path == "endsAt"
        ));
    }

    #[test]
    fn bearer_and_secret_headers() {
        let mut h = HeaderMap::new();
        assert!(check_bearer(&h, "s3cret").is_err());
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(check_bearer(&h, "s3cret").is_ok());
        assert!(check_bearer(&h, "s3cre").is_err());
        h.insert("x-quench-token", "abc".parse().unwrap());
        assert!(check_github_signature(&h, "s3cret", b"{}").is_err());
        // echo -n '{}' | openssl dgst -sha256 -hmac s3cret
        h.insert(
            "x-hub-signature-256",
            "sha256=adbde1ce40c89c14215687d5d762a47df6dfaefcfad61e2e86718ffc8498571b"
                .parse()
                .unwrap(),
        );
        assert!(check_github_signature(&h, "s3cret", b"{}").is_ok());
        assert!(check_github_signature(&h, "other", b"{}").is_err());
        assert!(check_github_signature(&h, "s3cret", b"{ }").is_err());
        assert!(check_secret_header(&h, "x-quench-token", "abc").is_ok());
        assert!(check_secret_header(&h, "x-quench-token", "abd").is_err());
        assert!(check_secret_header(&h, "x-other", "abc").is_err());
    }
}
