//! The synthetic incident history and query mix that bench-knowledge and
//! bench-import share: the same corpus every run.

#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use quench_knowledge::*;
use serde_json::json;

/// A small deterministic generator: the same corpus every run.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() as usize) % xs.len()]
    }
}

pub const ALERTS: &[&str] = &[
    "HighCPU",
    "HighMemory",
    "RedisDown",
    "DiskFull",
    "HighLatency",
    "ErrorRate",
    "PodCrashLooping",
    "GoroutineLeak",
    "CertificateExpiry",
    "QueueBacklog",
    "DNSFailures",
    "ConnectionPoolExhausted",
    "ReplicationLag",
    "NodeNotReady",
    "OOMKilled",
    "SlowQueries",
    "CacheMissRate",
    "KafkaLag",
];
pub const SERVICES: &[&str] = &[
    "checkout",
    "cart",
    "search",
    "payments",
    "catalog",
    "auth",
    "shipping",
    "inventory",
    "pricing",
    "reviews",
    "recommendations",
    "gateway",
    "notifications",
    "orders",
    "accounts",
    "media",
];
pub const CAUSES: &[&str] = &[
    "redis sentinel failover took forty seconds",
    "a slow query after an index was dropped",
    "logs were not rotated and filled the disk",
    "a goroutine leak in the retry worker",
    "connection pool too small for the holiday traffic",
    "a bad deploy changed the timeout",
    "certificate renewal failed because of a DNS change",
    "kafka consumer stuck on a poison message",
    "memory limit too low after the cache change",
    "a node kernel bug under load",
    "the price cache refreshed in a hot loop",
    "an upstream dependency rate limited us",
];
pub const FIXES: &[&str] = &[
    "raised the failover timeout",
    "restored the index",
    "rotated and compressed the logs",
    "fixed the worker and restarted the pods",
    "raised the pool size",
    "rolled back the deploy",
    "renewed the certificate by hand",
    "skipped the message and patched the consumer",
    "raised the memory limit",
    "drained and replaced the node",
    "rate limited the refresh",
    "added a circuit breaker",
];
pub const FUNCS: &[&str] = &[
    "main.burnCPU",
    "runtime.mallocgc",
    "main.(*pool).get",
    "encoding/json.Unmarshal",
    "net/http.(*conn).serve",
    "main.leakyWorker",
    "runtime.gcBgMarkWorker",
    "regexp.(*Regexp).doExecute",
    "crypto/tls.(*Conn).Read",
    "database/sql.(*DB).conn",
    "main.priceCache.refresh",
];
pub const TAGS: &[&str] = &[
    "redis", "capacity", "deploy", "network", "storage", "memory", "kafka", "tls", "database",
];
pub const STATUSES: &[&str] = &["resolved", "resolved", "resolved", "escalated", "failed"];

pub struct Generated {
    pub record: IncidentRecord,
    pub body: String,
}

pub fn generate(i: usize, rng: &mut Lcg, now: DateTime<Utc>) -> Generated {
    let alert = rng.pick(ALERTS);
    let service = rng.pick(SERVICES);
    let cause = rng.pick(CAUSES);
    let fix = rng.pick(FIXES);
    let f1 = rng.pick(FUNCS);
    let f2 = rng.pick(FUNCS);
    let tag = rng.pick(TAGS);
    let status = rng.pick(STATUSES);
    let opened = now - chrono::Duration::minutes((rng.next() % (365 * 24 * 60)) as i64);
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_string(), alert.to_string());
    labels.insert("service".to_string(), service.to_string());
    labels.insert(
        "severity".to_string(),
        rng.pick(&["critical", "warning", "info"]).to_string(),
    );
    labels.insert(
        "cluster".to_string(),
        rng.pick(&["eu-1", "eu-2", "us-1", "ap-1"]).to_string(),
    );
    let summary = format!("{alert} on {service}: {f1} and {f2} dominate the profile");
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_string(), summary.clone());
    let body = format!(
        "{} {} {}",
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v} {v}"))
            .collect::<Vec<_>>()
            .join(" "),
        summary,
        tag
    );
    let record = IncidentRecord {
        schema: 1,
        id: format!("inc-{}", i + 1),
        title: format!("{alert} {service}"),
        status: match status {
            "resolved" => IncidentStatus::Resolved,
            "escalated" => IncidentStatus::Escalated,
            _ => IncidentStatus::Failed,
        },
        runbook: Some(RunbookRef {
            name: alert.to_lowercase(),
            path: format!("{}.yaml", alert.to_lowercase()),
            commit: None,
        }),
        group_key: String::new(),
        resolve_with_alerts: true,
        match_explanation: Vec::new(),
        alerts: vec![AlertRecord {
            seq: i as u64,
            source: "alertmanager".into(),
            fingerprint: format!("fp-{i}"),
            state: AlertState::Resolved,
            labels,
            annotations,
            starts_at: Some(opened),
            ends_at: None,
            first_received_at: opened,
            notifications: 1,
        }],
        first_alert_at: opened,
        opened_at: opened,
        updated_at: opened,
        resolved_at: Some(opened + chrono::Duration::minutes(30)),
        timeline: Vec::new(),
        steps: Vec::new(),
        acknowledged: None,
        notes: Notes {
            root_cause: Some(cause.to_string()),
            resolution: Some(fix.to_string()),
            commits: Vec::new(),
            tags: vec![tag.to_string()],
            edited_at: None,
            edited_by: None,
        },
        external_id: None,
        similar: None,
        chaos: Vec::new(),
        run: None,
    };
    Generated { record, body }
}

/// A query in both dialects.
pub struct Q {
    pub text: String,
    pub peer: serde_json::Value,
}

pub fn queries(n: usize, rng: &mut Lcg, now: DateTime<Utc>) -> Vec<Q> {
    let word = |rng: &mut Lcg| {
        let pool = [
            "redis",
            "sentinel",
            "failover",
            "disk",
            "logs",
            "goroutine",
            "leak",
            "pool",
            "deploy",
            "timeout",
            "certificate",
            "kafka",
            "memory",
            "kernel",
            "cache",
            "index",
            "query",
            "tls",
        ];
        pool[(rng.next() as usize) % pool.len()].to_string()
    };
    (0..n)
        .map(|i| match i % 12 {
            0..=3 => {
                let w = word(rng);
                Q {
                    text: w.clone(),
                    peer: json!({"words": [w]}),
                }
            }
            4 | 5 => {
                let (a, b) = (word(rng), word(rng));
                Q {
                    text: format!("{a} {b}"),
                    peer: json!({"words": [a, b]}),
                }
            }
            6 => {
                let p = rng.pick(&[
                    "sentinel failover",
                    "goroutine leak",
                    "bad deploy",
                    "memory limit",
                    "poison message",
                ]);
                Q {
                    text: format!("\"{p}\""),
                    peer: json!({"words": [], "phrase": p}),
                }
            }
            7 => {
                let p = rng.pick(&["redi", "certif", "kafk", "goroutin", "rotat"]);
                Q {
                    text: format!("{p}*"),
                    peer: json!({"words": [], "prefix": p}),
                }
            }
            8 => {
                let (w, s) = (word(rng), rng.pick(SERVICES));
                Q {
                    text: format!("{w} service:{s}"),
                    peer: json!({"words": [w], "service": s}),
                }
            }
            10 => {
                let (a, b) = (word(rng), word(rng));
                Q {
                    text: format!("{a} OR {b}"),
                    peer: json!({"words": [], "any": [a, b]}),
                }
            }
            11 => {
                let (a, b) = (word(rng), word(rng));
                Q {
                    text: format!("{a} NOT {b}"),
                    peer: json!({"words": [a], "not": [b]}),
                }
            }
            _ => {
                let w = word(rng);
                let since = (now - chrono::Duration::days(30)).timestamp();
                Q {
                    text: format!("{w} status:resolved since:30d"),
                    peer: json!({"words": [w], "status": "resolved", "since": since}),
                }
            }
        })
        .collect()
}
