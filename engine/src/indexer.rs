//! Keeps the search index in step with the incident records by following
//! the records' change feed (`changes after N`), at its own pace, in its
//! own thread. The index's commits carry N, so a restart resumes where the
//! index stopped instead of rebuilding it. Similar past incidents are
//! attached to each new incident through the records' writer, like any
//! other change: the indexer never writes into what it follows behind the
//! writer's back, and no writer ever waits for the indexer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quench_knowledge::search::SearchIndex;
use quench_knowledge::{Changes, IncidentRecord, IncidentStore};
use tracing::{info, warn};

/// Why the index could not be opened, rebuilt or brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    /// tantivy failed.
    #[error(transparent)]
    Search(#[from] quench_knowledge::search::SearchError),
    /// The records or their change feed could not be read.
    #[error(transparent)]
    Store(#[from] quench_knowledge::StoreError),
    /// The thread that opens the index could not start.
    #[error("cannot start the thread that opens the search index: {0}")]
    Spawn(#[source] std::io::Error),
    /// Opening the index panicked (a bug in it or in tantivy).
    #[error("opening the search index panicked")]
    Panicked,
}

/// Changes indexed in one commit at most.
const BATCH: usize = 2048;

/// Similar incidents are attached as soon as a batch is indexed when it
/// brings at most this many new incidents. In a storm they are not (a
/// search per incident would take a core from the storm); the API works
/// them out when an incident is read instead.
const SIMILAR_PER_BATCH: usize = 64;

/// At most one commit this often. A tantivy commit writes and syncs
/// segment files; one per batch of a storm would take the disk and a core
/// from the intake and the executor. Alone, a change is indexed at once;
/// in a storm, changes gather for up to this long and go in one commit.
const COMMIT_EVERY: Duration = Duration::from_millis(1000);

/// The index, and where in the change feed it is.
pub struct Opened {
    /// The index.
    pub index: Arc<SearchIndex>,
    /// How far the indexer got; shared with `/readyz` and `/metrics`.
    pub position: Arc<AtomicU64>,
}

/// Opens the index in `dir`. An index that is new, was set aside, recorded
/// no position, or is behind what the feed still holds is rebuilt from the
/// records; otherwise it resumes from its position.
pub fn open(dir: &std::path::Path, incidents: &IncidentStore) -> Result<Opened, IndexerError> {
    // tantivy's indexing and merge threads are started with its writer and
    // inherit the nice value of the thread that starts them.
    let path = dir.to_path_buf();
    let (index, fresh) = std::thread::Builder::new()
        .name("quench-index-open".into())
        .spawn(move || {
            lower_priority();
            SearchIndex::open(&path)
        })
        .map_err(IndexerError::Spawn)?
        .join()
        .map_err(|_| IndexerError::Panicked)??;
    let resumable = match index.position() {
        Some(p) if !fresh && p <= incidents.last_change() => {
            !matches!(incidents.changes_after(p, 1)?, Changes::Gap { .. })
        }
        _ => false,
    };
    let position = if resumable {
        let p = index.position().unwrap_or(0);
        info!(
            position = p,
            behind = incidents.last_change() - p,
            "search index resumes from the change feed"
        );
        p
    } else {
        rebuild(&index, incidents)?
    };
    let position = Arc::new(AtomicU64::new(position));
    // The feed keeps what the index has not read yet.
    incidents.follow_from(&position);
    Ok(Opened {
        index: Arc::new(index),
        position,
    })
}

/// Rebuilds the index from every record; returns the feed position it is
/// at. The position is read before the records, so a change written
/// meanwhile is applied again later (indexing is idempotent), never missed.
pub fn rebuild(index: &SearchIndex, incidents: &IncidentStore) -> Result<u64, IndexerError> {
    let at = incidents.last_change();
    info!(
        position = at,
        "rebuilding the search index from the records"
    );
    let n = index.rebuild_streaming(incidents.scan(), Some(at))?;
    info!(records = n, position = at, "search index rebuilt");
    Ok(at)
}

/// The running indexer thread.
pub struct Indexer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Indexer {
    /// Stops following (within a second) and waits for the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Follows the change feed and indexes it in its own thread, until
/// [`Indexer::stop`].
pub fn start(opened: &Opened, incidents: IncidentStore) -> Indexer {
    let index = opened.index.clone();
    let position = opened.position.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let halt = stop.clone();
    let thread = std::thread::Builder::new()
        .name("quench-indexer".into())
        .spawn(move || {
            lower_priority();
            follow(&index, &incidents, &position, &halt)
        })
        .expect("spawn the indexer thread");
    Indexer {
        stop,
        thread: Some(thread),
    }
}

/// The index follows at its own pace: in a storm the kernel gives the
/// intake, the pipeline and the executor the cores first (nice 10, for the
/// calling thread and the threads it starts), and the lag is reported.
fn lower_priority() {
    crate::lower_priority(10, "search indexer");
}

fn follow(
    index: &SearchIndex,
    incidents: &IncidentStore,
    position: &AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut last_commit: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Acquire) {
        let pos = position.load(Ordering::Acquire);
        if incidents.last_change() <= pos {
            incidents.wait_for_change(pos, Duration::from_secs(1));
            continue;
        }
        if let Some(wait) = last_commit.and_then(|t| COMMIT_EVERY.checked_sub(t.elapsed())) {
            std::thread::sleep(wait.min(Duration::from_millis(200)));
            continue;
        }
        last_commit = Some(std::time::Instant::now());
        match index_next(index, incidents, pos) {
            Ok(p) => position.store(p, Ordering::Release),
            Err(e) => {
                warn!(error = %e, position = pos, "indexing failed; trying again in 1s");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Indexes the next batch of changes after `pos`; returns the new position.
fn index_next(
    index: &SearchIndex,
    incidents: &IncidentStore,
    pos: u64,
) -> Result<u64, IndexerError> {
    // Chunks of BATCH changes are added as they are read (memory stays
    // small however far behind the index is); one commit covers up to
    // COMMIT_EVERY of that work.
    let started = std::time::Instant::now();
    let mut at = pos;
    let mut fresh: Vec<IncidentRecord> = Vec::new();
    let mut too_many_new = false;
    loop {
        let changes = match incidents.changes_after(at, BATCH)? {
            Changes::Next(c) => c,
            Changes::Gap { oldest } => {
                warn!(
                    position = at,
                    oldest, "the index fell behind what the change feed keeps; rebuilding"
                );
                return rebuild(index, incidents);
            }
        };
        let Some(last) = changes.last().map(|c| c.seq) else {
            break;
        };
        let mut ids: Vec<&str> = changes.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut records: Vec<IncidentRecord> = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = incidents.get(id)? {
                records.push(r);
            }
        }
        index.stage(&records)?;
        if !too_many_new {
            fresh.extend(
                records
                    .into_iter()
                    .filter(|r| r.similar.is_none() && !r.status.is_closed()),
            );
            if fresh.len() > SIMILAR_PER_BATCH {
                too_many_new = true;
                fresh = Vec::new();
            }
        }
        at = last;
        if started.elapsed() >= COMMIT_EVERY {
            break;
        }
    }
    if at == pos {
        return Ok(pos);
    }
    index.commit_at(Some(at))?;
    for r in &fresh {
        match index.similar(r, 3) {
            Ok(similar) => {
                // Through the writer, like any change; it comes back on the
                // feed with `similar` set and is indexed once more.
                if let Err(e) = incidents.update_blocking(&r.id, move |rec| {
                    if rec.similar.is_none() {
                        rec.similar = Some(similar);
                    }
                }) {
                    warn!(incident_id = %r.id, error = %e, "similar incidents not saved");
                }
            }
            Err(e) => warn!(incident_id = %r.id, error = %e, "no similar incidents"),
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;
    use quench_knowledge::{AlertRecord, AlertState, Opening, Writer};

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
            .attach_blocking(&format!("fp-{n}"), &opening, rec, Utc::now())
            .unwrap();
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A record written after the index was opened and before the indexer
    /// started (the pipeline runs meanwhile) is indexed; similar incidents
    /// come back through the writer; a reopened index resumes from its
    /// position without a rebuild.
    #[test]
    fn follows_the_feed_and_resumes_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = IncidentStore::open(&db, Writer::start(db.clone(), None).unwrap()).unwrap();
        open_incident(&store, 1);
        // A write is answered once staged; the rebuild reads what is
        // committed (a staged one comes in through the feed later).
        store.commit_blocking().unwrap();
        let opened = open(&dir.path().join("index"), &store).unwrap();
        let index = opened.index.clone();
        assert_eq!(index.count(), 1);
        assert_eq!(index.position(), Some(1));
        open_incident(&store, 2);
        let indexer = start(&opened, store.clone());
        wait_until("the record written before start was never indexed", || {
            index.count() == 2
        });
        let hits = index.search("service:storm", 10, Utc::now()).unwrap();
        assert_eq!(hits.len(), 2);
        wait_until("inc-2 never got its similar incidents", || {
            store
                .get("inc-2")
                .unwrap()
                .unwrap()
                .similar
                .is_some_and(|s| s.iter().any(|x| x.id == "inc-1"))
        });
        // The writes of `similar` are changes too, and are followed.
        wait_until("the indexer never caught up", || {
            opened.position.load(Ordering::Acquire) == store.last_change()
        });
        let at = store.last_change();
        indexer.stop();
        drop(opened);
        drop(index);
        // Not a rebuild: the reopened index starts from its position. A
        // record written while nothing follows is picked up from there.
        open_incident(&store, 3);
        let reopened = open(&dir.path().join("index"), &store).unwrap();
        assert_eq!(reopened.position.load(Ordering::Acquire), at);
        assert_eq!(reopened.index.count(), 2, "no rebuild happened");
        let _indexer = start(&reopened, store.clone());
        let idx = reopened.index.clone();
        wait_until("the change after the position was not indexed", || {
            idx.count() == 3
        });
    }
}
