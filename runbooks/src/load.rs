//! Loading a directory of runbooks.

use std::path::{Path, PathBuf};

use quench_connectors::{Alert, AlertStatus};

use crate::matcher::Matcher;
use crate::model::RunbookFile;

/// A runbook file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory or a file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse into a runbook.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The runbook parses but is not valid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A validated runbook.
#[derive(Debug, Clone)]
pub struct Runbook {
    /// The file as written.
    pub file: RunbookFile,
    /// Its path, relative to the runbook directory.
    pub path: String,
    /// The parsed matchers.
    pub matchers: Vec<Matcher>,
}

impl Runbook {
    /// Whether this runbook applies to the alert. Runbooks act on firing
    /// alerts only; resolved notifications are matched by the incident they
    /// belong to, not by runbook.
    pub fn matches(&self, alert: &Alert) -> bool {
        alert.status == AlertStatus::Firing && self.matches_labels(alert)
    }

    /// Whether the matchers hold, whatever the alert's status. A resolved
    /// notification finds the incident its firing twin opened this way.
    pub fn matches_labels(&self, alert: &Alert) -> bool {
        self.matchers.iter().all(|m| m.matches(&alert.labels))
    }

    /// The key alerts of one incident share: the runbook name and the values
    /// of its `group_by` labels.
    pub fn group_key(&self, alert: &Alert) -> String {
        let mut key = self.file.name.clone();
        for label in &self.file.group_by {
            key.push('\u{1f}');
            key.push_str(label);
            key.push('=');
            key.push_str(alert.labels.get(label).map(String::as_str).unwrap_or(""));
        }
        key
    }
}

/// Every runbook of a directory, highest priority first.
#[derive(Debug, Clone, Default)]
pub struct RunbookSet {
    /// The runbooks in match order.
    pub runbooks: Vec<Runbook>,
}

impl RunbookSet {
    /// The first runbook that applies to a firing alert.
    pub fn select(&self, alert: &Alert) -> Option<&Runbook> {
        self.runbooks.iter().find(|r| r.matches(alert))
    }

    /// The runbook whose incident a resolved (or firing) alert belongs to.
    pub fn select_by_labels(&self, alert: &Alert) -> Option<&Runbook> {
        self.runbooks.iter().find(|r| r.matches_labels(alert))
    }

    /// The runbook called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Runbook> {
        self.runbooks.iter().find(|r| r.file.name == name)
    }
}

/// Parses one runbook from YAML text. `path` names it in errors.
pub fn parse_runbook(path: &Path, rel: &str, text: &str) -> Result<Runbook, Vec<LoadError>> {
    let options = serde_saphyr::options! { strict_booleans: true };
    let file: RunbookFile = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        vec![LoadError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        }]
    })?;
    let mut errors = Vec::new();
    let invalid = |message: String| LoadError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    if file.version != 1 {
        errors.push(invalid(format!(
            "version {} is not supported (expected 1)",
            file.version
        )));
    }
    if file.name.trim().is_empty() {
        errors.push(invalid("name must not be empty".into()));
    }
    let mut matchers = Vec::new();
    for (i, m) in file.matchers.iter().enumerate() {
        match Matcher::parse(m) {
            Ok(m) => matchers.push(m),
            Err(e) => errors.push(invalid(format!("match[{i}]: {e}"))),
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    for (i, s) in file.steps.iter().enumerate() {
        if !ids.insert(s.id.as_str()) {
            errors.push(invalid(format!(
                "steps[{i}].id: duplicate step id {:?}",
                s.id
            )));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Runbook {
        file,
        path: rel.to_string(),
        matchers,
    })
}

/// Loads every `*.yaml` and `*.yml` file under `dir`. Returns every error of
/// every file, not just the first, and no set at all if any file is broken:
/// half a runbook set is worse than the last good one.
pub fn load_dir(dir: &Path) -> Result<RunbookSet, Vec<LoadError>> {
    let io = |path: &Path, source| {
        vec![LoadError::Io {
            path: path.to_path_buf(),
            source,
        }]
    };
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let entry = entry.map_err(|e| io(&d, e))?;
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut runbooks: Vec<Runbook> = Vec::new();
    let mut errors = Vec::new();
    for p in files {
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) => {
                errors.extend(io(&p, e));
                continue;
            }
        };
        let rel = p
            .strip_prefix(dir)
            .unwrap_or(&p)
            .to_string_lossy()
            .into_owned();
        match parse_runbook(&p, &rel, &text) {
            Ok(r) => {
                if let Some(other) = runbooks.iter().find(|o| o.file.name == r.file.name) {
                    errors.push(LoadError::Invalid {
                        path: p.clone(),
                        message: format!(
                            "runbook name {:?} is also used by {}",
                            r.file.name, other.path
                        ),
                    });
                } else {
                    runbooks.push(r);
                }
            }
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    runbooks.sort_by(|a, b| {
        b.file
            .priority
            .cmp(&a.file.priority)
            .then_with(|| a.file.name.cmp(&b.file.name))
    });
    Ok(RunbookSet { runbooks })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use quench_connectors::Source;

    use super::*;

    fn alert(labels: &[(&str, &str)], status: AlertStatus) -> Alert {
        Alert {
            source: Source::Alertmanager,
            fingerprint: "f".into(),
            status,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: BTreeMap::new(),
            starts_at: None,
            ends_at: None,
            meta: BTreeMap::new(),
            idempotency_key: "k".into(),
            raw_ref: String::new(),
        }
    }

    #[test]
    fn loads_the_shipped_examples() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let set = load_dir(&dir).unwrap();
        assert!(set.runbooks.len() >= 2);
        let a = alert(
            &[("alertname", "HighCPU"), ("service", "checkout")],
            AlertStatus::Firing,
        );
        let r = set.select(&a).expect("HighCPU has an example runbook");
        assert_eq!(r.file.name, "go-high-cpu");
        assert!(
            set.select(&alert(&[("alertname", "HighCPU")], AlertStatus::Resolved))
                .is_none()
        );
    }

    #[test]
    fn priority_orders_and_group_by_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "version: 1\nname: low\nmatch: ['alertname=\"X\"']\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "version: 1\nname: high\npriority: 10\nmatch: ['alertname=\"X\"', 'team!=\"db\"']\ngroup_by: [alertname, pod]\n",
        )
        .unwrap();
        let set = load_dir(dir.path()).unwrap();
        let a = alert(&[("alertname", "X"), ("pod", "web-1")], AlertStatus::Firing);
        let r = set.select(&a).unwrap();
        assert_eq!(r.file.name, "high");
        assert_eq!(r.group_key(&a), "high\u{1f}alertname=X\u{1f}pod=web-1");
        let db = alert(&[("alertname", "X"), ("team", "db")], AlertStatus::Firing);
        assert_eq!(set.select(&db).unwrap().file.name, "low");
    }

    #[test]
    fn reports_every_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "version: 1\nname: a\nmatchh: []\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "version: 2\nname: b\nmatch: ['x=~\"y\"']\n",
        )
        .unwrap();
        let errs = load_dir(dir.path()).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:#?}");
        assert!(
            text[0].contains("a.yaml") && text[0].contains("matchh"),
            "{}",
            text[0]
        );
        assert!(
            text[0].contains("line 3"),
            "yaml errors carry a position: {}",
            text[0]
        );
        assert!(text[1].contains("version 2"), "{}", text[1]);
        assert!(text[2].contains("match[0]"), "{}", text[2]);
    }
}
