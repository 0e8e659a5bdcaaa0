//! The seam between the daemon and local training.
//!
//! The runtime does not know how a node trains: each round it hands a [`LocalTrainer`] the round
//! context and the global adapter, and gets back a delta of the same layout plus what the
//! coordinator needs to weigh it (sample count, held-out improvement per band). The TALoRA trainer
//! implements this trait; tests use a deterministic stand-in and say so.

use std::collections::BTreeMap;

use ruvdllm::delta::Delta;

/// What a trainer knows about the round it trains for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundInfo {
    pub round: u64,
    /// The run seed (TALoRA derives its frozen A matrices from it).
    pub run_seed: u64,
    /// SHA-256 (hex) of the encoded global adapter.
    pub global_hash: String,
}

/// A node's contribution for one round.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalUpdate {
    /// Change to the global adapter's B matrices (same tensor names and shapes).
    pub delta: Delta,
    /// Training samples seen this round.
    pub samples: u64,
    /// Held-out loss improvement per band name (`coarse`, `domain`, `fine`); positive = better.
    pub band_metrics: BTreeMap<String, f64>,
    /// Mean training loss of the round's last steps, if the trainer reports one (journal only;
    /// never sent).
    pub train_loss: Option<f64>,
}

/// Training failures, as the trainer reports them.
#[derive(Debug, thiserror::Error)]
#[error("local training failed: {0}")]
pub struct TrainError(pub String);

/// Trains one round locally. Called on a blocking thread; may take minutes.
pub trait LocalTrainer: Send + 'static {
    fn train_round(&mut self, ctx: &RoundInfo, global: &Delta) -> Result<LocalUpdate, TrainError>;
}

impl LocalTrainer for Box<dyn LocalTrainer> {
    fn train_round(&mut self, ctx: &RoundInfo, global: &Delta) -> Result<LocalUpdate, TrainError> {
        (**self).train_round(ctx, global)
    }
}
