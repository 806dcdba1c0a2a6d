//! Configuration: built-in defaults, then a YAML file (`--config`), then
//! flags. Each layer overrides the one before it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use quench_connectors::inbound::{alertmanager, datadog, generic, pagerduty};
use serde::Deserialize;

/// The address `quench serve` listens on by default: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9797";

/// Everything `quench serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP listen address.
    pub listen: SocketAddr,
    /// Where the sled database lives.
    pub data_dir: PathBuf,
    /// The runbook directory.
    pub runbooks: PathBuf,
    /// The runbook for firing alerts no other runbook matches (it must be
    /// in the directory). None: such alerts are stored, explained and
    /// counted, and open no incident.
    pub triage_runbook: Option<String>,
    /// The largest webhook body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The largest evidence artifact kept (profile, trace, flame graph).
    pub max_artifact_bytes: usize,
    /// The most artifact bytes one incident keeps.
    pub max_incident_artifact_bytes: u64,
    /// The most artifact bytes all incidents and baselines keep together
    /// (10 GiB): whoever sends alerts cannot fill the disk with captures.
    pub max_artifact_bytes_total: u64,
    /// The most memory sled's page cache may hold, in bytes (16 MiB: the
    /// records are read from the kernel's page cache beyond it, and a small
    /// host keeps its memory).
    pub store_cache_bytes: u64,
    /// How long an alert's idempotency key is remembered (`7d`): a repeat
    /// within it is a duplicate; after it the key is forgotten, so the key
    /// tree does not grow forever.
    pub dedup_window: String,
    /// How long the alert log keeps deliveries and their raw payloads
    /// (`30d`): whole segments older than this that the pipeline is done
    /// with are deleted, hourly.
    pub alert_retention: String,
    /// Whether the intake log's two hand-offs stay awake briefly before
    /// they sleep (on): the writer looks at its queue for 200 µs after a
    /// commit, a small delivery polls for its answer for 300 µs while at
    /// most 8 wait for the log, and
    /// a companion thread stays awake while a lone delivery's commit waits
    /// for its fdatasync, all yielding to any other thread. On a VM that
    /// halts idle vCPUs it more than doubles the rate of one sender at a
    /// time; off saves that little CPU where wake-ups are cheap.
    pub intake_spin: bool,
    /// Per-sender authentication and mappings.
    pub hooks: Hooks,
    /// Runbooks from git instead of the `runbooks` directory.
    pub git: Option<GitConfig>,
    /// How runbooks run.
    pub executor: ExecutorConfig,
    /// Bearer tokens for the HTTP API, stored as SHA-256 hashes. With none,
    /// the API is open, which `quench serve` allows on loopback only.
    pub api_tokens: Vec<ApiToken>,
    /// Chaos experiments.
    pub chaos: ChaosConfig,
    /// The Prometheus the PromQL steps ask when they name no `url`.
    pub prometheus: PrometheusConfig,
    /// The Kubernetes credentials the `k8s.*` steps and pod targets use.
    /// Without a kubeconfig: `KUBECONFIG`, `~/.kube/config`, then the pod's
    /// service account, read when a step first needs them.
    pub kubernetes: quench_connectors::k8s::KubeSource,
    /// Two replicas with a Kubernetes Lease (off: one replica, no Lease).
    pub ha: HaConfig,
}

/// High availability: two replicas, one leader by a `coordination.k8s.io`
/// Lease; the standby follows the leader's write-ahead log and records.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// Run as one of two replicas.
    pub enabled: bool,
    /// The Lease's namespace (the one quench runs in).
    pub namespace: String,
    /// The Lease's name.
    pub lease_name: String,
    /// This replica's name in the Lease (default: the host name, which in
    /// a StatefulSet is the pod's name).
    pub identity: Option<String>,
    /// The URL the other replica reaches this one at (published in the
    /// Lease; the standby forwards writes there and follows it). Empty:
    /// `QUENCH_HA_ADVERTISE_URL` from the environment.
    pub advertise_url: String,
    /// The token the replicas present to each other on the internal
    /// endpoints (or `peer_token_file`).
    pub peer_token: Option<String>,
    /// A file holding the peer token.
    pub peer_token_file: Option<PathBuf>,
    /// How long a Lease holds without renewal (15 s).
    pub lease_duration_seconds: u64,
    /// The leader stops acting when it has not renewed for this long (10 s,
    /// below the duration: it stops before a standby may take over).
    pub renew_deadline_seconds: u64,
    /// How often the Lease is tried or renewed (2 s).
    pub retry_period_seconds: u64,
    /// `sync` (a webhook is answered once the standby has the alert on
    /// disk) or `async`.
    pub replication: ReplicationMode,
    /// How long the leader waits for the standby in sync mode before it
    /// answers anyway and says it is degraded (1000 ms).
    pub replication_timeout_ms: u64,
}

/// How the leader waits for its standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// Answer a webhook once the standby has fdatasync'd it.
    Sync,
    /// Answer once this replica has; the standby follows.
    Async,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            enabled: false,
            namespace: "quench".into(),
            lease_name: "quench".into(),
            identity: None,
            advertise_url: String::new(),
            peer_token: None,
            peer_token_file: None,
            lease_duration_seconds: 15,
            renew_deadline_seconds: 10,
            retry_period_seconds: 2,
            replication: ReplicationMode::Sync,
            replication_timeout_ms: 1000,
        }
    }
}

/// Where Prometheus is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Its base URL: the `url` of every `promql.*` step that leaves it
    /// out (`http://127.0.0.1:9090`, Prometheus' own default, unless set).
    pub url: Option<String>,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            url: Some(DEFAULT_PROMETHEUS.to_string()),
        }
    }
}

/// Where the PromQL steps look when neither they nor the configuration say.
pub const DEFAULT_PROMETHEUS: &str = "http://127.0.0.1:9090";

impl Config {
    /// What the steps take from the configuration when a runbook leaves
    /// it out.
    pub fn step_defaults(&self) -> quench_connectors::steps::StepDefaults {
        quench_connectors::steps::StepDefaults {
            prometheus_url: self.prometheus.url.clone(),
            perf_image: self.executor.perf_image.clone(),
        }
    }
}

/// Chaos experiments.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosConfig {
    /// Start experiments at their `schedule` times. Off by default: an
    /// experiment injects faults, so scheduling them is a decision made
    /// in the configuration, not by whoever adds a file to the repository.
    pub schedule: bool,
}

/// How runbooks run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// Destructive steps report what they would do and change nothing.
    pub dry_run: bool,
    /// At most this many destructive actions per namespace per hour.
    pub budget_per_namespace_per_hour: usize,
    /// At most this many destructive actions on one object per hour.
    pub max_actions_per_target_per_hour: usize,
    /// Environment variables templates may read as `env.NAME`; no others.
    pub env_allowlist: Vec<String>,
    /// The hosts a step's `url` or `server` may name (see
    /// [`quench_connectors::hosts`]). None: any, with a warning at start-up.
    pub allowed_hosts: Option<Vec<String>>,
    /// Runbook runs in progress at most (512); new incidents wait for a
    /// slot, and the pipeline's lag shows it.
    pub max_concurrent_runs: usize,
    /// The image of `perf.record`'s privileged Job (it needs `perf` and
    /// `sh`); when set, runbooks cannot name another.
    pub perf_image: Option<String>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            dry_run: false,
            budget_per_namespace_per_hour: 10,
            max_actions_per_target_per_hour: 3,
            env_allowlist: Vec::new(),
            allowed_hosts: None,
            max_concurrent_runs: 512,
            perf_image: None,
        }
    }
}

/// Who may call the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read.
    Viewer,
    /// Read, approve, annotate.
    Responder,
    /// Everything: pause, resume, chaos, config.
    Admin,
}

/// One API token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it; it names them in the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The SHA-256 of the token, hex (`printf %s TOKEN | sha256sum`).
    pub sha256: String,
}

/// A git repository of runbooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// The remote (`https://`, `ssh://` or `file://`).
    pub url: String,
    /// The branch to follow.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// The runbook directory inside the repository.
    #[serde(default = "default_git_path")]
    pub path: PathBuf,
    /// How often to fetch, such as `60s`; `POST /hooks/git` fetches at once.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// The HTTPS user name (`x-access-token` for GitHub app tokens).
    #[serde(default = "default_git_user")]
    pub username: String,
    /// A file holding the HTTPS password or token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding it.
    #[serde(default)]
    pub token_env: Option<String>,
    /// `POST /hooks/git` accepts `Authorization: Bearer <this>`.
    #[serde(default)]
    pub webhook_token: Option<String>,
    /// `POST /hooks/git` accepts a GitHub `X-Hub-Signature-256` made with this.
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

fn default_branch() -> String {
    "main".into()
}

fn default_git_path() -> PathBuf {
    PathBuf::from(".")
}

fn default_interval() -> String {
    "60s".into()
}

fn default_git_user() -> String {
    "git".into()
}

impl GitConfig {
    /// The fetch interval.
    pub fn interval(&self) -> Result<std::time::Duration, ConfigError> {
        quench_runbooks::duration::parse(&self.interval)
            .map_err(|e| ConfigError::Invalid(format!("git.interval: {e}")))
    }

    /// The HTTPS credentials, read from the file or the environment.
    pub fn credentials(&self) -> Result<Option<(String, String)>, ConfigError> {
        let secret = match (&self.token_file, &self.token_env) {
            (Some(f), _) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| {
                        ConfigError::Invalid(format!("git.token_file {}: {e}", f.display()))
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                ConfigError::Invalid(format!(
                    "git.token_env: environment variable {var} is not set"
                ))
            })?),
            (None, None) => None,
        };
        if secret.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(ConfigError::Invalid(
                "git token is empty: give the token, or neither token_file nor token_env".into(),
            ));
        }
        Ok(secret.map(|s| (self.username.clone(), s)))
    }
}

/// Per-sender settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    /// `POST /hooks/alertmanager`.
    pub alertmanager: alertmanager::Config,
    /// `POST /hooks/pagerduty`.
    pub pagerduty: pagerduty::Config,
    /// `POST /hooks/datadog`.
    pub datadog: datadog::Config,
    /// `POST /hooks/generic/{name}`, one mapping per name.
    pub generic: BTreeMap<String, generic::Mapping>,
    /// `POST /hooks/slack/interactive`: approvals from Slack's buttons.
    pub slack: SlackHook,
}

/// Approvals from Slack: the app's signing secret and who may approve.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackHook {
    /// The Slack app's signing secret. Without one, every click is refused.
    #[serde(default)]
    pub signing_secret: Option<String>,
    /// Or: a file holding it (a mounted Secret), read at start.
    #[serde(default)]
    pub signing_secret_file: Option<PathBuf>,
    /// Slack user id (`U012AB3CD`) to the approver's name in quench (the
    /// audit log). Anyone else is refused and told so.
    #[serde(default)]
    pub approvers: BTreeMap<String, String>,
    /// Where `response_url`s must point (Slack's own host); a click whose
    /// `response_url` is elsewhere gets no answer there.
    #[serde(default = "default_slack_responses")]
    pub response_url_prefix: String,
}

fn default_slack_responses() -> String {
    "https://hooks.slack.com/".into()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: PathBuf::from(".quench"),
            runbooks: PathBuf::from("runbooks/examples"),
            triage_runbook: None,
            git: None,
            executor: ExecutorConfig::default(),
            api_tokens: Vec::new(),
            kubernetes: Default::default(),
            ha: Default::default(),
            prometheus: Default::default(),
            chaos: Default::default(),
            max_body_bytes: 1 << 20,
            max_artifact_bytes: 64 << 20,
            max_incident_artifact_bytes: 512 << 20,
            max_artifact_bytes_total: quench_knowledge::artifacts::DEFAULT_TOTAL_LIMIT,
            store_cache_bytes: 16 << 20,
            dedup_window: "7d".into(),
            alert_retention: "30d".into(),
            intake_spin: true,
            hooks: Hooks::default(),
        }
    }
}

/// How much a finding of [`Config::findings`] matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Something an alert sender could use.
    Medium,
    /// quench refuses to start with it.
    High,
}

/// One thing about a configuration that weakens it, and the fix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// What is wrong.
    pub what: String,
    /// What to change.
    pub fix: String,
}

impl Config {
    /// What weakens this configuration, worst first (`quench config
    /// check`; `quench serve` logs the same at start-up). A configuration
    /// that does not validate is one high finding.
    pub fn findings(&self) -> Vec<Finding> {
        let f = |severity, what: &str, fix: &str| Finding {
            severity,
            what: what.to_string(),
            fix: fix.to_string(),
        };
        let mut out = Vec::new();
        if let Err(e) = self.validate() {
            out.push(f(
                Severity::High,
                &e.to_string(),
                "change the configuration as the message says",
            ));
        }
        if self.hooks.alertmanager.bearer_token.is_none() {
            out.push(f(
                Severity::Medium,
                "the Alertmanager hook takes alerts from anyone who can reach quench, and alerts start remediation",
                "set hooks.alertmanager.bearer_token (or bearer_token_file) and give Alertmanager the same",
            ));
        }
        if self.executor.allowed_hosts.is_none() {
            out.push(f(
                Severity::Medium,
                "no executor.allowed_hosts: a step may call any host an alert's labels name",
                "list the hosts and networks steps may reach in executor.allowed_hosts",
            ));
        }
        if self.api_tokens.is_empty() {
            out.push(f(
                Severity::Medium,
                "no api_tokens: the API is open to every local user and process",
                "add api_tokens (SHA-256 of each token) with the least role each person needs",
            ));
        }
        if self.kubernetes.allow_namespaces.is_empty() {
            out.push(f(
                Severity::Low,
                "no kubernetes.allow_namespaces: steps may act in every namespace but the denied ones",
                "list the namespaces quench may act in under kubernetes.allow_namespaces",
            ));
        }
        if self.chaos.schedule {
            out.push(f(
                Severity::Low,
                "chaos.schedule is on: experiments inject faults at their scheduled times",
                "keep it on only where that is wanted; `quench chaos list` shows the next runs",
            ));
        }
        if self
            .hooks
            .pagerduty
            .max_event_age_seconds
            .is_some_and(|a| a > 86_400)
        {
            out.push(f(
                Severity::Low,
                "hooks.pagerduty.max_event_age_seconds is over a day: a captured delivery can be replayed for that long",
                "keep it at an hour or less",
            ));
        }
        out.sort_by_key(|f| std::cmp::Reverse(f.severity));
        out
    }

    /// Parses YAML text without checking it: for `quench config check`,
    /// which reports what is wrong instead of stopping at it.
    pub fn from_yaml_unchecked(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let options = serde_saphyr::options! { strict_booleans: true };
        serde_saphyr::from_str_with_options(text, options).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is not a valid configuration.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value parses but makes no sense.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a YAML configuration file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(path, &text)
    }

    /// Parses YAML text; `path` only names it in errors.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let options = serde_saphyr::options! { strict_booleans: true };
        let mut cfg: Config =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let am = &mut cfg.hooks.alertmanager;
        if let Some(file) = am.bearer_token_file.take() {
            if am.bearer_token.is_some() {
                return Err(ConfigError::Invalid(
                    "hooks.alertmanager: give bearer_token or bearer_token_file, not both".into(),
                ));
            }
            let token = std::fs::read_to_string(&file).map_err(|e| {
                ConfigError::Invalid(format!(
                    "hooks.alertmanager.bearer_token_file {}: {e}",
                    file.display()
                ))
            })?;
            am.bearer_token = Some(token.trim_end().to_string());
        }
        let ha = &mut cfg.ha;
        // Each replica of a StatefulSet reads the same file: its own URL
        // comes from its environment (built from the pod's name).
        if ha.advertise_url.is_empty()
            && let Ok(url) = std::env::var("QUENCH_HA_ADVERTISE_URL")
        {
            ha.advertise_url = url;
        }
        if let Some(file) = ha.peer_token_file.take() {
            if ha.peer_token.is_some() {
                return Err(ConfigError::Invalid(
                    "ha: give peer_token or peer_token_file, not both".into(),
                ));
            }
            let token = std::fs::read_to_string(&file).map_err(|e| {
                ConfigError::Invalid(format!("ha.peer_token_file {}: {e}", file.display()))
            })?;
            ha.peer_token = Some(token.trim_end().to_string());
        }
        let slack = &mut cfg.hooks.slack;
        if let Some(file) = slack.signing_secret_file.take() {
            if slack.signing_secret.is_some() {
                return Err(ConfigError::Invalid(
                    "hooks.slack: give signing_secret or signing_secret_file, not both".into(),
                ));
            }
            let secret = std::fs::read_to_string(&file).map_err(|e| {
                ConfigError::Invalid(format!(
                    "hooks.slack.signing_secret_file {}: {e}",
                    file.display()
                ))
            })?;
            slack.signing_secret = Some(secret.trim_end().to_string());
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The de-duplication window.
    pub fn dedup_window(&self) -> Result<std::time::Duration, ConfigError> {
        let d = quench_runbooks::duration::parse(&self.dedup_window)
            .map_err(|e| ConfigError::Invalid(format!("dedup_window: {e}")))?;
        if d < std::time::Duration::from_secs(3600) {
            return Err(ConfigError::Invalid(format!(
                "dedup_window {}: at least 1h, or senders' retries become new alerts",
                self.dedup_window
            )));
        }
        Ok(d)
    }

    /// How long the alert log keeps deliveries; at least the dedup window.
    pub fn alert_retention(&self) -> Result<std::time::Duration, ConfigError> {
        let d = quench_runbooks::duration::parse(&self.alert_retention)
            .map_err(|e| ConfigError::Invalid(format!("alert_retention: {e}")))?;
        if d < self.dedup_window()? {
            return Err(ConfigError::Invalid(format!(
                "alert_retention {} is shorter than dedup_window {}: keys would outlive the alerts they stand for",
                self.alert_retention, self.dedup_window
            )));
        }
        Ok(d)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ha.enabled {
            let ha = &self.ha;
            if ha.peer_token.as_deref().unwrap_or("").is_empty() {
                return Err(ConfigError::Invalid(
                    "ha.enabled needs ha.peer_token (or peer_token_file): the replicas' internal endpoints carry every alert".into(),
                ));
            }
            if !(ha.advertise_url.starts_with("http://")
                || ha.advertise_url.starts_with("https://"))
            {
                return Err(ConfigError::Invalid(format!(
                    "ha.advertise_url {:?}: the http(s) URL the other replica reaches this one at",
                    ha.advertise_url
                )));
            }
            if !(ha.retry_period_seconds >= 1
                && ha.retry_period_seconds < ha.renew_deadline_seconds
                && ha.renew_deadline_seconds < ha.lease_duration_seconds)
            {
                return Err(ConfigError::Invalid(format!(
                    "ha: need 1 <= retry_period ({}) < renew_deadline ({}) < lease_duration ({}) seconds",
                    ha.retry_period_seconds, ha.renew_deadline_seconds, ha.lease_duration_seconds
                )));
            }
        }
        self.dedup_window()?;
        self.alert_retention()?;
        if self.store_cache_bytes < 1 << 20 {
            return Err(ConfigError::Invalid(format!(
                "store_cache_bytes {} is below 1 MiB",
                self.store_cache_bytes
            )));
        }
        if let Some(hosts) = &self.executor.allowed_hosts {
            quench_connectors::hosts::HostAllowlist::parse(hosts)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::Invalid(
                "max_body_bytes must be positive".into(),
            ));
        }
        for t in &self.api_tokens {
            if t.sha256.len() != 64 || !t.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ConfigError::Invalid(format!(
                    "api_tokens {:?}: sha256 must be 64 hex digits (the hash, never the token)",
                    t.name
                )));
            }
        }
        // An empty secret matches an empty header (or, for an HMAC, is no
        // secret at all).
        let empty = |what: &str| {
            Err(ConfigError::Invalid(format!(
                "{what} is empty: an empty secret accepts anyone"
            )))
        };
        if self
            .hooks
            .alertmanager
            .bearer_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return empty("hooks.alertmanager.bearer_token");
        }
        if self
            .hooks
            .pagerduty
            .secrets
            .iter()
            .any(|s| s.trim().is_empty())
        {
            return empty("a hooks.pagerduty.secrets entry");
        }
        if self
            .hooks
            .datadog
            .secret
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return empty("hooks.datadog.secret");
        }
        if self
            .hooks
            .slack
            .signing_secret
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return empty("hooks.slack.signing_secret");
        }
        if !self.listen.ip().is_loopback() {
            let why = |what: &str| {
                Err(ConfigError::Invalid(format!(
                    "listen {} is not loopback: {what}",
                    self.listen
                )))
            };
            if self.api_tokens.is_empty() {
                return why("configure api_tokens so the API is not open to the network");
            }
            if self.hooks.alertmanager.bearer_token.is_none() {
                return why(
                    "set hooks.alertmanager.bearer_token (or bearer_token_file): anyone who can reach quench could send alerts that run remediation",
                );
            }
            if self.executor.allowed_hosts.is_none() {
                return why(
                    "set executor.allowed_hosts: runbooks build URLs from alert labels, and steps must not reach any host an alert names",
                );
            }
        }
        if let Some(g) = &self.git {
            g.interval()?;
            if g.url.is_empty() {
                return Err(ConfigError::Invalid("git.url must not be empty".into()));
            }
        }
        for (name, m) in &self.hooks.generic {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::Invalid(format!(
                    "generic hook name {name:?} must be letters, digits, '-' or '_'"
                )));
            }
            if m.token.trim().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "hooks.generic.{name}.token must not be empty"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example configuration in the repository stays valid.
    #[test]
    fn the_example_configuration_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../quench.example.yaml");
        let c = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.store_cache_bytes, 16 << 20);
        assert_eq!(c.alert_retention().unwrap().as_secs(), 30 * 86400);
    }

    #[test]
    fn empty_file_is_the_defaults_and_unknown_keys_are_refused() {
        let c = Config::from_yaml(Path::new("c.yaml"), "{}").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.store_cache_bytes, 16 << 20);
        assert_eq!(c.alert_retention().unwrap().as_secs(), 30 * 86400);
        assert_eq!(c.dedup_window().unwrap().as_secs(), 7 * 86400);
        let e = Config::from_yaml(Path::new("c.yaml"), "dedup_window: 5m").unwrap_err();
        assert!(
            e.to_string().contains("dedup_window 5m: at least 1h"),
            "{e}"
        );
        let e = Config::from_yaml(Path::new("c.yaml"), "dedup_window: soon").unwrap_err();
        assert!(e.to_string().contains("dedup_window:"), "{e}");
        assert!(c.intake_spin);
        let c = Config::from_yaml(Path::new("c.yaml"), "intake_spin: false").unwrap();
        assert!(!c.intake_spin);
        let c = Config::from_yaml(Path::new("c.yaml"), "store_cache_bytes: 67108864").unwrap();
        assert_eq!(c.store_cache_bytes, 64 << 20);
        let e = Config::from_yaml(Path::new("c.yaml"), "store_cache_bytes: 1000").unwrap_err();
        assert!(
            e.to_string()
                .contains("store_cache_bytes 1000 is below 1 MiB"),
            "{e}"
        );
        let e = Config::from_yaml(
            Path::new("c.yaml"),
            "executor: {allowed_hosts: ['10.0.0.0/33']}",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("prefix length must be 0 to 32"),
            "{e}"
        );

        let c = Config::from_yaml(
            Path::new("c.yaml"),
            "listen: 127.0.0.1:1234\nhooks:\n  pagerduty:\n    secrets: [a, b]\n  generic:\n    grafana:\n      token: t\n      status: /state\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 1234);
        assert_eq!(c.hooks.pagerduty.secrets, ["a", "b"]);
        assert_eq!(c.hooks.generic["grafana"].status.as_deref(), Some("/state"));

        let err = Config::from_yaml(Path::new("c.yaml"), "listen: 127.0.0.1:1\nlisten_addr: x\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.yaml") && err.contains("listen_addr"),
            "{err}"
        );
        let err = Config::from_yaml(
            Path::new("c.yaml"),
            "hooks:\n  generic:\n    'bad name':\n      token: t\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("bad name"), "{err}");
    }

    /// Off loopback, every way in is authenticated and steps are held to a
    /// host list; empty secrets are refused everywhere.
    #[test]
    fn off_loopback_every_sender_is_authenticated_and_hosts_are_listed() {
        let hash = "0".repeat(64);
        let base = format!(
            "listen: 0.0.0.0:9797\napi_tokens: [{{name: a, role: admin, sha256: {hash}}}]\n"
        );
        let load = |extra: &str| Config::from_yaml(Path::new("q.yaml"), &format!("{base}{extra}"));
        let e = load("").unwrap_err().to_string();
        assert!(e.contains("hooks.alertmanager.bearer_token"), "{e}");
        let e = load("hooks: {alertmanager: {bearer_token: t}}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("executor.allowed_hosts"), "{e}");
        assert!(
            load(
                "hooks: {alertmanager: {bearer_token: t}}\nexecutor: {allowed_hosts: ['*.svc']}\n"
            )
            .is_ok()
        );
        // The token from a mounted Secret.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-secret\n").unwrap();
        let c = load(&format!(
            "hooks: {{alertmanager: {{bearer_token_file: {}}}}}\nexecutor: {{allowed_hosts: ['*.svc']}}\n",
            file.display()
        ))
        .unwrap();
        assert_eq!(
            c.hooks.alertmanager.bearer_token.as_deref(),
            Some("from-secret")
        );
        for bad in [
            "hooks: {alertmanager: {bearer_token: ''}}\n",
            "hooks: {pagerduty: {secrets: ['']}}\n",
            "hooks: {datadog: {secret: ' '}}\n",
        ] {
            let e = Config::from_yaml(Path::new("q.yaml"), bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("empty"), "{bad}: {e}");
        }
    }

    /// The configuration `deploy/quench.yaml` ships (0.0.0.0) passes the
    /// off-loopback rules, with its token from the mounted Secret.
    #[test]
    fn the_shipped_deployment_configuration_starts() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/quench.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text.find("  quench.yaml: |\n").unwrap() + "  quench.yaml: |\n".len();
        let body: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("alertmanager-token");
        std::fs::write(&token, "t0ken\n").unwrap();
        let body = body.replace(
            "/etc/quench/secrets/alertmanager-token",
            token.to_str().unwrap(),
        );
        let c = Config::from_yaml(&path, &body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        assert!(!c.listen.ip().is_loopback());
        assert_eq!(c.hooks.alertmanager.bearer_token.as_deref(), Some("t0ken"));
    }

    /// The findings say what weakens a configuration, worst first.
    #[test]
    fn findings_name_what_weakens_a_configuration() {
        let c = Config::default();
        let f = c.findings();
        assert!(f.iter().all(|x| x.severity < Severity::High), "{f:#?}");
        assert!(
            f.iter().any(|x| x.what.contains("Alertmanager hook")),
            "{f:#?}"
        );
        assert!(f.iter().any(|x| x.what.contains("allowed_hosts")), "{f:#?}");
        let open: Config =
            Config::from_yaml_unchecked(Path::new("q.yaml"), "listen: 0.0.0.0:9797\n").unwrap();
        let f = open.findings();
        assert_eq!(f[0].severity, Severity::High, "{f:#?}");
        assert!(f[0].what.contains("not loopback"), "{f:#?}");
    }
}
