//! The bodies the HTTP API takes and gives, shared by the server
//! (`http/`) and the CLI (`client.rs`, the `quench` commands): one
//! definition of each shape, so the two cannot drift apart.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use quench_knowledge::kpi::Kpis;
use quench_knowledge::search::Hit;
use quench_knowledge::{AuditEntry, IncidentRecord};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/incidents/{id}/approvals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The waiting step's id.
    pub step: String,
    /// `approve` or `reject`.
    pub decision: String,
    /// Why (kept in the audit log).
    #[serde(default)]
    pub reason: String,
}

/// `POST /api/v1/incidents/{id}/annotations`: what a human learned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationRequest {
    /// The root cause, replacing the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<String>,
    /// The resolution, replacing the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Commits to link: `SHA` or `SHA@repository`.
    #[serde(default)]
    pub commits: Vec<String>,
    /// Tags to add.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `POST /api/v1/control/pause` and `/resume`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReasonRequest {
    /// Why (kept in the audit log).
    #[serde(default)]
    pub reason: String,
}

/// `GET /api/v1/incidents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentList {
    /// Newest first.
    pub incidents: Vec<IncidentRecord>,
}

/// `GET /api/v1/search`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResponse {
    /// The query as given.
    pub query: String,
    /// Best first.
    pub hits: Vec<Hit>,
}

/// `GET /api/v1/stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsResponse {
    /// The window's start.
    pub since: DateTime<Utc>,
    /// `all`, `service` or `runbook`.
    pub by: String,
    /// The KPIs of each group.
    pub groups: BTreeMap<String, Kpis>,
}

/// `GET /api/v1/audit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditList {
    /// Newest first.
    pub audit: Vec<AuditEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_keep_the_documented_shapes() {
        let a: ApprovalRequest =
            serde_json::from_str(r#"{"step": "restart", "decision": "approve"}"#).unwrap();
        assert_eq!(a.reason, "");
        let body = serde_json::to_value(AnnotationRequest {
            root_cause: Some("dns".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"root_cause": "dns", "commits": [], "tags": []})
        );
    }
}
