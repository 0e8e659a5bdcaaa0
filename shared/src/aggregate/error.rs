//! The aggregation error type: every refusal names the rule, the counts or the parameter at fault.

use super::Rule;

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AggregateError {
    #[error("no inputs to aggregate")]
    NoInputs,
    #[error("input {index} has {got} values, expected {expected}")]
    LengthMismatch {
        index: usize,
        expected: usize,
        got: usize,
    },
    #[error("{what} has {got} entries, expected one per input ({expected})")]
    MetadataLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("previous global has {got} values, inputs have {expected}")]
    PreviousLength { expected: usize, got: usize },
    #[error("{rule} refuses n = {n}, f = {f}: it needs {requirement}")]
    Condition {
        rule: Rule,
        n: usize,
        f: usize,
        requirement: String,
    },
    #[error("{rule}: invalid parameter {param} = {value}: {reason}")]
    InvalidParam {
        rule: Rule,
        param: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("pre-filter: invalid {param} = {value}: {reason}")]
    InvalidFilter {
        param: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("every one of the {n} inputs was rejected by the pre-filters")]
    AllRejected { n: usize },
    #[error("{rule}: weights are negative, non-finite or sum to zero")]
    BadWeights { rule: Rule },
    #[error("fallback {fallback} (after {rule} refused: {first}) also refused: {second}")]
    FallbackFailed {
        rule: Rule,
        fallback: Rule,
        first: Box<AggregateError>,
        second: Box<AggregateError>,
    },
    #[error("input {index} (node `{node_id}`): {source}")]
    Layout {
        index: usize,
        node_id: String,
        source: crate::delta::DeltaError,
    },
    #[error("the pre-filters kept {kept} of {n} inputs, and {source}")]
    Screened {
        kept: usize,
        n: usize,
        source: Box<AggregateError>,
    },
    #[error("group `{group}`: {source}")]
    Group {
        group: String,
        source: Box<AggregateError>,
    },
}

/// A rule or attack name that `FromStr` does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{got}`; expected one of: {expected}")]
pub struct ParseNameError {
    pub kind: &'static str,
    pub got: String,
    pub expected: &'static str,
}
