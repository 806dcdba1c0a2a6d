//! The quench engine: the library behind the `quench` binary.
//!
//! Module map, in the order an alert meets them:
//! - [`config`]: defaults, the YAML file and flags.
//! - [`http`]: the axum router; webhook handlers call the parsers in
//!   `quench_connectors::inbound`.
//! - [`alert_log`]: durable append with group commit; the 2xx waits for it.
//! - [`pipeline`]: follows the log, matches runbooks, opens or attaches
//!   incidents in `quench_knowledge`.
//! - [`metrics`]: the `/metrics` registry.
//! - [`store`]: opens the one sled database every tree lives in.
//! - [`client`]: the CLI side of the HTTP API (`quench incidents ...`).
//! - [`explain`]: reading alerts from a file for `quench explain`.
//!
//! `docs/ARCHITECTURE.md` walks one alert through these files.
#![warn(missing_docs)]

pub mod alert_log;
pub mod client;
pub mod config;
pub mod explain;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use quench_knowledge::IncidentStore;
use tracing::info;

use crate::alert_log::AlertLog;
use crate::config::Config;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

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
    /// The incident store could not be opened.
    #[error(transparent)]
    Incidents(#[from] quench_knowledge::StoreError),
    /// The runbooks are broken; every problem is listed.
    #[error("runbooks in {dir} are invalid:\n{}", .errors.join("\n"))]
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
}

/// Runs the server until SIGINT or SIGTERM. `on_listening` is told the
/// bound address (useful with port 0).
pub async fn serve(
    config: Config,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let runbooks = quench_runbooks::load_dir(&config.runbooks, config.triage_runbook.as_deref())
        .map_err(|errs| ServeError::Runbooks {
            dir: config.runbooks.display().to_string(),
            errors: errs.iter().map(|e| e.to_string()).collect(),
        })?;
    info!(dir = %config.runbooks.display(), count = runbooks.runbooks.len(), "runbooks loaded");
    let store = store::open(&config.data_dir)?;
    let db = store.db.clone();
    let log = AlertLog::open(&db, Some(store.syncer()?))?;
    let incidents = IncidentStore::open(&db)?;
    let metrics = Arc::new(Metrics::default());
    let runbooks = Arc::new(RwLock::new(Arc::new(runbooks)));

    let pipeline = Pipeline {
        log: log.clone(),
        incidents: incidents.clone(),
        runbooks: runbooks.clone(),
        metrics: metrics.clone(),
    };
    let pipeline_task = tokio::spawn(pipeline.run());

    let state = AppState {
        config: Arc::new(config.clone()),
        log,
        incidents,
        runbooks,
        metrics,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    info!(%addr, data_dir = %config.data_dir.display(), "listening");
    on_listening(addr);
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    pipeline_task.abort();
    db.flush().map_err(|e| ServeError::Log(e.into()))?;
    store.sync()?;
    info!("stopped");
    Ok(())
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
