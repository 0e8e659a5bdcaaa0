//! The connection stack both actors use: TCP (nodelay) → byte counting → multistream-select →
//! Noise (authenticates the remote's peer id) → yamux (many requests share one connection), and on
//! top the `/ruvdllm/1.0.0` request-response behaviour. QUIC is left out on purpose: it pulls a
//! second TLS provider (aws-lc) into every build for little gain on a coordinator link.

use std::sync::Arc;

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::{PeerId, Swarm, Transport, noise, tcp, yamux};

use super::codec::{Codec, PROTOCOL};
use super::config::Config;
use super::counters::{ConnectionCounters, Counters, CountingStream, PendingConnections};
use super::error::P2pError;

pub(crate) type Behaviour = request_response::Behaviour<Codec>;

/// Builds the authenticated, multiplexed transport. Every byte of every connection is added to
/// `total`; inbound connections are also registered in `pending` (when given) under their remote
/// address, so the server can route their bytes to the peer once it knows who it is.
pub(crate) fn build(
    keypair: &Keypair,
    config: &Config,
    total: Arc<Counters>,
    pending: Option<Arc<PendingConnections>>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, P2pError> {
    let noise = noise::Config::new(keypair).map_err(|e| P2pError::Transport {
        reason: format!("noise: {e}"),
    })?;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let transport = tcp
        .map(move |stream, endpoint| {
            let conn = Arc::new(ConnectionCounters::default());
            if let (Some(pending), ConnectedPoint::Listener { send_back_addr, .. }) =
                (&pending, &endpoint)
            {
                pending.insert(send_back_addr.clone(), &conn);
            }
            CountingStream::new(stream, Arc::clone(&total), conn)
        })
        .upgrade(Version::V1)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(config.handshake_timeout)
        .boxed();
    Ok(transport)
}

/// A swarm speaking only `/ruvdllm/1.0.0`; `support` says which side of it this end plays.
pub(crate) fn swarm(
    keypair: &Keypair,
    config: &Config,
    transport: Boxed<(PeerId, StreamMuxerBox)>,
    support: ProtocolSupport,
) -> Swarm<Behaviour> {
    let rr_config = request_response::Config::default()
        .with_request_timeout(config.request_timeout)
        .with_max_concurrent_streams(config.max_concurrent_requests);
    let behaviour = Behaviour::with_codec(
        Codec::new(config.max_message_size),
        [(PROTOCOL, support)],
        rr_config,
    );
    let swarm_config = libp2p::swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(config.idle_connection_timeout);
    Swarm::new(
        transport,
        behaviour,
        keypair.public().to_peer_id(),
        swarm_config,
    )
}

/// How long closing connections may take once a side shuts down.
pub(crate) const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Closes every connection and drives the swarm until they are gone (or `CLOSE_TIMEOUT` passes),
/// so responses already handed to yamux reach the socket and the peers see a clean close.
pub(crate) async fn close_connections(swarm: &mut Swarm<Behaviour>) {
    let peers: Vec<PeerId> = swarm.connected_peers().copied().collect();
    for peer in peers {
        let _ = swarm.disconnect_peer_id(peer);
    }
    let deadline = tokio::time::sleep(CLOSE_TIMEOUT);
    tokio::pin!(deadline);
    while swarm.connected_peers().next().is_some() {
        tokio::select! {
            event = swarm.select_next_some() => tracing::trace!(?event, "closing"),
            _ = &mut deadline => {
                tracing::debug!("connections did not close in time");
                break;
            }
        }
    }
}
