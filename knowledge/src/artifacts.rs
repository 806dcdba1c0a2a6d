//! Evidence artifacts (profiles, flame graphs, traces), content-addressed:
//! the same bytes are stored once, under `sha256:<hex>`, with a size limit.
//!
//! The bytes are files, `DIR/ab/cdef...` (written to a temporary name,
//! fdatasync'd, renamed, and the directory fsync'd): sled would put values
//! this large in blob files it never syncs. The metadata, each incident's
//! usage and the baselines are small sled entries, written by the
//! knowledge [`Writer`] like every other write. Artifacts stored by older
//! versions inside sled are still read from there.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::StoreError;
use crate::writer::Writer;

/// What is known about an artifact besides its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// `sha256:<hex>`.
    pub id: String,
    /// `pprof`, `flamegraph`, `go-trace`, ...
    pub kind: String,
    /// The media type to serve it with.
    pub media_type: String,
    /// Its size in bytes.
    pub size: usize,
    /// When it was first stored.
    pub stored_at: DateTime<Utc>,
    /// The incident whose step captured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    /// That step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// What it was captured from: a URL, `pod/NAMESPACE/NAME:PORT`, a pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The start of its capture window, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<DateTime<Utc>>,
    /// The end of its capture window, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<DateTime<Utc>>,
}

/// Where an artifact comes from: the incident and step that captured it,
/// what from, and when.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// The incident, whose total the artifact counts against.
    pub incident: Option<&'a str>,
    /// The step.
    pub step: Option<&'a str>,
    /// The capture target.
    pub target: Option<&'a str>,
    /// The capture window, UTC.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// The healthy capture a service's new profiles of one kind are diffed
/// against: the last one saved, by a scheduled capture or by a runbook
/// step once the service was well again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The service, as the runbook names it.
    pub service: String,
    /// The profile kind (`cpu`, `heap`, ...).
    pub kind: String,
    /// The stored profile.
    pub artifact: String,
    /// When it was saved.
    pub saved_at: DateTime<Utc>,
    /// The incident whose step saved it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    /// That step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// Checks a service or kind used as a baseline key: 1 to 128 characters of
/// letters, digits, `.`, `_`, `-` and `/`.
pub fn check_baseline_key(what: &str, value: &str) -> Result<(), ArtifactError> {
    if value.is_empty()
        || value.len() > 128
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
    {
        return Err(ArtifactError::Invalid(format!(
            "{what} {value:?} must be 1 to 128 letters, digits, '.', '_', '-' or '/'"
        )));
    }
    Ok(())
}

/// Why an artifact was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The incident's artifacts would exceed their total.
    #[error("incident {incident} would keep {total} bytes of artifacts, over its limit of {limit}")]
    IncidentFull {
        /// The incident.
        incident: String,
        /// What it would hold.
        total: u64,
        /// Its limit.
        limit: u64,
    },
    /// All artifacts together would exceed the store's budget.
    #[error(
        "the artifact store would hold {total} bytes, over its budget of {limit} (max_artifact_bytes_total)"
    )]
    StoreFull {
        /// What it would hold.
        total: u64,
        /// The budget.
        limit: u64,
    },
    /// Over the size limit.
    #[error("artifact of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A baseline request that cannot be honoured (bad key, no such
    /// artifact).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The artifact files and trees.
#[derive(Clone)]
pub struct ArtifactStore {
    files: PathBuf,
    /// Artifacts stored inside sled by older versions (read only).
    bytes: sled::Tree,
    meta: sled::Tree,
    usage: sled::Tree,
    baselines: sled::Tree,
    writer: Writer,
    limit: usize,
    per_incident: u64,
    /// All artifact bytes together at most (each content counted once).
    total_limit: u64,
}

/// Where the store's total is counted, beside the incidents' (whose keys
/// are `inc-N`).
const TOTAL_KEY: &[u8] = b"\xfftotal";

/// Baselines at most (one per service and kind): service names can come
/// from alert labels.
pub const MAX_BASELINES: usize = 1000;

/// The store's budget unless configured.
pub const DEFAULT_TOTAL_LIMIT: u64 = 10 << 30;

/// Writes `bytes` to `path` durably: a temporary file, fdatasync, rename,
/// then an fsync of the directory.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

impl ArtifactStore {
    /// Opens the store: bytes in `files`, the rest in `db` through
    /// `writer`. Artifacts above `limit` bytes are refused, and so is what
    /// would take one incident's artifacts above `per_incident`.
    pub fn open(
        db: &sled::Db,
        writer: Writer,
        files: &Path,
        limit: usize,
        per_incident: u64,
    ) -> Result<ArtifactStore, StoreError> {
        Ok(ArtifactStore {
            files: files.to_path_buf(),
            bytes: db.open_tree("knowledge/artifacts")?,
            meta: db.open_tree("knowledge/artifact_meta")?,
            usage: db.open_tree("knowledge/artifact_usage")?,
            baselines: db.open_tree("knowledge/baselines")?,
            writer,
            limit,
            per_incident,
            total_limit: DEFAULT_TOTAL_LIMIT,
        })
    }

    /// The same store with a budget for all artifacts together.
    pub fn with_total_limit(self, total_limit: u64) -> ArtifactStore {
        ArtifactStore {
            total_limit,
            ..self
        }
    }

    fn path_of(&self, id: &str) -> Option<PathBuf> {
        let hex = id.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(self.files.join(&hex[..2]).join(&hex[2..]))
    }

    /// Stores bytes (once per content) and returns their id, once the
    /// bytes and the metadata are durable. Async: the file is written on
    /// the blocking pool, the metadata by the knowledge writer.
    pub async fn store(
        &self,
        kind: &str,
        media_type: &str,
        bytes: Vec<u8>,
        origin: Origin<'_>,
    ) -> Result<String, ArtifactError> {
        let meta = self.check(kind, media_type, &bytes, &origin)?;
        let me = self.clone();
        let id = meta.id.clone();
        let written = tokio::task::spawn_blocking(move || me.write_file(&id, &bytes))
            .await
            .map_err(|_| StoreError::Stopped)?;
        written?;
        let me = self.clone();
        self.writer
            .run(true, move || Ok(me.record(meta)))
            .await
            .map_err(ArtifactError::from)?
    }

    /// Stores bytes (once per content) and returns their id; blocking.
    pub fn put(&self, kind: &str, media_type: &str, bytes: &[u8]) -> Result<String, ArtifactError> {
        self.put_for(kind, media_type, bytes, &Origin::default())
    }

    /// Stores bytes for an incident's step, counted against the incident's
    /// total; blocking (a thread, `spawn_blocking` or a test).
    pub fn put_for(
        &self,
        kind: &str,
        media_type: &str,
        bytes: &[u8],
        origin: &Origin<'_>,
    ) -> Result<String, ArtifactError> {
        let meta = self.check(kind, media_type, bytes, origin)?;
        self.write_file(&meta.id, bytes)?;
        let me = self.clone();
        self.writer
            .run_blocking(true, move || Ok(me.record(meta)))
            .map_err(ArtifactError::from)?
    }

    /// The size check, and the metadata the artifact will have.
    fn check(
        &self,
        kind: &str,
        media_type: &str,
        bytes: &[u8],
        origin: &Origin<'_>,
    ) -> Result<ArtifactMeta, ArtifactError> {
        if bytes.len() > self.limit {
            return Err(ArtifactError::TooLarge {
                size: bytes.len(),
                limit: self.limit,
            });
        }
        Ok(ArtifactMeta {
            id: format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
            kind: kind.to_string(),
            media_type: media_type.to_string(),
            size: bytes.len(),
            stored_at: Utc::now(),
            incident: origin.incident.map(str::to_string),
            step: origin.step.map(str::to_string),
            target: origin.target.map(str::to_string),
            window_start: origin.window.map(|w| w.0),
            window_end: origin.window.map(|w| w.1),
        })
    }

    fn write_file(&self, id: &str, bytes: &[u8]) -> Result<(), ArtifactError> {
        let path = self.path_of(id).expect("ids are sha256 hex");
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            return Ok(());
        }
        write_durably(&path, bytes)
            .map_err(|e| ArtifactError::Store(StoreError::Sled(sled::Error::Io(e))))
    }

    /// Counts the artifact against its incident and records its metadata
    /// (the first capture's, for bytes seen before). Writer thread only.
    fn record(&self, meta: ArtifactMeta) -> Result<String, ArtifactError> {
        let size = meta.size as u64;
        let counter = |key: &[u8]| -> Result<u64, ArtifactError> {
            Ok(self
                .usage
                .get(key)
                .map_err(StoreError::from)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0))
        };
        let fresh = !self
            .meta
            .contains_key(meta.id.as_bytes())
            .map_err(StoreError::from)?;
        // Both limits are checked before either count moves: a refused
        // artifact counts nowhere.
        let store_total = counter(TOTAL_KEY)? + size;
        if fresh && store_total > self.total_limit {
            // Its file was written first; nothing refers to it.
            if let Some(path) = self.path_of(&meta.id) {
                let _ = std::fs::remove_file(path);
            }
            return Err(ArtifactError::StoreFull {
                total: store_total,
                limit: self.total_limit,
            });
        }
        let incident_total = match meta.incident.as_deref() {
            Some(inc) => {
                let total = counter(inc.as_bytes())? + size;
                if total > self.per_incident {
                    return Err(ArtifactError::IncidentFull {
                        incident: inc.to_string(),
                        total,
                        limit: self.per_incident,
                    });
                }
                Some((inc, total))
            }
            None => None,
        };
        if fresh {
            self.usage
                .insert(TOTAL_KEY, &store_total.to_be_bytes())
                .map_err(StoreError::from)?;
        }
        if let Some((inc, total)) = incident_total {
            self.usage
                .insert(inc.as_bytes(), &total.to_be_bytes())
                .map_err(StoreError::from)?;
        }
        let id = meta.id.clone();
        if fresh {
            // The file is already durable: a meta entry always has bytes.
            self.meta
                .insert(
                    id.as_bytes(),
                    serde_json::to_vec(&meta).expect("meta serialises"),
                )
                .map_err(StoreError::from)?;
        }
        Ok(id)
    }

    /// Makes the stored profile `artifact` the baseline of `service` for
    /// `kind`, replacing the previous one, durably, through the writer.
    pub async fn save_baseline(
        &self,
        service: &str,
        kind: &str,
        artifact: &str,
        origin: Origin<'_>,
    ) -> Result<Baseline, ArtifactError> {
        self.writer
            .run(true, self.baseline_job(service, kind, artifact, &origin))
            .await?
    }

    /// The writer job that saves a baseline, owning its arguments.
    fn baseline_job(
        &self,
        service: &str,
        kind: &str,
        artifact: &str,
        origin: &Origin<'_>,
    ) -> impl FnOnce() -> Result<Result<Baseline, ArtifactError>, StoreError> + Send + 'static {
        let (me, s, k, a) = (
            self.clone(),
            service.to_string(),
            kind.to_string(),
            artifact.to_string(),
        );
        let (incident, step) = (
            origin.incident.map(str::to_string),
            origin.step.map(str::to_string),
        );
        move || {
            let o = Origin {
                incident: incident.as_deref(),
                step: step.as_deref(),
                ..Origin::default()
            };
            Ok(me.set_baseline_now(&s, &k, &a, &o))
        }
    }

    /// [`ArtifactStore::save_baseline`], blocking.
    pub fn set_baseline(
        &self,
        service: &str,
        kind: &str,
        artifact: &str,
        origin: &Origin<'_>,
    ) -> Result<Baseline, ArtifactError> {
        self.writer
            .run_blocking(true, self.baseline_job(service, kind, artifact, origin))?
    }

    fn set_baseline_now(
        &self,
        service: &str,
        kind: &str,
        artifact: &str,
        origin: &Origin<'_>,
    ) -> Result<Baseline, ArtifactError> {
        check_baseline_key("service", service)?;
        check_baseline_key("kind", kind)?;
        let key = format!("{service}\0{kind}");
        if !self
            .baselines
            .contains_key(key.as_bytes())
            .map_err(StoreError::from)?
            && self.baselines.len() >= MAX_BASELINES
        {
            return Err(ArtifactError::Invalid(format!(
                "{MAX_BASELINES} baselines are kept at most; {service}/{kind} would be one more"
            )));
        }
        if self.meta(artifact)?.is_none() {
            return Err(ArtifactError::Invalid(format!(
                "no stored artifact {artifact}"
            )));
        }
        let b = Baseline {
            service: service.to_string(),
            kind: kind.to_string(),
            artifact: artifact.to_string(),
            saved_at: Utc::now(),
            incident: origin.incident.map(str::to_string),
            step: origin.step.map(str::to_string),
        };
        self.baselines
            .insert(
                format!("{service}\0{kind}").as_bytes(),
                serde_json::to_vec(&b).expect("baseline serialises"),
            )
            .map_err(StoreError::from)?;
        Ok(b)
    }

    /// The baseline of `service` for `kind`, if one was saved.
    pub fn baseline(&self, service: &str, kind: &str) -> Result<Option<Baseline>, StoreError> {
        let key = format!("{service}\0{kind}");
        let Some(v) = self.baselines.get(key.as_bytes())? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { key, source })
    }

    /// Every saved baseline, by service then kind.
    pub fn baselines(&self) -> Result<Vec<Baseline>, StoreError> {
        self.baselines
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    source,
                })
            })
            .collect()
    }

    /// What is known about the artifact `id`, if stored.
    pub fn meta(&self, id: &str) -> Result<Option<ArtifactMeta>, StoreError> {
        let Some(meta) = self.meta.get(id.as_bytes())? else {
            return Ok(None);
        };
        serde_json::from_slice(&meta)
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                key: id.to_string(),
                source,
            })
    }

    /// The artifact `id`, if stored. Blocking (file and sled reads).
    pub fn get(&self, id: &str) -> Result<Option<(ArtifactMeta, Vec<u8>)>, StoreError> {
        let Some(meta) = self.meta(id)? else {
            return Ok(None);
        };
        if let Some(path) = self.path_of(id) {
            match std::fs::read(&path) {
                Ok(b) => return Ok(Some((meta, b))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Sled(sled::Error::Io(e))),
            }
        }
        // Stored inside sled by an older version.
        Ok(self.bytes.get(id.as_bytes())?.map(|b| (meta, b.to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc<'a>(incident: &'a str, step: Option<&'a str>) -> Origin<'a> {
        Origin {
            incident: Some(incident),
            step,
            ..Origin::default()
        }
    }

    #[test]
    fn content_addressed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let w = Writer::start(db.clone(), None).unwrap();
        let s = ArtifactStore::open(&db, w, &dir.path().join("files"), 10, 15).unwrap();
        let a = s.put("pprof", "application/octet-stream", b"abc").unwrap();
        assert_eq!(
            a,
            s.put("pprof", "application/octet-stream", b"abc").unwrap()
        );
        assert!(a.starts_with("sha256:ba7816bf"));
        let (meta, bytes) = s.get(&a).unwrap().unwrap();
        assert_eq!((meta.size, bytes.as_slice()), (3, &b"abc"[..]));
        assert!(matches!(
            s.put("x", "y", &[0; 11]),
            Err(ArtifactError::TooLarge { .. })
        ));
        assert!(s.get("sha256:nope").unwrap().is_none());
        // Per incident: 8 + 8 > 15.
        let id = s
            .put_for("a", "b", &[1; 8], &inc("inc-1", Some("cpu")))
            .unwrap();
        assert_eq!(s.get(&id).unwrap().unwrap().0.step.as_deref(), Some("cpu"));
        assert!(matches!(
            s.put_for("a", "b", &[2; 8], &inc("inc-1", None)),
            Err(ArtifactError::IncidentFull { .. })
        ));
        s.put_for("a", "b", &[2; 8], &inc("inc-2", None)).unwrap();
    }

    #[test]
    fn baselines_are_kept_per_service_and_kind_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let w = Writer::start(db.clone(), None).unwrap();
        let s = ArtifactStore::open(&db, w, &dir.path().join("files"), 1 << 20, 1 << 20).unwrap();
        let a = s.put("pprof", "application/octet-stream", b"one").unwrap();
        let b = s.put("pprof", "application/octet-stream", b"two").unwrap();
        assert_eq!(s.baseline("checkout", "cpu").unwrap(), None);
        s.set_baseline("checkout", "cpu", &a, &inc("inc-3", Some("cpu")))
            .unwrap();
        s.set_baseline("checkout", "heap", &b, &Origin::default())
            .unwrap();
        let got = s.baseline("checkout", "cpu").unwrap().unwrap();
        assert_eq!(
            (got.artifact.as_str(), got.incident.as_deref()),
            (a.as_str(), Some("inc-3"))
        );
        s.set_baseline("checkout", "cpu", &b, &Origin::default())
            .unwrap();
        assert_eq!(s.baseline("checkout", "cpu").unwrap().unwrap().artifact, b);
        assert_eq!(s.baselines().unwrap().len(), 2);
        assert!(matches!(
            s.set_baseline("checkout", "cpu", "sha256:nope", &Origin::default()),
            Err(ArtifactError::Invalid(m)) if m.contains("no stored artifact")
        ));
        assert!(matches!(
            s.set_baseline("bad service\n", "cpu", &a, &Origin::default()),
            Err(ArtifactError::Invalid(_))
        ));
    }

    #[test]
    fn bytes_are_files_and_older_sled_artifacts_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let w = Writer::start(db.clone(), None).unwrap();
        let s = ArtifactStore::open(&db, w, &dir.path().join("files"), 1 << 20, 1 << 20).unwrap();
        let big = vec![7u8; 300_000];
        let id = s.put("pprof", "application/octet-stream", &big).unwrap();
        let hex = id.strip_prefix("sha256:").unwrap();
        let file = dir.path().join("files").join(&hex[..2]).join(&hex[2..]);
        assert_eq!(std::fs::read(&file).unwrap(), big, "the bytes are a file");
        assert!(s.bytes.get(id.as_bytes()).unwrap().is_none(), "not in sled");
        assert_eq!(s.get(&id).unwrap().unwrap().1, big);
        // An artifact an older version kept inside sled.
        let old = format!("sha256:{}", hex::encode(Sha256::digest(b"old")));
        s.bytes.insert(old.as_bytes(), &b"old"[..]).unwrap();
        let meta = ArtifactMeta {
            id: old.clone(),
            kind: "pprof".into(),
            media_type: "application/octet-stream".into(),
            size: 3,
            stored_at: Utc::now(),
            incident: None,
            step: None,
            target: None,
            window_start: None,
            window_end: None,
        };
        s.meta
            .insert(old.as_bytes(), serde_json::to_vec(&meta).unwrap())
            .unwrap();
        assert_eq!(s.get(&old).unwrap().unwrap().1, b"old");
        assert!(s.path_of("sha256:../../etc/passwd").is_none());
    }

    #[tokio::test]
    async fn the_async_store_writes_through_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let w = Writer::start(db.clone(), None).unwrap();
        let s =
            ArtifactStore::open(&db, w.clone(), &dir.path().join("files"), 1 << 20, 10).unwrap();
        let id = s
            .store("pprof", "x", b"12345".to_vec(), inc("inc-1", Some("cpu")))
            .await
            .unwrap();
        assert!(w.stats().flushes.load(std::sync::atomic::Ordering::Relaxed) >= 1);
        assert!(matches!(
            s.store("pprof", "x", b"678901".to_vec(), inc("inc-1", None))
                .await,
            Err(ArtifactError::IncidentFull { .. })
        ));
        let b = s
            .save_baseline("checkout", "cpu", &id, Origin::default())
            .await
            .unwrap();
        assert_eq!(b.artifact, id);
    }

    /// All artifacts together stay within the store's budget (each
    /// content counted once); a refused one leaves no file and no count.
    #[test]
    fn the_store_keeps_to_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let w = Writer::inline(db.clone());
        let files = dir.path().join("files");
        let s = ArtifactStore::open(&db, w, &files, 1 << 20, 1 << 20)
            .unwrap()
            .with_total_limit(20);
        let a = s.put_for("a", "b", &[1; 8], &inc("inc-1", None)).unwrap();
        // The same bytes again cost nothing more.
        assert_eq!(
            s.put_for("a", "b", &[1; 8], &inc("inc-2", None)).unwrap(),
            a
        );
        s.put_for("a", "b", &[2; 8], &inc("inc-3", None)).unwrap();
        let e = s
            .put_for("a", "b", &[3; 8], &inc("inc-4", None))
            .unwrap_err();
        assert!(
            matches!(
                e,
                ArtifactError::StoreFull {
                    total: 24,
                    limit: 20
                }
            ),
            "{e}"
        );
        let count = walkdir_count(&files);
        assert_eq!(count, 2, "the refused file is gone");
    }

    fn walkdir_count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walkdir_count(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
}
