//! One error type for the pattern banks: every way a bank, a pattern, a key or a DGR step can be
//! handed bad input, with the values that were wrong, so a caller never needs to parse a message.

use std::path::PathBuf;

/// Errors of the `bank` module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("matrix `{what}` has {got} values, expected {rows}×{cols} = {}", rows * cols)]
    MatrixSize {
        what: &'static str,
        rows: usize,
        cols: usize,
        got: usize,
    },
    #[error("low-rank factors do not chain: A is [{a_rows}, {a_cols}], B is [{b_rows}, {b_cols}]")]
    FactorShape {
        a_rows: usize,
        a_cols: usize,
        b_rows: usize,
        b_cols: usize,
    },
    #[error(
        "layer {layer} {target}: shape [{got_out}×{got_in}] differs from the bank's [{expected_out}×{expected_in}]"
    )]
    LayoutMismatch {
        layer: usize,
        target: &'static str,
        expected_out: usize,
        expected_in: usize,
        got_out: usize,
        got_in: usize,
    },
    #[error("adapter has {got} layers, expected {expected}")]
    LayerCount { expected: usize, got: usize },
    #[error("a pattern adapter must have rank {expected}, got rank {got}")]
    Rank { expected: usize, got: usize },
    #[error("vector `{what}` has length {got}, expected {expected}")]
    Dimension {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("`{what}` contains a non-finite value")]
    NonFinite { what: &'static str },
    #[error("`{what}` is the zero vector, it has no direction")]
    ZeroVector { what: &'static str },
    #[error("empty input: {what}")]
    Empty { what: &'static str },
    #[error("pattern {id} is already in the bank")]
    DuplicateId { id: u64 },
    #[error("pattern {id} is not in the bank")]
    UnknownId { id: u64 },
    #[error("pattern band {got} does not match the bank's band {expected}")]
    WrongBand {
        expected: &'static str,
        got: &'static str,
    },
    #[error("invalid bank config: {field} = {value} ({reason})")]
    Config {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("invalid DGR input: {reason}")]
    Dgr { reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt bank file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;
