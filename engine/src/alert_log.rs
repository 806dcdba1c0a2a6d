//! The durable alert log: a segmented write-ahead log built for intake.
//!
//! An alert is acknowledged only after its delivery is in a segment file
//! and that file is fdatasync'd. One writer thread takes every append
//! request that is waiting, de-duplicates, frames them, writes them with
//! one `write` and one `fdatasync`, and only then answers each request
//! (group commit): under load many deliveries share one sync, alone a
//! delivery pays for one sync and nothing more.
//!
//! On disk, `DATA/intake/NNNNNNNN.wal`: segment files of at most
//! [`SEGMENT_BYTES`], each a run of records
//! `[len: u32 LE][crc32c(payload): u32 LE][payload]`. A payload is one
//! delivery: its first sequence number, the time it was received, the
//! 128-bit hashes of its alerts' idempotency keys, the raw payload, and the
//! alerts as JSON. When a segment is created, the directory is fsync'd too,
//! so the file itself survives a power cut.
//!
//! The writer zero-fills each segment ahead of its last record and syncs
//! that, so an append's `fdatasync` does not change the file's size; zeros
//! where a record would start are the segment's clean end.
//!
//! On open every segment is read and checked. A record cut short (a torn
//! write: the process died mid-append, before anything was acknowledged) or
//! one whose checksum fails is reported, and the segment is truncated to
//! the last good record: everything before the damage is kept. The
//! idempotency keys within the window are rebuilt from the records (the
//! log is their only copy), and so is an index of record positions.
//!
//! Retention: whole segments that the pipeline has finished with and whose
//! newest delivery is older than `alert_retention` are deleted, with the
//! raw payloads they hold. This is the shape of Prometheus' TSDB
//! write-ahead log and Vector's disk buffer: framed records, group commit,
//! repair by truncation, deletion by whole segment.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use quench_connectors::Alert;
use quench_connectors::alert::content_address;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 32 << 20;

/// The most requests one sync covers. Bounds the latency of the first
/// request of a batch.
const MAX_BATCH: usize = 1024;

/// How far ahead of the last record the writer zero-fills a segment.
const PREALLOCATE: u64 = 1 << 20;

/// Requests waiting for the writer beyond this make senders wait (back
/// pressure) instead of growing memory without bound.
const QUEUE_DEPTH: usize = 4096;

/// Synced batches the live feed holds before the writer drops them.
pub(crate) const LIVE_DEPTH: usize = 1024;

/// A record's frame: length and checksum.
const HEADER: usize = 8;

/// After a commit, how long the writer keeps looking at its queue before
/// it sleeps on it, giving its vCPU to any other thread that wants it
/// between looks. A vCPU with nothing to run halts, and waking it again
/// costs 30-50 µs on a VM that does not poll before halting (this one
/// does not: `guest_halt_poll_ns` is 0); a caller's next request usually
/// comes back within this time. Under load the queue is never empty and
/// nothing spins; once it is quiet, nothing spins either.
const WRITER_SPIN: Duration = Duration::from_micros(200);

/// How long a request that is one of a few waiting for the log (at most
/// [`ANSWER_SPIN_WAITERS`]) polls for its answer before it parks: about
/// one commit, so the worker that runs it is still awake when the answer
/// comes instead of being woken from a halt. Between polls it yields both
/// to the worker's other tasks and its thread to any other that wants the
/// vCPU (the pipeline and the runs, at a lower priority): polling without
/// the second doubled the executor's latency at 1,000 alerts/s.
const ANSWER_SPIN: Duration = Duration::from_micros(300);

/// Requests poll for their answer only while at most this many wait for
/// the log. From 8 callers of one alert, the workers still had a third of
/// the CPU idle between commits, and polling took that cell from
/// 22,700-22,900 to 25,100-25,600 alerts/s; with more waiting, the
/// workers have work anyway and each parks at once.
const ANSWER_SPIN_WAITERS: usize = 8;

/// Only deliveries up to this size poll for their answer: a larger one
/// costs the server far more than a wake-up (about 1 ms of CPU for 100
/// alerts against 30-50 µs), and polling would take the CPU the pipeline
/// uses meanwhile.
const ANSWER_SPIN_BYTES: usize = 16 << 10;

/// The longest the writer's companion stays awake for one sync (a sync
/// slower than this is rare, and then waking from a halt is cheap beside it).
const AWAKE_MAX: Duration = Duration::from_millis(2);

/// Records larger than this are refused on append and treated as damage
/// on open (a corrupt length must not make us allocate gigabytes).
const MAX_RECORD: usize = 256 << 20;

/// What went wrong while appending or reading.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file could not be written, synced or read; nothing in the request
    /// was acknowledged.
    #[error("alert log: {0}")]
    Io(#[from] std::io::Error),
    /// The writer thread is gone (the engine is shutting down).
    #[error("alert log: writer stopped")]
    Stopped,
    /// A stored delivery does not decode although its checksum held.
    #[error("alert log: delivery {seq} does not decode: {why}")]
    Corrupt {
        /// The delivery's first sequence number.
        seq: u64,
        /// Why.
        why: String,
    },
}

/// An alert as the log keeps it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StoredAlert {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When quench received it.
    pub received_at: DateTime<Utc>,
    /// The alert.
    pub alert: Alert,
}

/// One delivery as the log holds it: what a standby copies.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Delivery {
    /// The sequence number of its first alert.
    pub first_seq: u64,
    /// When the leader received it.
    pub received_at: DateTime<Utc>,
    /// The body as it arrived.
    #[serde(with = "base64_bytes")]
    pub raw: Vec<u8>,
    /// Its alerts, in sequence order.
    pub alerts: Vec<Alert>,
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// The outcome for one alert of an append.
#[derive(Debug, Clone, Serialize)]
pub struct Appended {
    /// The sequence number of the stored alert (for a duplicate, the original).
    pub seq: u64,
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// True when the idempotency key was already stored.
    pub duplicate: bool,
}

/// Damage found and repaired when the log was opened.
#[derive(Debug, Clone, Serialize)]
pub struct Repair {
    /// The segment file.
    pub segment: String,
    /// Where the damage starts; the file was truncated there.
    pub offset: u64,
    /// Bytes dropped (never acknowledged when the damage is a torn tail).
    pub dropped_bytes: u64,
    /// What was wrong.
    pub why: String,
}

/// One alert, encoded before it reaches the writer.
struct Item {
    key: [u8; 16],
    json: Vec<u8>,
    alert: Alert,
}

enum Request {
    Append {
        raw: Vec<u8>,
        items: Vec<Item>,
        /// A copy of the leader's delivery: no key makes a duplicate.
        copy: bool,
        reply: oneshot::Sender<Reply>,
    },
    /// Number the first alert of an empty log `seq` (a standby joining a
    /// leader whose oldest segments are retired).
    StartAt {
        seq: u64,
        reply: std::sync::mpsc::SyncSender<Result<(), LogError>>,
    },
    /// Forget keys received before the cutoff; delete segments wholly
    /// before both `retire_before` and the pipeline cursor.
    Maintain {
        keys_before: DateTime<Utc>,
        retire_before: DateTime<Utc>,
        cursor: u64,
        reply: std::sync::mpsc::SyncSender<Result<(usize, usize), LogError>>,
    },
}

/// What an append request is answered with.
type Reply = Result<Vec<Appended>, LogError>;

/// An append waiting for the batch's commit: the raw delivery, its alerts,
/// whether it is a copy of the leader's, and where the answer goes.
type Pending = (Vec<u8>, Vec<Item>, bool, oneshot::Sender<Reply>);

/// Where one delivery is.
#[derive(Debug, Clone, Copy)]
struct Pos {
    first_seq: u64,
    count: u32,
    offset: u64,
    len: u32,
    received_nanos: i64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    records: Vec<Pos>,
}

impl Segment {
    fn newest(&self) -> Option<i64> {
        self.records.last().map(|p| p.received_nanos)
    }

    fn last_seq(&self) -> Option<u64> {
        self.records
            .last()
            .map(|p| p.first_seq + u64::from(p.count) - 1)
    }
}

struct Shared {
    dir: PathBuf,
    segments: RwLock<Vec<Segment>>,
    next_seq: AtomicU64,
    stats: CommitStats,
    /// Append requests sent to the writer and not yet answered.
    waiting: AtomicUsize,
    /// Whether the writer and a lone request stay awake briefly
    /// ([`WRITER_SPIN`], [`ANSWER_SPIN`]) before they sleep.
    spin: AtomicBool,
}

/// Counts one request in [`Shared::waiting`] for as long as it lives, so a
/// request given up halfway (its client hung up) is counted out too.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        Waiting(count)
    }

    /// At most [`ANSWER_SPIN_WAITERS`] requests wait, this one included.
    fn few(&self) -> bool {
        self.0.load(Ordering::Acquire) <= ANSWER_SPIN_WAITERS
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the writer's group commits cost, for `/metrics`: how many there
/// were, how many requests they answered, and the time spent in their
/// write and fdatasync.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Group commits that wrote something.
    pub commits: AtomicU64,
    /// Append requests those commits answered.
    pub requests: AtomicU64,
    /// Nanoseconds inside `write` and `fdatasync`.
    pub sync_nanos: AtomicU64,
}

/// The handle the HTTP handlers and the pipeline share.
#[derive(Clone)]
pub struct AlertLog {
    tx: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    live: Arc<Mutex<Option<mpsc::Receiver<Vec<StoredAlert>>>>>,
    repairs: Arc<Vec<Repair>>,
}

/// The idempotency key as stored: a 128-bit hash, so every key is 16 bytes
/// however long the sender's identifiers are.
fn key_hash(key: &str) -> [u8; 16] {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// CRC-32C (Castagnoli), the checksum of the frames, as in Prometheus'
/// write-ahead log and ext4's metadata.
pub fn crc32c(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[[u32; 256]; 8]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [[0u32; 256]; 8];
        for i in 0..256u32 {
            let mut c = i;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            t[0][i as usize] = c;
        }
        for i in 0..256 {
            for k in 1..8 {
                let prev = t[k - 1][i];
                t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            }
        }
        t
    });
    let mut crc = !0u32;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xff) as usize];
    }
    !crc
}

/// The fixed part of a payload: first seq, received (ns), alert count.
const FIXED: usize = 8 + 8 + 4;

/// A decoded payload.
struct Payload<'a> {
    first_seq: u64,
    received_nanos: i64,
    keys: Vec<[u8; 16]>,
    raw: &'a [u8],
    alerts_json: &'a [u8],
}

fn parse_payload(p: &[u8]) -> Option<Payload<'_>> {
    if p.len() < FIXED {
        return None;
    }
    let first_seq = u64::from_le_bytes(p[0..8].try_into().ok()?);
    let received_nanos = i64::from_le_bytes(p[8..16].try_into().ok()?);
    let n = u32::from_le_bytes(p[16..20].try_into().ok()?) as usize;
    let keys_end = FIXED.checked_add(n.checked_mul(16)?)?;
    let raw_len_end = keys_end.checked_add(4)?;
    if p.len() < raw_len_end || n == 0 {
        return None;
    }
    let keys = p[FIXED..keys_end]
        .chunks_exact(16)
        .map(|c| c.try_into().expect("16 bytes"))
        .collect();
    let raw_len = u32::from_le_bytes(p[keys_end..raw_len_end].try_into().ok()?) as usize;
    let raw_end = raw_len_end.checked_add(raw_len)?;
    if p.len() < raw_end {
        return None;
    }
    Some(Payload {
        first_seq,
        received_nanos,
        keys,
        raw: &p[raw_len_end..raw_end],
        alerts_json: &p[raw_end..],
    })
}

fn segment_name(id: u64) -> String {
    format!("{id:08}.wal")
}

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Reads one segment, checking every frame; truncates it at the first
/// damage. Calls `seen` with each good record.
fn scan(
    path: &Path,
    expect_after: u64,
    mut seen: impl FnMut(Pos, &Payload<'_>),
) -> Result<(Vec<Pos>, Option<Repair>), LogError> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut off = 0usize;
    let mut last_seq = expect_after;
    let mut damage = None;
    let mut preallocated = false;
    while off < bytes.len() {
        let rest = &bytes[off..];
        if rest.iter().all(|&b| b == 0) {
            // The writer's zero-filled room for records to come: the clean
            // end of the segment. (A record never starts with eight zero
            // bytes: its length is at least the fixed part of a payload.)
            preallocated = true;
            break;
        }
        if rest.len() < HEADER {
            damage = Some("a record header cut short (torn write)".to_string());
            break;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4"));
        if len > MAX_RECORD {
            damage = Some(format!("a record length of {len} bytes (damaged header)"));
            break;
        }
        if rest.len() < HEADER + len {
            damage = Some(format!(
                "a record of {len} bytes with only {} present (torn write)",
                rest.len() - HEADER
            ));
            break;
        }
        let payload = &rest[HEADER..HEADER + len];
        if crc32c(payload) != crc {
            damage = Some("a record whose CRC32C does not match".to_string());
            break;
        }
        let Some(p) = parse_payload(payload) else {
            damage = Some("a record whose payload does not parse".to_string());
            break;
        };
        if p.first_seq <= last_seq {
            damage = Some(format!(
                "a record out of sequence ({} after {last_seq})",
                p.first_seq
            ));
            break;
        }
        let pos = Pos {
            first_seq: p.first_seq,
            count: p.keys.len() as u32,
            offset: off as u64,
            len: (HEADER + len) as u32,
            received_nanos: p.received_nanos,
        };
        last_seq = p.first_seq + p.keys.len() as u64 - 1;
        seen(pos, &p);
        records.push(pos);
        off += HEADER + len;
    }
    let repair = match damage {
        None => {
            if preallocated {
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(off as u64)?;
                f.sync_all()?;
            }
            None
        }
        Some(why) => {
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(off as u64)?;
            f.sync_all()?;
            Some(Repair {
                segment: path.display().to_string(),
                offset: off as u64,
                dropped_bytes: (bytes.len() - off) as u64,
                why,
            })
        }
    };
    Ok((records, repair))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl AlertLog {
    /// Opens (creating if needed) the log in `dir`, checks and repairs its
    /// segments, rebuilds its indexes, and starts the writer thread.
    pub fn open(dir: &Path) -> Result<AlertLog, LogError> {
        std::fs::create_dir_all(dir)?;
        let mut ids: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".wal")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        let mut segments = Vec::new();
        let mut keys: HashMap<[u8; 16], (u64, i64)> = HashMap::new();
        let mut repairs = Vec::new();
        let mut last_seq = 0;
        for id in ids {
            let path = dir.join(segment_name(id));
            let (records, repair) = scan(&path, last_seq, |pos, p| {
                for (i, k) in p.keys.iter().enumerate() {
                    keys.insert(*k, (pos.first_seq + i as u64, pos.received_nanos));
                }
            })?;
            if let Some(r) = repair {
                warn!(segment = %r.segment, offset = r.offset, dropped_bytes = r.dropped_bytes, why = %r.why, "alert log repaired: truncated at the first damaged record; everything before it is kept");
                repairs.push(r);
            }
            let seg = Segment { id, path, records };
            if let Some(l) = seg.last_seq() {
                last_seq = l;
            }
            segments.push(seg);
        }
        let next_seq = last_seq + 1;
        // Always append to a fresh segment after an open: the last one may
        // have been truncated, and a new file keeps the writer's offsets
        // simple.
        let id = segments.last().map(|s| s.id + 1).unwrap_or(1);
        let path = dir.join(segment_name(id));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        sync_dir(dir)?;
        segments.push(Segment {
            id,
            path,
            records: Vec::new(),
        });
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            segments: RwLock::new(segments),
            next_seq: AtomicU64::new(next_seq),
            stats: CommitStats::default(),
            waiting: AtomicUsize::new(0),
            spin: AtomicBool::new(true),
        });
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (live_tx, live_rx) = mpsc::channel(LIVE_DEPTH);
        let awake = Arc::new(AtomicU8::new(AWAKE_OFF));
        let companion = {
            let on = awake.clone();
            thread::Builder::new()
                .name("alert-log-awake".into())
                .spawn(move || keep_awake(&on))?
                .thread()
                .clone()
        };
        let writer = Writer {
            shared: shared.clone(),
            keys,
            file,
            size: 0,
            room: 0,
            live: live_tx,
            awake,
            companion,
        };
        // Should this fail, the writer is dropped, and its companion ends.
        thread::Builder::new()
            .name("alert-log-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(AlertLog {
            tx,
            shared,
            live: Arc::new(Mutex::new(Some(live_rx))),
            repairs: Arc::new(repairs),
        })
    }

    /// What opening the log repaired.
    pub fn repairs(&self) -> &[Repair] {
        &self.repairs
    }

    /// Forgets the idempotency keys of alerts received before
    /// `keys_before` (a sender that repeats such an alert gets it stored
    /// again) and deletes the segments the pipeline is done with (`cursor`)
    /// whose newest delivery is older than `retire_before`. Returns the
    /// keys forgotten and the segments deleted. Runs on the writer thread;
    /// call it from a plain thread or `spawn_blocking`.
    pub fn maintain(
        &self,
        keys_before: DateTime<Utc>,
        retire_before: DateTime<Utc>,
        cursor: u64,
    ) -> Result<(usize, usize), LogError> {
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.tx
            .blocking_send(Request::Maintain {
                keys_before,
                retire_before,
                cursor,
                reply,
            })
            .map_err(|_| LogError::Stopped)?;
        rx.recv().map_err(|_| LogError::Stopped)?
    }

    /// Appends the alerts of one delivery and its raw payload. Returns once
    /// they are fdatasync'd, never before.
    pub async fn append(
        &self,
        raw: Vec<u8>,
        alerts: Vec<Alert>,
    ) -> Result<Vec<Appended>, LogError> {
        self.append_as(raw, alerts, false).await
    }

    /// Appends a delivery copied from the leader's log as it is there:
    /// every alert is stored, none is taken for a duplicate of one this log
    /// remembers (the leader decided; its window of remembered keys may
    /// have let go of a key this one still holds).
    pub async fn append_copy(
        &self,
        raw: Vec<u8>,
        alerts: Vec<Alert>,
    ) -> Result<Vec<Appended>, LogError> {
        self.append_as(raw, alerts, true).await
    }

    async fn append_as(
        &self,
        raw: Vec<u8>,
        alerts: Vec<Alert>,
        copy: bool,
    ) -> Result<Vec<Appended>, LogError> {
        let raw_ref = content_address(&raw);
        let items = alerts
            .into_iter()
            .map(|mut alert| {
                alert.raw_ref.clone_from(&raw_ref);
                Item {
                    key: key_hash(&alert.idempotency_key),
                    json: serde_json::to_vec(&alert).expect("alerts always serialise"),
                    alert,
                }
            })
            .collect();
        let small = raw.len() <= ANSWER_SPIN_BYTES;
        let (reply, mut rx) = oneshot::channel();
        let waiting = Waiting::enter(&self.shared.waiting);
        self.tx
            .send(Request::Append {
                raw,
                items,
                copy,
                reply,
            })
            .await
            .map_err(|_| LogError::Stopped)?;
        if small && self.shared.spin.load(Ordering::Relaxed) {
            let start = Instant::now();
            while waiting.few() && start.elapsed() < ANSWER_SPIN {
                match rx.try_recv() {
                    Ok(answer) => return answer,
                    Err(oneshot::error::TryRecvError::Closed) => return Err(LogError::Stopped),
                    Err(oneshot::error::TryRecvError::Empty) => {
                        // Returns at once unless another thread is
                        // runnable, which then runs first.
                        thread::yield_now();
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
        rx.await.map_err(|_| LogError::Stopped)?
    }

    /// Whether the writer and the requests (while few wait) stay awake
    /// briefly before they sleep, and the writer's companion during a lone
    /// request's sync (on when opened; the `intake_spin` setting).
    pub fn set_spin(&self, on: bool) {
        self.shared.spin.store(on, Ordering::Relaxed);
    }

    /// Append requests the writer has not answered yet.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Acquire)
    }

    /// The live feed of synced alerts, in sequence order, for the one
    /// consumer that follows the log (the pipeline). `None` if taken.
    ///
    /// The feed is best effort: when the consumer falls behind, the writer
    /// drops batches rather than wait, and the consumer, seeing a gap in
    /// the sequence numbers, reads the missing alerts back from the log.
    pub fn take_live_feed(&self) -> Option<mpsc::Receiver<Vec<StoredAlert>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Positions of the deliveries from the one holding `seq` on, at most
    /// enough to hold `limit` alerts, with their files.
    fn positions_from(&self, seq: u64, limit: usize) -> Vec<(PathBuf, Pos)> {
        let segs = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let mut alerts = 0usize;
        // The segments whose last seq reaches `seq` (empty ones hold none).
        for s in segs
            .iter()
            .filter(|s| s.last_seq().is_some_and(|l| l >= seq))
        {
            let from = s
                .records
                .partition_point(|p| p.first_seq + u64::from(p.count) - 1 < seq);
            for p in &s.records[from..] {
                out.push((s.path.clone(), *p));
                alerts += p.count as usize;
                if alerts >= limit {
                    return out;
                }
            }
        }
        out
    }

    /// The framed bytes of one record, reusing the segment file `open`
    /// holds when the record is in it (reads go segment by segment).
    fn read_frame(
        open: &mut Option<(PathBuf, File)>,
        path: &Path,
        pos: Pos,
    ) -> Result<Vec<u8>, LogError> {
        let at = |e: std::io::Error| {
            LogError::Io(std::io::Error::new(
                e.kind(),
                format!("{} at {}: {e}", path.display(), pos.offset),
            ))
        };
        if open.as_ref().is_none_or(|(p, _)| p != path) {
            *open = Some((path.to_path_buf(), File::open(path).map_err(at)?));
        }
        let f = &open.as_ref().expect("just opened").1;
        let mut buf = vec![0u8; pos.len as usize];
        f.read_exact_at(&mut buf, pos.offset).map_err(at)?;
        Ok(buf)
    }

    fn read_record(
        open: &mut Option<(PathBuf, File)>,
        path: &Path,
        pos: Pos,
    ) -> Result<(DateTime<Utc>, Vec<Alert>), LogError> {
        let buf = Self::read_frame(open, path, pos)?;
        let corrupt = |why: &str| LogError::Corrupt {
            seq: pos.first_seq,
            why: why.to_string(),
        };
        let payload = &buf[HEADER..];
        let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4"));
        if crc32c(payload) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        let p = parse_payload(payload).ok_or_else(|| corrupt("payload does not parse"))?;
        let alerts: Vec<Alert> =
            serde_json::from_slice(p.alerts_json).map_err(|e| corrupt(&e.to_string()))?;
        Ok((DateTime::from_timestamp_nanos(pos.received_nanos), alerts))
    }

    /// At least `limit` alerts after `seq` (fewer at the end of the log),
    /// oldest first. Whole deliveries are read, so it may be more. File
    /// reads: call from a thread or `spawn_blocking`.
    pub fn read_after(&self, seq: u64, limit: usize) -> Result<Vec<StoredAlert>, LogError> {
        let start = seq + 1;
        let (mut out, mut open) = (Vec::new(), None);
        for (path, pos) in self.positions_from(start, limit) {
            let (received_at, alerts) = Self::read_record(&mut open, &path, pos)?;
            for (i, alert) in alerts.into_iter().enumerate() {
                let seq = pos.first_seq + i as u64;
                if seq >= start {
                    out.push(StoredAlert {
                        seq,
                        received_at,
                        alert,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Whole deliveries after `seq` (the first one starting at `seq + 1`),
    /// up to about `limit` alerts: each with its raw payload, for a standby
    /// that appends them in the same order and so gets the same sequence
    /// numbers. File reads: call from a thread or `spawn_blocking`.
    pub fn deliveries_after(&self, seq: u64, limit: usize) -> Result<Vec<Delivery>, LogError> {
        let (mut out, mut open) = (Vec::new(), None);
        for (path, pos) in self.positions_from(seq + 1, limit) {
            if pos.first_seq <= seq {
                // The follower's position is inside a delivery: it did not
                // come from this log.
                return Err(LogError::Corrupt {
                    seq: pos.first_seq,
                    why: format!(
                        "position {seq} is inside the delivery that starts at {}",
                        pos.first_seq
                    ),
                });
            }
            let buf = Self::read_frame(&mut open, &path, pos)?;
            let (received_at, alerts) = Self::read_record(&mut open, &path, pos)?;
            let raw = parse_payload(&buf[HEADER..])
                .map(|p| p.raw.to_vec())
                .unwrap_or_default();
            out.push(Delivery {
                first_seq: pos.first_seq,
                received_at,
                raw,
                alerts,
            });
        }
        Ok(out)
    }

    /// The delivery whose last alert is `seq`: its first sequence number
    /// and a digest of its alerts' idempotency keys (what makes two logs'
    /// deliveries the same); None when no delivery ends there. A standby
    /// compares its own with the leader's before it appends more.
    pub fn delivery_ending_at(&self, seq: u64) -> Result<Option<(u64, u32)>, LogError> {
        if seq == 0 {
            return Ok(None);
        }
        let Some((path, pos)) = self.positions_from(seq, 1).into_iter().next() else {
            return Ok(None);
        };
        if pos.first_seq + u64::from(pos.count) - 1 != seq {
            return Ok(None);
        }
        let buf = Self::read_frame(&mut None, &path, pos)?;
        let keys = parse_payload(&buf[HEADER..])
            .map(|p| p.keys.concat())
            .unwrap_or_default();
        Ok(Some((pos.first_seq, crc32c(&keys))))
    }

    /// Every alert received since `cutoff`, oldest first.
    pub fn received_since(&self, cutoff: DateTime<Utc>) -> Result<Vec<StoredAlert>, LogError> {
        let first = {
            let segs = self
                .shared
                .segments
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let c = nanos(cutoff);
            segs.iter()
                .flat_map(|s| s.records.iter())
                .find(|p| p.received_nanos >= c)
                .map(|p| p.first_seq)
        };
        match first {
            Some(f) => self.read_after(f - 1, usize::MAX),
            None => Ok(Vec::new()),
        }
    }

    /// The newest alerts, newest first, optionally only one fingerprint's.
    pub fn recent(
        &self,
        limit: usize,
        fingerprint: Option<&str>,
    ) -> Result<Vec<StoredAlert>, LogError> {
        let all = self.newest_first();
        let (mut out, mut open) = (Vec::new(), None);
        for (path, pos) in all {
            let (received_at, alerts) = Self::read_record(&mut open, &path, pos)?;
            for (i, alert) in alerts.into_iter().enumerate().rev() {
                if fingerprint.is_none_or(|f| alert.fingerprint == f) {
                    out.push(StoredAlert {
                        seq: pos.first_seq + i as u64,
                        received_at,
                        alert,
                    });
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every delivery's position, newest first.
    fn newest_first(&self) -> Vec<(PathBuf, Pos)> {
        let segs = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        segs.iter()
            .rev()
            .flat_map(|s| s.records.iter().rev().map(|p| (s.path.clone(), *p)))
            .collect()
    }

    /// The raw payload behind a `sha256:` reference, newest delivery first.
    /// A scan: for debugging, not for a hot path.
    pub fn raw_payload(&self, raw_ref: &str) -> Result<Option<Vec<u8>>, LogError> {
        let all = self.newest_first();
        let mut open = None;
        for (path, pos) in all {
            let buf = Self::read_frame(&mut open, &path, pos)?;
            if let Some(p) = parse_payload(&buf[HEADER..])
                && content_address(p.raw) == raw_ref
            {
                return Ok(Some(p.raw.to_vec()));
            }
        }
        Ok(None)
    }

    fn cursor_path(&self) -> PathBuf {
        self.shared.dir.join("cursor")
    }

    /// How far the pipeline got.
    pub fn cursor(&self) -> Result<u64, LogError> {
        match std::fs::read_to_string(self.cursor_path()) {
            Ok(s) => Ok(s.trim().parse().unwrap_or(0)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Records how far the pipeline got. Not synced: after a crash the
    /// pipeline may replay a little, which is idempotent.
    pub fn set_cursor(&self, seq: u64) -> Result<(), LogError> {
        let tmp = self.shared.dir.join("cursor.tmp");
        std::fs::write(&tmp, seq.to_string())?;
        std::fs::rename(&tmp, self.cursor_path())?;
        Ok(())
    }

    /// Makes an empty log number its first alert `seq` instead of 1: a
    /// standby copying a leader whose log no longer holds its first alerts
    /// (retired by retention) starts where the leader's log starts. Not
    /// persisted by itself: the first append is. Waits for the writer:
    /// call from a plain thread or `spawn_blocking`.
    pub fn start_at(&self, seq: u64) -> Result<(), LogError> {
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.tx
            .blocking_send(Request::StartAt { seq, reply })
            .map_err(|_| LogError::Stopped)?;
        rx.recv().map_err(|_| LogError::Stopped)?
    }

    /// What the group commits cost so far.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.shared.stats
    }

    /// The number of stored alerts (the last sequence number).
    pub fn len(&self) -> u64 {
        self.shared.next_seq.load(Ordering::Acquire) - 1
    }

    /// True when nothing was ever stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Segment files on disk now.
    pub fn segment_count(&self) -> usize {
        self.shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// How the writer waits for its next request: it looks at the queue for up
/// to [`WRITER_SPIN`] before it sleeps on it, but only while the last wait
/// was that short. When requests come further apart (one large delivery at
/// a time, a storm of single alerts spread over the second), spinning
/// would find nothing and take the CPU the pipeline needs.
struct Idle {
    spin: bool,
}

impl Idle {
    /// The next request; `None` once every sender is gone. `allowed`:
    /// whether spinning is on at all.
    fn next(&mut self, rx: &mut mpsc::Receiver<Request>, allowed: bool) -> Option<Request> {
        let start = Instant::now();
        while allowed && self.spin && start.elapsed() < WRITER_SPIN {
            match rx.try_recv() {
                Ok(r) => return Some(r),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => thread::yield_now(),
            }
        }
        let next = rx.blocking_recv();
        self.spin = start.elapsed() < WRITER_SPIN;
        next
    }
}

struct Writer {
    shared: Arc<Shared>,
    /// Every stored key within the window: its seq and when it came.
    keys: HashMap<[u8; 16], (u64, i64)>,
    file: File,
    /// Where the next record goes: the end of what was written.
    size: u64,
    /// The file's length: zeros from `size` on, written and synced ahead
    /// of time, so an append's `fdatasync` leaves the file's size (and so
    /// its inode) alone; the sync costs about a quarter less than one that
    /// grows the file.
    room: u64,
    live: mpsc::Sender<Vec<StoredAlert>>,
    /// [`AWAKE_ON`] while a lone request's commit syncs: the companion
    /// thread ([`keep_awake`]) stays on a vCPU meanwhile.
    awake: Arc<AtomicU8>,
    companion: thread::Thread,
}

/// The companion's states: parked, awake beside a sync, and told to end
/// (the writer is gone).
const AWAKE_OFF: u8 = 0;
const AWAKE_ON: u8 = 1;
const AWAKE_GONE: u8 = 2;

impl Drop for Writer {
    fn drop(&mut self) {
        self.awake.store(AWAKE_GONE, Ordering::Release);
        self.companion.unpark();
    }
}

/// The writer's companion: while a commit that answers a single request
/// waits for its fdatasync, it keeps the other vCPU awake (yielding it to
/// any thread that wants it), so the disk's completion wakes the writer
/// at once instead of after the vCPU's return from a halt (30-50 µs here,
/// where the guest does not poll before halting). With one caller that is
/// a quarter of a request's time; with several, the vCPUs are busy anyway
/// and it does not run.
fn keep_awake(state: &AtomicU8) {
    loop {
        thread::park();
        let start = Instant::now();
        loop {
            match state.load(Ordering::Acquire) {
                AWAKE_GONE => return,
                AWAKE_ON if start.elapsed() < AWAKE_MAX => thread::yield_now(),
                _ => break,
            }
        }
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut idle = Idle { spin: true };
        while let Some(first) = idle.next(&mut rx, self.shared.spin.load(Ordering::Relaxed)) {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let mut appends = Vec::with_capacity(batch.len());
            for r in batch.drain(..) {
                match r {
                    Request::Append {
                        raw,
                        items,
                        copy,
                        reply,
                    } => appends.push((raw, items, copy, reply)),
                    Request::Maintain {
                        keys_before,
                        retire_before,
                        cursor,
                        reply,
                    } => {
                        let _ = reply.send(self.maintain(keys_before, retire_before, cursor));
                    }
                    Request::StartAt { seq, reply } => {
                        // Appends queued before it in this batch are
                        // numbered already; it only applies to a log that
                        // holds nothing and has nothing pending.
                        let empty =
                            appends.is_empty() && self.shared.next_seq.load(Ordering::Acquire) == 1;
                        let _ = reply.send(if empty {
                            self.shared.next_seq.store(seq.max(1), Ordering::Release);
                            Ok(())
                        } else {
                            Err(LogError::Io(std::io::Error::other(
                                "the log already holds alerts; it cannot start elsewhere",
                            )))
                        });
                    }
                }
            }
            if !appends.is_empty() {
                self.append_batch(appends);
            }
        }
        // Closed cleanly: the segment ends at its last record.
        let _ = self.file.set_len(self.size);
        let _ = self.file.sync_all();
    }

    fn append_batch(&mut self, appends: Vec<Pending>) {
        let first_of_batch = self.shared.next_seq.load(Ordering::Acquire);
        let mut next = first_of_batch;
        let now = Utc::now();
        let now_nanos = nanos(now);
        let mut buf = Vec::new();
        let mut positions = Vec::new();
        let mut fresh = Vec::new();
        let mut outcomes = Vec::with_capacity(appends.len());
        let mut added: Vec<[u8; 16]> = Vec::new();
        for (raw, items, copy, reply) in appends {
            let first = next;
            let mut out = Vec::with_capacity(items.len());
            let mut new: Vec<Item> = Vec::with_capacity(items.len());
            // A key is taken as soon as it is seen, so a repeat later in
            // the same delivery (or batch) finds it; `added` gives them back
            // if the batch is refused.
            let keys_before = added.len();
            for item in items {
                let known = if copy { None } else { self.keys.get(&item.key) };
                match known {
                    Some(&(seq, _)) => out.push(Appended {
                        seq,
                        fingerprint: item.alert.fingerprint.clone(),
                        duplicate: true,
                    }),
                    None => {
                        let seq = first + new.len() as u64;
                        self.keys.insert(item.key, (seq, now_nanos));
                        added.push(item.key);
                        out.push(Appended {
                            seq,
                            fingerprint: item.alert.fingerprint.clone(),
                            duplicate: false,
                        });
                        new.push(item);
                    }
                }
            }
            if !new.is_empty() {
                // The record goes straight into the batch's buffer: length
                // and checksum first (filled in once the payload is there),
                // then the payload.
                let start = buf.len();
                buf.extend_from_slice(&[0u8; HEADER]);
                buf.extend_from_slice(&first.to_le_bytes());
                buf.extend_from_slice(&now_nanos.to_le_bytes());
                buf.extend_from_slice(&(new.len() as u32).to_le_bytes());
                for i in &new {
                    buf.extend_from_slice(&i.key);
                }
                buf.extend_from_slice(&(raw.len() as u32).to_le_bytes());
                buf.extend_from_slice(&raw);
                buf.push(b'[');
                for (n, i) in new.iter().enumerate() {
                    if n > 0 {
                        buf.push(b',');
                    }
                    buf.extend_from_slice(&i.json);
                }
                buf.push(b']');
                let payload_len = buf.len() - start - HEADER;
                if payload_len > MAX_RECORD {
                    buf.truncate(start);
                    for k in added.drain(keys_before..) {
                        self.keys.remove(&k);
                    }
                    let _ = reply.send(Err(LogError::Io(std::io::Error::other(format!(
                        "a delivery of {payload_len} bytes is over the log's record limit of {MAX_RECORD}"
                    )))));
                    continue;
                }
                let crc = crc32c(&buf[start + HEADER..]);
                buf[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
                buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
                positions.push(Pos {
                    first_seq: first,
                    count: new.len() as u32,
                    offset: self.size + start as u64,
                    len: (HEADER + payload_len) as u32,
                    received_nanos: now_nanos,
                });
                for (i, item) in new.into_iter().enumerate() {
                    fresh.push(StoredAlert {
                        seq: first + i as u64,
                        received_at: now,
                        alert: item.alert,
                    });
                }
                next = first + positions.last().map(|p| u64::from(p.count)).unwrap_or(0);
            }
            outcomes.push((reply, out));
        }
        let written = if buf.is_empty() {
            Ok(())
        } else {
            let started = std::time::Instant::now();
            let lone = outcomes.len() == 1 && self.shared.spin.load(Ordering::Relaxed);
            if lone {
                self.awake.store(AWAKE_ON, Ordering::Release);
                self.companion.unpark();
            }
            let written = self
                .make_room(buf.len() as u64)
                .and_then(|()| self.file.write_all_at(&buf, self.size))
                .and_then(|()| self.file.sync_data());
            self.awake.store(AWAKE_OFF, Ordering::Release);
            let stats = &self.shared.stats;
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .requests
                .fetch_add(outcomes.len() as u64, Ordering::Relaxed);
            stats.sync_nanos.fetch_add(
                u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            written
        };
        if let Err(e) = written {
            // Nothing of this batch is acknowledged; take it back out so
            // the file holds only what was.
            warn!(error = %e, "alert log write failed; the batch is refused");
            let _ = self.file.set_len(self.size);
            self.room = self.size;
            for k in added {
                self.keys.remove(&k);
            }
            for (reply, _) in outcomes {
                let _ = reply.send(Err(LogError::Io(std::io::Error::new(
                    e.kind(),
                    e.to_string(),
                ))));
            }
            return;
        }
        self.size += buf.len() as u64;
        {
            let mut segs = self
                .shared
                .segments
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(s) = segs.last_mut() {
                s.records.extend(positions);
            }
        }
        self.shared.next_seq.store(next, Ordering::Release);
        for (reply, out) in outcomes {
            // The sender may have gone (client hung up); the alert is
            // stored all the same.
            let _ = reply.send(Ok(out));
        }
        if !fresh.is_empty() {
            // Full means the consumer is behind; it will find the gap and
            // read these back from the log.
            let _ = self.live.try_send(fresh);
        }
        if self.size >= SEGMENT_BYTES
            && let Err(e) = self.rotate()
        {
            warn!(error = %e, "cannot start a new alert log segment; the current one grows");
        }
        // Make room for the next batches now, after the answers, so no
        // request waits for it.
        if self.room - self.size < PREALLOCATE / 4
            && let Err(e) = self.make_room(PREALLOCATE)
        {
            warn!(error = %e, "cannot preallocate the alert log; appends grow the file");
        }
    }

    /// Makes sure `need` bytes past `size` are zeros on disk (written and
    /// synced), extending the file by at least [`PREALLOCATE`].
    fn make_room(&mut self, need: u64) -> std::io::Result<()> {
        if self.size + need <= self.room {
            return Ok(());
        }
        let target = (self.size + need).max(self.room + PREALLOCATE);
        let zeros = vec![0u8; 64 << 10];
        let mut at = self.room;
        while at < target {
            let n = (target - at).min(zeros.len() as u64);
            self.file.write_all_at(&zeros[..n as usize], at)?;
            at += n;
        }
        self.file.sync_data()?;
        self.room = target;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let id = {
            let segs = self
                .shared
                .segments
                .read()
                .unwrap_or_else(|e| e.into_inner());
            segs.last().map(|s| s.id + 1).unwrap_or(1)
        };
        // The closed segment keeps its records only, not its spare room.
        self.file.set_len(self.size)?;
        self.file.sync_all()?;
        self.room = self.size;
        let path = self.shared.dir.join(segment_name(id));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        sync_dir(&self.shared.dir)?;
        self.file = file;
        self.size = 0;
        self.room = 0;
        self.shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Segment {
                id,
                path,
                records: Vec::new(),
            });
        Ok(())
    }

    fn maintain(
        &mut self,
        keys_before: DateTime<Utc>,
        retire_before: DateTime<Utc>,
        cursor: u64,
    ) -> Result<(usize, usize), LogError> {
        let k = nanos(keys_before);
        let before = self.keys.len();
        self.keys.retain(|_, (_, at)| *at >= k);
        let forgotten = before - self.keys.len();
        let r = nanos(retire_before);
        let mut segs = self
            .shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut retired = 0;
        // Whole segments from the oldest, never the one being written, and
        // never the newest one with records: the sequence continues from
        // its last record after a reopen.
        while segs.len() > 1 {
            if segs[1..].iter().all(|s| s.records.is_empty()) {
                break;
            }
            let s = &segs[0];
            let done = s.last_seq().is_none_or(|l| l <= cursor);
            let old = s.newest().is_none_or(|n| n < r);
            if !(done && old) {
                break;
            }
            std::fs::remove_file(&s.path)?;
            info!(segment = %s.path.display(), "alert log segment retired");
            segs.remove(0);
            retired += 1;
        }
        if retired > 0 {
            sync_dir(&self.shared.dir)?;
        }
        Ok((forgotten, retired))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use quench_connectors::{AlertStatus, Source};

    use super::*;

    fn alert(key: &str) -> Alert {
        Alert {
            source: Source::Alertmanager,
            fingerprint: format!("fp-{key}"),
            status: AlertStatus::Firing,
            labels: BTreeMap::from([("alertname".to_string(), "X".to_string())]),
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            meta: BTreeMap::new(),
            idempotency_key: key.to_string(),
            raw_ref: String::new(),
        }
    }

    /// Opens the log, retrying while the previous writer thread of the same
    /// directory is still letting go (it exits once every handle drops).
    fn reopen(dir: &Path) -> AlertLog {
        AlertLog::open(dir).unwrap()
    }

    /// What a standby copies: whole deliveries with their payloads, the
    /// same numbers when appended in order; and the digest that tells two
    /// logs' deliveries apart.
    #[tokio::test]
    async fn deliveries_copy_with_their_numbers_and_digests_tell_logs_apart() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (leader, standby) = (reopen(d1.path()), reopen(d2.path()));
        leader
            .append(b"one".to_vec(), vec![alert("a"), alert("b")])
            .await
            .unwrap();
        leader
            .append(b"two".to_vec(), vec![alert("c")])
            .await
            .unwrap();
        let all = leader.deliveries_after(0, 100).unwrap();
        assert_eq!(all.iter().map(|d| d.first_seq).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(all[0].raw, b"one");
        for d in &all {
            let got = standby
                .append(d.raw.clone(), d.alerts.clone())
                .await
                .unwrap();
            assert_eq!(got[0].seq, d.first_seq);
        }
        assert_eq!(
            leader.delivery_ending_at(2).unwrap(),
            standby.delivery_ending_at(2).unwrap()
        );
        assert_eq!(
            leader.delivery_ending_at(3).unwrap(),
            standby.delivery_ending_at(3).unwrap()
        );
        assert_eq!(
            leader.delivery_ending_at(1).unwrap(),
            None,
            "1 is inside a delivery"
        );
        assert!(
            leader.deliveries_after(1, 100).is_err(),
            "a position inside a delivery"
        );
        assert!(leader.deliveries_after(3, 100).unwrap().is_empty());
        // The same numbers, other alerts: told apart.
        standby
            .append(b"x".to_vec(), vec![alert("other")])
            .await
            .unwrap();
        leader
            .append(b"y".to_vec(), vec![alert("d")])
            .await
            .unwrap();
        assert_ne!(
            leader.delivery_ending_at(4).unwrap(),
            standby.delivery_ending_at(4).unwrap()
        );
    }

    /// Threads of this process with the name `name`.
    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == name)
            .count()
    }

    /// The writer's companion runs beside a lone request's sync and goes
    /// when the log closes: opening and closing logs leaves no thread.
    #[tokio::test]
    async fn the_writers_companion_ends_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let before = threads_named("alert-log-awake");
        // Until `n` companions run (a new thread names itself once it
        // runs), or 10 s.
        let until = async |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while threads_named("alert-log-awake") != n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            threads_named("alert-log-awake")
        };
        let log = AlertLog::open(dir.path()).unwrap();
        assert_eq!(until(before + 1).await, before + 1);
        for i in 0..20 {
            log.append(format!("p{i}").into_bytes(), vec![alert(&format!("k{i}"))])
                .await
                .unwrap();
        }
        drop(log);
        assert_eq!(until(before).await, before);
        assert_eq!(reopen(dir.path()).len(), 20);
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // the 8-byte path and the byte path agree
        let long: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut bytewise = !0u32;
        for &b in &long {
            bytewise ^= u32::from(b);
            for _ in 0..8 {
                bytewise = if bytewise & 1 == 1 {
                    (bytewise >> 1) ^ 0x82F6_3B78
                } else {
                    bytewise >> 1
                };
            }
        }
        assert_eq!(crc32c(&long), !bytewise);
    }

    /// The leader forgets a key after its dedup window and stores the
    /// alert again; the standby, which may still remember the key, copies
    /// it all the same (otherwise the copy would differ and replication
    /// would stop at the first alert that fires for longer than the window).
    #[tokio::test]
    async fn a_copied_delivery_is_stored_even_when_its_key_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let log = AlertLog::open(dir.path()).unwrap();
        log.append(b"one".to_vec(), vec![alert("a")]).await.unwrap();
        let plain = log
            .append(b"again".to_vec(), vec![alert("a")])
            .await
            .unwrap();
        assert!(
            plain[0].duplicate,
            "an ordinary append takes it for a duplicate"
        );
        let copied = log
            .append_copy(b"again".to_vec(), vec![alert("a"), alert("b")])
            .await
            .unwrap();
        assert_eq!(
            copied
                .iter()
                .map(|a| (a.seq, a.duplicate))
                .collect::<Vec<_>>(),
            [(2, false), (3, false)]
        );
        // The key now points at the copy, as on the leader.
        let r = log.append(b"x".to_vec(), vec![alert("a")]).await.unwrap();
        assert_eq!((r[0].seq, r[0].duplicate), (2, true));
    }

    #[tokio::test]
    async fn an_empty_log_can_start_where_a_leaders_log_starts() {
        let dir = tempfile::tempdir().unwrap();
        let log = AlertLog::open(dir.path()).unwrap();
        let l = log.clone();
        tokio::task::spawn_blocking(move || l.start_at(41))
            .await
            .unwrap()
            .unwrap();
        let r = log
            .append(b"one".to_vec(), vec![alert("a"), alert("b")])
            .await
            .unwrap();
        assert_eq!(r.iter().map(|a| a.seq).collect::<Vec<_>>(), [41, 42]);
        let l = log.clone();
        let again = tokio::task::spawn_blocking(move || l.start_at(7))
            .await
            .unwrap();
        assert!(again.is_err(), "a log with alerts keeps its numbers");
        drop(log);
        let log = reopen(dir.path());
        assert_eq!(log.len(), 42);
        assert_eq!(log.deliveries_after(0, 10).unwrap()[0].first_seq, 41);
        assert_eq!(log.read_after(0, 10).unwrap()[0].seq, 41);
    }

    /// A quiet month: the only records are older than the retention and
    /// the pipeline is past them, and the segment being written is empty
    /// (quench restarted since). Retiring must leave the sequence where it
    /// was, or the next restart would number alerts from 1 again, under
    /// the pipeline's cursor, and the pipeline would skip them.
    #[tokio::test]
    async fn retiring_every_old_record_keeps_the_sequence_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = AlertLog::open(dir.path()).unwrap();
        log.append(b"one".to_vec(), vec![alert("a"), alert("b")])
            .await
            .unwrap();
        drop(log);
        let log = reopen(dir.path());
        let l = log.clone();
        let future = Utc::now() + chrono::Duration::hours(1);
        std::thread::spawn(move || l.maintain(future, future, 2))
            .join()
            .unwrap()
            .unwrap();
        drop(log);
        let log = reopen(dir.path());
        assert_eq!(log.len(), 2, "the sequence survives");
        let r = log.append(b"two".to_vec(), vec![alert("c")]).await.unwrap();
        assert_eq!(r[0].seq, 3);
    }

    #[tokio::test]
    async fn keys_older_than_the_window_are_forgotten_and_old_segments_retired() {
        let dir = tempfile::tempdir().unwrap();
        let log = AlertLog::open(dir.path()).unwrap();
        log.append(b"one".to_vec(), vec![alert("a"), alert("b")])
            .await
            .unwrap();
        let between = Utc::now();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        log.append(b"two".to_vec(), vec![alert("c")]).await.unwrap();
        let hour_ago = between - chrono::Duration::hours(1);
        let l = log.clone();
        let m = move |k, r, c| {
            let l = l.clone();
            std::thread::spawn(move || l.maintain(k, r, c).unwrap())
                .join()
                .unwrap()
        };
        // Nothing is that old yet.
        assert_eq!(m(hour_ago, hour_ago, 3), (0, 0));
        // The first delivery's two keys go, the second's stays.
        assert_eq!(m(between, hour_ago, 3).0, 2);
        assert_eq!(m(between, hour_ago, 3).0, 0);
        let r = log
            .append(b"three".to_vec(), vec![alert("a"), alert("c")])
            .await
            .unwrap();
        assert_eq!(
            r.iter().map(|a| (a.seq, a.duplicate)).collect::<Vec<_>>(),
            [(4, false), (3, true)],
            "a is stored again, c is still a duplicate"
        );
        // The deliveries themselves stay.
        assert_eq!(log.read_after(0, 10).unwrap().len(), 4);
        drop(log);
        // After a reopen the writer appends to a new segment; the old one
        // goes once the pipeline is past it and it is older than retention.
        let log = reopen(dir.path());
        assert_eq!(log.segment_count(), 2);
        log.append(b"four".to_vec(), vec![alert("d")])
            .await
            .unwrap();
        let l = log.clone();
        let future = Utc::now() + chrono::Duration::hours(1);
        let (_, retired) = std::thread::spawn(move || l.maintain(hour_ago, future, 3))
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(retired, 0, "the pipeline is not past seq 4 yet");
        let l = log.clone();
        let (_, retired) = std::thread::spawn(move || l.maintain(hour_ago, future, 4))
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(retired, 1);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(
            log.read_after(0, 10)
                .unwrap()
                .iter()
                .map(|a| a.seq)
                .collect::<Vec<_>>(),
            [5]
        );
    }

    /// A request is counted as waiting from its send to its answer, and
    /// counted out when its caller gives it up halfway (the count decides
    /// whether a request polls for its answer; leaked ones would stop
    /// that for good). What it sent is stored all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_given_up_halfway_is_counted_out_and_still_stored() {
        let dir = tempfile::tempdir().unwrap();
        let log = AlertLog::open(dir.path()).unwrap();
        // Polled once, then dropped while it waits for the writer's sync
        // (unless that was done already): alone, then half of many at once.
        let alone =
            tokio::time::timeout(Duration::ZERO, log.append(b"p".to_vec(), vec![alert("x")])).await;
        assert_eq!(log.waiting(), 0);
        let mut tasks = Vec::new();
        for i in 0..40 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let append =
                    log.append(format!("p{i}").into_bytes(), vec![alert(&format!("k{i}"))]);
                if i % 2 == 0 {
                    tokio::time::timeout(Duration::ZERO, append).await.is_err()
                } else {
                    append.await.unwrap();
                    false
                }
            }));
        }
        let mut given_up = usize::from(alone.is_err());
        for t in tasks {
            given_up += usize::from(t.await.unwrap());
        }
        assert!(given_up > 0, "no request was still waiting after one poll");
        assert_eq!(log.waiting(), 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.len() < 41 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            log.len(),
            41,
            "every request that reached the writer is stored"
        );
    }

    #[tokio::test]
    async fn appends_dedups_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AlertLog::open(dir.path()).unwrap();
            let r = log
                .append(
                    b"payload".to_vec(),
                    vec![alert("a"), alert("b"), alert("a")],
                )
                .await
                .unwrap();
            assert_eq!(
                r.iter().map(|a| (a.seq, a.duplicate)).collect::<Vec<_>>(),
                [(1, false), (2, false), (1, true)]
            );
            // concurrent appends all land, each exactly once
            let mut tasks = Vec::new();
            for i in 0..50 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    log.append(
                        format!("p{i}").into_bytes(),
                        vec![alert(&format!("k{i}")), alert("a")],
                    )
                    .await
                }));
            }
            for t in tasks {
                let r = t.await.unwrap().unwrap();
                assert!(!r[0].duplicate);
                assert!(r[1].duplicate);
            }
            assert_eq!(log.len(), 52);
        }
        let log = reopen(dir.path());
        assert!(log.repairs().is_empty());
        assert_eq!(log.len(), 52);
        let first = log.read_after(0, 1).unwrap();
        assert_eq!(first[0].seq, 1);
        // Reading from the middle of a delivery starts at the next alert.
        let mid = log.read_after(1, 1).unwrap();
        assert_eq!(mid[0].seq, 2);
        assert_eq!(mid[0].alert.idempotency_key, "b");
        let all = log.read_after(0, 1000).unwrap();
        assert_eq!(
            all.iter().map(|a| a.seq).collect::<Vec<_>>(),
            (1..=52).collect::<Vec<_>>()
        );
        let raw = log.raw_payload(&first[0].alert.raw_ref).unwrap().unwrap();
        assert_eq!(raw, b"payload");
        let r = log
            .append(b"again".to_vec(), vec![alert("b"), alert("c")])
            .await
            .unwrap();
        assert!(r[0].duplicate, "keys survive a reopen");
        assert_eq!(r[1].seq, 53, "sequence numbers continue after a reopen");
        assert_eq!(log.recent(1, None).unwrap()[0].seq, 53);
        assert_eq!(log.recent(10, Some("fp-b")).unwrap().len(), 1);
        let all = log
            .received_since(Utc::now() - chrono::Duration::hours(1))
            .unwrap();
        assert_eq!(all.len(), 53, "everything is recent");
        assert_eq!(all.first().unwrap().seq, 1, "oldest first");
        assert!(
            log.received_since(Utc::now() + chrono::Duration::hours(1))
                .unwrap()
                .is_empty()
        );
        log.set_cursor(7).unwrap();
        assert_eq!(log.cursor().unwrap(), 7);
    }

    /// Writes three deliveries into a fresh log; returns the directory, the
    /// segment file and the offset where the last record starts.
    fn three_deliveries() -> (tempfile::TempDir, PathBuf, u64, u64) {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let log = AlertLog::open(dir.path()).unwrap();
            for (i, k) in ["a", "b", "c"].iter().enumerate() {
                log.append(format!("raw{i}").into_bytes(), vec![alert(k)])
                    .await
                    .unwrap();
            }
        });
        let seg = dir.path().join(segment_name(1));
        let (records, repair) = scan(&seg, 0, |_, _| {}).unwrap();
        assert!(repair.is_none());
        let last = records[2];
        (dir, seg, last.offset, last.offset + u64::from(last.len))
    }

    /// A torn tail at every byte offset of the last record: open repairs,
    /// keeps the two records before it, reports what it dropped, and the
    /// log takes appends again.
    #[test]
    fn a_torn_tail_at_every_offset_is_repaired() {
        let (dir, seg, start, end) = three_deliveries();
        let whole = std::fs::read(&seg).unwrap();
        assert!(whole.len() as u64 >= end);
        for cut in start..end {
            // a fresh copy of the two-segment directory each time
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join(segment_name(1)), &whole[..cut as usize]).unwrap();
            let log = AlertLog::open(d.path()).unwrap();
            let all = log.read_after(0, 10).unwrap();
            assert_eq!(
                all.iter()
                    .map(|a| a.alert.idempotency_key.as_str())
                    .collect::<Vec<_>>(),
                ["a", "b"],
                "cut at {cut}"
            );
            if cut == start {
                assert!(
                    log.repairs().is_empty(),
                    "a cut on a record boundary is no damage"
                );
            } else {
                let r = &log.repairs()[0];
                assert_eq!(r.offset, start, "cut at {cut}");
                assert_eq!(r.dropped_bytes, cut - start, "cut at {cut}");
                assert_eq!(
                    std::fs::metadata(d.path().join(segment_name(1)))
                        .unwrap()
                        .len(),
                    start
                );
            }
            assert_eq!(log.len(), 2);
            drop(log);
        }
        drop(dir);
    }

    /// A flipped bit anywhere in the last record is caught by its checksum
    /// (or its frame), and the records before it are kept.
    #[test]
    fn a_flipped_bit_in_a_record_is_caught() {
        let (_dir, seg, start, end) = three_deliveries();
        let mut whole = std::fs::read(&seg).unwrap();
        whole.truncate(end as usize);
        for at in start..end {
            for bit in [0u8, 3, 7] {
                let mut bytes = whole.clone();
                bytes[at as usize] ^= 1 << bit;
                let d = tempfile::tempdir().unwrap();
                std::fs::write(d.path().join(segment_name(1)), &bytes).unwrap();
                let log = AlertLog::open(d.path()).unwrap();
                assert_eq!(log.len(), 2, "flip at {at} bit {bit}");
                assert_eq!(log.repairs().len(), 1, "flip at {at} bit {bit}");
                assert_eq!(log.repairs()[0].offset, start);
            }
        }
        // A flip in the middle record keeps the first one only.
        let mut bytes = whole.clone();
        bytes[(start - 3) as usize] ^= 0x10;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(segment_name(1)), &bytes).unwrap();
        let log = AlertLog::open(d.path()).unwrap();
        assert_eq!(log.len(), 1);
        assert!(
            log.repairs()[0].why.contains("CRC32C"),
            "{:?}",
            log.repairs()
        );
    }

    /// The writer's zero-filled room after the last record is the clean
    /// end of a segment (no repair, trimmed on open); bytes after zeros are
    /// damage, reported and dropped.
    #[test]
    fn zeros_after_the_last_record_are_the_end_not_damage() {
        let (_dir, seg, _start, end) = three_deliveries();
        let mut whole = std::fs::read(&seg).unwrap();
        whole.truncate(end as usize);
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(segment_name(1));
        let mut zeros = whole.clone();
        zeros.resize(end as usize + 100_000, 0);
        std::fs::write(&path, &zeros).unwrap();
        let log = AlertLog::open(d.path()).unwrap();
        assert_eq!(log.len(), 3);
        assert!(log.repairs().is_empty(), "{:?}", log.repairs());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
        drop(log);

        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(segment_name(1));
        let mut garbage = zeros.clone();
        garbage[end as usize + 5_000] = 7;
        std::fs::write(&path, &garbage).unwrap();
        let log = AlertLog::open(d.path()).unwrap();
        assert_eq!(log.len(), 3);
        assert_eq!(log.repairs().len(), 1);
        assert_eq!(log.repairs()[0].offset, end);
        assert_eq!(log.repairs()[0].dropped_bytes, 100_000);
    }

    /// The live segment is zero-filled ahead of its last record, and the
    /// log closes it at its last record.
    #[tokio::test]
    async fn the_writer_preallocates_and_trims_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let log = AlertLog::open(dir.path()).unwrap();
        log.append(b"raw".to_vec(), vec![alert("a")]).await.unwrap();
        let path = dir.path().join(segment_name(1));
        assert!(std::fs::metadata(&path).unwrap().len() >= PREALLOCATE);
        drop(log);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let (records, _) = loop {
            let (records, repair) = scan(&path, 0, |_, _| {}).unwrap();
            let len = std::fs::metadata(&path).unwrap().len();
            if len < PREALLOCATE || std::time::Instant::now() > deadline {
                break (records, repair);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(records.len(), 1);
        let last = records[0];
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            last.offset + u64::from(last.len)
        );
    }

    #[tokio::test]
    async fn segments_rotate_and_reads_cross_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = AlertLog::open(dir.path()).unwrap();
        // ~40 MiB of raw payload crosses the 32 MiB segment size.
        let big = vec![b'x'; 4 << 20];
        for i in 0..10 {
            log.append(big.clone(), vec![alert(&format!("r{i}"))])
                .await
                .unwrap();
        }
        assert_eq!(log.segment_count(), 2);
        let all = log.read_after(0, 100).unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(log.read_after(8, 100).unwrap()[0].seq, 9);
        drop(log);
        let log = reopen(dir.path());
        assert_eq!(log.len(), 10);
        assert_eq!(log.segment_count(), 3);
    }
}
