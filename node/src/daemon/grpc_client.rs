//! [`CoordinatorClient`] over gRPC with mutual TLS.
//!
//! The channel is lazy and reconnects by itself: while the coordinator is down calls fail with
//! [`ClientError::Unavailable`] and the runtime backs off; once it is back the next call
//! reconnects. Refusals come back typed from the `x-ruvdllm-reject` metadata.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ruvdllm_proto::pb::coordinator_client::CoordinatorClient as PbClient;
use ruvdllm_proto::{Announcement, Assembler, CHUNK_SIZE, REJECT_METADATA_KEY, UpdateHeader, pb};
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::client::{AnnouncementStream, ClientError, CoordinatorClient, SubmitAck};
use super::counting::{SocketCounters, connector};

/// Where the coordinator is and the node's TLS material.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// The name the coordinator's certificate is checked against.
    pub server_name: String,
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Setting up the client failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("endpoint {addr}: {source}")]
    Endpoint {
        addr: String,
        source: tonic::transport::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Maps a gRPC status to a client error.
pub fn from_status(s: tonic::Status) -> ClientError {
    if let Some(kind) = s
        .metadata()
        .get(REJECT_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        return ClientError::Rejected {
            kind,
            message: s.message().to_string(),
        };
    }
    match s.code() {
        tonic::Code::Unavailable
        | tonic::Code::Unknown
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled
        | tonic::Code::Aborted
        | tonic::Code::Internal => {
            ClientError::Unavailable(format!("{}: {}", s.code(), s.message()))
        }
        code => ClientError::Status {
            code: format!("{code:?}"),
            message: s.message().to_string(),
        },
    }
}

/// The gRPC client.
#[derive(Clone)]
pub struct GrpcClient {
    inner: PbClient<Channel>,
    max_adapter_bytes: u64,
}

impl GrpcClient {
    /// A lazily connecting client; no I/O happens until the first call.
    pub fn new(target: &Target, max_adapter_bytes: u64) -> Result<Self, ConnectError> {
        let channel = Self::endpoint(target)?.connect_lazy();
        Ok(Self {
            inner: PbClient::new(channel),
            max_adapter_bytes,
        })
    }

    /// Like [`Self::new`], dialling through a byte-counting TCP connector: `counters` then hold
    /// every byte this client sends and receives at the socket (TLS and HTTP/2 included).
    pub fn with_counters(
        target: &Target,
        max_adapter_bytes: u64,
        counters: SocketCounters,
    ) -> Result<Self, ConnectError> {
        let channel = Self::endpoint(target)?.connect_with_connector_lazy(connector(counters));
        Ok(Self {
            inner: PbClient::new(channel),
            max_adapter_bytes,
        })
    }

    fn endpoint(target: &Target) -> Result<Endpoint, ConnectError> {
        let tls = ClientTlsConfig::new()
            .domain_name(target.server_name.clone())
            .ca_certificate(Certificate::from_pem(read(&target.ca_cert)?))
            .identity(Identity::from_pem(read(&target.cert)?, read(&target.key)?));
        let endpoint_err = |source| ConnectError::Endpoint {
            addr: target.addr.clone(),
            source,
        };
        Ok(Endpoint::from_shared(format!("https://{}", target.addr))
            .map_err(endpoint_err)?
            .tls_config(tls)
            .map_err(endpoint_err)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true))
    }
}

impl CoordinatorClient for GrpcClient {
    async fn register(&self, node_id: &str, base_model_hash: &str) -> Result<u64, ClientError> {
        let r = self
            .inner
            .clone()
            .register(pb::RegisterRequest {
                node_id: node_id.to_string(),
                base_model_hash: base_model_hash.to_string(),
            })
            .await
            .map_err(from_status)?;
        Ok(r.into_inner().current_round)
    }

    async fn watch_rounds(&self) -> Result<AnnouncementStream, ClientError> {
        let s = self
            .inner
            .clone()
            .watch_rounds(pb::WatchRoundsRequest {})
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(Box::pin(s.map(|m| {
            m.map_err(from_status).and_then(|a| {
                Announcement::try_from(a).map_err(|e| ClientError::Protocol(e.to_string()))
            })
        })))
    }

    async fn fetch_adapter(&self, hash: &str) -> Result<Vec<u8>, ClientError> {
        let mut s = self
            .inner
            .clone()
            .fetch_adapter(pb::FetchAdapterRequest {
                hash: hash.to_string(),
            })
            .await
            .map_err(from_status)?
            .into_inner();
        let mut asm: Option<Assembler> = None;
        while let Some(chunk) = s.message().await.map_err(from_status)? {
            let a = match asm.as_mut() {
                Some(a) => a,
                None => asm.insert(
                    Assembler::from_first(&chunk, self.max_adapter_bytes)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?,
                ),
            };
            a.push(&chunk)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
        }
        asm.ok_or_else(|| ClientError::Protocol("empty adapter stream".into()))?
            .finish()
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn submit_update(
        &self,
        header: UpdateHeader,
        payload: Arc<Vec<u8>>,
    ) -> Result<SubmitAck, ClientError> {
        let mut msgs = vec![pb::SubmitMessage {
            kind: Some(pb::submit_message::Kind::Header(header.into())),
        }];
        msgs.extend(
            ruvdllm_proto::split(&payload, CHUNK_SIZE)
                .into_iter()
                .filter(|c| !c.data.is_empty())
                .map(|c| pb::SubmitMessage {
                    kind: Some(pb::submit_message::Kind::Chunk(c)),
                }),
        );
        let r = self
            .inner
            .clone()
            .submit_update(tokio_stream::iter(msgs))
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(SubmitAck {
            round: r.round,
            accepted: r.accepted,
        })
    }

    async fn heartbeat(&self, round: u64) -> Result<u64, ClientError> {
        let r = self
            .inner
            .clone()
            .heartbeat(pb::HeartbeatRequest { round })
            .await
            .map_err(from_status)?;
        Ok(r.into_inner().current_round)
    }
}
