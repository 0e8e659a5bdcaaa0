//! Bytes counted at the socket. The simulation compares payload sizes with what really crossed
//! the wire, and Prometheus exports the same numbers, so counting happens on the raw TCP stream,
//! below Noise and yamux: handshakes, framing, encryption tags and window updates all count.
//!
//! A connection's peer is only known after the Noise handshake, so each connection first counts
//! into its own `ConnectionCounters`; once the server has checked the peer against its allowlist it
//! `attach`es the peer's shared `Counters`, which absorb the early bytes and all later ones.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use libp2p::{Multiaddr, PeerId};

/// Byte totals, shared by reference (`Arc<Counters>`) with whoever reports them.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// A copy of `Counters` at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteCount {
    pub sent: u64,
    pub received: u64,
}

impl Counters {
    pub fn snapshot(&self) -> ByteCount {
        ByteCount {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }

    fn add(&self, sent: u64, received: u64) {
        if sent > 0 {
            self.sent.fetch_add(sent, Ordering::Relaxed);
        }
        if received > 0 {
            self.received.fetch_add(received, Ordering::Relaxed);
        }
    }
}

/// One connection's counting target: its own early counters until a peer is attached.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCounters {
    early: Counters,
    peer: OnceLock<Arc<Counters>>,
}

impl ConnectionCounters {
    fn add(&self, sent: u64, received: u64) {
        match self.peer.get() {
            Some(peer) => {
                peer.add(sent, received);
                // Bytes an I/O call put in `early` while `attach` ran move over here.
                if self.early.sent.load(Ordering::Relaxed) != 0
                    || self.early.received.load(Ordering::Relaxed) != 0
                {
                    self.drain_early_into(peer);
                }
            }
            None => self.early.add(sent, received),
        }
    }

    /// Routes this connection's bytes, past and future, to `peer`. Only the first call counts.
    pub(crate) fn attach(&self, peer: Arc<Counters>) {
        if self.peer.set(Arc::clone(&peer)).is_ok() {
            self.drain_early_into(&peer);
        }
    }

    fn drain_early_into(&self, peer: &Counters) {
        let sent = self.early.sent.swap(0, Ordering::Relaxed);
        let received = self.early.received.swap(0, Ordering::Relaxed);
        peer.add(sent, received);
    }
}

/// A byte stream that counts every byte read and written into a total and a per-connection target.
#[derive(Debug)]
pub(crate) struct CountingStream<S> {
    inner: S,
    total: Arc<Counters>,
    conn: Arc<ConnectionCounters>,
}

impl<S> CountingStream<S> {
    pub(crate) fn new(inner: S, total: Arc<Counters>, conn: Arc<ConnectionCounters>) -> Self {
        Self { inner, total, conn }
    }

    fn count(&self, sent: usize, received: usize) {
        self.total.add(sent as u64, received as u64);
        self.conn.add(sent as u64, received as u64);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.count(0, n);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.count(n, 0);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Inbound connections whose peer is not known yet, keyed by the remote socket address (unique
/// among live TCP connections). Entries are weak: a connection that fails its handshake drops its
/// counters and the entry is pruned, so the map cannot grow beyond the live handshakes.
#[derive(Debug, Default)]
pub(crate) struct PendingConnections {
    map: Mutex<HashMap<Multiaddr, Weak<ConnectionCounters>>>,
}

/// Above this many entries, each insert first prunes the dead ones.
const PRUNE_ABOVE: usize = 64;

impl PendingConnections {
    pub(crate) fn insert(&self, remote: Multiaddr, conn: &Arc<ConnectionCounters>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PRUNE_ABOVE {
            map.retain(|_, w| w.strong_count() > 0);
        }
        map.insert(remote, Arc::downgrade(conn));
    }

    pub(crate) fn take(&self, remote: &Multiaddr) -> Option<Arc<ConnectionCounters>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(remote).and_then(|w| w.upgrade())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

/// Per-peer counters on the server, one entry per allowed peer ever seen.
#[derive(Debug, Default)]
pub struct PeerCounters {
    map: Mutex<HashMap<PeerId, Arc<Counters>>>,
}

impl PeerCounters {
    /// The counters of `peer`, created on first use.
    pub(crate) fn entry(&self, peer: PeerId) -> Arc<Counters> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(peer).or_default())
    }

    /// The counters of `peer`, if it ever connected while allowed.
    pub fn get(&self, peer: &PeerId) -> Option<Arc<Counters>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(peer).cloned()
    }

    /// A snapshot of every peer's bytes.
    pub fn snapshot(&self) -> HashMap<PeerId, ByteCount> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(p, c)| (*p, c.snapshot())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::{AsyncReadExt, AsyncWriteExt, Cursor};

    #[test]
    fn counts_reads_and_writes_into_total_and_attached_peer() {
        futures::executor::block_on(async {
            let total = Arc::new(Counters::default());
            let conn = Arc::new(ConnectionCounters::default());
            let mut s = CountingStream::new(
                Cursor::new(vec![7u8; 100]),
                Arc::clone(&total),
                Arc::clone(&conn),
            );
            let mut buf = [0u8; 30];
            s.read_exact(&mut buf).await.unwrap();
            let peer = Arc::new(Counters::default());
            conn.attach(Arc::clone(&peer));
            assert_eq!(
                peer.snapshot(),
                ByteCount {
                    sent: 0,
                    received: 30
                }
            );
            s.write_all(&[1u8; 12]).await.unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            assert_eq!(
                total.snapshot(),
                ByteCount {
                    sent: 12,
                    received: 30 + 58
                }
            );
            assert_eq!(peer.snapshot(), total.snapshot());
            // A second attach does not move the bytes again.
            conn.attach(Arc::new(Counters::default()));
            assert_eq!(peer.snapshot(), total.snapshot());
        });
    }

    #[test]
    fn pending_entries_die_with_their_connection() {
        let pending = PendingConnections::default();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4000".parse().unwrap();
        let conn = Arc::new(ConnectionCounters::default());
        pending.insert(addr.clone(), &conn);
        assert!(pending.take(&addr).is_some());
        assert!(pending.take(&addr).is_none());
        for port in 0..(PRUNE_ABOVE as u16 * 2) {
            let dead = Arc::new(ConnectionCounters::default());
            let a: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
            pending.insert(a, &dead);
        }
        assert!(pending.len() <= PRUNE_ABOVE + 1);
    }
}
