//! The codec's one error type.
//!
//! Payloads arrive from untrusted peers, so every way a payload can be wrong has its own variant
//! with the numbers that made it wrong: a coordinator logs the variant, counts rejections by kind
//! and never has to parse a message string. Encoding errors live here too because the encoder
//! refuses inputs the wire format cannot carry faithfully (over-long names, values outside f16's
//! range, non-finite values).

use crate::delta::DeltaError;

/// Everything that can go wrong encoding, decoding or inspecting a payload.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("payload truncated while reading {what}: needs {needed} bytes, {available} left")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("payload has {extra} bytes after its declared end ({declared} bytes)")]
    TrailingBytes { declared: u64, extra: u64 },
    #[error("not a codec payload: magic {found:02x?}")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported codec version {found} (this build reads version {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("reserved field `{field}` is {value}, must be 0")]
    Reserved { field: &'static str, value: u64 },
    #[error("{what}: declared {declared} exceeds the limit {limit}")]
    LimitExceeded {
        what: &'static str,
        declared: u64,
        limit: u64,
    },
    #[error("checksum mismatch: header says {expected:08x}, payload hashes to {actual:08x}")]
    Checksum { expected: u32, actual: u32 },
    #[error("tensor #{index}: name is not valid UTF-8")]
    NameUtf8 { index: usize },
    #[error("tensor `{name}` appears twice")]
    DuplicateName { name: String },
    #[error("tensor `{tensor}`: unknown {field} code {code}")]
    UnknownCode {
        tensor: String,
        field: &'static str,
        code: u8,
    },
    #[error("tensor `{tensor}`: inconsistent header: {reason}")]
    InvalidHeader {
        tensor: String,
        reason: &'static str,
    },
    #[error("tensor `{tensor}`: section declares {declared} bytes, {what} says {actual}")]
    SizeMismatch {
        tensor: String,
        what: &'static str,
        declared: u64,
        actual: u64,
    },
    #[error("tensor `{tensor}`: zstd: {reason}")]
    Decompress { tensor: String, reason: String },
    #[error("tensor `{tensor}`: bad sparse index at entry {entry}: {reason}")]
    InvalidIndex {
        tensor: String,
        entry: u64,
        reason: &'static str,
    },
    #[error("tensor `{tensor}`: value {index} is not finite")]
    NonFinite { tensor: String, index: u64 },
    #[error("tensor `{tensor}`: value {index} ({value}) is outside the range of {mode}")]
    OutOfRange {
        tensor: String,
        index: u64,
        value: f32,
        mode: &'static str,
    },
    #[error("tensor `{tensor}`: name of {len} bytes exceeds the format's {max}")]
    NameTooLong {
        tensor: String,
        len: usize,
        max: usize,
    },
    #[error("tensor `{tensor}`: {ndim} dimensions exceed the format's {max}")]
    TooManyDims {
        tensor: String,
        ndim: usize,
        max: usize,
    },
    #[error("zstd level {level} is outside 1..=19")]
    InvalidLevel { level: i32 },
    #[error("layout: {0}")]
    Layout(#[from] DeltaError),
    #[error("zstd failed while encoding tensor `{tensor}`: {reason}")]
    Compress { tensor: String, reason: String },
}
