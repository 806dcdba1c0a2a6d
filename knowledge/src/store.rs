//! Incident records in sled.
//!
//! Two trees: `incidents` (id number, big-endian, to the JSON record) and
//! `open_groups` (group key to the id of the open incident for it). Opening,
//! attaching and closing touch both, so each is one sled transaction.

use chrono::{DateTime, Utc};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::record::{
    AlertRecord, AlertState, IncidentRecord, IncidentStatus, MatchDecision, RunbookRef,
    SCHEMA_VERSION, TimelineEvent,
};

impl Default for Opening {
    fn default() -> Self {
        Opening {
            title: String::new(),
            runbook: None,
            explanation: Vec::new(),
            resolve_with_alerts: true,
        }
    }
}

/// What a new incident starts with, when an alert opens one.
#[derive(Debug, Clone)]
pub struct Opening {
    /// A one-line title.
    pub title: String,
    /// The runbook, pinned to its commit.
    pub runbook: Option<RunbookRef>,
    /// Every runbook's decision for the alert.
    pub explanation: Vec<MatchDecision>,
    /// Whether the incident resolves when every alert has.
    pub resolve_with_alerts: bool,
}

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, or a corrupted file).
    #[error("incident store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record does not decode; its key is named so it can be fixed.
    #[error("incident store: record {key} does not decode")]
    Corrupt {
        /// The record's key.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A record's schema is newer than this build understands.
    #[error(
        "incident store: record {key} has schema {found}, this build reads up to {SCHEMA_VERSION}"
    )]
    FutureSchema {
        /// The record's key.
        key: String,
        /// The schema it was written with.
        found: u32,
    },
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// The key of the incident counter in `open_groups`. Group keys start with
/// a runbook name (letters, digits, `-`, `_`), so a leading NUL cannot
/// collide with one.
const NEXT_ID: &[u8] = b"\0next-incident-id";

/// What happened to an alert offered to [`IncidentStore::attach`].
#[derive(Debug, Clone, PartialEq)]
pub enum Attach {
    /// It opened a new incident.
    Opened(IncidentRecord),
    /// It joined (or updated) the open incident of its group.
    Attached(IncidentRecord),
    /// It was already part of the incident (a replay after a restart).
    AlreadyAttached(IncidentRecord),
    /// A resolved alert with no open incident for its group: nothing to do.
    NoOpenIncident,
}

/// Which incidents [`IncidentStore::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only open (not closed) incidents.
    pub open_only: bool,
    /// Only incidents in this state.
    pub status: Option<IncidentStatus>,
    /// At most this many, newest first.
    pub limit: Option<usize>,
}

/// The incident records.
#[derive(Clone)]
pub struct IncidentStore {
    incidents: sled::Tree,
    open_groups: sled::Tree,
}

fn encode(r: &IncidentRecord) -> Vec<u8> {
    serde_json::to_vec(r).expect("incident records always serialise")
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<IncidentRecord, StoreError> {
    let key_name = || match <[u8; 8]>::try_from(key) {
        Ok(b) => format!("inc-{}", u64::from_be_bytes(b)),
        Err(_) => String::from_utf8_lossy(key).into_owned(),
    };
    #[derive(serde::Deserialize)]
    struct Version {
        schema: u32,
    }
    if let Ok(v) = serde_json::from_slice::<Version>(bytes)
        && v.schema > SCHEMA_VERSION
    {
        return Err(StoreError::FutureSchema {
            key: key_name(),
            found: v.schema,
        });
    }
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: key_name(),
        source,
    })
}

/// Parses `inc-<n>` into its key.
fn key_of(id: &str) -> Option<[u8; 8]> {
    id.strip_prefix("inc-")?
        .parse::<u64>()
        .ok()
        .map(u64::to_be_bytes)
}

impl IncidentStore {
    /// Opens the incident trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(IncidentStore {
            incidents: db.open_tree("knowledge/incidents")?,
            open_groups: db.open_tree("knowledge/open_groups")?,
        })
    }

    /// Offers an alert to the open incident of `group_key`, opening one when
    /// there is none and the alert is firing. Idempotent in `alert.seq`: a
    /// replay of the same log entry changes nothing.
    pub fn attach(
        &self,
        group_key: &str,
        opening: &Opening,
        alert: AlertRecord,
        now: DateTime<Utc>,
    ) -> Result<Attach, StoreError> {
        let title = opening.title.as_str();
        let outcome = (&self.incidents, &self.open_groups).transaction(|(inc, open)| {
            let abort = ConflictableTransactionError::Abort;
            let existing = match open.get(group_key.as_bytes())? {
                Some(id_key) => match inc.get(&id_key)? {
                    Some(bytes) => {
                        let r = decode(&id_key, &bytes).map_err(abort)?;
                        Some((id_key, r))
                    }
                    None => None,
                },
                None => None,
            };
            let Some((id_key, mut record)) = existing else {
                if alert.state == AlertState::Resolved {
                    return Ok(Attach::NoOpenIncident);
                }
                // Incident numbers are their own sequence (sled's id
                // generator is shared by the whole database), so they go
                // 1, 2, 3 whatever else is written.
                let n = open
                    .get(NEXT_ID)?
                    .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0)
                    + 1;
                open.insert(NEXT_ID, &n.to_be_bytes())?;
                let record = IncidentRecord {
                    schema: SCHEMA_VERSION,
                    id: format!("inc-{n}"),
                    title: title.to_string(),
                    status: IncidentStatus::Open,
                    runbook: opening.runbook.clone(),
                    group_key: group_key.to_string(),
                    match_explanation: opening.explanation.clone(),
                    resolve_with_alerts: opening.resolve_with_alerts,
                    first_alert_at: alert.starts_at.unwrap_or(alert.first_received_at),
                    opened_at: now,
                    updated_at: now,
                    resolved_at: None,
                    timeline: vec![TimelineEvent {
                        at: now,
                        kind: "opened".into(),
                        detail: format!(
                            "opened by {} alert {} ({})",
                            alert.source, alert.fingerprint, title
                        ),
                    }],
                    alerts: vec![alert.clone()],
                    steps: Vec::new(),
                    acknowledged: None,
                    notes: Default::default(),
                    external_id: None,
                    similar: None,
                    chaos: Vec::new(),
                };
                inc.insert(&n.to_be_bytes(), encode(&record))?;
                open.insert(group_key.as_bytes(), &n.to_be_bytes())?;
                return Ok(Attach::Opened(record));
            };
            let slot = record
                .alerts
                .iter_mut()
                .find(|a| a.fingerprint == alert.fingerprint && a.source == alert.source);
            let detail = match slot {
                Some(a) if a.seq >= alert.seq => return Ok(Attach::AlreadyAttached(record)),
                Some(a) => {
                    let detail = if a.state != alert.state {
                        format!(
                            "alert {} is now {}",
                            alert.fingerprint,
                            state_name(alert.state)
                        )
                    } else {
                        format!("alert {} notified again", alert.fingerprint)
                    };
                    let first = a.first_received_at;
                    let count = a.notifications;
                    *a = AlertRecord {
                        first_received_at: first,
                        notifications: count + 1,
                        ..alert.clone()
                    };
                    detail
                }
                None => {
                    record.alerts.push(alert.clone());
                    format!("alert {} attached", alert.fingerprint)
                }
            };
            record.timeline.push(TimelineEvent {
                at: now,
                kind: "alert".into(),
                detail,
            });
            record.updated_at = now;
            let all_resolved = record
                .alerts
                .iter()
                .all(|a| a.state == AlertState::Resolved);
            if all_resolved && !record.resolve_with_alerts {
                record.timeline.push(TimelineEvent {
                    at: now,
                    kind: "alerts_resolved".into(),
                    detail: "every alert resolved; the runbook resolves this incident itself"
                        .into(),
                });
            }
            if all_resolved && record.resolve_with_alerts {
                record.status = IncidentStatus::Resolved;
                record.resolved_at = Some(now);
                record.timeline.push(TimelineEvent {
                    at: now,
                    kind: "resolved".into(),
                    detail: "every alert of the incident resolved".into(),
                });
                open.remove(group_key.as_bytes())?;
            }
            inc.insert(&id_key, encode(&record))?;
            Ok(Attach::Attached(record))
        })?;
        Ok(outcome)
    }

    /// Changes one incident in a transaction: `f` gets the stored record
    /// and returns the value to hand back; the changed record is written.
    /// Returns `None` when there is no such incident.
    pub fn update<T>(
        &self,
        id: &str,
        f: impl Fn(&mut IncidentRecord) -> T,
    ) -> Result<Option<(IncidentRecord, T)>, StoreError> {
        let Some(key) = key_of(id) else {
            return Ok(None);
        };
        let out = (&self.incidents, &self.open_groups).transaction(|(inc, open)| {
            let Some(bytes) = inc.get(key)? else {
                return Ok(None);
            };
            let mut r = decode(&key, &bytes).map_err(ConflictableTransactionError::Abort)?;
            let t = f(&mut r);
            if r.status.is_closed() {
                // Only drop the group if it still points here.
                if open.get(r.group_key.as_bytes())?.as_deref() == Some(&key[..]) {
                    open.remove(r.group_key.as_bytes())?;
                }
            }
            inc.insert(&key, encode(&r))?;
            Ok(Some((r, t)))
        })?;
        Ok(out)
    }

    /// Adds historical incidents, all or none, in one transaction: each gets
    /// the next `inc-N` id (its own id is kept as `external_id`). Closed
    /// records never join an open group. Returns the new ids.
    pub fn import(&self, records: Vec<IncidentRecord>) -> Result<Vec<String>, StoreError> {
        let ids = (&self.incidents, &self.open_groups).transaction(|(inc, open)| {
            let mut n = open
                .get(NEXT_ID)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            let mut ids = Vec::with_capacity(records.len());
            for r in &records {
                n += 1;
                let mut r = r.clone();
                r.id = format!("inc-{n}");
                r.schema = SCHEMA_VERSION;
                inc.insert(&n.to_be_bytes(), encode(&r))?;
                ids.push(r.id);
            }
            open.insert(NEXT_ID, &n.to_be_bytes())?;
            Ok(ids)
        })?;
        self.flush()?;
        Ok(ids)
    }

    /// Every later write to an incident record, as it happens: the search
    /// indexer follows this, so every write path is indexed.
    pub fn subscribe(&self) -> sled::Subscriber {
        self.incidents.watch_prefix(vec![])
    }

    /// Makes every change so far durable. The executor calls it before a
    /// step starts, so that after a crash a step that was running is known
    /// to have been running.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.incidents.flush()?;
        Ok(())
    }

    /// One incident by id (`inc-<n>`).
    pub fn get(&self, id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        let Some(key) = key_of(id) else {
            return Ok(None);
        };
        match self.incidents.get(key)? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Incidents, newest first.
    pub fn list(&self, filter: &IncidentFilter) -> Result<Vec<IncidentRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.incidents.iter().rev() {
            let (k, v) = item?;
            let r = decode(&k, &v)?;
            if filter.open_only && r.status.is_closed() {
                continue;
            }
            if filter.status.is_some_and(|s| s != r.status) {
                continue;
            }
            out.push(r);
            if filter.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        Ok(out)
    }
}

fn state_name(s: AlertState) -> &'static str {
    match s {
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn op() -> Opening {
        Opening {
            title: "HighCPU".into(),
            ..Default::default()
        }
    }

    fn alert(seq: u64, fp: &str, state: AlertState) -> AlertRecord {
        AlertRecord {
            seq,
            source: "alertmanager".into(),
            fingerprint: fp.into(),
            state,
            labels: BTreeMap::from([("alertname".to_string(), "HighCPU".to_string())]),
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            first_received_at: Utc::now(),
            notifications: 1,
        }
    }

    #[test]
    fn open_attach_resolve_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = IncidentStore::open(&db).unwrap();
        let now = Utc::now();

        // a resolved alert alone opens nothing
        assert_eq!(
            s.attach("g", &op(), alert(1, "a", AlertState::Resolved), now)
                .unwrap(),
            Attach::NoOpenIncident
        );
        let Attach::Opened(r) = s
            .attach("g", &op(), alert(2, "a", AlertState::Firing), now)
            .unwrap()
        else {
            panic!("expected open")
        };
        assert_eq!(r.id, "inc-1");
        let Attach::Attached(r) = s
            .attach("g", &op(), alert(3, "b", AlertState::Firing), now)
            .unwrap()
        else {
            panic!("expected attach")
        };
        assert_eq!(r.alerts.len(), 2);
        // replaying seq 3 changes nothing
        assert!(matches!(
            s.attach("g", &op(), alert(3, "b", AlertState::Firing), now)
                .unwrap(),
            Attach::AlreadyAttached(_)
        ));
        s.attach("g", &op(), alert(4, "a", AlertState::Resolved), now)
            .unwrap();
        assert_eq!(
            s.get("inc-1").unwrap().unwrap().status,
            IncidentStatus::Open
        );
        let Attach::Attached(r) = s
            .attach("g", &op(), alert(5, "b", AlertState::Resolved), now)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(r.status, IncidentStatus::Resolved);
        assert_eq!(r.alerts[0].notifications, 2);
        // the group is free again: a new firing alert opens inc-2
        let Attach::Opened(r2) = s
            .attach("g", &op(), alert(6, "a", AlertState::Firing), now)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(r2.id, "inc-2");
        let all = s.list(&IncidentFilter::default()).unwrap();
        assert_eq!(
            all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["inc-2", "inc-1"]
        );
        let open = s
            .list(&IncidentFilter {
                open_only: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(open.len(), 1);
        let resolved = s
            .list(&IncidentFilter {
                status: Some(IncidentStatus::Resolved),
                limit: Some(5),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].id, "inc-1");
        assert_eq!(s.get("nope").unwrap(), None);
    }

    #[test]
    fn a_runbook_can_keep_resolution_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = IncidentStore::open(&db).unwrap();
        let own = Opening {
            title: "x".into(),
            resolve_with_alerts: false,
            ..Default::default()
        };
        s.attach("g", &own, alert(1, "a", AlertState::Firing), Utc::now())
            .unwrap();
        let Attach::Attached(r) = s
            .attach("g", &own, alert(2, "a", AlertState::Resolved), Utc::now())
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(r.status, IncidentStatus::Open);
        assert_eq!(r.timeline.last().unwrap().kind, "alerts_resolved");
    }

    #[test]
    fn corrupt_and_future_records_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = IncidentStore::open(&db).unwrap();
        s.incidents
            .insert(7u64.to_be_bytes(), b"{not json".to_vec())
            .unwrap();
        let err = s.get("inc-7").unwrap_err();
        assert!(err.to_string().contains("inc-7"), "{err}");
        s.incidents
            .insert(8u64.to_be_bytes(), br#"{"schema": 99}"#.to_vec())
            .unwrap();
        assert!(matches!(
            s.get("inc-8"),
            Err(StoreError::FutureSchema { found: 99, .. })
        ));
    }
}
