//! Keeps the search index in step with the incident records: a thread
//! follows every write to the records (sled's subscription, so the
//! pipeline, the executor, annotations and imports are all covered),
//! indexes them in batches, and attaches the similar past incidents to
//! each new incident once.

use std::sync::Arc;
use std::time::Duration;

use quench_knowledge::IncidentStore;
use quench_knowledge::search::SearchIndex;
use tracing::{info, warn};

/// The index, and the record changes since just before it was checked.
pub struct Opened {
    /// The index.
    pub index: Arc<SearchIndex>,
    events: sled::Subscriber,
}

/// Opens the index in `dir` and rebuilds it from the records when it is
/// new, was replaced, or does not hold every record. The subscription to
/// the records starts first, so a record written while the index is
/// checked or rebuilt reaches [`start`] as a change and is not missed.
pub fn open(dir: &std::path::Path, incidents: &IncidentStore) -> anyhow::Result<Opened> {
    let events = incidents.subscribe();
    let (index, fresh) = SearchIndex::open(dir)?;
    let all = incidents.list(&quench_knowledge::IncidentFilter::default())?;
    if fresh || index.count() != all.len() as u64 {
        info!(
            records = all.len(),
            indexed = index.count(),
            "rebuilding the search index from the records"
        );
        index.rebuild(&all)?;
    }
    Ok(Opened {
        index: Arc::new(index),
        events,
    })
}

/// Follows the records and indexes them, forever, in its own thread.
pub fn start(opened: Opened, incidents: IncidentStore) {
    let Opened { index, mut events } = opened;
    std::thread::Builder::new()
        .name("quench-indexer".into())
        .spawn(move || {
            loop {
                // Block for the first change, then take what else came
                // within 100 ms: one commit per batch.
                let Some(first) = events.next() else {
                    return;
                };
                let mut batch = vec![first];
                while let Ok(e) = events.next_timeout(Duration::from_millis(100)) {
                    batch.push(e);
                    if batch.len() >= 512 {
                        break;
                    }
                }
                let mut records: Vec<quench_knowledge::IncidentRecord> = Vec::new();
                for e in batch {
                    if let sled::Event::Insert { value, .. } = e
                        && let Ok(r) =
                            serde_json::from_slice::<quench_knowledge::IncidentRecord>(&value)
                    {
                        records.retain(|x| x.id != r.id);
                        records.push(r);
                    }
                }
                if let Err(e) = index.upsert(&records) {
                    warn!(error = %e, "indexing failed; `quench reindex` rebuilds the index");
                }
                for r in records
                    .iter()
                    .filter(|r| r.similar.is_none() && !r.status.is_closed())
                {
                    match index.similar(r, 3) {
                        Ok(similar) => {
                            let _ = incidents.update(&r.id, |rec| {
                                if rec.similar.is_none() {
                                    rec.similar = Some(similar.clone());
                                }
                            });
                        }
                        Err(e) => warn!(incident_id = %r.id, error = %e, "no similar incidents"),
                    }
                }
            }
        })
        .expect("spawn the indexer thread");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;
    use quench_knowledge::{AlertRecord, AlertState, Opening};

    use super::*;

    fn open_incident(store: &IncidentStore, n: u32) {
        let rec = AlertRecord {
            seq: u64::from(n),
            source: "alertmanager".into(),
            fingerprint: format!("fp-{n}"),
            state: AlertState::Firing,
            labels: BTreeMap::from([("service".to_string(), "storm".to_string())]),
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            first_received_at: Utc::now(),
            notifications: 1,
        };
        let opening = Opening {
            title: "Storm".into(),
            ..Default::default()
        };
        store
            .attach(&format!("fp-{n}"), &opening, rec, Utc::now())
            .unwrap();
    }

    /// A record written after the index was checked and before the
    /// indexer thread started (the pipeline runs meanwhile) is indexed.
    #[test]
    fn a_record_written_between_open_and_start_is_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = IncidentStore::open(&db).unwrap();
        open_incident(&store, 1);
        let opened = open(&dir.path().join("index"), &store).unwrap();
        let index = opened.index.clone();
        assert_eq!(index.count(), 1);
        open_incident(&store, 2);
        start(opened, store.clone());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while index.count() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the record written before start was never indexed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let hits = index.search("service:storm", 10, Utc::now()).unwrap();
        assert_eq!(hits.len(), 2);
    }
}
