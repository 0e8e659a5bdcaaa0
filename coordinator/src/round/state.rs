//! The round machine's durable state: everything needed to resume a round after a crash except
//! the tensors themselves (the global adapter and the accepted payloads live in their own files,
//! see [`crate::store`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One accepted update of the open round (its payload is stored separately, by node id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcceptedMeta {
    pub node: String,
    pub samples: u64,
    pub band_metrics: BTreeMap<String, f64>,
    pub payload_sha256: String,
    pub payload_len: u64,
    pub accepted_at_ms: u64,
}

/// Serializable snapshot of the round machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundState {
    /// Format version of this file.
    pub version: u32,
    pub run_seed: u64,
    pub base_model_hash: String,
    /// The open round (rounds start at 1; global adapter `round − 1` has been applied).
    pub round: u64,
    pub opened_at_ms: u64,
    pub deadline_ms: u64,
    /// Times the open round's deadline was extended for lack of `min_nodes` updates.
    pub extensions: u32,
    /// Accepted updates of the open round, in acceptance order.
    pub accepted: Vec<AcceptedMeta>,
    /// Registered nodes.
    pub registered: BTreeSet<String>,
    /// Payload hashes accepted in recent rounds → the round that accepted them (replay guard).
    pub seen: BTreeMap<String, u64>,
    /// Central DP's clip bound for the open round when it adapts (`None`: the configured one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_clip: Option<f64>,
    /// Client sampling: the nodes drawn for the open round (`None`: sampling is off, or the
    /// draw waits for enough registered nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<BTreeSet<String>>,
}

/// Current [`RoundState::version`].
pub const STATE_VERSION: u32 = 1;

/// Rounds a payload hash is remembered for replay detection. Older hashes are forgotten so the
/// state stays bounded; a payload that old is also for a long-closed round.
pub const REPLAY_WINDOW_ROUNDS: u64 = 256;

impl RoundState {
    /// Round 1, opened at `now_ms`.
    pub fn initial(run_seed: u64, base_model_hash: &str, now_ms: u64, round_ms: u64) -> Self {
        Self {
            version: STATE_VERSION,
            run_seed,
            base_model_hash: base_model_hash.to_string(),
            round: 1,
            opened_at_ms: now_ms,
            deadline_ms: now_ms.saturating_add(round_ms),
            extensions: 0,
            accepted: Vec::new(),
            registered: BTreeSet::new(),
            seen: BTreeMap::new(),
            dp_clip: None,
            selected: None,
        }
    }
}
