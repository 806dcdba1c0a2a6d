//! The normalised alert.
//!
//! Every sender speaks its own dialect; the rest of quench only ever sees an
//! [`Alert`]. Labels and annotations are untrusted text from outside: nothing
//! here validates them for use as Kubernetes names or shell arguments, and
//! nothing downstream may assume it did.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where an alert came from. Generic hooks carry their configured name so two
/// generic senders never share an idempotency space.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum Source {
    /// Prometheus Alertmanager, webhook v4.
    Alertmanager,
    /// PagerDuty V3 webhooks.
    Pagerduty,
    /// Datadog, through the documented payload template.
    Datadog,
    /// A generic JSON hook with a configured field mapping.
    Generic(String),
}

/// A sender name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown source {0:?} (alertmanager, pagerduty, datadog or generic/NAME)")]
pub struct UnknownSource(pub String);

impl std::str::FromStr for Source {
    type Err = UnknownSource;

    /// `alertmanager`, `pagerduty`, `datadog` or `generic/NAME`, as
    /// `Display` writes them (runbooks' `match.source`, stored records).
    fn from_str(s: &str) -> Result<Source, UnknownSource> {
        match s {
            "alertmanager" => Ok(Source::Alertmanager),
            "pagerduty" => Ok(Source::Pagerduty),
            "datadog" => Ok(Source::Datadog),
            other => match other.strip_prefix("generic/") {
                Some(name) if !name.is_empty() => Ok(Source::Generic(name.to_string())),
                _ => Err(UnknownSource(other.to_string())),
            },
        }
    }
}

impl Source {
    /// A short, stable name used in metrics labels and idempotency keys.
    pub fn label(&self) -> &str {
        match self {
            Source::Alertmanager => "alertmanager",
            Source::Pagerduty => "pagerduty",
            Source::Datadog => "datadog",
            Source::Generic(_) => "generic",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Generic(name) => write!(f, "generic/{name}"),
            other => f.write_str(other.label()),
        }
    }
}

/// Whether the condition behind an alert still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// The condition holds; runbooks may act on it.
    Firing,
    /// The condition cleared; runbooks never act on this unless asked.
    Resolved,
}

impl AlertStatus {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One alert, as every part of quench after intake sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The sender.
    pub source: Source,
    /// Identifies the alert across notifications (firing and resolved share it).
    pub fingerprint: String,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Identifying labels; untrusted.
    pub labels: BTreeMap<String, String>,
    /// Descriptive annotations; untrusted.
    pub annotations: BTreeMap<String, String>,
    /// When the condition started, if the sender said.
    pub starts_at: Option<DateTime<Utc>>,
    /// When the condition ended, if it has.
    pub ends_at: Option<DateTime<Utc>>,
    /// Sender-specific envelope facts kept for the record (Alertmanager's
    /// `groupKey` and `truncatedAlerts`, PagerDuty's event type, a link).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// The key two deliveries of the same notification share. A second alert
    /// with the same key is acknowledged but not stored again.
    pub idempotency_key: String,
    /// Content address (`sha256:<hex>`) of the raw payload this alert was
    /// parsed from. The parser leaves it empty; the intake log fills it in.
    #[serde(default)]
    pub raw_ref: String,
}

impl Alert {
    /// The `alertname` label, or `""` when the sender gave none.
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// A stable fingerprint for senders that do not provide one: a hash of the
/// sorted label set, prefixed by the source, in the 16-hex-digit form
/// Alertmanager itself uses.
pub fn fingerprint_of(source: &Source, labels: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(source.to_string().as_bytes());
    for (k, v) in labels {
        h.update([0xff]);
        h.update(k.as_bytes());
        h.update([0xfe]);
        h.update(v.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

/// The content address of a raw payload.
pub fn content_address(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_depends_on_every_label_and_the_source() {
        let mut a = BTreeMap::new();
        a.insert("alertname".to_string(), "HighCPU".to_string());
        let base = fingerprint_of(&Source::Datadog, &a);
        assert_eq!(base.len(), 16);
        assert_ne!(base, fingerprint_of(&Source::Alertmanager, &a));
        // "ab"+"c" must not collide with "a"+"bc".
        let mut b = BTreeMap::new();
        b.insert("ab".to_string(), "c".to_string());
        let mut c = BTreeMap::new();
        c.insert("a".to_string(), "bc".to_string());
        assert_ne!(
            fingerprint_of(&Source::Datadog, &b),
            fingerprint_of(&Source::Datadog, &c)
        );
    }
}
