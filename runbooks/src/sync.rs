//! GitOps: runbooks from a git repository, through libgit2.
//!
//! [`GitSource::sync`] fetches one branch into a private checkout and
//! force-checks-out its head. It does not load anything: the caller loads
//! the directory and swaps the set in only if the whole set is valid, so a
//! broken commit never replaces a good set.

use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{Cred, FetchOptions, RemoteCallbacks, Repository};

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The checkout directory could not be created.
    #[error("cannot create checkout directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// libgit2 failed (unreachable remote, bad credentials, missing branch).
    #[error("git {action}: {source}")]
    Git {
        /// What was being done.
        action: &'static str,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
}

fn git(action: &'static str) -> impl FnOnce(git2::Error) -> SyncError {
    move |source| SyncError::Git { action, source }
}

/// Where the runbooks live in git.
#[derive(Debug, Clone)]
pub struct GitSource {
    /// The remote: `https://...`, `ssh://...` or `file://...`.
    pub url: String,
    /// The branch to follow.
    pub branch: String,
    /// The runbook directory inside the repository (`.` for the root).
    pub path: PathBuf,
    /// quench's private checkout.
    pub checkout: PathBuf,
    /// HTTPS credentials: user name and password or token.
    pub credentials: Option<(String, String)>,
}

/// The outcome of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// The commit now checked out (40 hex digits).
    pub commit: String,
    /// The runbook directory in the checkout.
    pub dir: PathBuf,
}

impl GitSource {
    /// Fetches the branch and checks its head out. Blocking: run it off the
    /// async runtime.
    pub fn sync(&self) -> Result<Synced, SyncError> {
        let repo = open_or_init(&self.checkout)?;
        let mut remote = match repo.find_remote("origin") {
            Ok(r) if r.url().ok() == Some(self.url.as_str()) => r,
            Ok(_) => {
                repo.remote_set_url("origin", &self.url)
                    .map_err(git("set remote url"))?;
                repo.find_remote("origin").map_err(git("find remote"))?
            }
            Err(_) => repo
                .remote("origin", &self.url)
                .map_err(git("add remote"))?,
        };
        let mut callbacks = RemoteCallbacks::new();
        if let Some((user, secret)) = &self.credentials {
            let (user, secret) = (user.clone(), secret.clone());
            callbacks.credentials(move |_, _, _| Cred::userpass_plaintext(&user, &secret));
        }
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks);
        let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.branch);
        remote
            .fetch(&[refspec.as_str()], Some(&mut options), None)
            .map_err(git("fetch"))?;
        let commit = repo
            .find_reference(&format!("refs/remotes/origin/{}", self.branch))
            .and_then(|r| r.peel_to_commit())
            .map_err(git("find the branch on the remote"))?;
        repo.checkout_tree(
            commit.as_object(),
            Some(CheckoutBuilder::new().force().remove_untracked(true)),
        )
        .map_err(git("checkout"))?;
        repo.set_head_detached(commit.id())
            .map_err(git("move HEAD"))?;
        Ok(Synced {
            commit: commit.id().to_string(),
            dir: self.checkout.join(&self.path),
        })
    }

    /// The commit checked out now, if there is a checkout.
    pub fn current(&self) -> Option<Synced> {
        let repo = Repository::open(&self.checkout).ok()?;
        let head = repo.head().ok()?.peel_to_commit().ok()?;
        Some(Synced {
            commit: head.id().to_string(),
            dir: self.checkout.join(&self.path),
        })
    }
}

fn open_or_init(dir: &Path) -> Result<Repository, SyncError> {
    if dir.join(".git").exists() {
        return Repository::open(dir).map_err(git("open checkout"));
    }
    std::fs::create_dir_all(dir).map_err(|source| SyncError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    Repository::init(dir).map_err(git("init checkout"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits `files` to `repo` (a non-bare repository) on its HEAD branch.
    fn commit(repo: &Repository, files: &[(&str, &str)], msg: &str) -> String {
        let root = repo.workdir().unwrap().to_path_buf();
        let mut index = repo.index().unwrap();
        for (name, text) in files {
            let p = root.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            index.add_path(Path::new(name)).unwrap();
        }
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("test", "test@example.com").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents)
            .unwrap()
            .to_string()
    }

    #[test]
    fn follows_the_branch_over_file_urls() {
        let tmp = tempfile::tempdir().unwrap();
        let upstream = Repository::init(tmp.path().join("upstream")).unwrap();
        let first = commit(
            &upstream,
            &[("rb/a.yaml", "version: 1\nname: a\nmatch: {}\n")],
            "one",
        );
        let branch = upstream.head().unwrap().shorthand().unwrap().to_string();
        let src = GitSource {
            url: format!("file://{}", tmp.path().join("upstream").display()),
            branch,
            path: PathBuf::from("rb"),
            checkout: tmp.path().join("checkout"),
            credentials: None,
        };
        assert_eq!(src.current(), None);
        let s = src.sync().unwrap();
        assert_eq!(s.commit, first);
        assert!(s.dir.join("a.yaml").is_file());
        let second = commit(
            &upstream,
            &[("rb/b.yaml", "version: 1\nname: b\nmatch: {}\n")],
            "two",
        );
        let s = src.sync().unwrap();
        assert_eq!(s.commit, second);
        assert!(s.dir.join("b.yaml").is_file());
        assert_eq!(src.current().unwrap().commit, second);
        let bad = GitSource {
            branch: "no-such-branch".into(),
            ..src.clone()
        };
        let err = bad.sync().unwrap_err().to_string();
        assert!(
            err.starts_with("git find the branch on the remote") && err.contains("no-such-branch"),
            "{err}"
        );
        let gone = GitSource {
            url: format!("file://{}", tmp.path().join("nowhere").display()),
            checkout: tmp.path().join("checkout2"),
            ..src.clone()
        };
        assert!(
            gone.sync()
                .unwrap_err()
                .to_string()
                .starts_with("git fetch")
        );
    }
}
