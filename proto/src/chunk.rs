//! Splitting payloads into chunks and reassembling them, bounded.
//!
//! Adapters and deltas can be tens of megabytes; gRPC caps a message at 4 MiB by default and
//! libp2p request-response has its own limits, so every payload moves as 1 MiB chunks that each
//! repeat the total size and the SHA-256 of the whole. The receiving [`Assembler`] refuses a total
//! above its limit before allocating, requires chunks in order without gaps or overlap, and checks
//! the hash at the end: a hostile or broken sender gets a typed [`ChunkError`], never an unbounded
//! buffer.

use sha2::{Digest, Sha256};

use crate::pb;

/// Bytes per chunk.
pub const CHUNK_SIZE: usize = 1 << 20;

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The chunks of `bytes` (at least one, empty for an empty payload), each `chunk_size` long but
/// the last.
pub fn split(bytes: &[u8], chunk_size: usize) -> Vec<pb::Chunk> {
    let sha = sha256_hex(bytes);
    let total = bytes.len() as u64;
    let size = chunk_size.max(1);
    if bytes.is_empty() {
        return vec![pb::Chunk {
            offset: 0,
            data: Vec::new(),
            total,
            sha256: sha,
        }];
    }
    bytes
        .chunks(size)
        .enumerate()
        .map(|(i, c)| pb::Chunk {
            offset: (i * size) as u64,
            data: c.to_vec(),
            total,
            sha256: sha.clone(),
        })
        .collect()
}

/// Why a chunked payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("payload of {declared} bytes exceeds the limit of {limit}")]
    TooLarge { declared: u64, limit: u64 },
    #[error("chunk declares total {got}, expected {expected}")]
    TotalChanged { expected: u64, got: u64 },
    #[error("chunk declares sha256 {got}, expected {expected}")]
    HashChanged { expected: String, got: String },
    #[error("chunk at offset {got}, expected offset {expected}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("chunk of {len} bytes at offset {offset} runs past the total {total}")]
    Overrun { offset: u64, len: u64, total: u64 },
    #[error("payload incomplete: {received} of {total} bytes")]
    Incomplete { received: u64, total: u64 },
    #[error("payload hashes to {actual}, declared {declared}")]
    HashMismatch { declared: String, actual: String },
}

/// Reassembles one chunked payload of a known size and hash.
#[derive(Debug)]
pub struct Assembler {
    total: u64,
    sha256: String,
    buf: Vec<u8>,
}

impl Assembler {
    /// Expects `total` bytes hashing to `sha256`; refuses totals above `limit` before allocating.
    pub fn new(total: u64, sha256: &str, limit: u64) -> Result<Self, ChunkError> {
        if total > limit {
            return Err(ChunkError::TooLarge {
                declared: total,
                limit,
            });
        }
        let cap = usize::try_from(total).map_err(|_| ChunkError::TooLarge {
            declared: total,
            limit,
        })?;
        Ok(Self {
            total,
            sha256: sha256.to_string(),
            buf: Vec::with_capacity(cap),
        })
    }

    /// Starts from the first chunk's own declarations.
    pub fn from_first(chunk: &pb::Chunk, limit: u64) -> Result<Self, ChunkError> {
        Self::new(chunk.total, &chunk.sha256, limit)
    }

    pub fn received(&self) -> u64 {
        self.buf.len() as u64
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Appends the next chunk after checking it against the declarations.
    pub fn push(&mut self, chunk: &pb::Chunk) -> Result<(), ChunkError> {
        if chunk.total != self.total {
            return Err(ChunkError::TotalChanged {
                expected: self.total,
                got: chunk.total,
            });
        }
        if chunk.sha256 != self.sha256 {
            return Err(ChunkError::HashChanged {
                expected: self.sha256.clone(),
                got: chunk.sha256.clone(),
            });
        }
        let expected = self.received();
        if chunk.offset != expected {
            return Err(ChunkError::OutOfOrder {
                expected,
                got: chunk.offset,
            });
        }
        let len = chunk.data.len() as u64;
        if expected.saturating_add(len) > self.total {
            return Err(ChunkError::Overrun {
                offset: chunk.offset,
                len,
                total: self.total,
            });
        }
        self.buf.extend_from_slice(&chunk.data);
        Ok(())
    }

    pub fn is_complete(&self) -> bool {
        self.received() == self.total
    }

    /// The payload, once complete and matching its hash.
    pub fn finish(self) -> Result<Vec<u8>, ChunkError> {
        if !self.is_complete() {
            return Err(ChunkError::Incomplete {
                received: self.received(),
                total: self.total,
            });
        }
        let actual = sha256_hex(&self.buf);
        if actual != self.sha256 {
            return Err(ChunkError::HashMismatch {
                declared: self.sha256,
                actual,
            });
        }
        Ok(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_reassemble() {
        let bytes: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let chunks = split(&bytes, 1000);
        assert_eq!(chunks.len(), 3);
        let mut a = Assembler::from_first(&chunks[0], 10_000).unwrap();
        for c in &chunks {
            a.push(c).unwrap();
        }
        assert_eq!(a.finish().unwrap(), bytes);
    }

    #[test]
    fn empty_payload_is_one_chunk() {
        let chunks = split(&[], 10);
        assert_eq!(chunks.len(), 1);
        let mut a = Assembler::from_first(&chunks[0], 0).unwrap();
        a.push(&chunks[0]).unwrap();
        assert!(a.finish().unwrap().is_empty());
    }

    #[test]
    fn refusals() {
        let bytes = vec![7u8; 100];
        let chunks = split(&bytes, 40);
        assert!(matches!(
            Assembler::from_first(&chunks[0], 99),
            Err(ChunkError::TooLarge { declared: 100, .. })
        ));
        let mut a = Assembler::from_first(&chunks[0], 100).unwrap();
        assert!(matches!(
            a.push(&chunks[1]),
            Err(ChunkError::OutOfOrder {
                expected: 0,
                got: 40
            })
        ));
        let mut bad = chunks[0].clone();
        bad.data = vec![0u8; 101];
        assert!(matches!(a.push(&bad), Err(ChunkError::Overrun { .. })));
        a.push(&chunks[0]).unwrap();
        assert!(matches!(
            Assembler::new(100, &chunks[0].sha256, 100)
                .unwrap()
                .finish(),
            Err(ChunkError::Incomplete { .. })
        ));
        let mut forged = chunks[1].clone();
        forged.data[0] = 8;
        a.push(&forged).unwrap();
        a.push(&chunks[2]).unwrap();
        assert!(matches!(a.finish(), Err(ChunkError::HashMismatch { .. })));
    }
}
