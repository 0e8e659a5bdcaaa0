//! Byte counting at the socket for the gRPC transport (the libp2p transport has its own, on
//! `futures` streams and with per-peer attribution: [`crate::p2p`]).
//!
//! [`CountingIo`] wraps a tokio byte stream and adds every byte read and written to a
//! [`ByteCounter`]. Both ends wrap the raw TCP stream and let tonic run TLS and HTTP/2 on top, so
//! the counters see exactly what crosses the wire — TLS records, HTTP/2 framing and payload: the
//! node through its connector, the coordinator through its accept loop (into Prometheus counters).
//! Over TCP the wrapper reports the inner stream's `TcpConnectInfo`, which keeps
//! `Request::peer_certs` working on the server.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Where a [`CountingIo`] adds its traffic.
pub trait ByteCounter: Unpin {
    fn add_read(&self, n: u64);
    fn add_written(&self, n: u64);
}

/// A byte stream that adds its traffic to a [`ByteCounter`].
#[derive(Debug)]
pub struct CountingIo<S, C> {
    inner: S,
    counter: C,
}

impl<S, C> CountingIo<S, C> {
    pub fn new(inner: S, counter: C) -> Self {
        Self { inner, counter }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<C: ByteCounter> Connected for CountingIo<TcpStream, C> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin, C: ByteCounter> AsyncRead for CountingIo<S, C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.counter.add_read(n as u64);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin, C: ByteCounter> AsyncWrite for CountingIo<S, C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.counter.add_written(*n as u64);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            self.counter.add_written(*n as u64);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[derive(Default, Clone)]
    struct Totals(Arc<(AtomicU64, AtomicU64)>);

    impl ByteCounter for Totals {
        fn add_read(&self, n: u64) {
            self.0.0.fetch_add(n, Ordering::Relaxed);
        }
        fn add_written(&self, n: u64) {
            self.0.1.fetch_add(n, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn counts_both_directions_on_both_ends() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server_totals = Totals::default();
        let st = server_totals.clone();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut s = CountingIo::new(s, st);
            assert!(s.connect_info().remote_addr.is_some());
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(b"abc").await.unwrap();
            buf
        });
        let client_totals = Totals::default();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut c = CountingIo::new(tcp, client_totals.clone());
        c.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 3];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&server.await.unwrap(), b"hello");
        assert_eq!(&buf, b"abc");
        let get = |t: &Totals| (t.0.0.load(Ordering::Relaxed), t.0.1.load(Ordering::Relaxed));
        assert_eq!(get(&client_totals), (3, 5));
        assert_eq!(get(&server_totals), (5, 3));
    }
}
