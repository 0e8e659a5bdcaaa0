//! The federation protocol as request-response exchanges, for transports without streams
//! (libp2p `/ruvdllm/1.0.0`).
//!
//! gRPC has server and client streams; request-response has neither, so the three streaming calls
//! become exchanges of the same prost messages wrapped in [`pb::P2pRequest`] / [`pb::P2pResponse`]:
//! the round stream is a long-poll that carries the last round the node saw, the adapter download
//! asks for chunk `i` of `n`, and the upload sends chunk `i` of `n` with the update header
//! repeated. Chunks are [`CHUNK_SIZE`] bytes, the same as over gRPC, so one payload has the same
//! chunks on either transport. Both ends decode with [`decode_request`] / [`decode_response`],
//! which refuse an envelope without a body.

use prost::Message;

use crate::chunk::CHUNK_SIZE;
use crate::pb;

/// A request or response that does not decode or carries no body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("undecodable {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("{what} carries no body")]
    Empty { what: &'static str },
}

/// Chunks of a payload of `total` bytes: at least one (an empty payload is one empty chunk).
pub fn chunk_count(total: u64) -> u64 {
    total.div_ceil(CHUNK_SIZE as u64).max(1)
}

/// Chunk `index` of `bytes` (whose SHA-256 is `sha256`), or `None` past the last one.
pub fn chunk_at(bytes: &[u8], sha256: &str, index: u64) -> Option<pb::Chunk> {
    let total = bytes.len() as u64;
    if index >= chunk_count(total) {
        return None;
    }
    let start = usize::try_from(index).ok()?.checked_mul(CHUNK_SIZE)?;
    let end = start.saturating_add(CHUNK_SIZE).min(bytes.len());
    Some(pb::Chunk {
        offset: start as u64,
        data: bytes.get(start..end).unwrap_or_default().to_vec(),
        total,
        sha256: sha256.to_string(),
    })
}

/// Wraps a request body.
pub fn request(kind: pb::p2p_request::Kind) -> Vec<u8> {
    pb::P2pRequest { kind: Some(kind) }.encode_to_vec()
}

/// Wraps a response body.
pub fn response(kind: pb::p2p_response::Kind) -> Vec<u8> {
    pb::P2pResponse { kind: Some(kind) }.encode_to_vec()
}

pub fn decode_request(bytes: &[u8]) -> Result<pb::p2p_request::Kind, ExchangeError> {
    pb::P2pRequest::decode(bytes)
        .map_err(|e| ExchangeError::Decode {
            what: "request",
            reason: e.to_string(),
        })?
        .kind
        .ok_or(ExchangeError::Empty { what: "request" })
}

pub fn decode_response(bytes: &[u8]) -> Result<pb::p2p_response::Kind, ExchangeError> {
    pb::P2pResponse::decode(bytes)
        .map_err(|e| ExchangeError::Decode {
            what: "response",
            reason: e.to_string(),
        })?
        .kind
        .ok_or(ExchangeError::Empty { what: "response" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{Assembler, sha256_hex, split};

    #[test]
    fn indexed_chunks_equal_the_streamed_ones() {
        for len in [0usize, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 7] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sha = sha256_hex(&bytes);
            let streamed = split(&bytes, CHUNK_SIZE);
            let n = chunk_count(len as u64);
            assert_eq!(n as usize, streamed.len(), "len {len}");
            let indexed: Vec<pb::Chunk> =
                (0..n).map(|i| chunk_at(&bytes, &sha, i).unwrap()).collect();
            assert_eq!(indexed, streamed);
            assert!(chunk_at(&bytes, &sha, n).is_none());
            assert!(chunk_at(&bytes, &sha, u64::MAX).is_none());
            let mut asm = Assembler::from_first(&indexed[0], u64::MAX).unwrap();
            for c in &indexed {
                if !c.data.is_empty() {
                    asm.push(c).unwrap();
                }
            }
            assert_eq!(asm.finish().unwrap(), bytes);
        }
    }

    #[test]
    fn envelopes_round_trip_and_refuse_garbage() {
        let req = request(pb::p2p_request::Kind::Heartbeat(pb::HeartbeatRequest {
            round: 4,
        }));
        assert_eq!(
            decode_request(&req).unwrap(),
            pb::p2p_request::Kind::Heartbeat(pb::HeartbeatRequest { round: 4 })
        );
        let resp = response(pb::p2p_response::Kind::UploadProgress(pb::UploadProgress {
            received: 9,
        }));
        assert!(matches!(
            decode_response(&resp).unwrap(),
            pb::p2p_response::Kind::UploadProgress(pb::UploadProgress { received: 9 })
        ));
        assert_eq!(
            decode_request(&[]),
            Err(ExchangeError::Empty { what: "request" })
        );
        assert!(matches!(
            decode_request(&[0xff, 0xff, 0xff]),
            Err(ExchangeError::Decode { .. })
        ));
    }
}
