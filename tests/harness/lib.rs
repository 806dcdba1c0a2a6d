//! The test harness: starts the real `quench` binary and the real components
//! it talks to (Alertmanager, Prometheus, a Go service with net/http/pprof,
//! git repositories and, in `kube`, a Kubernetes control plane), all on
//! 127.0.0.1.
//!
//! A component that is not installed is a loud failure that names the
//! install command, never a silently skipped test.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod browser;
pub mod kube;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Installs ring as the rustls provider, once per process.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client with the ring provider installed.
pub fn http() -> reqwest::Client {
    init_tls();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// Probes `GET {url}/healthz` every `every` from a thread of its own, the
/// way a kubelet does (a fresh connection per probe, nothing shared with the
/// test's async tasks, so their scheduling is not counted), until the
/// returned guard is dropped. The guard's `worst()` is the slowest answer in
/// milliseconds; a probe that fails or takes over 10 s counts as 10,000.
pub fn probe_healthz(url: &str, every: Duration) -> HealthProbe {
    let addr = addr_of(url);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worst = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let probes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (s, w, n) = (stop.clone(), worst.clone(), probes.clone());
    let thread = std::thread::spawn(move || {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        while !s.load(Ordering::Acquire) {
            let t = Instant::now();
            let answered = (|| -> std::io::Result<bool> {
                let limit = Duration::from_secs(10);
                let mut c = std::net::TcpStream::connect_timeout(&addr, limit)?;
                c.set_read_timeout(Some(limit))?;
                c.set_nodelay(true)?;
                c.write_all(b"GET /healthz HTTP/1.1\r\nHost: quench\r\nConnection: close\r\n\r\n")?;
                let mut answer = Vec::new();
                c.read_to_end(&mut answer)?;
                Ok(answer.starts_with(b"HTTP/1.1 200"))
            })();
            let ms = match answered {
                Ok(true) => t.elapsed().as_millis() as u64,
                _ => 10_000,
            };
            w.fetch_max(ms, Ordering::Relaxed);
            n.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(every);
        }
    });
    HealthProbe {
        stop,
        worst,
        probes,
        thread: Some(thread),
    }
}

/// A running [`probe_healthz`]; dropping it stops the probes.
pub struct HealthProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    worst: std::sync::Arc<std::sync::atomic::AtomicU64>,
    probes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthProbe {
    /// The slowest answer so far, in milliseconds (10,000 for a failure).
    pub fn worst(&self) -> u64 {
        self.worst.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many probes were made.
    pub fn probes(&self) -> u64 {
        self.probes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for HealthProbe {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs one step of the real registry outside any run (no Kubernetes
/// client, no artifact store), as a runbook would with `with`.
pub async fn run_step(
    step: quench_connectors::steps::StepType,
    with: &Value,
) -> Result<Value, quench_connectors::steps::StepError> {
    use quench_connectors::steps::{Builtin, Call, StepRunner};
    init_tls();
    Builtin::default().run(step, Call::default(), with).await
}

/// Fails loudly when a program the tests need is missing.
pub fn require(program: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{program}` is not installed; the tests need the real thing. Install it with:\n  \
         sudo apt-get install -y --no-install-recommends {package}\n\
         (or run scripts/test.sh, which installs every test dependency)"
    );
}

/// The value of an unlabelled sample `name` in a Prometheus text
/// exposition, if it has one.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A free loopback port (bind to 0, read it, let go).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

static BUILD: Once = Once::new();

/// The `quench` binary of this build profile, rebuilt if stale. `QUENCH_BIN`
/// overrides it.
pub fn quench_bin() -> PathBuf {
    if let Ok(p) = std::env::var("QUENCH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let release = dir.ends_with("release");
    BUILD.call_once(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(repo_root()).args([
            "build",
            "--quiet",
            "-p",
            "quench-engine",
            "--bin",
            "quench",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p quench-engine --bin quench failed"
        );
    });
    let bin = dir.join("quench");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p quench-engine --bin quench`",
        bin.display()
    );
    bin
}

/// A running `quench serve`.
pub struct Quench {
    child: Option<Child>,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its data directory (kept across restarts).
    pub data: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Quench {
    /// Starts quench with a YAML config body and a runbook directory, in a
    /// fresh temporary data directory.
    pub fn start(config_yaml: &str, runbooks: &Path) -> Quench {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let config = tmp.path().join("quench.yaml");
        std::fs::write(&config, config_yaml).expect("write config");
        let mut q = Quench::spawn(&config, &data, runbooks, None);
        q._tmp = Some(tmp);
        q
    }

    /// Starts quench on an existing config and data directory, optionally
    /// on a given port (to come back where senders expect it).
    pub fn spawn(config: &Path, data: &Path, runbooks: &Path, port: Option<u16>) -> Quench {
        let log = data.with_extension("log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let listen = format!("127.0.0.1:{}", port.unwrap_or(0));
        let mut child = Command::new(quench_bin())
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", &listen, "--data"])
            .arg(data)
            .arg("--runbooks")
            .arg(runbooks)
            .env("QUENCH_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn quench");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("quench exited or did not start within 20 s; its log:\n{log}");
            }
        };
        let url = line
            .strip_prefix("quench listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from quench: {line:?}"))
            .to_string();
        Quench {
            child: Some(child),
            url,
            data: data.to_path_buf(),
            config: config.to_path_buf(),
            log,
            _tmp: None,
        }
    }

    /// The listen port.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in url")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A line of the server's `/proc/PID/status` in MiB (`VmRSS`, `VmHWM`).
    pub fn memory_mb(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    }

    /// SIGKILL, no goodbye: what a crash looks like.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET a JSON document, panicking with the log on failure.
    pub async fn get_json(&self, path: &str) -> Value {
        let resp = http()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nlog:\n{}", self.log_text()));
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.expect("json")
    }

    /// GET a text document (such as `/metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        let resp = http()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nlog:\n{}", self.log_text()));
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.text().await.expect("text body")
    }

    /// Polls `f` on `GET path` until it returns `Some`, or fails after
    /// `timeout` with the last document and the server log.
    pub async fn wait_for<T>(
        &self,
        path: &str,
        timeout: Duration,
        mut f: impl FnMut(&Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let doc = self.get_json(path).await;
            if let Some(t) = f(&doc) {
                return t;
            }
            if Instant::now() > deadline {
                panic!(
                    "condition on {path} not met within {timeout:?}; last answer:\n{doc:#}\nlog:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Quench {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until `url/-/ready` answers 2xx (Alertmanager, Prometheus), or
/// fails with the component's log.
async fn wait_ready(what: &str, url: &str, log: &Path, seconds: u64) {
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Ok(r) = client.get(format!("{url}/-/ready")).send().await
            && r.status().is_success()
        {
            return;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} not ready within {seconds} s:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fields of a `/proc/PID/stat` or `/proc/PID/task/TID/stat` file
/// from the third (the state) on: the command name (field 2) may hold
/// spaces and parentheses, the fields after its last `)` are plain. Field
/// N of proc(5) is at index N - 3.
pub fn stat_fields(path: impl AsRef<Path>) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(path).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// The CPU time (user and system, every thread, ended ones included) a
/// process has used so far, from `/proc/PID/stat` (utime and stime,
/// fields 14 and 15).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    stat_cpu(format!("/proc/{pid}/stat"))
}

/// utime + stime of a `stat` file (a process's or one thread's).
fn stat_cpu(path: impl AsRef<Path>) -> Option<Duration> {
    let fields = stat_fields(path)?;
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / rustix::param::clock_ticks_per_second() as f64,
    ))
}

/// The CPU time each of a process's live threads has used so far, summed
/// by thread name (`/proc/PID/task/*/comm` and `stat`): tokio's workers,
/// for one, share a name.
pub fn cpu_by_thread(pid: u32) -> std::collections::BTreeMap<String, Duration> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(name), Some(used)) = (
            std::fs::read_to_string(path.join("comm")),
            stat_cpu(path.join("stat")),
        ) else {
            continue;
        };
        *out.entry(name.trim().to_string()).or_default() += used;
    }
    out
}

/// A real Prometheus Alertmanager whose only receiver is a quench webhook.
pub struct Alertmanager {
    child: Child,
    /// Its base URL.
    pub url: String,
    _tmp: tempfile::TempDir,
}

impl Alertmanager {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts Alertmanager delivering to `webhook_url` without credentials.
    pub async fn start(webhook_url: &str) -> Alertmanager {
        Alertmanager::launch(Some((webhook_url, None)), "", "0s").await
    }

    /// Starts Alertmanager sending at most `max_alerts` alerts per
    /// notification, so it reports the rest in `truncatedAlerts`.
    pub async fn start_truncating(webhook_url: &str, max_alerts: u32) -> Alertmanager {
        // group_wait 1s: with 0s Alertmanager may send the group after
        // taking only the first alert of a post (nothing truncated), and
        // the full group a second later repeats that alert, which quench
        // de-duplicates, so the truncation count never shows.
        Alertmanager::launch(
            Some((webhook_url, None)),
            &format!("        max_alerts: {max_alerts}\n"),
            "1s",
        )
        .await
    }

    /// Starts Alertmanager delivering to `webhook_url` with a bearer token.
    pub async fn start_with_token(webhook_url: &str, token: &str) -> Alertmanager {
        Alertmanager::launch(Some((webhook_url, Some(token))), "", "0s").await
    }

    /// Starts Alertmanager with a receiver that delivers nowhere (for
    /// measuring its own intake).
    pub async fn start_silent() -> Alertmanager {
        Alertmanager::launch(None, "", "0s").await
    }

    /// Starts Alertmanager 0.25 on a free port, delivering to the webhook
    /// after `group_wait` (0s for most tests, so notifications arrive
    /// within about a second). `extra` is appended to the webhook config
    /// (YAML, 8 spaces deep).
    async fn launch(
        webhook: Option<(&str, Option<&str>)>,
        extra: &str,
        group_wait: &str,
    ) -> Alertmanager {
        let bin = require("prometheus-alertmanager", "prometheus-alertmanager");
        let tmp = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let receiver = match webhook {
            Some((url, token)) => {
                let auth = token
                    .map(|t| format!("        http_config:\n          authorization:\n            credentials: {t}\n"))
                    .unwrap_or_default();
                format!(
                    "  - name: quench\n    webhook_configs:\n      - url: {url}\n        send_resolved: true\n{auth}{extra}"
                )
            }
            None => "  - name: quench\n".to_string(),
        };
        let cfg = format!(
            "route:\n  receiver: quench\n  group_by: [alertname]\n  group_wait: {group_wait}\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n{receiver}"
        );
        let cfg_path = tmp.path().join("am.yml");
        std::fs::write(&cfg_path, cfg).expect("write am.yml");
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(tmp.path().join("am.log")).expect("am log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.path={}",
                tmp.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--web.external-url={url}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn alertmanager");
        let am = Alertmanager {
            child,
            url,
            _tmp: tmp,
        };
        wait_ready("alertmanager", &am.url, &am._tmp.path().join("am.log"), 20).await;
        am
    }

    /// `POST /api/v2/alerts`.
    pub async fn post_alerts(&self, alerts: &Value) {
        let r = http()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(alerts)
            .send()
            .await
            .expect("post to alertmanager");
        assert!(
            r.status().is_success(),
            "alertmanager refused alerts: {}",
            r.status()
        );
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address a URL's host and port name.
pub fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("host:port")
}

/// A real Prometheus scraping itself every second, with the given alerting
/// and recording rule files.
pub struct Prometheus {
    child: Child,
    /// Its base URL.
    pub url: String,
    _tmp: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on a free port; returns once it is ready.
    pub async fn start() -> Prometheus {
        Prometheus::scraping(&[]).await
    }

    /// Starts Prometheus scraping itself and `targets` (`host:port`, job
    /// `target`) every second.
    pub async fn scraping(targets: &[&str]) -> Prometheus {
        let bin = require("prometheus", "prometheus");
        let tmp = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let mut cfg = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        );
        if !targets.is_empty() {
            let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
            cfg.push_str(&format!(
                "  - job_name: target\n    static_configs: [{{targets: [{}]}}]\n",
                list.join(", ")
            ));
        }
        let cfg_path = tmp.path().join("prom.yml");
        std::fs::write(&cfg_path, cfg).expect("write prom.yml");
        let log = std::fs::File::create(tmp.path().join("prom.log")).expect("log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--web.external-url={url}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let p = Prometheus {
            child,
            url,
            _tmp: tmp,
        };
        wait_ready("prometheus", &p.url, &p._tmp.path().join("prom.log"), 30).await;
        p
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static GO_BUILD: Once = Once::new();

/// The Go test service (`tests/go/testsvc`): pprof, /metrics, and handlers
/// with known hot spots. Built once per test run with the Debian Go, offline.
pub struct GoService {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl GoService {
    /// Builds (once) and starts the service on a free loopback port.
    pub fn start() -> GoService {
        GoService::start_on("127.0.0.1:0")
    }

    /// Builds (once) and starts the service listening on `addr` (a free
    /// port when it ends in `:0`).
    pub fn start_on(addr: &str) -> GoService {
        let go = require("go", "golang-go");
        let src = repo_root().join("tests/go/testsvc");
        let bin = std::env::temp_dir().join(format!("quench-testsvc-{}", std::process::id()));
        GO_BUILD.call_once(|| {
            let out = Command::new(go)
                .current_dir(&src)
                .env("GOPROXY", "off")
                .env("GOFLAGS", "-mod=mod")
                .env("GOCACHE", std::env::temp_dir().join("quench-gocache"))
                .args(["build", "-o"])
                .arg(&bin)
                .arg(".")
                .output()
                .expect("run go build");
            assert!(
                out.status.success(),
                "go build failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        });
        let mut child = Command::new(&bin)
            .args(["-listen", addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start testsvc");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("testsvc prints its address");
        let url = line
            .trim()
            .strip_prefix("testsvc listening on ")
            .unwrap_or_else(|| panic!("unexpected line from testsvc: {line:?}"))
            .to_string();
        GoService { child, url }
    }
}

impl GoService {
    /// The service's process id (for `perf record -p`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for GoService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request a [`stub`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Seen {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What a [`stub_with`] server does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A JSON body with this status.
    Json(u16, Value),
    /// Any body, with its status and content type.
    Body(u16, &'static str, Vec<u8>),
    /// The same, after a wait (a slow service).
    After(Duration, Box<Reply>),
    /// Nothing, ever: the connection stays open (a hung service).
    Silence,
    /// A 200 announcing `n` bytes and streaming them, 1 MiB at a time,
    /// until the client hangs up (a body over any limit).
    Endless(u64),
}

/// Every request a stub saw, in order.
pub type SeenLog = std::sync::Arc<std::sync::Mutex<Vec<Seen>>>;

/// A local HTTP/1.1 server standing in for a service that cannot run here
/// (Argo CD, Slack) or for what the simulated Kubernetes node cannot do:
/// `answer` sees every request and returns status and JSON body. Returns
/// its base URL and every request it saw.
pub async fn stub<F>(answer: F) -> (String, SeenLog)
where
    F: Fn(&Seen) -> (u16, Value) + Send + Sync + 'static,
{
    stub_with(move |seen| {
        let (status, body) = answer(seen);
        Reply::Json(status, body)
    })
    .await
}

/// [`stub`] with any [`Reply`]: other content types, delays, silence, an
/// endless body. The one stub server of the tests; only the WebSocket
/// exec stand-ins (chaos.rs, k8s_exec.rs) are written out, for the
/// upgrade.
pub async fn stub_with<F>(answer: F) -> (String, SeenLog)
where
    F: Fn(&Seen) -> Reply + Send + Sync + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let answer = std::sync::Arc::new(answer);
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let s = s.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let (head, mut body, len) = loop {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).into_owned();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        break (head, buf[i + 4..].to_vec(), len);
                    }
                };
                while body.len() < len {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&tmp[..n]);
                }
                let mut lines = head.lines();
                let mut first = lines.next().unwrap_or("").split(' ');
                let seen = Seen {
                    method: first.next().unwrap_or("").to_string(),
                    path: first.next().unwrap_or("").to_string(),
                    headers: lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect(),
                    body,
                };
                let mut reply = answer(&seen);
                s.lock().expect("seen").push(seen);
                loop {
                    match reply {
                        Reply::After(wait, then) => {
                            tokio::time::sleep(wait).await;
                            reply = *then;
                        }
                        Reply::Silence => {
                            // Hold the connection until the client gives up.
                            let _ = sock.read(&mut tmp).await;
                            return;
                        }
                        Reply::Endless(n) => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {n}\r\n\r\n"
                            );
                            if sock.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let chunk = vec![b'#'; 1 << 20];
                            let mut left = n;
                            while left > 0 {
                                let k = left.min(chunk.len() as u64) as usize;
                                if sock.write_all(&chunk[..k]).await.is_err() {
                                    return;
                                }
                                left -= k as u64;
                            }
                            return;
                        }
                        Reply::Json(status, v) => {
                            reply =
                                Reply::Body(status, "application/json", v.to_string().into_bytes());
                        }
                        Reply::Body(status, content_type, bytes) => {
                            let head = format!(
                                "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                bytes.len()
                            );
                            let _ = sock.write_all(head.as_bytes()).await;
                            let _ = sock.write_all(&bytes).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, seen)
}
