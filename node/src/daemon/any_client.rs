//! The transport a node's config picks, as one [`CoordinatorClient`].
//!
//! The runtime is generic over its client; `node run`, the simulation and the round benchmark
//! choose the transport at run time from a config value, so [`AnyClient`] delegates to either
//! implementation and [`ClientTarget`] (the validated transport section of `node.toml`) builds it.
//! Both report bytes at the socket through [`SocketBytes`].

use std::path::PathBuf;
use std::sync::Arc;

use ruvdllm_proto::UpdateHeader;
use ruvdllm_proto::p2p::{self, Counters, Multiaddr, P2pError};

use super::client::{AnnouncementStream, ClientError, CoordinatorClient, SubmitAck};
use super::counting::SocketCounters;
use super::grpc_client::{ConnectError, GrpcClient, Target};
use super::p2p_client::P2pClient;

/// Where the coordinator is and how this node proves who it is, per transport.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientTarget {
    Grpc(Target),
    Libp2p(P2pTarget),
}

/// A libp2p coordinator address and this node's key pair file.
#[derive(Debug, Clone, PartialEq)]
pub struct P2pTarget {
    /// The coordinator's address ending in `/p2p/<its peer id>`.
    pub coordinator: Multiaddr,
    /// This node's ed25519 key pair (`node keygen`); its peer id is on the allowlist.
    pub key: PathBuf,
}

impl ClientTarget {
    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            ClientTarget::Grpc(t) => format!("grpc {}", t.addr),
            ClientTarget::Libp2p(t) => format!("libp2p {}", t.coordinator),
        }
    }
}

/// Building a client failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Grpc(#[from] ConnectError),
    #[error("libp2p key: {0}")]
    Key(#[from] p2p::KeyError),
    #[error("libp2p client: {0}")]
    P2p(#[from] P2pError),
}

/// Bytes at the socket of one client, whatever its transport.
#[derive(Debug, Clone)]
pub enum SocketBytes {
    Grpc(SocketCounters),
    Libp2p(Arc<Counters>),
}

impl SocketBytes {
    /// Bytes sent so far.
    pub fn sent(&self) -> u64 {
        match self {
            SocketBytes::Grpc(c) => c.written(),
            SocketBytes::Libp2p(c) => c.snapshot().sent,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        match self {
            SocketBytes::Grpc(c) => c.read(),
            SocketBytes::Libp2p(c) => c.snapshot().received,
        }
    }
}

/// A client over either transport.
#[derive(Clone)]
pub enum AnyClient {
    Grpc(GrpcClient),
    Libp2p(P2pClient),
}

impl AnyClient {
    /// Builds the client for `target` (no I/O until the first call; inside a tokio runtime).
    pub fn connect(target: &ClientTarget, max_adapter_bytes: u64) -> Result<Self, TargetError> {
        Ok(match target {
            ClientTarget::Grpc(t) => AnyClient::Grpc(GrpcClient::new(t, max_adapter_bytes)?),
            ClientTarget::Libp2p(t) => AnyClient::Libp2p(P2pClient::connect(
                p2p::load_keypair(&t.key)?,
                t.coordinator.clone(),
                max_adapter_bytes,
            )?),
        })
    }

    /// Like [`Self::connect`], with the socket bytes counted.
    pub fn counted(
        target: &ClientTarget,
        max_adapter_bytes: u64,
    ) -> Result<(Self, SocketBytes), TargetError> {
        Ok(match target {
            ClientTarget::Grpc(t) => {
                let c = SocketCounters::new();
                let client = GrpcClient::with_counters(t, max_adapter_bytes, c.clone())?;
                (AnyClient::Grpc(client), SocketBytes::Grpc(c))
            }
            ClientTarget::Libp2p(t) => {
                let client = P2pClient::connect(
                    p2p::load_keypair(&t.key)?,
                    t.coordinator.clone(),
                    max_adapter_bytes,
                )?;
                let bytes = SocketBytes::Libp2p(client.counters());
                (AnyClient::Libp2p(client), bytes)
            }
        })
    }
}

impl CoordinatorClient for AnyClient {
    async fn register(&self, node_id: &str, base_model_hash: &str) -> Result<u64, ClientError> {
        match self {
            AnyClient::Grpc(c) => c.register(node_id, base_model_hash).await,
            AnyClient::Libp2p(c) => c.register(node_id, base_model_hash).await,
        }
    }

    async fn watch_rounds(&self) -> Result<AnnouncementStream, ClientError> {
        match self {
            AnyClient::Grpc(c) => c.watch_rounds().await,
            AnyClient::Libp2p(c) => c.watch_rounds().await,
        }
    }

    async fn fetch_adapter(&self, hash: &str) -> Result<Vec<u8>, ClientError> {
        match self {
            AnyClient::Grpc(c) => c.fetch_adapter(hash).await,
            AnyClient::Libp2p(c) => c.fetch_adapter(hash).await,
        }
    }

    async fn submit_update(
        &self,
        header: UpdateHeader,
        payload: Arc<Vec<u8>>,
    ) -> Result<SubmitAck, ClientError> {
        match self {
            AnyClient::Grpc(c) => c.submit_update(header, payload).await,
            AnyClient::Libp2p(c) => c.submit_update(header, payload).await,
        }
    }

    async fn heartbeat(&self, round: u64) -> Result<u64, ClientError> {
        match self {
            AnyClient::Grpc(c) => c.heartbeat(round).await,
            AnyClient::Libp2p(c) => c.heartbeat(round).await,
        }
    }
}
