//! The gRPC adapter: tonic + rustls mutual TLS over the transport-independent [`Service`].
//!
//! Each handler authenticates the caller from its client certificate (`peer_certs`, subject CN),
//! converts the prost messages to domain types, calls the service, and maps a [`ServiceError`] to
//! a `tonic::Status` in one place ([`status`]), with the refusal code in the `x-ruvdllm-reject`
//! metadata. Handlers never unwrap. Streams are fed through bounded channels; an upload that
//! stalls for longer than [`UPLOAD_IDLE`] between chunks is abandoned (the round does not wait
//! for it either way).

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ruvdllm_proto::pb::coordinator_server::{Coordinator, CoordinatorServer};
use ruvdllm_proto::{Assembler, CHUNK_SIZE, REJECT_METADATA_KEY, RejectKind, UpdateHeader, pb};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Certificate, Identity as TlsIdentity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::{Identity, node_id_from_der};
use crate::config::Tls;
use crate::service::{Service, ServiceError};
use crate::socket;

/// Longest wait for the next chunk of an upload.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(30);

/// Maps a service error to a gRPC status (the only place that does).
pub fn status(e: ServiceError) -> Status {
    let (code, kind) = match &e {
        ServiceError::Reject(r) => {
            let kind = r.kind();
            let code = match kind {
                RejectKind::UnknownNode | RejectKind::Revoked | RejectKind::IdentityMismatch => {
                    tonic::Code::PermissionDenied
                }
                RejectKind::BaseModelMismatch
                | RejectKind::StaleRound
                | RejectKind::FutureRound
                | RejectKind::NotSelected => tonic::Code::FailedPrecondition,
                RejectKind::Duplicate | RejectKind::Replayed => tonic::Code::AlreadyExists,
                RejectKind::Oversized => tonic::Code::ResourceExhausted,
                RejectKind::Malformed | RejectKind::NonFinite => tonic::Code::InvalidArgument,
            };
            (code, Some(kind))
        }
        ServiceError::Auth(_) => (tonic::Code::Unauthenticated, None),
        ServiceError::NotFound { .. } => (tonic::Code::NotFound, None),
        ServiceError::Chunk(ruvdllm_proto::ChunkError::TooLarge { .. }) => {
            (tonic::Code::ResourceExhausted, Some(RejectKind::Oversized))
        }
        ServiceError::Chunk(_) | ServiceError::Convert(_) | ServiceError::Protocol(_) => {
            (tonic::Code::InvalidArgument, Some(RejectKind::Malformed))
        }
        ServiceError::Store(_) | ServiceError::Internal(_) => (tonic::Code::Internal, None),
    };
    let mut s = Status::new(code, e.to_string());
    if let Some(k) = kind
        && let Ok(v) = k.code().parse()
    {
        s.metadata_mut().insert(REJECT_METADATA_KEY, v);
    }
    s
}

fn identity<T>(req: &Request<T>) -> Result<Identity, Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| status(crate::auth::AuthError::NoCertificate.into()))?;
    let first = certs
        .first()
        .ok_or_else(|| status(crate::auth::AuthError::NoCertificate.into()))?;
    let node_id = node_id_from_der(first.as_ref()).map_err(|e| status(e.into()))?;
    Ok(Identity { node_id })
}

async fn next_message(
    s: &mut Streaming<pb::SubmitMessage>,
) -> Result<Option<pb::SubmitMessage>, Status> {
    match tokio::time::timeout(UPLOAD_IDLE, s.message()).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded("upload stalled")),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The tonic service.
pub struct Grpc {
    svc: Arc<Service>,
    /// Becomes true on shutdown: long-lived round streams end so graceful shutdown can finish.
    stop: watch::Receiver<bool>,
}

impl Grpc {
    pub fn new(svc: Arc<Service>, stop: watch::Receiver<bool>) -> Self {
        Self { svc, stop }
    }

    /// The body of `SubmitUpdate`: header, admission, chunks, submission.
    async fn receive(
        &self,
        id: Identity,
        mut stream: Streaming<pb::SubmitMessage>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let header = match next_message(&mut stream).await?.and_then(|m| m.kind) {
            Some(pb::submit_message::Kind::Header(h)) => h,
            _ => {
                self.svc.count_malformed();
                return Err(status(ServiceError::Protocol(
                    "the first message must be the header".into(),
                )));
            }
        };
        let header = UpdateHeader::try_from(header).map_err(|e| {
            self.svc.count_malformed();
            status(e.into())
        })?;
        tracing::Span::current().record("round", header.round);
        self.svc.admit(&id, &header).map_err(status)?;
        let mut asm = Assembler::new(header.payload_size, &header.payload_sha256, u64::MAX)
            .map_err(|e| status(e.into()))?;
        while !asm.is_complete() {
            let chunk = match next_message(&mut stream).await?.and_then(|m| m.kind) {
                Some(pb::submit_message::Kind::Chunk(c)) => c,
                other => {
                    self.svc.count_malformed();
                    let what = if other.is_some() {
                        "a second header"
                    } else {
                        "end of stream"
                    };
                    return Err(status(ServiceError::Protocol(format!(
                        "{what} after {} of {} payload bytes",
                        asm.received(),
                        asm.total()
                    ))));
                }
            };
            self.svc.metrics().bytes_in.inc_by(chunk.data.len() as u64);
            asm.push(&chunk).map_err(|e| {
                self.svc.count_malformed();
                status(e.into())
            })?;
        }
        let payload = asm.finish().map_err(|e| {
            self.svc.count_malformed();
            status(e.into())
        })?;
        let ack = self
            .svc
            .submit(&id, header, payload)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SubmitResponse {
            round: ack.round,
            accepted: ack.accepted,
        }))
    }
}

#[tonic::async_trait]
impl Coordinator for Grpc {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let id = identity(&req)?;
        let m = req.into_inner();
        let round = self
            .svc
            .register(&id, &m.node_id, &m.base_model_hash)
            .map_err(status)?;
        Ok(Response::new(pb::RegisterResponse {
            current_round: round,
        }))
    }

    type WatchRoundsStream = BoxStream<pb::RoundAnnouncement>;

    async fn watch_rounds(
        &self,
        req: Request<pb::WatchRoundsRequest>,
    ) -> Result<Response<Self::WatchRoundsStream>, Status> {
        let id = identity(&req)?;
        self.svc.authorize(&id).map_err(status)?;
        let mut rx = self.svc.subscribe();
        let (tx, out) = mpsc::channel(4);
        let svc = self.svc.clone();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let ann = rx.borrow_and_update().clone();
                if let Err(e) = svc.authorize(&id) {
                    let _ = tx.send(Err(status(e))).await;
                    return;
                }
                if tx.send(Ok(ann.into())).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                        let _ = tx.send(Err(Status::unavailable("coordinator shutting down"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    type FetchAdapterStream = BoxStream<pb::Chunk>;

    async fn fetch_adapter(
        &self,
        req: Request<pb::FetchAdapterRequest>,
    ) -> Result<Response<Self::FetchAdapterStream>, Status> {
        let id = identity(&req)?;
        let blob = self
            .svc
            .fetch(&id, &req.into_inner().hash)
            .map_err(status)?;
        let (tx, out) = mpsc::channel(2);
        let metrics = self.svc.metrics().clone();
        tokio::spawn(async move {
            for c in ruvdllm_proto::split(&blob.bytes, CHUNK_SIZE) {
                let n = c.data.len() as u64;
                if tx.send(Ok(c)).await.is_err() {
                    return;
                }
                metrics.bytes_out.inc_by(n);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn submit_update(
        &self,
        req: Request<Streaming<pb::SubmitMessage>>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let id = identity(&req)?;
        let span = tracing::info_span!(
            "submit_update",
            node_id = %id.node_id,
            round = tracing::field::Empty
        );
        self.receive(id, req.into_inner()).instrument(span).await
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let id = identity(&req)?;
        let (round, now) = self.svc.heartbeat(&id).map_err(status)?;
        Ok(Response::new(pb::HeartbeatResponse {
            current_round: round,
            server_time_unix_ms: now,
        }))
    }
}

/// TLS material problems.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Serves the coordinator over mutual TLS on `listener` until `stop` becomes true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    svc: Arc<Service>,
    tls: &Tls,
    stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let mut on_stop = stop.clone();
    let shutdown = async move {
        let _ = on_stop.wait_for(|s| *s).await;
    };
    let config = ServerTlsConfig::new()
        .identity(TlsIdentity::from_pem(read(&tls.cert)?, read(&tls.key)?))
        .client_ca_root(Certificate::from_pem(read(&tls.ca_cert)?))
        .timeout(Duration::from_secs(10));
    let (read, written) = (
        svc.metrics().socket_read.clone(),
        svc.metrics().socket_written.clone(),
    );
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |conn| {
        conn.map(|s| {
            let _ = s.set_nodelay(true);
            socket::counting(s, read.clone(), written.clone())
        })
    });
    Server::builder()
        .tls_config(config)?
        .add_service(CoordinatorServer::new(Grpc::new(svc, stop)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
