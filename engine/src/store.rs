//! The one place that opens the sled database. The alert log and the
//! knowledge store each open their own trees in it; nothing else touches
//! sled, so swapping the store later means changing this file, the log and
//! the knowledge crate only.

use std::path::{Path, PathBuf};

/// The database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// sled's log file is not where sled 0.34 keeps it.
    #[error("cannot open sled's log file {path}: {source}")]
    LogFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// sled refused (already open by another quench, or corrupted).
    #[error("cannot open the database in {path} (is another quench using it?): {source}")]
    Sled {
        /// The database directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: sled::Error,
    },
}

/// The open database.
pub struct Store {
    /// The sled database.
    pub db: sled::Db,
    /// sled's log file, for [`Store::sync`].
    log_file: std::fs::File,
}

impl Store {
    /// Makes everything sled has flushed durable on the disk, not only in
    /// the kernel.
    ///
    /// On Linux sled's `flush` ends with `sync_file_range`, which survives a
    /// crash of the process but does not write file metadata or the drive's
    /// cache: a power cut could still take acknowledged alerts. `fdatasync`
    /// on its log file closes that gap.
    pub fn sync(&self) -> std::io::Result<()> {
        self.log_file.sync_data()
    }

    /// Starts the knowledge writer: the one thread that writes this
    /// database, fdatasyncing sled's log after each durable batch.
    pub fn writer(&self) -> std::io::Result<quench_knowledge::Writer> {
        let sync = quench_knowledge::Syncer(self.log_file.try_clone()?);
        quench_knowledge::Writer::start(self.db.clone(), Some(sync)).map_err(std::io::Error::other)
    }
}

/// Opens (creating if needed) `DATA_DIR/db`, with a page cache of at most
/// `cache_bytes`.
pub fn open(data_dir: &Path, cache_bytes: u64) -> Result<Store, OpenError> {
    std::fs::create_dir_all(data_dir).map_err(|source| OpenError::CreateDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join("db");
    let db = sled::Config::new()
        .path(&path)
        .mode(sled::Mode::LowSpace)
        .cache_capacity(cache_bytes)
        .open()
        .map_err(|source| OpenError::Sled {
            path: path.clone(),
            source,
        })?;
    // sled 0.34 keeps its log in `<path>/db`.
    let log_path = path.join("db");
    let log_file = std::fs::File::open(&log_path).map_err(|source| OpenError::LogFile {
        path: log_path,
        source,
    })?;
    Ok(Store { db, log_file })
}

use quench_connectors::steps::{ArtifactFuture, ArtifactsError};

/// The knowledge store's artifact errors as the steps see them: a limit or
/// a bad key refuses, anything else failed.
fn artifacts_error(e: quench_knowledge::artifacts::ArtifactError) -> ArtifactsError {
    use quench_knowledge::artifacts::ArtifactError;
    match e {
        ArtifactError::Store(s) => ArtifactsError::Failed(s.to_string()),
        refused => ArtifactsError::Refused(refused.to_string()),
    }
}

/// A store failure, or a blocking task that did not finish.
fn failed(e: impl std::fmt::Display) -> ArtifactsError {
    ArtifactsError::Failed(e.to_string())
}

/// The knowledge store's artifacts, as the steps see them.
pub struct StepArtifacts(pub quench_knowledge::ArtifactStore);

impl quench_connectors::steps::Artifacts for StepArtifacts {
    fn put<'a>(
        &'a self,
        kind: &'a str,
        media_type: &'a str,
        bytes: &'a [u8],
        about: &'a quench_connectors::steps::Captured<'a>,
    ) -> ArtifactFuture<'a, String> {
        Box::pin(async move {
            let origin = quench_knowledge::artifacts::Origin {
                incident: about.incident,
                step: about.step,
                target: about.target,
                window: about.window,
            };
            self.0
                .store(kind, media_type, bytes.to_vec(), origin)
                .await
                .map_err(artifacts_error)
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> ArtifactFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let (store, id) = (self.0.clone(), id.to_string());
            tokio::task::spawn_blocking(move || store.get(&id))
                .await
                .map_err(failed)?
                .map(|o| o.map(|(_, b)| b))
                .map_err(failed)
        })
    }

    fn set_baseline<'a>(
        &'a self,
        service: &'a str,
        kind: &'a str,
        id: &'a str,
        about: &'a quench_connectors::steps::Captured<'a>,
    ) -> ArtifactFuture<'a, ()> {
        Box::pin(async move {
            let origin = quench_knowledge::artifacts::Origin {
                incident: about.incident,
                step: about.step,
                ..Default::default()
            };
            self.0
                .save_baseline(service, kind, id, origin)
                .await
                .map(|_| ())
                .map_err(artifacts_error)
        })
    }

    fn baseline<'a>(
        &'a self,
        service: &'a str,
        kind: &'a str,
    ) -> ArtifactFuture<'a, Option<String>> {
        Box::pin(async move {
            let (store, s, k) = (self.0.clone(), service.to_string(), kind.to_string());
            tokio::task::spawn_blocking(move || store.baseline(&s, &k))
                .await
                .map_err(failed)?
                .map(|b| b.map(|b| b.artifact))
                .map_err(failed)
        })
    }
}

#[cfg(test)]
mod tests {
    use quench_connectors::steps::{Artifacts, Captured};

    use super::*;

    #[tokio::test]
    async fn artifacts_are_tagged_with_the_run_that_captured_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let writer = quench_knowledge::Writer::start(db.clone(), None).unwrap();
        let files = dir.path().join("artifacts");
        let store =
            quench_knowledge::ArtifactStore::open(&db, writer, &files, 1 << 20, 1 << 20).unwrap();
        let a = StepArtifacts(store.clone());
        let id = a
            .put(
                "pprof",
                "application/octet-stream",
                b"profile",
                &Captured {
                    target: Some("pod/shop/web-1:6060"),
                    incident: Some("inc-7"),
                    step: Some("cpu"),
                    window: None,
                },
            )
            .await
            .unwrap();
        let (meta, bytes) = store.get(&id).unwrap().unwrap();
        assert_eq!(
            (meta.incident.as_deref(), meta.step.as_deref()),
            (Some("inc-7"), Some("cpu"))
        );
        assert_eq!(bytes, b"profile");
        assert_eq!(meta.target.as_deref(), Some("pod/shop/web-1:6060"));
        // Outside a step: stored, untagged.
        let id = a
            .put("x", "y", b"other", &Captured::default())
            .await
            .unwrap();
        assert_eq!(store.get(&id).unwrap().unwrap().0.incident, None);
    }
}
