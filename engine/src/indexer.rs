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

/// Opens the index in `dir` and rebuilds it from the records when it is
/// new, was replaced, or does not hold every record.
pub fn open(dir: &std::path::Path, incidents: &IncidentStore) -> anyhow::Result<Arc<SearchIndex>> {
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
    Ok(Arc::new(index))
}

/// Follows the records and indexes them, forever, in its own thread.
pub fn start(index: Arc<SearchIndex>, incidents: IncidentStore) {
    let mut events = incidents.subscribe();
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
