//! The libp2p transport of the federation protocol: Noise-authenticated, yamux-multiplexed TCP
//! connections carrying the `/ruvdllm/1.0.0` request-response protocol, whose requests and
//! responses are opaque bytes (the caller's prost-encoded messages). Identity is the peer id of
//! an ed25519 key pair, admitted by an allowlist file that maps peer ids to node names; bytes are
//! counted at the socket for reporting.
//!
//! Each side is an actor (a handle, bounded command channels, one task owning the swarm):
//! `Server::spawn` for the coordinator, `Client::connect` for a node.

mod allowlist;
mod allowlist_file;
mod backoff;
mod client;
mod codec;
mod config;
mod counters;
mod error;
mod keyfile;
mod server;
mod transport;

pub use allowlist::Allowlist;
pub use allowlist_file::{AllowlistFile, Refresh};
pub use client::Client;
pub use codec::{Codec, FrameTooLarge, PROTOCOL, Reply};
pub use config::{Config, MAX_MESSAGE_SIZE_LIMIT};
pub use counters::{ByteCount, Counters, PeerCounters};
pub use error::{AllowlistError, KeyError, P2pError};
pub use keyfile::{generate_keypair, load_keypair, peer_id, write_keypair};
pub use server::{Handler, Identity, Server, ServerHandle};

pub use libp2p::identity::Keypair;
pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId};
