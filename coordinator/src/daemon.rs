//! The coordinator daemon: binds the sockets, opens the service, runs the deadline ticker, the
//! gRPC server and `/metrics`, and stops all of them on shutdown.
//!
//! [`start`] returns a [`Running`] handle with the bound addresses (tests bind `127.0.0.1:0`);
//! `coordinator run` calls [`run`], which waits for SIGTERM or Ctrl-C. State is durable after
//! every action, so shutdown only has to stop accepting and let in-flight calls finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::metrics::{self, Metrics};
use crate::service::{Clock, Service, ServiceError, SystemClock};

/// How often deadlines are checked.
pub const TICK: Duration = Duration::from_millis(50);

/// Daemon start-up and run failures.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Serve(#[from] crate::grpc::ServeError),
    #[error("metrics server: {0}")]
    Metrics(std::io::Error),
    #[error("task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Installs rustls' ring provider as the process default (idempotent).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A started coordinator.
pub struct Running {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub service: Arc<Service>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), DaemonError>>>,
}

impl Running {
    /// Stops accepting, finishes in-flight calls, waits for every task.
    pub async fn shutdown(self) -> Result<(), DaemonError> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await??;
        }
        Ok(())
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Binds and starts everything.
pub async fn start(settings: Settings) -> Result<Running, DaemonError> {
    start_with_clock(settings, Arc::new(SystemClock)).await
}

pub async fn start_with_clock(
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> Result<Running, DaemonError> {
    install_crypto();
    let metrics = Metrics::new();
    let service = Service::open(&settings, metrics.clone(), clock)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: settings.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: settings.listen,
        source,
    })?;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let svc = service.clone();
    let tls = settings.tls.clone();
    let rx = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        crate::grpc::serve(listener, svc, &tls, rx).await?;
        Ok(())
    }));

    let svc = service.clone();
    let mut rx = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    if let Err(e) = svc.tick() {
                        tracing::error!(error = %e, "deadline tick");
                    }
                }
                _ = rx.wait_for(|s| *s) => return Ok(()),
            }
        }
    }));

    let mut metrics_addr = None;
    if let Some(maddr) = settings.metrics_listen {
        let l = metrics::bind(maddr)
            .await
            .map_err(|source| DaemonError::Bind {
                addr: maddr,
                source,
            })?;
        metrics_addr = Some(l.local_addr().map_err(DaemonError::Metrics)?);
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            metrics::serve(l, metrics, stopped(rx))
                .await
                .map_err(DaemonError::Metrics)
        }));
    }
    tracing::info!(%addr, metrics = ?metrics_addr, "coordinator listening");
    Ok(Running {
        addr,
        metrics_addr,
        service,
        stop,
        tasks,
    })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler; waiting for Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs until SIGTERM / Ctrl-C, then shuts down gracefully.
pub async fn run(settings: Settings) -> Result<(), DaemonError> {
    let running = start(settings).await?;
    termination().await;
    tracing::info!("shutting down");
    running.shutdown().await
}
