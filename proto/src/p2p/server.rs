//! The server actor: one task owns the swarm, a `ServerHandle` talks to it through a bounded
//! command channel. Requests are answered asynchronously — each runs the caller's handler in its
//! own task (at most `max_concurrent_requests` at once, more are answered "busy"), so a long-poll
//! that waits for the next round does not hold up a chunk download behind it. Peers are checked
//! against the allowlist file (re-read when it changes) on connection and on every request.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use libp2p::core::ConnectedPoint;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use super::allowlist_file::{AllowlistFile, Refresh};
use super::codec::Reply;
use super::config::Config;
use super::counters::{Counters, PeerCounters, PendingConnections};
use super::error::P2pError;
use super::transport::{self, Behaviour, close_connections};

/// Who sent a request: the authenticated peer id and its name from the allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub peer: PeerId,
    pub name: String,
}

/// Answers one request. Called for every request from an allowed peer; the returned future runs
/// in its own task. `Err(message)` reaches the client as `P2pError::Remote { message }`.
pub type Handler =
    Arc<dyn Fn(Identity, Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> + Send + Sync>;

const COMMAND_CAPACITY: usize = 16;

enum Command {
    Shutdown,
    ConnectedPeers(oneshot::Sender<Vec<Identity>>),
}

/// A cheap, cloneable handle to a running server.
#[derive(Clone)]
pub struct ServerHandle {
    peer_id: PeerId,
    listen_addr: Multiaddr,
    commands: mpsc::Sender<Command>,
    total: Arc<Counters>,
    peers: Arc<PeerCounters>,
}

impl ServerHandle {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The address clients dial, ending in `/p2p/<server peer id>`.
    pub fn listen_addr(&self) -> &Multiaddr {
        &self.listen_addr
    }

    /// Bytes at the socket over all connections, refused ones included.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.total)
    }

    /// Bytes at the socket per allowed peer.
    pub fn peer_counters(&self) -> Arc<PeerCounters> {
        Arc::clone(&self.peers)
    }

    /// The allowed peers connected now.
    pub async fn connected_peers(&self) -> Result<Vec<Identity>, P2pError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::ConnectedPeers(tx))
            .await
            .map_err(|_| P2pError::Shutdown)?;
        rx.await.map_err(|_| P2pError::Shutdown)
    }

    /// Stops listening, lets running handlers answer (up to `shutdown_grace`), then closes every
    /// connection. Await the join handle from `Server::spawn` to know it is done.
    pub async fn shutdown(&self) {
        // An error means the actor is already gone, which is what was asked for.
        let _ = self.commands.send(Command::Shutdown).await;
    }
}

pub struct Server;

impl Server {
    /// Listens on `listen` (e.g. `/ip4/0.0.0.0/tcp/7000`, or port 0 for any) with `keypair`'s
    /// identity and serves `/ruvdllm/1.0.0` with `handler` to the peers on the allowlist file.
    /// Returns once the listener is up; the handle carries the actual address.
    pub async fn spawn(
        keypair: Keypair,
        listen: Multiaddr,
        allowlist: impl Into<PathBuf>,
        handler: Handler,
        config: Config,
    ) -> Result<(ServerHandle, tokio::task::JoinHandle<()>), P2pError> {
        config.validate()?;
        let allowlist = AllowlistFile::open(allowlist)?;
        let total = Arc::new(Counters::default());
        let pending = Arc::new(PendingConnections::default());
        let transport = transport::build(
            &keypair,
            &config,
            Arc::clone(&total),
            Some(Arc::clone(&pending)),
        )?;
        let mut swarm = transport::swarm(&keypair, &config, transport, ProtocolSupport::Inbound);
        let listener = swarm
            .listen_on(listen.clone())
            .map_err(|e| P2pError::Listen {
                addr: listen.to_string(),
                reason: e.to_string(),
            })?;
        let bound = wait_for_listen_addr(&mut swarm, &listen, &config).await?;
        let peer_id = *swarm.local_peer_id();
        let listen_addr = bound.with(Protocol::P2p(peer_id));
        tracing::info!(%listen_addr, allowed = allowlist.current().len(), "p2p server listening");

        let (commands_tx, commands) = mpsc::channel(COMMAND_CAPACITY);
        let peers = Arc::new(PeerCounters::default());
        let event_loop = EventLoop {
            swarm,
            listener: Some(listener),
            commands,
            allowlist,
            handler,
            config,
            tasks: JoinSet::new(),
            unsent: HashSet::new(),
            pending,
            peers: Arc::clone(&peers),
            drain_deadline: None,
        };
        let join = tokio::spawn(event_loop.run());
        let handle = ServerHandle {
            peer_id,
            listen_addr,
            commands: commands_tx,
            total,
            peers,
        };
        Ok((handle, join))
    }
}

async fn wait_for_listen_addr(
    swarm: &mut Swarm<Behaviour>,
    listen: &Multiaddr,
    config: &Config,
) -> Result<Multiaddr, P2pError> {
    let failed = |reason: String| P2pError::Listen {
        addr: listen.to_string(),
        reason,
    };
    let wait = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => return Ok(address),
                SwarmEvent::ListenerError { error, .. } => return Err(failed(error.to_string())),
                SwarmEvent::ListenerClosed { reason, .. } => {
                    let why = reason.err().map(|e| e.to_string());
                    return Err(failed(why.unwrap_or_else(|| "listener closed".into())));
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(config.handshake_timeout, wait)
        .await
        .map_err(|_| failed("no listen address reported in time".into()))?
}

type Answered = (InboundRequestId, ResponseChannel<Reply>, Reply);

struct EventLoop {
    swarm: Swarm<Behaviour>,
    listener: Option<libp2p::core::transport::ListenerId>,
    commands: mpsc::Receiver<Command>,
    allowlist: AllowlistFile,
    handler: Handler,
    config: Config,
    /// Running handlers; each yields the response to send.
    tasks: JoinSet<Answered>,
    /// Responses handed to the swarm but not yet confirmed flushed.
    unsent: HashSet<InboundRequestId>,
    pending: Arc<PendingConnections>,
    peers: Arc<PeerCounters>,
    drain_deadline: Option<Instant>,
}

impl EventLoop {
    async fn run(mut self) {
        let mut poll = tokio::time::interval(self.config.allowlist_poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut linger_until: Option<Instant> = None;
        loop {
            if self.drain_deadline.is_some() && self.tasks.is_empty() && self.unsent.is_empty() {
                // Every answer is flushed; give peers a moment to read it before closing, since
                // a close right behind a response can reach a peer before it consumed the data.
                let until = *linger_until.get_or_insert_with(|| Instant::now() + CLOSE_LINGER);
                if Instant::now() >= until || self.swarm.connected_peers().next().is_none() {
                    break;
                }
            }
            let deadline = self.drain_deadline;
            let wake = match (deadline, linger_until) {
                (Some(d), Some(l)) => Some(d.min(l)),
                (d, l) => d.or(l),
            };
            tokio::select! {
                cmd = self.commands.recv(), if deadline.is_none() => match cmd {
                    Some(Command::Shutdown) | None => self.begin_drain(),
                    Some(Command::ConnectedPeers(reply)) => {
                        let _ = reply.send(self.connected_identities());
                    }
                },
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.answered(joined);
                }
                _ = poll.tick() => self.refresh_allowlist(),
                event = self.swarm.select_next_some() => self.on_event(event),
                _ = sleep_until_opt(wake), if wake.is_some() => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        tracing::warn!(running = self.tasks.len(), "shutdown grace over; dropping unanswered requests");
                        break;
                    }
                }
            }
        }
        self.tasks.abort_all();
        close_connections(&mut self.swarm).await;
        tracing::info!("p2p server stopped");
    }

    fn begin_drain(&mut self) {
        tracing::info!(running = self.tasks.len(), "p2p server shutting down");
        if let Some(id) = self.listener.take() {
            self.swarm.remove_listener(id);
        }
        self.drain_deadline = Some(Instant::now() + self.config.shutdown_grace);
    }

    fn connected_identities(&self) -> Vec<Identity> {
        let list = self.allowlist.current();
        self.swarm
            .connected_peers()
            .filter_map(|p| {
                list.name(p).map(|name| Identity {
                    peer: *p,
                    name: name.to_string(),
                })
            })
            .collect()
    }

    /// Re-reads the allowlist if it changed and drops connections of peers no longer on it.
    fn refresh_allowlist(&mut self) {
        match self.allowlist.refresh() {
            Ok(Refresh::Unchanged) => {}
            Ok(Refresh::Reloaded) => {
                let list = self.allowlist.current();
                tracing::info!(allowed = list.len(), path = %self.allowlist.path().display(), "allowlist reloaded");
                let removed: Vec<PeerId> = self
                    .swarm
                    .connected_peers()
                    .filter(|p| !list.contains(p))
                    .copied()
                    .collect();
                for peer in removed {
                    tracing::info!(%peer, "peer removed from the allowlist; disconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "allowlist not reloaded; the previous list stays in force")
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<request_response::Event<Vec<u8>, Reply>>) {
        match event {
            SwarmEvent::Behaviour(request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            }) => self.on_request(peer, request_id, request, channel),
            SwarmEvent::Behaviour(request_response::Event::ResponseSent { request_id, .. }) => {
                self.unsent.remove(&request_id);
            }
            SwarmEvent::Behaviour(request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                self.unsent.remove(&request_id);
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            SwarmEvent::Behaviour(other) => tracing::trace!(?other, "ignored behaviour event"),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.refresh_allowlist();
                let conn = match &endpoint {
                    ConnectedPoint::Listener { send_back_addr, .. } => {
                        self.pending.take(send_back_addr)
                    }
                    ConnectedPoint::Dialer { .. } => None,
                };
                let list = self.allowlist.current();
                match list.name(&peer_id) {
                    Some(name) => {
                        if let Some(conn) = conn {
                            conn.attach(self.peers.entry(peer_id));
                        }
                        tracing::info!(peer = %peer_id, node = name, "peer connected");
                    }
                    None => {
                        tracing::warn!(peer = %peer_id, remote = %endpoint.get_remote_address(), "peer not on the allowlist; closing the connection");
                        self.swarm.close_connection(connection_id);
                    }
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                drop(self.pending.take(&send_back_addr));
                tracing::debug!(remote = %send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                tracing::debug!(peer = %peer_id, cause = ?cause, "connection closed");
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::error!(%error, "listener error");
            }
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        request_id: InboundRequestId,
        request: Vec<u8>,
        channel: ResponseChannel<Reply>,
    ) {
        self.refresh_allowlist();
        let name = self.allowlist.current().name(&peer).map(str::to_string);
        let refusal = match &name {
            _ if self.drain_deadline.is_some() => Some(Reply::Busy("server shutting down".into())),
            None => {
                tracing::warn!(%peer, "request from a peer not on the allowlist");
                Some(Reply::Unauthorized)
            }
            Some(_) if self.tasks.len() >= self.config.max_concurrent_requests => Some(
                Reply::Busy(format!("{} requests already running", self.tasks.len())),
            ),
            Some(_) => None,
        };
        if let Some(reply) = refusal {
            self.respond(request_id, channel, reply);
            return;
        }
        let identity = Identity {
            peer,
            name: name.unwrap_or_default(),
        };
        let handler = Arc::clone(&self.handler);
        let timeout = self.config.request_timeout;
        let max = self.config.max_message_size;
        tracing::debug!(node = %identity.name, bytes = request.len(), "request");
        self.tasks.spawn(async move {
            let work = AssertUnwindSafe(async move { handler(identity, request).await });
            let reply = match tokio::time::timeout(timeout, work.catch_unwind()).await {
                Err(_) => Reply::Failed(format!("handler did not answer within {timeout:?}")),
                Ok(Err(_)) => Reply::Failed("handler panicked".into()),
                Ok(Ok(Ok(bytes))) if bytes.len() > max => Reply::Failed(format!(
                    "response of {} bytes exceeds the limit of {max} bytes",
                    bytes.len()
                )),
                Ok(Ok(Ok(bytes))) => Reply::Ok(bytes),
                Ok(Ok(Err(message))) => Reply::Failed(truncate(message, max)),
            };
            (request_id, channel, reply)
        });
    }

    fn answered(&mut self, joined: Result<Answered, JoinError>) {
        match joined {
            Ok((request_id, channel, reply)) => self.respond(request_id, channel, reply),
            Err(e) => tracing::error!(error = %e, "request task ended without an answer"),
        }
    }

    fn respond(&mut self, id: InboundRequestId, channel: ResponseChannel<Reply>, reply: Reply) {
        if self
            .swarm
            .behaviour_mut()
            .send_response(channel, reply)
            .is_ok()
        {
            self.unsent.insert(id);
        } else {
            tracing::debug!("requester went away before the response");
        }
    }
}

/// After the last answer of a shutdown is flushed, connections stay open this long (at most).
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_millis(250);

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => futures::future::pending().await,
    }
}

fn truncate(mut message: String, max: usize) -> String {
    if message.len() > max {
        let mut cut = max;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("hello".into(), 10), "hello");
        assert_eq!(truncate("hello".into(), 3), "hel");
    }
}
