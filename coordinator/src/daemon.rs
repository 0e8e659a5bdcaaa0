//! The coordinator daemon: binds the sockets, opens the service, runs the deadline ticker, the
//! transport (gRPC + mutual TLS, or libp2p) and `/metrics`, and stops all of them on shutdown.
//!
//! With libp2p the socket byte counters live in the transport; a task copies their growth into
//! the same `/metrics` counters the gRPC socket wrapper feeds, every [`TICK`] and once more after
//! the server stopped, so both transports report bytes at the socket identically.
//!
//! [`start`] returns a [`Running`] handle with the bound addresses (tests bind `127.0.0.1:0`);
//! `coordinator run` calls [`run`], which waits for SIGTERM or Ctrl-C. State is durable after
//! every action, so shutdown only has to stop accepting and let in-flight calls finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use ruvdllm_proto::p2p::{ByteCount, Counters, ServerHandle};

use crate::config::{Settings, Transport};
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
    #[error(transparent)]
    P2p(#[from] crate::p2p::ServeError),
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
    /// The bound TCP address (gRPC, or the libp2p listener's).
    pub addr: SocketAddr,
    /// The libp2p server (its `listen_addr` ends in `/p2p/<peer id>`), when that is the transport.
    pub p2p: Option<ServerHandle>,
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
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let (addr, p2p) = match &settings.transport {
        Transport::Grpc => {
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
            let svc = service.clone();
            let tls = settings.tls.clone();
            let rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                crate::grpc::serve(listener, svc, &tls, rx).await?;
                Ok(())
            }));
            (addr, None)
        }
        Transport::Libp2p(cfg) => {
            let (handle, join) = crate::p2p::serve(service.clone(), cfg, stop_rx.clone()).await?;
            let addr = crate::p2p::socket_addr(handle.listen_addr()).ok_or_else(|| {
                crate::p2p::ServeError::NoSocket {
                    addr: handle.listen_addr().clone(),
                }
            })?;
            let h = handle.clone();
            let m = metrics.clone();
            let rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                run_p2p(h, join, m, rx).await?;
                Ok(())
            }));
            (addr, Some(handle))
        }
    };

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
    match &p2p {
        Some(h) => {
            tracing::info!(listen = %h.listen_addr(), metrics = ?metrics_addr, "coordinator listening (libp2p)")
        }
        None => tracing::info!(%addr, metrics = ?metrics_addr, "coordinator listening (gRPC)"),
    }
    Ok(Running {
        addr,
        p2p,
        metrics_addr,
        service,
        stop,
        tasks,
    })
}

/// Adds the transport's socket bytes since `synced` to the `/metrics` socket counters.
fn sync_bytes(total: &Counters, metrics: &Metrics, synced: &mut ByteCount) {
    let now = total.snapshot();
    metrics
        .socket_read
        .inc_by(now.received.saturating_sub(synced.received));
    metrics
        .socket_written
        .inc_by(now.sent.saturating_sub(synced.sent));
    *synced = now;
}

/// Keeps `/metrics` in step with the libp2p server's socket counters until `stop`, then stops
/// the server and counts its last bytes.
async fn run_p2p(
    handle: ServerHandle,
    join: JoinHandle<()>,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let total = handle.counters();
    let mut synced = ByteCount::default();
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = every.tick() => sync_bytes(&total, &metrics, &mut synced),
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    handle.shutdown().await;
    join.await?;
    sync_bytes(&total, &metrics, &mut synced);
    Ok(())
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
