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

/// Opens (creating if needed) `DATA_DIR/db`.
pub fn open(data_dir: &Path) -> Result<sled::Db, OpenError> {
    std::fs::create_dir_all(data_dir).map_err(|source| OpenError::CreateDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join("db");
    sled::Config::new()
        .path(&path)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(|source| OpenError::Sled { path, source })
}
