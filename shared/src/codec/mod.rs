//! The delta codec: how a node's TALoRA B delta travels to the coordinator and back.
//!
//! A 7B-shaped delta is 14.7 MB of f32 noise, and zstd alone gains ~1.1× on float noise
//! (REFERENCE-federation §4.2), so the bandwidth budget (< 10 MB per node per round) has to come
//! from narrower values (f16/bf16, int8/int4 with absmax scales) and from top-k sparsification with
//! error feedback ([`ErrorFeedback`]); zstd then squeezes the index streams, the exponents and any
//! zeros. Payloads come from untrusted peers, so [`decode`] is bounded: every declared size is
//! checked against [`Limits`] with checked arithmetic before anything is allocated, zstd output is
//! capped at the declared size, and malformed input gets a typed [`Error`], never a panic.
//!
//! Modes ([`Mode`], text form in parentheses): f32, f16, bf16, int8 (per-block absmax, block 64),
//! int8-row (per-row absmax, row = innermost dimension), int4 (per-block 64, two per byte), each
//! optionally after top-k (`int8+topk:0.1`; `topk:0.1` = f32 values). Accuracy per mode:
//! [`value_error_bound`] and [`tensor_error_bounds`]. `int8-row` puts one scale on each row of the
//! innermost dimension, which for rank-r B matrices ([4096 × r]) is a scale per r values: use it
//! for wide rows, `int8` (block 64) for LoRA B.
//!
//! # Wire format, version 1
//!
//! All integers little-endian.
//!
//! ```text
//! header (32 bytes)
//!   magic        4  "RVDC"
//!   version      u16  1
//!   flags        u16  0 (reserved)
//!   tensor_count u32
//!   toc_len      u32  bytes of the table of contents
//!   body_len     u64  bytes of all sections together
//!   crc32        u32  CRC-32 (IEEE) of toc ‖ body
//!   reserved     u32  0
//! toc: tensor_count entries
//!   name_len u16, name (UTF-8, unique)
//!   ndim u8 (<= 8), dims u64 × ndim
//!   values u8     0 f32, 1 f16, 2 bf16, 3 int8 (block 64), 4 int8-row, 5 int4 (block 64)
//!   sparsity u8   0 dense, 1 top-k
//!   shuffled u8   1 when the value plane is byte-shuffled (f32/f16/bf16 only)
//!   reserved u8   0
//!   stored u64    values carried (= numel when dense)
//!   index_len u64 bytes of the index stream (0 when dense)
//!   raw_len u64   decompressed section bytes = index_len + 4·scales + plane
//!   comp_len u64  bytes of this tensor's section in the body
//! body: one zstd frame per tensor, in toc order, decompressing to
//!   indices  (top-k only) `stored` LEB128 varints: first index, then gap − 1 to the previous
//!   scales   f32 × count: int8/int4 ⌈stored/64⌉ (blocks of stored values); int8-row numel/row_len
//!            (one per row of the tensor, 0 for a row with nothing stored); none for floats
//!   plane    f32 ×4 / f16, bf16 ×2 bytes (optionally shuffled: byte 0 of every value, then
//!            byte 1, …); int8 one i8 per value; int4 one nibble per value, q + 8, low nibble first
//! ```
//!
//! The encoder ends a zstd block after the index stream, the scales and each byte plane so that
//! each gets its own entropy tables (decoders need not care). Values decode as `q · scale` for the
//! scaled encodings; the decoded tensor is dense, zero where
//! top-k dropped a value, and must be finite everywhere.

mod bound;
mod decode;
mod encode;
mod error;
mod feedback;
mod inspect;
mod mode;
mod quant;
mod shuffle;
mod sparse;
mod wire;

pub use bound::{tensor_error_bounds, value_error_bound};
pub use decode::{Limits, decode, decode_expecting};
pub use encode::{EncodeOptions, Shuffle, encode};
pub use error::Error;
pub use feedback::ErrorFeedback;
pub use inspect::{Summary, TensorSummary, inspect, inspect_with};
pub use mode::{BLOCK, Mode, ModeParseError, Values};
pub use wire::{HEADER_LEN, MAGIC, MAX_NAME_LEN, MAX_NDIM, VERSION};
