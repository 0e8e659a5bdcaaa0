//! The libp2p adapter: the transport-independent [`Service`] served over the proto crate's p2p
//! [`Server`] (Noise + yamux over TCP, `/ruvdllm/1.0.0` request-response), with the same prost
//! messages as gRPC in the envelopes of [`ruvdllm_proto::exchange`].
//!
//! Identity is the remote peer id, which the server maps to a node id through the allowlist file
//! before any request reaches this module (a peer not on the list is answered "unauthorized" and
//! disconnected; removing its line takes effect on the next request). Here every exchange becomes
//! one service call, exactly as the gRPC handlers do:
//!
//! * **poll_round** — a long-poll: answered at once when a round newer than the node's last one is
//!   open (or its deadline moved), else after `poll_wait` with the current round, so a node waits
//!   without a stream and without busy polling;
//! * **fetch_chunk** — chunk `i` of the global adapter, cut exactly like the gRPC stream;
//! * **upload_chunk** — chunk `i` of an update; chunk 0 is admitted (round, size, duplicate,
//!   replay) before any payload byte is kept, the chunks are assembled in order under the same
//!   limits, and the last one submits and answers with the `SubmitResponse`. One upload per node
//!   is held at a time (a new chunk 0 replaces it) and one idle for [`UPLOAD_IDLE`] is dropped, so
//!   memory stays bounded by the allowlist.
//!
//! Errors map to a [`pb::P2pError`] in one place ([`error`]), carrying the same refusal codes as
//! the gRPC metadata.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ruvdllm_proto::exchange::{self, chunk_at, chunk_count};
use ruvdllm_proto::p2p::{self, Multiaddr, Server, ServerHandle};
use ruvdllm_proto::pb::p2p_error::Class;
use ruvdllm_proto::pb::p2p_request::Kind as Request;
use ruvdllm_proto::pb::p2p_response::Kind as Response;
use ruvdllm_proto::{Announcement, Assembler, CHUNK_SIZE, RejectKind, UpdateHeader, pb};
use tokio::sync::watch;
use tracing::Instrument;

use crate::auth::{Identity, check_node_id};
use crate::config::Libp2p;
use crate::grpc::UPLOAD_IDLE;
use crate::service::{Service, ServiceError};

/// Starting the libp2p server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("libp2p key: {0}")]
    Key(#[from] p2p::KeyError),
    #[error("libp2p server: {0}")]
    P2p(#[from] p2p::P2pError),
    #[error("libp2p listen address {addr} has no IP and TCP port")]
    NoSocket { addr: Multiaddr },
}

/// Maps a service error to the wire error (the only place that does).
pub fn error(e: ServiceError) -> pb::P2pError {
    let (class, kind) = match &e {
        ServiceError::Reject(r) => (Class::Rejected, Some(r.kind())),
        ServiceError::Auth(_) => (Class::Unauthenticated, None),
        ServiceError::NotFound { .. } => (Class::NotFound, None),
        ServiceError::Chunk(ruvdllm_proto::ChunkError::TooLarge { .. }) => {
            (Class::Rejected, Some(RejectKind::Oversized))
        }
        ServiceError::Chunk(_) | ServiceError::Convert(_) | ServiceError::Protocol(_) => {
            (Class::Invalid, Some(RejectKind::Malformed))
        }
        ServiceError::Store(_) | ServiceError::Internal(_) => (Class::Internal, None),
    };
    pb::P2pError {
        class: class as i32,
        reject: kind.map(|k| k.code().to_string()).unwrap_or_default(),
        message: e.to_string(),
    }
}

fn unavailable(message: &str) -> pb::P2pError {
    pb::P2pError {
        class: Class::Unavailable as i32,
        reject: String::new(),
        message: message.to_string(),
    }
}

/// One node's upload in progress.
struct Upload {
    header: UpdateHeader,
    asm: Assembler,
    /// The next chunk index expected.
    next: u64,
    touched: Instant,
}

/// The request handler behind the p2p server.
pub struct Adapter {
    svc: Arc<Service>,
    uploads: Mutex<HashMap<String, Upload>>,
    stop: watch::Receiver<bool>,
    poll_wait: Duration,
}

impl Adapter {
    pub fn new(svc: Arc<Service>, stop: watch::Receiver<bool>, poll_wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            svc,
            uploads: Mutex::new(HashMap::new()),
            stop,
            poll_wait,
        })
    }

    /// The server's handler: decodes, dispatches, encodes; never fails at the transport level.
    pub fn handler(self: &Arc<Self>) -> p2p::Handler {
        let me = Arc::clone(self);
        Arc::new(move |who: p2p::Identity, bytes: Vec<u8>| {
            let me = Arc::clone(&me);
            Box::pin(async move { Ok(me.answer(who, bytes).await) })
        })
    }

    /// Answers one request (encoded `P2pResponse`).
    pub async fn answer(&self, who: p2p::Identity, bytes: Vec<u8>) -> Vec<u8> {
        let span = tracing::info_span!(
            "p2p",
            node_id = %who.name,
            peer = %who.peer,
            round = tracing::field::Empty
        );
        let body = match self.dispatch(who, bytes).instrument(span).await {
            Ok(r) => r,
            Err(e) => Response::Error(e),
        };
        exchange::response(body)
    }

    async fn dispatch(&self, who: p2p::Identity, bytes: Vec<u8>) -> Result<Response, pb::P2pError> {
        check_node_id(&who.name).map_err(|e| error(e.into()))?;
        let id = Identity { node_id: who.name };
        let request = exchange::decode_request(&bytes).map_err(|e| {
            self.svc.count_malformed();
            error(ServiceError::Protocol(e.to_string()))
        })?;
        match request {
            Request::Register(m) => {
                let round = self
                    .svc
                    .register(&id, &m.node_id, &m.base_model_hash)
                    .map_err(error)?;
                Ok(Response::Register(pb::RegisterResponse {
                    current_round: round,
                }))
            }
            Request::PollRound(m) => self.poll(&id, m).await,
            Request::FetchChunk(m) => self.fetch(&id, m).map_err(error),
            Request::UploadChunk(m) => self.upload(&id, m).await.map_err(error),
            Request::Heartbeat(_) => {
                let (round, now) = self.svc.heartbeat(&id).map_err(error)?;
                Ok(Response::Heartbeat(pb::HeartbeatResponse {
                    current_round: round,
                    server_time_unix_ms: now,
                }))
            }
        }
    }

    async fn poll(&self, id: &Identity, m: pb::PollRoundRequest) -> Result<Response, pb::P2pError> {
        self.svc.authorize(id).map_err(error)?;
        let newer = |a: &Announcement| {
            a.round > m.last_round
                || (a.round == m.last_round && a.deadline_unix_ms != m.last_deadline_unix_ms)
        };
        let mut rounds = self.svc.subscribe();
        let mut stop = self.stop.clone();
        tokio::select! {
            // Either a newer round or the bounded wait is over: answer with the current one.
            _ = tokio::time::timeout(self.poll_wait, rounds.wait_for(newer)) => {}
            _ = stop.wait_for(|s| *s) => return Err(unavailable("coordinator shutting down")),
        }
        // Revoked while waiting: refused like the gRPC stream.
        self.svc.authorize(id).map_err(error)?;
        Ok(Response::Round(self.svc.announcement().into()))
    }

    fn fetch(&self, id: &Identity, m: pb::FetchChunkRequest) -> Result<Response, ServiceError> {
        let blob = self.svc.fetch(id, &m.hash)?;
        let chunk = chunk_at(&blob.bytes, &blob.hash, m.index).ok_or_else(|| {
            ServiceError::Protocol(format!(
                "chunk {} of an adapter of {} chunks",
                m.index,
                chunk_count(blob.bytes.len() as u64)
            ))
        })?;
        self.svc.metrics().bytes_out.inc_by(chunk.data.len() as u64);
        Ok(Response::Chunk(chunk))
    }

    fn malformed(&self, e: impl Into<ServiceError>) -> ServiceError {
        self.svc.count_malformed();
        e.into()
    }

    fn lock_uploads(&self) -> MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn upload(
        &self,
        id: &Identity,
        m: pb::UploadChunkRequest,
    ) -> Result<Response, ServiceError> {
        let header = m.header.ok_or_else(|| {
            self.malformed(ServiceError::Protocol("upload without header".into()))
        })?;
        let header = UpdateHeader::try_from(header).map_err(|e| self.malformed(e))?;
        tracing::Span::current().record("round", header.round);
        let chunk = m
            .chunk
            .ok_or_else(|| self.malformed(ServiceError::Protocol("upload without chunk".into())))?;
        check_chunk(&header, m.index, &chunk).map_err(|e| self.malformed(e))?;
        let n = chunk_count(header.payload_size);
        let complete = {
            let mut uploads = self.lock_uploads();
            uploads.retain(|_, u| u.touched.elapsed() < UPLOAD_IDLE);
            if m.index == 0 {
                // Admission before any payload byte is kept; replaces an older attempt.
                uploads.remove(&id.node_id);
                self.svc.admit(id, &header)?;
                let asm = Assembler::new(header.payload_size, &header.payload_sha256, u64::MAX)?;
                uploads.insert(
                    id.node_id.clone(),
                    Upload {
                        header: header.clone(),
                        asm,
                        next: 0,
                        touched: Instant::now(),
                    },
                );
            } else {
                self.svc.authorize(id)?;
            }
            let Some(up) = uploads.get_mut(&id.node_id).filter(|u| u.header == header) else {
                return Err(self.malformed(ServiceError::Protocol(format!(
                    "chunk {} of an upload that was not started (send chunk 0 first)",
                    m.index
                ))));
            };
            if m.index + 1 == up.next {
                // A retransmission of the chunk stored last: already counted.
                return Ok(Response::UploadProgress(pb::UploadProgress {
                    received: up.asm.received(),
                }));
            }
            if m.index != up.next {
                let expected = up.next;
                uploads.remove(&id.node_id);
                return Err(self.malformed(ServiceError::Protocol(format!(
                    "chunk {} arrived, expected chunk {expected}",
                    m.index
                ))));
            }
            self.svc.metrics().bytes_in.inc_by(chunk.data.len() as u64);
            if !chunk.data.is_empty()
                && let Err(e) = up.asm.push(&chunk)
            {
                uploads.remove(&id.node_id);
                return Err(self.malformed(e));
            }
            up.next += 1;
            up.touched = Instant::now();
            if up.next < n {
                return Ok(Response::UploadProgress(pb::UploadProgress {
                    received: up.asm.received(),
                }));
            }
            uploads.remove(&id.node_id)
        };
        let Some(up) = complete else {
            return Err(ServiceError::Internal("upload vanished".into()));
        };
        let payload = up.asm.finish().map_err(|e| self.malformed(e))?;
        let ack = self.svc.submit(id, header, payload).await?;
        Ok(Response::Submitted(pb::SubmitResponse {
            round: ack.round,
            accepted: ack.accepted,
        }))
    }
}

/// Chunk `index` of an upload must sit where the indexed chunking puts it.
fn check_chunk(h: &UpdateHeader, index: u64, c: &pb::Chunk) -> Result<(), ServiceError> {
    let n = chunk_count(h.payload_size);
    if index >= n {
        return Err(ServiceError::Protocol(format!(
            "chunk {index} of a payload of {n} chunks"
        )));
    }
    let offset = index * CHUNK_SIZE as u64;
    let len = (h.payload_size - offset).min(CHUNK_SIZE as u64);
    if c.offset != offset || c.data.len() as u64 != len {
        return Err(ServiceError::Protocol(format!(
            "chunk {index} has offset {} and {} bytes, expected offset {offset} and {len} bytes",
            c.offset,
            c.data.len()
        )));
    }
    if c.total != h.payload_size || c.sha256 != h.payload_sha256 {
        return Err(ServiceError::Protocol(
            "chunk total or hash differs from the header".into(),
        ));
    }
    Ok(())
}

/// The IP and TCP port of a bound listen address.
pub fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    use p2p::Protocol;
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

/// Starts the p2p server for `svc`; long-polls end when `stop` turns true. Stop the server with
/// the returned handle's `shutdown` and await the join handle.
pub async fn serve(
    svc: Arc<Service>,
    cfg: &Libp2p,
    stop: watch::Receiver<bool>,
) -> Result<(ServerHandle, tokio::task::JoinHandle<()>), ServeError> {
    let keypair = p2p::load_keypair(&cfg.key)?;
    let adapter = Adapter::new(svc, stop, cfg.poll_wait);
    let config = p2p::Config {
        request_timeout: cfg.poll_wait + Duration::from_secs(60),
        ..p2p::Config::default()
    };
    let (handle, join) = Server::spawn(
        keypair,
        cfg.listen.clone(),
        cfg.allowlist.clone(),
        adapter.handler(),
        config,
    )
    .await?;
    if socket_addr(handle.listen_addr()).is_none() {
        return Err(ServeError::NoSocket {
            addr: handle.listen_addr().clone(),
        });
    }
    Ok((handle, join))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(size: u64) -> UpdateHeader {
        UpdateHeader {
            round: 1,
            samples: 1,
            band_metrics: Default::default(),
            payload_size: size,
            payload_sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn chunks_must_sit_where_the_index_puts_them() {
        let h = header(CHUNK_SIZE as u64 + 10);
        let c = |offset: u64, len: usize| pb::Chunk {
            offset,
            data: vec![0; len],
            total: h.payload_size,
            sha256: h.payload_sha256.clone(),
        };
        check_chunk(&h, 0, &c(0, CHUNK_SIZE)).unwrap();
        check_chunk(&h, 1, &c(CHUNK_SIZE as u64, 10)).unwrap();
        assert!(check_chunk(&h, 1, &c(0, 10)).is_err());
        assert!(check_chunk(&h, 1, &c(CHUNK_SIZE as u64, 11)).is_err());
        assert!(check_chunk(&h, 2, &c(2 * CHUNK_SIZE as u64, 0)).is_err());
        let mut bad = c(0, CHUNK_SIZE);
        bad.total += 1;
        assert!(check_chunk(&h, 0, &bad).is_err());
        let empty = header(0);
        let e = pb::Chunk {
            offset: 0,
            data: vec![],
            total: 0,
            sha256: empty.payload_sha256.clone(),
        };
        check_chunk(&empty, 0, &e).unwrap();
    }

    #[test]
    fn errors_carry_refusal_codes() {
        let e = error(ServiceError::Reject(crate::round::Reject::Duplicate {
            node: "a".into(),
            round: 2,
        }));
        assert_eq!(e.class, Class::Rejected as i32);
        assert_eq!(e.reject, "duplicate");
        let e = error(ServiceError::Protocol("x".into()));
        assert_eq!(e.reject, "malformed");
        let e = error(ServiceError::NotFound { hash: "h".into() });
        assert_eq!(e.class, Class::NotFound as i32);
        assert!(e.reject.is_empty());
    }

    #[test]
    fn socket_of_a_multiaddr() {
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/7444".parse().unwrap();
        assert_eq!(socket_addr(&a), Some("127.0.0.1:7444".parse().unwrap()));
        let d: Multiaddr = "/dns4/example.org/tcp/1".parse().unwrap();
        assert_eq!(socket_addr(&d), None);
    }
}
