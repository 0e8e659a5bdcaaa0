//! Byte counting at the socket, server side: the gRPC server accepts [`Counting`] streams
//! (`ruvdllm_proto::counting::CountingIo` over the raw TCP stream) instead of bare `TcpStream`s,
//! adding every byte read and written to Prometheus counters. tonic performs the TLS handshake on
//! top of them, so the counters see exactly what crosses the wire — TLS records, HTTP/2 framing
//! and payload. (The chunk handlers count payload bytes separately; the difference is the
//! protocol overhead.)

use prometheus_client::metrics::counter::Counter;
use ruvdllm_proto::counting::{ByteCounter, CountingIo};
use tokio::net::TcpStream;

/// The coordinator's socket counters (exported in `/metrics`).
#[derive(Debug, Clone)]
pub struct PromCounters {
    pub read: Counter,
    pub written: Counter,
}

impl ByteCounter for PromCounters {
    fn add_read(&self, n: u64) {
        self.read.inc_by(n);
    }

    fn add_written(&self, n: u64) {
        self.written.inc_by(n);
    }
}

/// An accepted TCP stream that counts its traffic.
pub type Counting = CountingIo<TcpStream, PromCounters>;

/// Wraps an accepted stream.
pub fn counting(inner: TcpStream, read: Counter, written: Counter) -> Counting {
    CountingIo::new(inner, PromCounters { read, written })
}
