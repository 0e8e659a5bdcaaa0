//! Training and likelihood for masked-diffusion LMs (LLaDA's recipe).
//!
//! * [`batch`] — packing tokenized examples into `[B, L]` canvases with BOS, EOS padding and the
//!   set of positions the noise may touch (everything but BOS when pretraining; only the answer and
//!   its EOS padding for SFT — the prompt is never masked);
//! * [`objective`] — the forward-process loss: `t ~ U(0,1)` per row, each maskable token masked
//!   with `p = (1−ε)t + ε`, cross-entropy on masked tokens weighted `1/p`;
//! * [`likelihood`] — LLaDA's Monte-Carlo bound on the negative log-likelihood (perplexity bound);
//! * [`trainer`] — AdamW with warm-up + cosine decay and global-norm gradient clipping.

pub mod batch;
pub mod likelihood;
pub mod objective;
pub mod pretrain;
pub mod trainer;

pub use batch::{Example, PackedBatch, pack};
pub use likelihood::{Draws, LikelihoodOptions, NllBound, nll_bound, nll_bound_by};
pub use objective::{
    NoiseOptions, Objective, Weighting, masked_diffusion_loss, masked_diffusion_loss_with,
};
pub use pretrain::{OPTIMIZER_FILE, PretrainOptions, StepReport, is_sft_row, pretrain, sft_rows};
pub use trainer::{Moments, Schedule, StateInfo, Trainer};

/// Uniform `[0, 1)` from a ChaCha stream's raw words (stable across `rand` versions).
pub(crate) fn unit_f64(rng: &mut impl rand::RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}
