//! Client-side byte counting at the socket.
//!
//! The gRPC client can dial through [`connector`], which opens a plain TCP connection and wraps it
//! in a [`CountingStream`]; tonic then runs TLS and HTTP/2 on top, so the counters see exactly
//! what crosses the wire — TLS records, HTTP/2 framing and payload — the same quantity the
//! coordinator counts on its side of the connection. A simulation reads them to report bytes per
//! node beside the codec's payload size.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper_util::rt::TokioIo;
use ruvdllm_proto::counting::{ByteCounter, CountingIo};
use tokio::net::TcpStream;
use tonic::transport::Uri;

/// Bytes read from and written to every connection dialled through one connector.
#[derive(Debug, Clone, Default)]
pub struct SocketCounters {
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl SocketCounters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes received so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Bytes sent so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

impl ByteCounter for SocketCounters {
    fn add_read(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
    }

    fn add_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }
}

/// A TCP stream that adds its traffic to [`SocketCounters`].
pub type CountingStream = CountingIo<TcpStream, SocketCounters>;

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<CountingStream>>> + Send>>;

/// A tonic connector (`Service<Uri>`) dialling `host:port` of the URI over counted TCP.
pub fn connector(
    counters: SocketCounters,
) -> impl tower::Service<Uri, Response = TokioIo<CountingStream>, Error = io::Error, Future = Connecting>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: Uri| -> Connecting {
        let counters = counters.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{uri} has no host"))
            })?;
            let port = uri.port_u16().unwrap_or(443);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(CountingStream::new(tcp, counters)))
        })
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn counts_both_directions() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(b"abc").await.unwrap();
        });
        let counters = SocketCounters::new();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut c = CountingStream::new(tcp, counters.clone());
        c.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 3];
        c.read_exact(&mut buf).await.unwrap();
        server.await.unwrap();
        assert_eq!((counters.written(), counters.read()), (5, 3));
    }
}
