//! The one owner of the knowledge database's writes.
//!
//! Every write to the records, the audit log, the kill switch, the artifact
//! metadata and the chaos ledger runs on one thread, in the order it was
//! asked for. Async code sends a job and awaits its answer; nothing that
//! writes sled ever runs on an async worker, and nothing holds a store lock
//! across an await.
//!
//! Group commit: the thread takes every job that is waiting and runs them.
//! When any of them asked to be durable, it commits what the stores staged
//! and hands the durable jobs' answers to the flusher thread, which flushes
//! sled and `fdatasync`s its log file once for every answer it holds, then
//! answers them; the writer goes on with the next jobs meanwhile. A job
//! that asked for durability is never answered before a flush that started
//! after its writes, and is answered with the error if that flush (or the
//! commit) fails (fail closed: an audit line that is not on disk stops the
//! action it records).
//!
//! A batch with no durable job is answered as soon as its jobs ran: the
//! records it staged are visible to readers at once (the store reads its
//! staging area first), and they are committed to sled at most
//! [`COMMIT_EVERY`] later, together with whatever the next batches staged.
//! Each sled transaction seals sled's log buffer twice and hands each to
//! an I/O thread, whatever it holds; one per batch was a large part of the
//! engine's CPU at 1,000 alerts/s (see docs/ARCHITECTURE.md).
//!
//! Because this thread is the only writer, read-modify-write sequences need
//! no transaction retries and cannot conflict, and because quench follows
//! its own change feed instead of sled subscriptions, nothing this thread
//! does can wait on a reader.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

use crate::store::StoreError;

/// The most jobs one flush covers.
const MAX_BATCH: usize = 512;

/// The longest a staged write waits for its commit when no job asks for
/// one sooner (a durable job, or [`Writer::commit_blocking`]). 5 ms, not
/// 1: a fifth of the transactions at 1,000 alerts/s and about 8 % less of
/// quench's CPU, with the same executor latency (docs/ARCHITECTURE.md).
pub const COMMIT_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

type Reply = Box<dyn FnOnce(Result<(), Arc<SettleError>>) + Send>;
type Job = Box<dyn FnOnce() -> Reply + Send>;

struct Request {
    durable: bool,
    /// Commit what is staged before answering (a durable job implies it).
    commit: bool,
    job: Job,
}

/// Counters a caller may read without asking the thread.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Flushes done (each covers one or more durable jobs).
    pub flushes: AtomicU64,
    /// Commits run (each covers the batches since the last; one with
    /// nothing staged writes nothing).
    pub commits: AtomicU64,
    /// Jobs waiting right now.
    pub queued: AtomicU64,
}

/// Runs after the jobs of a batch and before its answers: a store that
/// stages its writes during the batch commits them here, once. An error
/// fails every job of the batch.
pub type Commit = Arc<dyn Fn() -> Result<(), StoreError> + Send + Sync>;

type Commits = Arc<std::sync::RwLock<Vec<Commit>>>;

/// A handle on the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: Option<mpsc::Sender<Request>>,
    /// For [`Writer::inline`]: the database, flushed after durable jobs.
    inline: Option<Arc<sled::Db>>,
    commits: Commits,
    stats: Arc<WriterStats>,
}

/// Why a batch's writes are not known to be on disk. One answer for every
/// job of the batch, so it is shared.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// A store's batch-end commit failed.
    #[error("a store's commit failed: {0}")]
    Commit(#[source] Box<StoreError>),
    /// sled's flush failed.
    #[error("flushing the database failed: {0}")]
    Flush(#[source] sled::Error),
    /// The fdatasync after the flush failed.
    #[error("fdatasync of the database's log failed: {0}")]
    Sync(#[source] std::io::Error),
}

/// Commits what the stores staged (their registered commits).
fn commit(commits: &Commits, stats: &WriterStats) -> Result<(), Arc<SettleError>> {
    stats.commits.fetch_add(1, Ordering::Relaxed);
    for c in commits.read().unwrap_or_else(|e| e.into_inner()).iter() {
        c().map_err(|e| Arc::new(SettleError::Commit(Box::new(e))))?;
    }
    Ok(())
}

/// One flush of sled and one fdatasync of its log: everything written
/// before it started is then on disk.
fn flush(
    db: &sled::Db,
    syncer: Option<&Syncer>,
    stats: &WriterStats,
) -> Result<(), Arc<SettleError>> {
    stats.flushes.fetch_add(1, Ordering::Relaxed);
    db.flush().map_err(|e| Arc::new(SettleError::Flush(e)))?;
    match syncer {
        Some(s) => s.0.sync_data().map_err(|e| Arc::new(SettleError::Sync(e))),
        None => Ok(()),
    }
}

/// The end of a batch run inline: the stores' commits, then, when a job
/// asked for it, one flush and one fdatasync.
fn settle(
    db: &sled::Db,
    syncer: Option<&Syncer>,
    commits: &Commits,
    stats: &WriterStats,
    durable: bool,
) -> Result<(), Arc<SettleError>> {
    commit(commits, stats)?;
    if durable {
        flush(db, syncer, stats)?;
    }
    Ok(())
}

/// The flusher thread: takes the answers of every durable job waiting,
/// flushes and fdatasyncs once for all of them, then answers them. It runs
/// beside the writer, so the writer goes on with the next jobs while the
/// disk works (a flush of a second's writes took up to tens of
/// milliseconds, and every write waited behind it). Returns the syncer for
/// the writer's last flush.
fn flush_loop(
    db: sled::Db,
    syncer: Option<Syncer>,
    rx: mpsc::Receiver<Vec<Reply>>,
    stats: Arc<WriterStats>,
) -> Option<Syncer> {
    while let Ok(mut replies) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            replies.extend(more);
        }
        let flushed = flush(&db, syncer.as_ref(), &stats);
        for reply in replies {
            reply(flushed.clone());
        }
    }
    syncer
}

/// Makes what sled flushed durable on the disk: `fdatasync` of its log file.
///
/// On Linux sled's `flush` ends with `sync_file_range`, which survives a
/// crash of the process but not a power cut.
pub struct Syncer(pub std::fs::File);

impl Writer {
    /// Starts the writer thread for `db`. `syncer`, when given, runs after
    /// every flush, before a durable job is answered.
    pub fn start(db: sled::Db, syncer: Option<Syncer>) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel::<Request>();
        let stats = Arc::new(WriterStats::default());
        let commits = Commits::default();
        let (st, cm) = (stats.clone(), commits.clone());
        std::thread::Builder::new()
            .name("knowledge-writer".into())
            .spawn(move || run(db, syncer, rx, st, cm))
            .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        Ok(Writer {
            tx: Some(tx),
            inline: None,
            commits,
            stats,
        })
    }

    /// Registers a store's batch-end commit (see [`Commit`]).
    pub fn on_commit(&self, commit: Commit) {
        self.commits
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(commit);
    }

    /// A writer that runs each job on the calling thread, in the caller's
    /// order, flushing after durable ones. Only for single-threaded tests
    /// that pause tokio's clock: a job answered from another thread lets
    /// the paused clock jump ahead while the test waits for it.
    pub fn inline(db: sled::Db) -> Writer {
        Writer {
            tx: None,
            inline: Some(Arc::new(db)),
            commits: Commits::default(),
            stats: Arc::default(),
        }
    }

    /// The thread's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Gone once every handle is dropped and the thread has ended.
    #[cfg(test)]
    pub(crate) fn probe(&self) -> std::sync::Weak<WriterStats> {
        Arc::downgrade(&self.stats)
    }

    fn send<R: Send + 'static>(
        &self,
        (durable, commit): (bool, bool),
        f: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
        done: impl FnOnce(Result<R, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let job: Job = Box::new(move || {
            let out = f();
            Box::new(move |flushed: Result<(), Arc<SettleError>>| {
                let out = match (out, flushed) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(StoreError::NotDurable(e)),
                };
                done(out);
            })
        });
        if let Some(db) = &self.inline {
            let reply = job();
            reply(settle(db, None, &self.commits, &self.stats, durable));
            return Ok(());
        }
        let Some(tx) = &self.tx else {
            return Err(StoreError::Stopped);
        };
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let commit = commit || durable;
        tx.send(Request {
            durable,
            commit,
            job,
        })
        .map_err(|_| {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            StoreError::Stopped
        })
    }

    /// Runs `f` on the writer thread and waits for it without blocking an
    /// async worker. With `durable`, the answer comes after the flush and
    /// `fdatasync` that cover `f`'s writes.
    pub async fn run<R: Send + 'static>(
        &self,
        durable: bool,
        f: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send((durable, false), f, move |r| {
            let _ = tx.send(r);
        })?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// The same, for a plain thread (the indexer, the CLI, tests). Never
    /// call it on an async worker.
    pub fn run_blocking<R: Send + 'static>(
        &self,
        durable: bool,
        f: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.run_blocking_as((durable, false), f)
    }

    /// Waits (a plain thread) until everything staged so far is committed
    /// to sled, not necessarily flushed: for a reader that walks sled's
    /// trees and must see every write answered before it started.
    pub fn commit_blocking(&self) -> Result<(), StoreError> {
        self.run_blocking_as((false, true), || Ok(()))
    }

    fn run_blocking_as<R: Send + 'static>(
        &self,
        mode: (bool, bool),
        f: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(mode, f, move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().map_err(|_| StoreError::Stopped)?
    }
}

fn run(
    db: sled::Db,
    syncer: Option<Syncer>,
    rx: mpsc::Receiver<Request>,
    stats: Arc<WriterStats>,
    commits: Commits,
) {
    let (to_flusher, flusher_rx) = mpsc::channel::<Vec<Reply>>();
    let flusher = {
        let (db, stats) = (db.clone(), stats.clone());
        std::thread::Builder::new()
            .name("knowledge-flush".into())
            .spawn(move || flush_loop(db, syncer, flusher_rx, stats))
    };
    let flusher = match flusher {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the knowledge store's flusher thread");
            return;
        }
    };
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
    let mut durable_replies: Vec<Reply> = Vec::new();
    // When the oldest write not yet committed was staged.
    let mut pending: Option<Instant> = None;
    let mut failing = false;
    loop {
        let first = match pending {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(since) => rx.recv_timeout(COMMIT_EVERY.saturating_sub(since.elapsed())),
        };
        match first {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let due = batch.iter().any(|r| r.commit)
            || pending.is_some_and(|since| since.elapsed() >= COMMIT_EVERY);
        for r in batch.drain(..) {
            let reply = (r.job)();
            if r.durable {
                durable_replies.push(reply);
            } else {
                replies.push(reply);
            }
        }
        let committed = if due {
            let committed = commit(&commits, &stats);
            // A failed commit keeps what it staged (the store puts it
            // back), so it is tried again; a durable job fails closed.
            pending = committed.is_err().then(Instant::now);
            // Said once, not every COMMIT_EVERY it is tried again.
            match (&committed, failing) {
                (Err(e), false) => tracing::error!(
                    error = %e,
                    retry_every = ?COMMIT_EVERY,
                    "committing the staged records failed; trying again"
                ),
                (Ok(()), true) => tracing::info!("the staged records are committed again"),
                _ => {}
            }
            failing = committed.is_err();
            committed
        } else {
            pending.get_or_insert_with(Instant::now);
            Ok(())
        };
        if !durable_replies.is_empty() {
            // Committed above (a durable job is due): the flusher's next
            // flush, which starts after this, covers it.
            match &committed {
                Ok(()) => {
                    if let Err(mpsc::SendError(lost)) =
                        to_flusher.send(std::mem::take(&mut durable_replies))
                    {
                        for reply in lost {
                            reply(Err(Arc::new(SettleError::Sync(std::io::Error::other(
                                "the flusher thread is gone",
                            )))));
                        }
                    }
                }
                Err(_) => {
                    for reply in durable_replies.drain(..) {
                        reply(committed.clone());
                    }
                }
            }
        }
        for reply in replies.drain(..) {
            reply(committed.clone());
        }
        stats.queued.fetch_sub(n, Ordering::Relaxed);
    }
    // Every handle is gone: commit what is staged, let the flusher answer
    // what it holds, then make everything durable.
    let _ = commit(&commits, &stats);
    drop(to_flusher);
    let syncer = flusher.join().ok().flatten();
    let _ = db.flush();
    if let Some(s) = &syncer {
        let _ = s.0.sync_data();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_and_durable_ones_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let w = Writer::start(db.clone(), None).unwrap();
        let tree = db.open_tree("t").unwrap();
        let mut waits = Vec::new();
        for i in 0u32..200 {
            let t = tree.clone();
            let w = w.clone();
            waits.push(tokio::spawn(async move {
                w.run(i % 7 == 0, move || {
                    t.insert(b"last", &i.to_be_bytes())?;
                    Ok(i)
                })
                .await
            }));
        }
        for (i, h) in waits.into_iter().enumerate() {
            assert_eq!(h.await.unwrap().unwrap(), i as u32);
        }
        assert!(w.stats().flushes.load(Ordering::Relaxed) >= 1);
        let t = tree.clone();
        let got = w
            .run(false, move || Ok(t.get(b"last")?.map(|v| v.to_vec())))
            .await
            .unwrap();
        assert_eq!(got.unwrap(), 199u32.to_be_bytes());
    }

    #[test]
    fn a_blocking_caller_gets_the_job_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let w = Writer::start(db, None).unwrap();
        let r: Result<(), _> = w.run_blocking(true, || {
            Err(StoreError::Corrupt {
                key: "k".into(),
                source: serde_json::from_str::<u8>("x").unwrap_err(),
            })
        });
        assert!(r.unwrap_err().to_string().contains("record k"));
    }
}
