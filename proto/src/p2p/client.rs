//! The client actor: a `Client` handle sends `Command`s over a bounded channel to one task that
//! owns the swarm and keeps a connection to the server. When the connection drops it redials with
//! exponential backoff; requests made meanwhile wait (bounded in number and in time, see
//! `Config::connect_timeout`) and go out as soon as the connection is back. A request already on
//! the wire when the connection drops fails with `ConnectionClosed`: only the caller knows whether
//! it is safe to repeat.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::codec::{FrameTooLarge, Reply};
use super::config::Config;
use super::counters::Counters;
use super::error::P2pError;
use super::transport::{self, Behaviour};

const COMMAND_CAPACITY: usize = 64;

type ReplyTx = oneshot::Sender<Result<Vec<u8>, P2pError>>;

enum Command {
    Request { bytes: Vec<u8>, reply: ReplyTx },
    Shutdown,
}

/// A connection to one server. `request` may be called from many tasks at once (`&self`).
pub struct Client {
    commands: mpsc::Sender<Command>,
    server: PeerId,
    local: PeerId,
    max_message_size: usize,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Starts the client actor for the server at `server_addr`, which must end in
    /// `/p2p/<server peer id>` (the id Noise will verify). Must be called inside a tokio runtime.
    /// Returns at once; the first request waits for the connection.
    pub fn connect(
        keypair: Keypair,
        server_addr: Multiaddr,
        config: Config,
    ) -> Result<Client, P2pError> {
        config.validate()?;
        let (server, dial_addr) = split_peer(&server_addr)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| P2pError::Transport {
            reason: format!("Client::connect needs a tokio runtime: {e}"),
        })?;
        let counters = Arc::new(Counters::default());
        let transport = transport::build(&keypair, &config, Arc::clone(&counters), None)?;
        let mut swarm = transport::swarm(&keypair, &config, transport, ProtocolSupport::Outbound);
        swarm.add_peer_address(server, dial_addr.clone());
        let local = *swarm.local_peer_id();
        let (commands_tx, commands) = mpsc::channel(COMMAND_CAPACITY);
        let seed = u64::from_le_bytes(local.to_bytes()[2..10].try_into().unwrap_or([7; 8]));
        let event_loop = EventLoop {
            swarm,
            server,
            dial_addr,
            commands,
            backoff: Backoff::new(config.backoff_initial, config.backoff_max, seed),
            config: config.clone(),
            queue: VecDeque::new(),
            inflight: HashMap::new(),
            connections: 0,
            dialing: false,
            next_dial: Some(Instant::now()),
            last_error: "not dialed yet".into(),
        };
        let task = runtime.spawn(event_loop.run());
        Ok(Client {
            commands: commands_tx,
            server,
            local,
            max_message_size: config.max_message_size,
            counters,
            task,
        })
    }

    /// Sends `bytes` and waits for the server's answer.
    pub async fn request(&self, bytes: Vec<u8>) -> Result<Vec<u8>, P2pError> {
        if bytes.len() > self.max_message_size {
            return Err(P2pError::MessageTooLarge {
                size: bytes.len(),
                max: self.max_message_size,
            });
        }
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Request { bytes, reply })
            .await
            .map_err(|_| P2pError::Shutdown)?;
        rx.await.map_err(|_| P2pError::Shutdown)?
    }

    pub fn server_peer_id(&self) -> PeerId {
        self.server
    }

    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Bytes at the socket over every connection this client made.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Fails pending requests with `Shutdown`, closes the connection and waits for the actor.
    pub async fn shutdown(self) {
        let _ = self.commands.send(Command::Shutdown).await;
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "p2p client task failed");
        }
    }
}

/// `/ip4/../tcp/../p2p/<id>` → (id, address without the `/p2p` part).
fn split_peer(addr: &Multiaddr) -> Result<(PeerId, Multiaddr), P2pError> {
    let mut dial = addr.clone();
    match dial.pop() {
        Some(Protocol::P2p(peer)) if !dial.is_empty() => Ok((peer, dial)),
        _ => Err(P2pError::InvalidAddress {
            addr: addr.to_string(),
            reason: "expected a transport address ending in /p2p/<server peer id>".into(),
        }),
    }
}

struct Queued {
    bytes: Vec<u8>,
    reply: ReplyTx,
    deadline: Instant,
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    server: PeerId,
    dial_addr: Multiaddr,
    commands: mpsc::Receiver<Command>,
    backoff: Backoff,
    config: Config,
    /// Requests waiting for a connection, oldest (earliest deadline) first.
    queue: VecDeque<Queued>,
    inflight: HashMap<OutboundRequestId, ReplyTx>,
    connections: u32,
    dialing: bool,
    next_dial: Option<Instant>,
    last_error: String,
}

impl EventLoop {
    async fn run(mut self) {
        loop {
            let wake = match (self.next_dial, self.queue.front().map(|q| q.deadline)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Request { bytes, reply }) => self.on_request(bytes, reply),
                    Some(Command::Shutdown) | None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
                _ = sleep_until_opt(wake), if wake.is_some() => self.on_timer(),
            }
        }
        for q in self.queue.drain(..) {
            let _ = q.reply.send(Err(P2pError::Shutdown));
        }
        for (_, reply) in self.inflight.drain() {
            let _ = reply.send(Err(P2pError::Shutdown));
        }
        transport::close_connections(&mut self.swarm).await;
        tracing::debug!("p2p client stopped");
    }

    fn on_request(&mut self, bytes: Vec<u8>, reply: ReplyTx) {
        let limit = self.config.max_concurrent_requests;
        if self.queue.len() + self.inflight.len() >= limit {
            let _ = reply.send(Err(P2pError::TooManyRequests { limit }));
            return;
        }
        if self.connections > 0 {
            self.send(bytes, reply);
        } else {
            self.queue.push_back(Queued {
                bytes,
                reply,
                deadline: Instant::now() + self.config.connect_timeout,
            });
            if !self.dialing && self.next_dial.is_none() {
                self.next_dial = Some(Instant::now());
            }
        }
    }

    fn send(&mut self, bytes: Vec<u8>, reply: ReplyTx) {
        let id = self.swarm.behaviour_mut().send_request(&self.server, bytes);
        self.inflight.insert(id, reply);
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.next_dial.is_some_and(|t| t <= now) {
            self.next_dial = None;
            self.dial();
        }
        while self.queue.front().is_some_and(|q| q.deadline <= now) {
            if let Some(q) = self.queue.pop_front() {
                let _ = q.reply.send(Err(P2pError::NotConnected {
                    peer: self.server.to_string(),
                    waited: self.config.connect_timeout,
                    last_error: self.last_error.clone(),
                }));
            }
        }
    }

    fn dial(&mut self) {
        let opts = DialOpts::peer_id(self.server)
            .addresses(vec![self.dial_addr.clone()])
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => self.dialing = true,
            Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => {
                self.last_error = e.to_string();
                self.schedule_redial();
            }
        }
    }

    fn schedule_redial(&mut self) {
        let delay = self.backoff.next_delay();
        tracing::debug!(server = %self.server, ?delay, error = %self.last_error, "redial scheduled");
        self.next_dial = Some(Instant::now() + delay);
    }

    fn on_event(&mut self, event: SwarmEvent<request_response::Event<Vec<u8>, Reply>>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } if peer_id == self.server => {
                self.connections = num_established.get();
                self.dialing = false;
                self.next_dial = None;
                tracing::debug!(server = %peer_id, "connected");
                while let Some(q) = self.queue.pop_front() {
                    self.send(q.bytes, q.reply);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } if peer_id == self.server => {
                self.connections = num_established;
                if num_established == 0 {
                    self.last_error = match cause {
                        Some(c) => format!("connection closed: {c}"),
                        None => "connection closed".into(),
                    };
                    tracing::info!(server = %peer_id, reason = %self.last_error, "connection lost; reconnecting");
                    self.schedule_redial();
                }
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                self.dialing = false;
                self.last_error = error.to_string();
                if self.connections == 0 && self.next_dial.is_none() {
                    self.schedule_redial();
                }
            }
            SwarmEvent::Behaviour(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            }) => {
                if matches!(response, Reply::Ok(_) | Reply::Failed(_)) {
                    self.backoff.reset();
                }
                if let Some(reply) = self.inflight.remove(&request_id) {
                    let _ = reply.send(into_result(response));
                }
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            }) => {
                if let Some(reply) = self.inflight.remove(&request_id) {
                    let _ = reply.send(Err(self.failure(error)));
                }
            }
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    fn failure(&self, error: OutboundFailure) -> P2pError {
        match error {
            OutboundFailure::Timeout => P2pError::Timeout,
            OutboundFailure::ConnectionClosed => P2pError::ConnectionClosed,
            OutboundFailure::DialFailure => P2pError::NotConnected {
                peer: self.server.to_string(),
                waited: std::time::Duration::ZERO,
                last_error: self.last_error.clone(),
            },
            OutboundFailure::UnsupportedProtocols => P2pError::Stream {
                reason: "the server does not speak /ruvdllm/1.0.0".into(),
            },
            OutboundFailure::Io(e) => {
                match e.get_ref().and_then(|r| r.downcast_ref::<FrameTooLarge>()) {
                    Some(f) => P2pError::MessageTooLarge {
                        size: f.size,
                        max: f.max,
                    },
                    None => P2pError::Stream {
                        reason: e.to_string(),
                    },
                }
            }
        }
    }
}

fn into_result(reply: Reply) -> Result<Vec<u8>, P2pError> {
    match reply {
        Reply::Ok(bytes) => Ok(bytes),
        Reply::Failed(message) => Err(P2pError::Remote { message }),
        Reply::Unauthorized => Err(P2pError::Unauthorized),
        Reply::Busy(reason) => Err(P2pError::Busy { reason }),
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => futures::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_address_must_name_the_peer() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let ok: Multiaddr = format!("/ip4/127.0.0.1/tcp/7000/p2p/{peer}")
            .parse()
            .unwrap();
        let (p, dial) = split_peer(&ok).unwrap();
        assert_eq!(p, peer);
        assert_eq!(dial.to_string(), "/ip4/127.0.0.1/tcp/7000");
        let bare: Multiaddr = "/ip4/127.0.0.1/tcp/7000".parse().unwrap();
        assert!(matches!(
            split_peer(&bare),
            Err(P2pError::InvalidAddress { .. })
        ));
        let only: Multiaddr = format!("/p2p/{peer}").parse().unwrap();
        assert!(split_peer(&only).is_err());
    }

    #[test]
    fn replies_map_to_results() {
        assert_eq!(into_result(Reply::Ok(vec![1])).unwrap(), vec![1]);
        assert!(matches!(
            into_result(Reply::Unauthorized),
            Err(P2pError::Unauthorized)
        ));
        assert!(matches!(
            into_result(Reply::Failed("x".into())),
            Err(P2pError::Remote { .. })
        ));
        assert!(matches!(
            into_result(Reply::Busy("x".into())),
            Err(P2pError::Busy { .. })
        ));
    }
}
