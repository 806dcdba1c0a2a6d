//! The quench engine: the library behind the `quench` binary.
//!
//! Module map, in the order an alert meets them:
//! - [`config`]: defaults, the YAML file and flags.
//! - [`http`]: the axum router; webhook handlers call the parsers in
//!   `quench_connectors::inbound`.
//! - [`alert_log`]: durable append with group commit; the 2xx waits for it.
//! - [`pipeline`]: follows the log, matches runbooks, opens or attaches
//!   incidents in `quench_knowledge`.
//! - [`runbook_source`]: the runbook set in force, from a directory or git,
//!   swapped whole.
//! - [`executor`]: runs an incident's runbook inside the guards.
//! - [`metrics`]: the `/metrics` registry.
//! - [`store`]: opens the one sled database every tree lives in.
//! - [`client`]: the CLI side of the HTTP API (`quench incidents ...`).
//! - [`explain`]: reading alerts from a file for `quench explain`.
//! - [`ha`]: which of two replicas leads (a Kubernetes Lease), fencing.
//! - [`replication`]: the standby copying the leader's log and records;
//!   sync mode's waits.
//!
//! `docs/ARCHITECTURE.md` walks one alert through these files.
#![warn(missing_docs)]

pub mod alert_log;
pub mod api;
pub mod chaos;
pub mod client;
pub mod config;
pub mod executor;
pub mod explain;
pub mod ha;
pub mod http;
pub mod import;
pub mod indexer;
pub mod metrics;
pub mod pipeline;
pub mod postmortem;
pub mod replication;
pub mod runbook_source;
pub mod steps_doc;
pub mod store;

use quench_connectors::hosts::HostAllowlist;
use std::net::SocketAddr;
use std::sync::Arc;

use quench_knowledge::{ArtifactStore, AuditLog, Control, IncidentStore};
use quench_runbooks::sync::GitSource;
use tracing::{info, warn};

use crate::alert_log::AlertLog;
use crate::config::Config;
use crate::executor::{ExecConfig, Executor};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::runbook_source::{Origin, Runbooks};

/// Installs ring as the process-wide rustls provider. kube and reqwest would
/// otherwise disagree about it and panic at the first TLS connection. Safe
/// to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why `quench serve` could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory could not be opened.
    #[error(transparent)]
    Store(#[from] store::OpenError),
    /// The alert log could not be opened.
    #[error(transparent)]
    Log(#[from] alert_log::LogError),
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The incident store could not be opened.
    #[error(transparent)]
    Incidents(#[from] quench_knowledge::StoreError),
    /// The runbooks are broken; every problem is listed.
    #[error(
        "the runbooks in {dir} do not load, so quench does not start; fix these (`quench lint {dir}` shows the same) or point --runbooks elsewhere:\n{}",
        .errors.join("\n")
    )]
    Runbooks {
        /// The runbook directory.
        dir: String,
        /// One line per problem.
        errors: Vec<String>,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// The search index could not be opened or rebuilt.
    #[error("search index: {0}")]
    Search(#[from] indexer::IndexerError),
}

/// Runs the server until SIGINT or SIGTERM. `on_listening` is told the
/// bound address (useful with port 0).
pub async fn serve(
    config: Config,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    config.validate()?;
    let origin = match &config.git {
        None => Origin::Dir(config.runbooks.clone()),
        Some(g) => Origin::Git(GitSource {
            url: g.url.clone(),
            branch: g.branch.clone(),
            path: g.path.clone(),
            checkout: config.data_dir.join("runbooks-checkout"),
            credentials: g.credentials()?,
        }),
    };
    let runbooks = Arc::new(Runbooks::new(origin, config.triage_runbook.clone()));
    {
        let r = runbooks.clone();
        let first = tokio::task::spawn_blocking(move || r.reload())
            .await
            .unwrap_or_else(|e| Err(vec![format!("runbook loader crashed: {e}")]));
        if let Err(errors) = first {
            if config.git.is_none() {
                // A local directory that is broken at start is a mistake
                // to fix now, not a state to run in.
                return Err(ServeError::Runbooks {
                    dir: runbooks.origin(),
                    errors,
                });
            }
            // The git server may be down; serve what is checked out, if
            // anything, and keep trying.
            if !runbooks.load_existing_checkout() {
                warn!(source = %runbooks.origin(), "starting with no runbooks; alerts are stored and explained until a valid set arrives");
            }
        }
    }
    let storage = store::open(&config.data_dir, config.store_cache_bytes)?;
    let log = {
        let dir = config.data_dir.join("intake");
        tokio::task::spawn_blocking(move || AlertLog::open(&dir))
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))??
    };
    log.set_spin(config.intake_spin);
    let pipeline_position = Arc::new(std::sync::atomic::AtomicU64::new(log.cursor()?));
    let writer = storage.writer()?;
    let incidents = IncidentStore::open(&storage.db, writer.clone())?;
    let metrics = Arc::new(Metrics::default());
    let control = Control::open(&storage.db, writer.clone())?;
    let artifacts = ArtifactStore::open(
        &storage.db,
        writer.clone(),
        &config.data_dir.join("artifacts"),
        config.max_artifact_bytes,
        config.max_incident_artifact_bytes,
    )?
    .with_total_limit(config.max_artifact_bytes_total);
    if control.is_paused() {
        warn!(
            "automation is paused (kill switch): no destructive step will run until `quench resume`"
        );
    }
    let kube = Arc::new(quench_connectors::k8s::KubeClient::new(
        config.kubernetes.clone(),
    ));
    let allowed_hosts = match &config.executor.allowed_hosts {
        Some(h) => Some(
            HostAllowlist::parse(h)
                .map_err(|e| ServeError::Config(config::ConfigError::Invalid(e.to_string())))?,
        ),
        None => None,
    };
    let steps: Arc<quench_connectors::steps::Builtin> = Arc::new(
        quench_connectors::steps::Builtin::with_artifacts(Arc::new(store::StepArtifacts(
            artifacts.clone(),
        )))
        .with_kube(kube.clone())
        .with_hosts(allowed_hosts.clone()),
    );
    let mut executor = Executor::new(
        incidents.clone(),
        AuditLog::open(&storage.db, writer.clone())?,
        control,
        steps.clone(),
        ExecConfig {
            dry_run: config.executor.dry_run,
            budget_per_namespace_per_hour: config.executor.budget_per_namespace_per_hour,
            max_actions_per_target_per_hour: config.executor.max_actions_per_target_per_hour,
            max_concurrent_runs: config.executor.max_concurrent_runs,
            allowed_hosts: allowed_hosts.clone(),
            step_defaults: config.step_defaults(),
            ..ExecConfig::default()
        },
    );
    executor.metrics = metrics.clone();
    let ha = config.ha.enabled.then(|| ha::Ha::new(config.ha.clone()));
    executor.ha = ha.clone();
    let replication = ha.as_ref().map(|h| {
        replication::Replication::new(
            h.config.replication,
            std::time::Duration::from_millis(h.config.replication_timeout_ms),
        )
    });
    executor.replication = replication.clone();
    executor.env = config
        .executor
        .env_allowlist
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v)))
        .collect();
    let executor = Arc::new(executor);
    // The pipeline and the runs get a runtime of their own: in a storm
    // their tasks queue there, and the HTTP server's queue (webhooks,
    // `/healthz`, the API) stays short. Its threads run at nice 5, so when
    // the cores are full the kernel serves intake and probes first and the
    // pipeline's lag grows (reported by `/readyz`) instead.
    let background = Background(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("quench-runs")
            .on_thread_start(|| lower_priority(5, "pipeline and runs"))
            .enable_all()
            .build()?,
    ));
    // The same findings as `quench config check`.
    for f in config.findings() {
        warn!(severity = ?f.severity, fix = %f.fix, "{}", f.what);
    }
    match &config.git {
        Some(g) => {
            tokio::spawn(runbooks.clone().sync_loop(g.interval()?));
        }
        None => {
            tokio::spawn(runbooks.clone().watch_dir(DIR_WATCH_EVERY));
        }
    }
    tokio::spawn(reload_on_hangup(runbooks.clone()));

    let opened = {
        let (dir, inc) = (config.data_dir.join("index"), incidents.clone());
        tokio::task::spawn_blocking(move || indexer::open(&dir, &inc))
            .await
            .map_err(|_| ServeError::Search(indexer::IndexerError::Panicked))??
    };
    let search = opened.index.clone();
    let index_position = opened.position.clone();
    let kpis = Arc::new(http::KpiCache::default());
    let _indexer = indexer::start(&opened, incidents.clone());
    let chaos = Arc::new(
        chaos::ChaosService::new(
            quench_knowledge::ChaosStore::open(&storage.db, writer.clone())?,
            kube.clone(),
            steps,
            runbooks.clone(),
            incidents.clone(),
            AuditLog::open(&storage.db, writer.clone())?,
        )
        // Method steps under the executor's guards; rollbacks always run.
        .with_method_runner(Arc::new(executor::Guarded::new(executor.clone(), "chaos")))
        .with_hosts(allowed_hosts.clone())
        .with_guards(executor.control.clone(), config.executor.dry_run),
    );
    // What only the leader does: recover unfinished runs, follow the log
    // (the pipeline and the runs), chaos. Without high
    // availability this replica leads from the start.
    let follower = ha
        .as_ref()
        .map(|_| replication::Follower::open(&config.data_dir));
    let pipeline_task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>> = Arc::default();
    let (dedup_window, alert_retention) = (config.dedup_window()?, config.alert_retention()?);
    {
        // Hourly, on every replica: forget idempotency keys older than the
        // window, and delete log segments older than the retention that
        // the pipeline is done with (on a standby: the leader's pipeline,
        // as copied). A standby that skipped this kept every key in memory
        // and every segment on disk for as long as it followed.
        let (log, window, retention, done) = (
            log.clone(),
            dedup_window,
            alert_retention,
            pipeline_position.clone(),
        );
        let (ha, follower) = (ha.clone(), follower.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let now = chrono::Utc::now();
                let ago = |d: std::time::Duration| {
                    now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(7))
                };
                let (keys, retire) = (ago(window), ago(retention));
                let cursor = match (&ha, &follower) {
                    (Some(ha), Some(f)) if !ha.is_leader() => f.copied_pipeline().unwrap_or(0),
                    _ => done.load(std::sync::atomic::Ordering::Acquire),
                };
                let log = log.clone();
                match tokio::task::spawn_blocking(move || log.maintain(keys, retire, cursor)).await
                {
                    Ok(Ok((0, 0))) => {}
                    Ok(Ok((keys, segments))) => info!(
                        keys,
                        segments,
                        "alert log maintenance: keys past the dedup window forgotten, segments past the retention deleted"
                    ),
                    Ok(Err(e)) => warn!(error = %e, "alert log maintenance failed"),
                    Err(e) => warn!(error = %e, "alert log maintenance panicked"),
                }
            }
        });
    }
    {
        let (ha, follower, log) = (ha.clone(), follower.clone(), log.clone());
        let (executor, runbooks, incidents) =
            (executor.clone(), runbooks.clone(), incidents.clone());
        let (metrics, pipeline_position, chaos) =
            (metrics.clone(), pipeline_position.clone(), chaos.clone());
        let (config, handle, task) = (
            config.clone(),
            background.handle().clone(),
            pipeline_task.clone(),
        );
        let kube_for_lease = kube.clone();
        let artifacts = artifacts.clone();
        let control = executor.control.clone();
        tokio::spawn(async move {
            if let (Some(ha), Some(follower)) = (&ha, &follower) {
                let client = match kube_for_lease.client().await {
                    Ok(c) => c.clone(),
                    Err(e) => {
                        tracing::error!(error = %e, "high availability needs the Kubernetes API for its Lease; this replica stays a standby");
                        return;
                    }
                };
                let lease = ha.clone();
                tokio::spawn(async move {
                    lease.run(client).await;
                    // Leadership lost: stop at once, before a standby acts.
                    tracing::error!("exiting: the lease is lost");
                    std::process::exit(75);
                });
                let token = config.ha.peer_token.clone().unwrap_or_default();
                tokio::spawn(follower.clone().run(
                    ha.clone(),
                    replication::Stores {
                        log: log.clone(),
                        incidents: incidents.clone(),
                        control,
                        audit: executor.audit.clone(),
                        artifacts: artifacts.clone(),
                    },
                    token,
                ));
                ha.wait_leader().await;
                // Start where the old leader's pipeline was, as far as
                // this replica has its alerts and records.
                let (copied, own) = (follower.copied_pipeline(), log.cursor().unwrap_or(0));
                let at = replication::takeover_start(copied, own, log.len());
                if copied.is_none() && own == 0 && at > 0 {
                    warn!(
                        from = at,
                        "takeover before this replica ever caught up with a leader: where the old leader's pipeline was is unknown, so the alerts already in the log are not matched again; new ones are"
                    );
                }
                if let Err(e) = log.set_cursor(at) {
                    warn!(error = %e, "takeover: cannot write the pipeline cursor");
                }
                pipeline_position.store(at, std::sync::atomic::Ordering::Release);
                info!(
                    epoch = ha.epoch(),
                    pipeline = at,
                    alerts = log.len(),
                    "takeover: this replica leads; recovering unfinished runs"
                );
            }
            {
                let (exec, loaded) = (executor.clone(), runbooks.current());
                let recovered = handle
                    .spawn(async move { exec.recover(&loaded.set, loaded.commit.as_deref()).await })
                    .await
                    .unwrap_or_default();
                for (id, what) in recovered {
                    warn!(incident_id = %id, recovery = ?what, "unfinished run after a restart");
                }
            }
            let pipeline = Pipeline {
                log: log.clone(),
                incidents: incidents.clone(),
                runbooks: runbooks.clone(),
                metrics: metrics.clone(),
                firing: Default::default(),
                clock: quench_knowledge::clock::system(),
                executor: Some(executor.clone()),
                position: pipeline_position.clone(),
            };
            *task.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle.spawn(pipeline.run()));
            // Faults a crash left in place are removed before anything else runs.
            {
                let c = chaos.clone();
                let scheduled = config.chaos.schedule;
                if !scheduled {
                    info!(
                        "chaos schedules are off (chaos.schedule: false); experiments run when started"
                    );
                }
                tokio::spawn(async move {
                    c.reconcile().await;
                    if scheduled {
                        c.scheduler().await;
                    }
                });
            }
        });
    }
    let state = Arc::new(http::Services {
        config: Arc::new(config.clone()),
        log,
        incidents: incidents.clone(),
        runbooks,
        metrics,
        executor,
        artifacts,
        chaos: chaos.clone(),
        search,
        lag: http::Lag {
            pipeline: pipeline_position,
            index: index_position,
            writer,
        },
        kpis,
        clock: quench_knowledge::clock::system(),
        console: Arc::new(http::console::Console::new()),
        slack_seen: Arc::default(),
        ha: ha.clone(),
        replication: replication.clone(),
        follower: follower.clone(),
        forwarder: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(600))
            .build()
            .map_err(std::io::Error::other)?,
    });
    // Bound here (tokio's backlog and SO_REUSEADDR), served from the front
    // door's thread.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .and_then(tokio::net::TcpListener::into_std)
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let router = http::router(state);
    // Probes are answered on a thread of their own; the rest comes here.
    let front = http::front::FrontDoor::start(listener, router.clone())?;
    info!(%addr, data_dir = %config.data_dir.display(), "listening");
    on_listening(addr);
    axum::serve(front, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // Running experiments stop, and their rollbacks run, before we go.
    chaos.abort_all();
    for _ in 0..300 {
        if chaos.running().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if let Some(t) = pipeline_task
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        t.abort();
    }
    drop(background);
    // Records answered but still staged (the writer commits them within
    // its COMMIT_EVERY) go to sled before its last flush.
    if let Err(e) = incidents.sync().await {
        warn!(error = %e, "committing the last staged records failed");
    }
    storage.db.flush().map_err(std::io::Error::other)?;
    storage.sync()?;
    info!("stopped");
    Ok(())
}

/// Lowers the calling thread's priority to `nice` (threads it starts
/// inherit it); `what` names the thread in the warning when it cannot.
pub(crate) fn lower_priority(nice: i32, what: &str) {
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        warn!(error = %e, "cannot lower the priority of the {what} thread");
    }
}

/// The runtime of the pipeline and the runs. A runtime may not be dropped
/// in async code (it would block), so this one is shut down without
/// waiting for its tasks, on every way out of `serve`.
struct Background(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for Background {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("the runtime lives until drop")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// How often a local runbook directory is looked at for changes.
const DIR_WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// `kill -HUP`: reload the runbooks now (a git source syncs first).
async fn reload_on_hangup(runbooks: Arc<Runbooks>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            warn!("cannot listen for SIGHUP; runbooks reload on change only");
            return;
        };
        while hup.recv().await.is_some() {
            info!("SIGHUP: reloading the runbooks");
            runbooks.trigger();
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    info!("shutting down");
}
