//! Prometheus metrics and the tiny HTTP server that exposes them at `/metrics`.
//!
//! Bytes are counted twice: **at the socket** (`socket_bytes_read/written`, every byte of every
//! accepted TCP connection including TLS and HTTP/2 framing, see [`crate::socket`]) and **in the
//! chunk handlers** (`payload_bytes_in/out`: payload bytes of chunks received in `SubmitUpdate` and
//! sent in `FetchAdapter`), which a libp2p adapter can report identically.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

/// All coordinator metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub rounds: Counter,
    pub rounds_failed: Counter,
    pub round_latency: Histogram,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub socket_read: Counter,
    pub socket_written: Counter,
    pub accepted: Counter,
    pub rejected: Family<ReasonLabel, Counter>,
    pub last_seen: Family<NodeLabel, Gauge>,
    pub current_round: Gauge,
    /// Client sampling: nodes drawn for the open round (0 when sampling is off or the draw waits).
    pub drawn_nodes: Gauge,
    /// Central DP: ε spent so far (at the configured δ) and the clip bound of the open round.
    pub dp_epsilon: Gauge<f64, AtomicU64>,
    pub dp_clip: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("ruvdllm_coordinator");
        let rounds = Counter::default();
        let rounds_failed = Counter::default();
        let round_latency = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        let socket_read = Counter::default();
        let socket_written = Counter::default();
        let accepted = Counter::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let last_seen = Family::<NodeLabel, Gauge>::default();
        let current_round = Gauge::default();
        let drawn_nodes = Gauge::default();
        let dp_epsilon = Gauge::<f64, AtomicU64>::default();
        let dp_clip = Gauge::<f64, AtomicU64>::default();
        r.register("rounds", "Rounds closed", rounds.clone());
        r.register(
            "rounds_failed",
            "Rounds whose aggregation refused (global unchanged)",
            rounds_failed.clone(),
        );
        r.register(
            "round_latency_seconds",
            "Time from a round's opening to its close",
            round_latency.clone(),
        );
        r.register(
            "payload_bytes_in",
            "Payload bytes received in update chunks",
            bytes_in.clone(),
        );
        r.register(
            "payload_bytes_out",
            "Payload bytes sent in global adapter chunks",
            bytes_out.clone(),
        );
        r.register(
            "socket_bytes_read",
            "Bytes read from node sockets (gRPC: TLS records; libp2p: Noise and yamux framing)",
            socket_read.clone(),
        );
        r.register(
            "socket_bytes_written",
            "Bytes written to node sockets (gRPC: TLS records; libp2p: Noise and yamux framing)",
            socket_written.clone(),
        );
        r.register("updates_accepted", "Updates accepted", accepted.clone());
        r.register(
            "updates_rejected",
            "Updates and registrations refused, by reason",
            rejected.clone(),
        );
        r.register(
            "node_last_seen_unix_seconds",
            "Last request from each node",
            last_seen.clone(),
        );
        r.register("current_round", "The open round", current_round.clone());
        r.register(
            "drawn_nodes",
            "Client sampling: nodes drawn for the open round (0: every node, or the draw waits)",
            drawn_nodes.clone(),
        );
        r.register(
            "dp_epsilon",
            "Central DP: epsilon spent over the closed rounds at the configured delta (0 when off)",
            dp_epsilon.clone(),
        );
        r.register(
            "dp_clip",
            "Central DP: the clip bound of the open round (0 when off)",
            dp_clip.clone(),
        );
        Self {
            registry: Arc::new(r),
            rounds,
            rounds_failed,
            round_latency,
            bytes_in,
            bytes_out,
            socket_read,
            socket_written,
            accepted,
            rejected,
            last_seen,
            current_round,
            drawn_nodes,
            dp_epsilon,
            dp_clip,
        }
    }

    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn seen(&self, node: &str, unix_s: i64) {
        self.last_seen
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .set(unix_s);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut s, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        s
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` for [`serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_reason() {
        let m = Metrics::new();
        m.reject("duplicate");
        m.reject("duplicate");
        m.seen("n1", 42);
        let text = m.render();
        assert!(
            text.contains("ruvdllm_coordinator_updates_rejected_total{reason=\"duplicate\"} 2"),
            "{text}"
        );
        assert!(text.contains("node=\"n1\"} 42"), "{text}");
    }
}
