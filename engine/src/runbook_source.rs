//! The runbook set in force, where it comes from, and how it is replaced.
//!
//! The set is loaded from a local directory or from a git branch (synced on
//! an interval and on `POST /hooks/git`). A new set replaces the old one
//! only when every file of it is valid, in one swap of an `Arc`, so an
//! alert is always matched against one whole set, pinned to one commit.
//! When the new set is broken, the last good one keeps serving and the
//! errors are reported (`GET /api/v1/runbooks`, the log, `/metrics`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use quench_runbooks::RunbookSet;
use quench_runbooks::sync::GitSource;
use serde::Serialize;
use tokio::sync::Notify;
use tracing::{error, info};

/// A validated set, with where it came from.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The runbooks.
    pub set: RunbookSet,
    /// The commit they were loaded from, for a git source.
    pub commit: Option<String>,
    /// When this set was swapped in.
    pub loaded_at: Option<DateTime<Utc>>,
    /// The chaos experiments (`*.chaos.yaml`) of the same directory.
    pub experiments: Vec<quench_chaos::Experiment>,
}

/// Where runbooks come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A local directory (the embedded default, and development).
    Dir(PathBuf),
    /// A git branch.
    Git(GitSource),
}

/// What the last attempt to load a new set did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncStatus {
    /// When the last attempt finished.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The commit it looked at, for a git source.
    pub last_attempt_commit: Option<String>,
    /// Why it was refused (one line per problem), if it was.
    pub last_error: Option<Vec<String>>,
}

/// The runbooks in force.
pub struct Runbooks {
    current: RwLock<Arc<Loaded>>,
    status: Mutex<SyncStatus>,
    origin: Origin,
    triage: Option<String>,
    wake: Notify,
}

impl Runbooks {
    /// An empty set, to be filled by [`Runbooks::reload`].
    pub fn new(origin: Origin, triage: Option<String>) -> Runbooks {
        Runbooks {
            current: RwLock::new(Arc::new(Loaded::default())),
            status: Mutex::new(SyncStatus::default()),
            origin,
            triage,
            wake: Notify::new(),
        }
    }

    /// A fixed set (tests, tools).
    pub fn fixed(set: RunbookSet) -> Runbooks {
        let r = Runbooks::new(Origin::Dir(PathBuf::new()), set.triage.clone());
        *r.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Loaded {
            set,
            commit: None,
            loaded_at: Some(Utc::now()),
            experiments: Vec::new(),
        });
        r
    }

    /// The set in force.
    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the last reload did.
    pub fn status(&self) -> SyncStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where the runbooks come from, for humans.
    pub fn origin(&self) -> String {
        match &self.origin {
            Origin::Dir(d) => d.display().to_string(),
            Origin::Git(g) => format!("{} ({}, {})", g.url, g.branch, g.path.display()),
        }
    }

    /// Fetches (for git) and loads the whole set; swaps it in if it is
    /// valid. Blocking. Returns the problems when it is not.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        let (dir, commit) = match &self.origin {
            Origin::Dir(d) => (d.clone(), None),
            Origin::Git(g) => match g.sync() {
                Ok(s) => (s.dir, Some(s.commit)),
                Err(e) => return self.record(None, Err(vec![e.to_string()])),
            },
        };
        if self.current().commit.is_some() && self.current().commit == commit {
            return self.record(commit, Ok(None));
        }
        // Runbooks and experiments are one set: both valid, or neither
        // replaces what is in force.
        let loaded = match (
            quench_runbooks::load_dir(&dir, self.triage.as_deref()),
            quench_chaos::load_experiments(&dir),
        ) {
            (Ok(set), Ok(experiments)) => Ok((set, experiments)),
            (a, b) => Err(a
                .err()
                .into_iter()
                .flatten()
                .chain(b.err().into_iter().flatten())
                .map(|e| e.to_string())
                .collect::<Vec<_>>()),
        };
        match loaded {
            Ok((set, experiments)) => {
                let count = set.runbooks.len();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Loaded {
                    set,
                    commit: commit.clone(),
                    loaded_at: Some(Utc::now()),
                    experiments,
                });
                info!(source = %self.origin(), commit = commit.as_deref().unwrap_or("-"), count, "runbooks loaded");
                self.record(commit, Ok(None))
            }
            Err(errs) => self.record(commit, Err(errs)),
        }
    }

    fn record(
        &self,
        commit: Option<String>,
        outcome: Result<Option<()>, Vec<String>>,
    ) -> Result<(), Vec<String>> {
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.last_attempt_at = Some(Utc::now());
        st.last_attempt_commit = commit;
        match outcome {
            Ok(_) => {
                st.last_error = None;
                Ok(())
            }
            Err(errs) if self.current().loaded_at.is_none() => {
                error!(source = %self.origin(), problems = errs.len(), first = %errs[0], "runbook set refused; there is no earlier set to keep");
                st.last_error = Some(errs.clone());
                Err(errs)
            }
            Err(errs) => {
                error!(source = %self.origin(), problems = errs.len(), first = %errs[0], "new runbook set refused; the last good set stays in force");
                st.last_error = Some(errs.clone());
                Err(errs)
            }
        }
    }

    /// At start-up, when the remote cannot be reached: the set of the
    /// commit already checked out, if it is valid. Better than nothing
    /// during an outage of the git server.
    pub fn load_existing_checkout(&self) -> bool {
        let Origin::Git(g) = &self.origin else {
            return false;
        };
        let Some(current) = g.current() else {
            return false;
        };
        match (
            quench_runbooks::load_dir(&current.dir, self.triage.as_deref()),
            quench_chaos::load_experiments(&current.dir),
        ) {
            (Ok(set), Ok(experiments)) => {
                info!(commit = %current.commit, "serving the runbooks already checked out until the remote answers");
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Loaded {
                    set,
                    commit: Some(current.commit),
                    loaded_at: Some(Utc::now()),
                    experiments,
                });
                true
            }
            _ => false,
        }
    }

    /// Asks the sync loop to reload now (`POST /hooks/git`).
    pub fn trigger(&self) {
        self.wake.notify_one();
    }

    /// A local directory: reloads when a file in it changes (looked at
    /// every `every`), and whenever triggered (SIGHUP). A set that does not
    /// load is refused and said why in the log and `quench status`; the
    /// last good one stays in force.
    pub async fn watch_dir(self: Arc<Self>, every: Duration) {
        let Origin::Dir(dir) = &self.origin else {
            return;
        };
        let dir = dir.clone();
        let look = move || dir_state(&dir);
        let mut seen = {
            let look = look.clone();
            tokio::task::spawn_blocking(look).await.unwrap_or_default()
        };
        loop {
            let triggered = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = self.wake.notified() => true,
            };
            let now = {
                let look = look.clone();
                tokio::task::spawn_blocking(look).await.unwrap_or_default()
            };
            if now == seen && !triggered {
                continue;
            }
            seen = now;
            info!(source = %self.origin(), "runbook directory changed; reloading");
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.reload()).await;
        }
    }

    /// Reloads every `interval`, and whenever triggered.
    pub async fn sync_loop(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.wake.notified() => {}
            }
            let me = self.clone();
            // Errors are recorded in the status; nothing more to do here.
            let _ = tokio::task::spawn_blocking(move || me.reload()).await;
        }
    }
}

/// Every file under `dir` with its size and modification time, sorted: it
/// changes when a runbook is added, removed or edited.
fn dir_state(dir: &std::path::Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else {
                continue;
            };
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                out.push((e.path(), meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
}
