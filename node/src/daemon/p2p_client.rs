//! [`CoordinatorClient`] over libp2p: the proto crate's p2p [`Client`] actor (Noise + yamux over
//! TCP, redialling with jittered exponential backoff on its own) carrying the
//! [`ruvdllm_proto::exchange`] envelopes.
//!
//! The gRPC streams become exchanges: [`watch_rounds`](CoordinatorClient::watch_rounds) runs a
//! long-poll loop in a task that ends when the returned stream is dropped; the adapter download
//! asks for chunk `i` of `n`; the upload sends its chunks in order, each with the header, and the
//! last answer is the coordinator's verdict. Failures map onto the same [`ClientError`]s as gRPC,
//! so the runtime's retry rules (transient → back off, refusal → act on its kind) do not change:
//! a connection that is down, a timeout or a busy server is `Unavailable`; a refusal carries its
//! [`RejectKind`]; a peer the coordinator does not list is refused as an unknown node.

use std::sync::Arc;

use ruvdllm_proto::exchange::{self, chunk_at, chunk_count};
use ruvdllm_proto::p2p::{self, Client, Counters, Keypair, Multiaddr, P2pError};
use ruvdllm_proto::pb::p2p_error::Class;
use ruvdllm_proto::pb::p2p_request::Kind as Request;
use ruvdllm_proto::pb::p2p_response::Kind as Response;
use ruvdllm_proto::{Announcement, Assembler, RejectKind, UpdateHeader, pb, sha256_hex};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::client::{AnnouncementStream, ClientError, CoordinatorClient, SubmitAck};

/// Maps a transport failure to a client error.
pub fn from_p2p(e: P2pError) -> ClientError {
    match e {
        P2pError::Unauthorized => ClientError::Rejected {
            kind: RejectKind::UnknownNode,
            message: "this peer is not on the coordinator's allowlist".into(),
        },
        P2pError::NotConnected { .. }
        | P2pError::Timeout
        | P2pError::ConnectionClosed
        | P2pError::Busy { .. }
        | P2pError::Remote { .. }
        | P2pError::Stream { .. }
        | P2pError::TooManyRequests { .. }
        | P2pError::Shutdown => ClientError::Unavailable(e.to_string()),
        other => ClientError::Status {
            code: "p2p".into(),
            message: other.to_string(),
        },
    }
}

/// Maps the coordinator's error answer to a client error.
pub fn from_wire(e: pb::P2pError) -> ClientError {
    if let Ok(kind) = e.reject.parse::<RejectKind>() {
        return ClientError::Rejected {
            kind,
            message: e.message,
        };
    }
    match Class::try_from(e.class).unwrap_or(Class::Unspecified) {
        Class::Unavailable | Class::Internal => ClientError::Unavailable(e.message),
        class => ClientError::Status {
            code: class.as_str_name().to_string(),
            message: e.message,
        },
    }
}

/// One request-response exchange.
async fn call(client: &Client, request: Request) -> Result<Response, ClientError> {
    let bytes = client
        .request(exchange::request(request))
        .await
        .map_err(from_p2p)?;
    match exchange::decode_response(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))? {
        Response::Error(e) => Err(from_wire(e)),
        r => Ok(r),
    }
}

fn unexpected(what: &str, got: &Response) -> ClientError {
    let name = match got {
        Response::Register(_) => "register",
        Response::Round(_) => "round",
        Response::Chunk(_) => "chunk",
        Response::UploadProgress(_) => "upload progress",
        Response::Submitted(_) => "submitted",
        Response::Heartbeat(_) => "heartbeat",
        Response::Error(_) => "error",
    };
    ClientError::Protocol(format!("expected a {what} answer, got {name}"))
}

/// The libp2p client. Cheap to share: the actor lives as long as any clone.
#[derive(Clone)]
pub struct P2pClient {
    inner: Arc<Client>,
    max_adapter_bytes: u64,
}

impl P2pClient {
    /// Starts the client actor for the coordinator at `coordinator` (ending in
    /// `/p2p/<coordinator peer id>`, which Noise verifies). No I/O happens until the first call.
    /// Must be called inside a tokio runtime.
    pub fn connect(
        keypair: Keypair,
        coordinator: Multiaddr,
        max_adapter_bytes: u64,
    ) -> Result<Self, P2pError> {
        Self::with_config(
            keypair,
            coordinator,
            max_adapter_bytes,
            p2p::Config::default(),
        )
    }

    pub fn with_config(
        keypair: Keypair,
        coordinator: Multiaddr,
        max_adapter_bytes: u64,
        config: p2p::Config,
    ) -> Result<Self, P2pError> {
        Ok(Self {
            inner: Arc::new(Client::connect(keypair, coordinator, config)?),
            max_adapter_bytes,
        })
    }

    /// Bytes at the socket (Noise and yamux included) over every connection of this client.
    pub fn counters(&self) -> Arc<Counters> {
        self.inner.counters()
    }

    pub fn local_peer_id(&self) -> p2p::PeerId {
        self.inner.local_peer_id()
    }
}

/// The long-poll loop behind `watch_rounds`: emits the first answer and every change.
async fn poll_rounds(client: Arc<Client>, tx: mpsc::Sender<Result<Announcement, ClientError>>) {
    let mut last: Option<(u64, u64)> = None;
    loop {
        let (round, deadline) = last.unwrap_or((0, 0));
        let request = Request::PollRound(pb::PollRoundRequest {
            last_round: round,
            last_deadline_unix_ms: deadline,
        });
        let answer = tokio::select! {
            _ = tx.closed() => return,
            a = call(&client, request) => a,
        };
        let item = match answer {
            Ok(Response::Round(a)) => {
                Announcement::try_from(a).map_err(|e| ClientError::Protocol(e.to_string()))
            }
            Ok(other) => Err(unexpected("round", &other)),
            Err(e) => Err(e),
        };
        match item {
            Ok(a) => {
                let key = (a.round, a.deadline_unix_ms);
                if last != Some(key) {
                    last = Some(key);
                    if tx.send(Ok(a)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                // The stream ends with its error; the runtime starts a new session.
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

impl CoordinatorClient for P2pClient {
    async fn register(&self, node_id: &str, base_model_hash: &str) -> Result<u64, ClientError> {
        let request = Request::Register(pb::RegisterRequest {
            node_id: node_id.to_string(),
            base_model_hash: base_model_hash.to_string(),
        });
        match call(&self.inner, request).await? {
            Response::Register(r) => Ok(r.current_round),
            other => Err(unexpected("register", &other)),
        }
    }

    async fn watch_rounds(&self) -> Result<AnnouncementStream, ClientError> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(poll_rounds(Arc::clone(&self.inner), tx));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn fetch_adapter(&self, hash: &str) -> Result<Vec<u8>, ClientError> {
        let protocol = |e: ruvdllm_proto::ChunkError| ClientError::Protocol(e.to_string());
        let mut asm: Option<Assembler> = None;
        let mut n = 1;
        let mut index = 0;
        while index < n {
            let request = Request::FetchChunk(pb::FetchChunkRequest {
                hash: hash.to_string(),
                index,
            });
            let chunk = match call(&self.inner, request).await? {
                Response::Chunk(c) => c,
                other => return Err(unexpected("chunk", &other)),
            };
            let a = match asm.as_mut() {
                Some(a) => a,
                None => {
                    n = chunk_count(chunk.total);
                    asm.insert(
                        Assembler::from_first(&chunk, self.max_adapter_bytes).map_err(protocol)?,
                    )
                }
            };
            if !chunk.data.is_empty() {
                a.push(&chunk).map_err(protocol)?;
            }
            index += 1;
        }
        asm.ok_or_else(|| ClientError::Protocol("no adapter chunk".into()))?
            .finish()
            .map_err(protocol)
    }

    async fn submit_update(
        &self,
        header: UpdateHeader,
        payload: Arc<Vec<u8>>,
    ) -> Result<SubmitAck, ClientError> {
        let sha = sha256_hex(&payload);
        if sha != header.payload_sha256 || payload.len() as u64 != header.payload_size {
            return Err(ClientError::Protocol(
                "payload does not match its header".into(),
            ));
        }
        let n = chunk_count(header.payload_size);
        let wire_header: pb::UpdateHeader = header.into();
        for index in 0..n {
            let chunk = chunk_at(&payload, &sha, index)
                .ok_or_else(|| ClientError::Protocol(format!("no chunk {index}")))?;
            let request = Request::UploadChunk(pb::UploadChunkRequest {
                header: Some(wire_header.clone()),
                index,
                chunk: Some(chunk),
            });
            match call(&self.inner, request).await? {
                Response::UploadProgress(_) if index + 1 < n => {}
                Response::Submitted(r) if index + 1 == n => {
                    return Ok(SubmitAck {
                        round: r.round,
                        accepted: r.accepted,
                    });
                }
                other => return Err(unexpected("upload", &other)),
            }
        }
        Err(ClientError::Protocol(
            "upload ended without a verdict".into(),
        ))
    }

    async fn heartbeat(&self, round: u64) -> Result<u64, ClientError> {
        match call(
            &self.inner,
            Request::Heartbeat(pb::HeartbeatRequest { round }),
        )
        .await?
        {
            Response::Heartbeat(r) => Ok(r.current_round),
            other => Err(unexpected("heartbeat", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_errors_map_like_grpc_statuses() {
        let e = from_wire(pb::P2pError {
            class: Class::Rejected as i32,
            reject: "duplicate".into(),
            message: "twice".into(),
        });
        assert_eq!(e.reject_kind(), Some(RejectKind::Duplicate));
        let e = from_wire(pb::P2pError {
            class: Class::Unavailable as i32,
            reject: String::new(),
            message: "shutting down".into(),
        });
        assert!(e.is_transient());
        let e = from_wire(pb::P2pError {
            class: Class::NotFound as i32,
            reject: String::new(),
            message: "no such adapter".into(),
        });
        assert!(matches!(e, ClientError::Status { .. }) && !e.is_transient());
        assert!(from_p2p(P2pError::Timeout).is_transient());
        assert_eq!(
            from_p2p(P2pError::Unauthorized).reject_kind(),
            Some(RejectKind::UnknownNode)
        );
    }
}
