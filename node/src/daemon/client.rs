//! What the node runtime needs from a coordinator, independent of the transport.
//!
//! [`CoordinatorClient`] is implemented over gRPC/mTLS by [`super::grpc_client::GrpcClient`]; a
//! libp2p client implements the same trait and the runtime does not change. Errors say whether
//! retrying can help ([`ClientError::is_transient`]) and carry the coordinator's refusal code.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ruvdllm_proto::{Announcement, RejectKind, UpdateHeader};
use tokio_stream::Stream;

/// Client-side failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The coordinator refused the request for a reason it named.
    #[error("refused ({kind}): {message}")]
    Rejected { kind: RejectKind, message: String },
    /// Not reachable, restarting, timed out: try again later.
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
    /// The coordinator answered with something the node cannot use.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Any other gRPC status.
    #[error("status {code}: {message}")]
    Status { code: String, message: String },
}

impl ClientError {
    /// Whether the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Unavailable(_) | ClientError::Protocol(_))
    }

    pub fn reject_kind(&self) -> Option<RejectKind> {
        match self {
            ClientError::Rejected { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Round announcements as they arrive.
pub type AnnouncementStream = Pin<Box<dyn Stream<Item = Result<Announcement, ClientError>> + Send>>;

/// The coordinator's answer to an accepted update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitAck {
    pub round: u64,
    pub accepted: u32,
}

/// The coordinator as the node runtime sees it.
pub trait CoordinatorClient: Send + Sync + 'static {
    /// Registers; returns the open round.
    fn register(
        &self,
        node_id: &str,
        base_model_hash: &str,
    ) -> impl Future<Output = Result<u64, ClientError>> + Send;

    fn watch_rounds(&self) -> impl Future<Output = Result<AnnouncementStream, ClientError>> + Send;

    /// The encoded global adapter with this hash, reassembled and checked against the sha256 its
    /// chunks declare.
    fn fetch_adapter(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<Vec<u8>, ClientError>> + Send;

    fn submit_update(
        &self,
        header: UpdateHeader,
        payload: Arc<Vec<u8>>,
    ) -> impl Future<Output = Result<SubmitAck, ClientError>> + Send;

    /// Returns the open round.
    fn heartbeat(&self, round: u64) -> impl Future<Output = Result<u64, ClientError>> + Send;
}
