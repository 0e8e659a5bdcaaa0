//! The sampler's error type: every bad option, bad request or misbehaving model ends here as a
//! typed value with the offending numbers attached, never as a panic.

/// Errors from [`super::generate`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("option `{option}` is invalid: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    #[error("gen_length {gen_length} is not a positive multiple of block_length {block_length}")]
    BlockLength {
        gen_length: usize,
        block_length: usize,
    },
    #[error("steps {steps} is not a positive multiple of the number of blocks {num_blocks}")]
    Steps { steps: usize, num_blocks: usize },
    #[error("option `{option}` has no effect with rule `{rule}`")]
    Inapplicable {
        option: &'static str,
        rule: &'static str,
    },
    #[error("the request has no rows")]
    EmptyRequest,
    #[error("row {row}: the prompt is empty (it needs at least a BOS token)")]
    EmptyPrompt { row: usize },
    #[error("row {row}: token {token} at prompt index {index} is outside the vocabulary ({vocab})")]
    TokenOutOfVocab {
        row: usize,
        index: usize,
        token: u32,
        vocab: usize,
    },
    #[error("row {row}: the prompt contains the mask token at index {index}")]
    MaskInPrompt { row: usize, index: usize },
    #[error("special token `{name}` = {id} is outside the vocabulary ({vocab})")]
    SpecialOutOfVocab {
        name: &'static str,
        id: u32,
        vocab: usize,
    },
    #[error("{what} is {got}, more than the limit {max}")]
    TooLarge {
        what: &'static str,
        got: usize,
        max: usize,
    },
    #[error("the model returned logits of shape {got:?}, expected {expected:?}")]
    LogitsShape {
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("the model returned hidden states of shape {got:?}, expected {expected:?} × d")]
    HiddenShape {
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("DGR: {0}")]
    Dgr(#[from] crate::bank::Error),
    #[error("row {row}: the model returned a NaN or +inf logit at canvas position {position}")]
    NonFiniteLogits { row: usize, position: usize },
    #[error("row {row}: no token is allowed at canvas position {position} (all logits are -inf)")]
    NoCandidateToken { row: usize, position: usize },
    #[error("model forward failed: {0}")]
    Model(#[from] candle_core::Error),
}
