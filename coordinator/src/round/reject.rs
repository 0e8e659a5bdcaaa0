//! Why the round machine refused a registration or a submission.
//!
//! Every refusal carries the numbers behind it, so the coordinator can log it, count it by
//! [`RejectKind`] in `/metrics`, and send the node a reason it can act on.

use ruvdllm_proto::RejectKind;

/// A refusal with its details.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    #[error("node `{node}` is not registered")]
    UnknownNode { node: String },
    #[error("node `{node}` is revoked")]
    Revoked { node: String },
    #[error("authenticated as `{identity}` but the request names `{claimed}`")]
    IdentityMismatch { identity: String, claimed: String },
    #[error("base-model hash {got} differs from the coordinator's {expected}")]
    BaseModelMismatch { expected: String, got: String },
    #[error("round {got} is over (the open round is {current})")]
    StaleRound { got: u64, current: u64 },
    #[error("round {got} is not open yet (the open round is {current})")]
    FutureRound { got: u64, current: u64 },
    #[error("node `{node}` already submitted for round {round}")]
    Duplicate { node: String, round: u64 },
    #[error("payload {sha256} was already accepted in round {first_round}")]
    Replayed { sha256: String, first_round: u64 },
    #[error("payload of {len} bytes exceeds the limit of {limit}")]
    Oversized { len: u64, limit: u64 },
    #[error("malformed payload: {reason}")]
    Malformed { reason: String },
    #[error("payload has non-finite values: {detail}")]
    NonFinite { detail: String },
    #[error("node `{node}` was not drawn for round {round} (client sampling)")]
    NotSelected { node: String, round: u64 },
}

impl Reject {
    pub fn kind(&self) -> RejectKind {
        match self {
            Reject::UnknownNode { .. } => RejectKind::UnknownNode,
            Reject::Revoked { .. } => RejectKind::Revoked,
            Reject::IdentityMismatch { .. } => RejectKind::IdentityMismatch,
            Reject::BaseModelMismatch { .. } => RejectKind::BaseModelMismatch,
            Reject::StaleRound { .. } => RejectKind::StaleRound,
            Reject::FutureRound { .. } => RejectKind::FutureRound,
            Reject::Duplicate { .. } => RejectKind::Duplicate,
            Reject::Replayed { .. } => RejectKind::Replayed,
            Reject::Oversized { .. } => RejectKind::Oversized,
            Reject::Malformed { .. } => RejectKind::Malformed,
            Reject::NonFinite { .. } => RejectKind::NonFinite,
            Reject::NotSelected { .. } => RejectKind::NotSelected,
        }
    }

    /// The refusal for a payload the codec could not decode.
    pub fn from_codec(e: &ruvdllm::codec::Error) -> Self {
        match e {
            ruvdllm::codec::Error::NonFinite { .. } => Reject::NonFinite {
                detail: e.to_string(),
            },
            _ => Reject::Malformed {
                reason: e.to_string(),
            },
        }
    }
}
