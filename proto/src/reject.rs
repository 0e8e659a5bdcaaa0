//! Why the coordinator refused a request, as a stable wire code.
//!
//! The coordinator's state machine refuses with a structured reason; on the wire the reason's kind
//! travels as a short code (gRPC: the `x-ruvdllm-reject` response metadata beside a human message)
//! so a node can react to it — stop retrying a duplicate, skip a stale round — without parsing
//! text.

use std::fmt;
use std::str::FromStr;

/// Metadata key carrying a [`RejectKind`] code on a refused gRPC call.
pub const REJECT_METADATA_KEY: &str = "x-ruvdllm-reject";

/// The kind of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectKind {
    UnknownNode,
    Revoked,
    IdentityMismatch,
    BaseModelMismatch,
    StaleRound,
    FutureRound,
    Duplicate,
    Replayed,
    Oversized,
    Malformed,
    NonFinite,
    NotSelected,
}

impl RejectKind {
    pub const ALL: [RejectKind; 12] = [
        RejectKind::UnknownNode,
        RejectKind::Revoked,
        RejectKind::IdentityMismatch,
        RejectKind::BaseModelMismatch,
        RejectKind::StaleRound,
        RejectKind::FutureRound,
        RejectKind::Duplicate,
        RejectKind::Replayed,
        RejectKind::Oversized,
        RejectKind::Malformed,
        RejectKind::NonFinite,
        RejectKind::NotSelected,
    ];

    /// The wire code (also the Prometheus label).
    pub fn code(self) -> &'static str {
        match self {
            RejectKind::UnknownNode => "unknown-node",
            RejectKind::Revoked => "revoked",
            RejectKind::IdentityMismatch => "identity-mismatch",
            RejectKind::BaseModelMismatch => "base-model-mismatch",
            RejectKind::StaleRound => "stale-round",
            RejectKind::FutureRound => "future-round",
            RejectKind::Duplicate => "duplicate",
            RejectKind::Replayed => "replayed",
            RejectKind::Oversized => "oversized",
            RejectKind::Malformed => "malformed",
            RejectKind::NonFinite => "non-finite",
            RejectKind::NotSelected => "not-selected",
        }
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An unknown reject code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reject code `{0}`")]
pub struct UnknownRejectCode(pub String);

impl FromStr for RejectKind {
    type Err = UnknownRejectCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RejectKind::ALL
            .into_iter()
            .find(|k| k.code() == s)
            .ok_or_else(|| UnknownRejectCode(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_roundtrip() {
        for k in RejectKind::ALL {
            assert_eq!(k.code().parse::<RejectKind>().unwrap(), k);
        }
        assert!("nope".parse::<RejectKind>().is_err());
    }
}
