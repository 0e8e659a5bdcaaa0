//! The RuvDLLM wire protocol (`ruvdllm.v1`).
//!
//! Generated prost/tonic code stays in [`pb`]; the daemons work with the domain types of
//! [`types`] and convert at the edge, so a second transport (libp2p request-response carrying the
//! same prost messages) reuses the conversions, the chunking ([`chunk`]) and the refusal codes
//! ([`reject`]) unchanged. [`p2p`] is that second transport's layer: Noise + yamux over TCP,
//! an allowlist of peer ids, length-prefixed request-response with hard size limits; [`exchange`]
//! maps the streaming calls onto its request-response exchanges.

pub mod chunk;
pub mod counting;
pub mod exchange;
pub mod p2p;
pub mod reject;
pub mod types;
/// Generated code for `proto/ruvdllm/v1/ruvdllm.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("ruvdllm.v1");
}
pub use chunk::{Assembler, CHUNK_SIZE, ChunkError, sha256_hex, split};
pub use reject::{REJECT_METADATA_KEY, RejectKind};
pub use types::{Announcement, ConvertError, UpdateHeader};
