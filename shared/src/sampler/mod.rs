//! The diffusion sampler: LLaDA's loop, Dream's and MDLM's rules, Fast-dLLM threshold decoding
//! and block-wise caches, batched and seeded, with a per-step callback.
//!
//! One generation is a canvas `[prompt | gen_length × MASK]` split into blocks that are
//! denoised left to right; within a block each step runs one forward and commits some masked
//! positions. What is committed and how many is the [`Rule`]'s business; committed tokens never
//! change and later blocks are never touched. Only the model's logits are needed, through the
//! [`Denoiser`] trait.
//!
//! Departures from the references, all deliberate:
//! * a row's noise comes from its own seeded stream, so its output does not depend on its batch
//!   (Dream's per-step reveal count is per row, not the batch mean);
//! * `[MASK]` is never proposed as a token (a committed MASK would look masked again);
//! * `confidence_eos_eot_inf` has its intended meaning at every temperature (see the `llada` module);
//! * early stop ([`Options::early_stop`]): once a row holds an EOS with nothing masked before
//!   it, everything after becomes EOS and the row is done. LLaDA's reference keeps denoising the
//!   tail, which only spends forwards on what is EOS padding by then; turn it off to match it.
//! * with CFG the unconditional copy masks the real prompt tokens only (pads stay pads), and a
//!   CFG step's single batched forward of `2B` rows counts as one NFE.

mod batch;
mod cache;
mod dgr;
mod dream;
mod engine;
mod error;
mod llada;
mod mdlm;
pub mod noise;
mod options;
pub mod schedule;
mod select;
pub mod testing;
pub mod visual;

#[cfg(test)]
mod tests;

use std::ops::ControlFlow;

use candle_core::Device;

pub use batch::positions;
pub use cache::MAX_STEP_LOGITS;
pub use dgr::{
    DgrBoundStats, DgrOptions, DgrUse, MAX_DGR_POSITIONS, MAX_DGR_TOP_K, Retrieval, nll_bound_dgr,
};
pub use error::Error;
pub use options::{CacheMode, DreamAlg, MAX_GEN_LENGTH, MAX_STEPS, Options, Remasking, Rule};
pub use schedule::Alpha;

use crate::denoiser::Denoiser;
use crate::tokens::SpecialTokens;

/// One row to generate: its prompt (at least one token, e.g. BOS) and the seed of its noise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRequest {
    pub prompt: Vec<u32>,
    pub seed: u64,
}

/// A batch of rows generated together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub rows: Vec<RowRequest>,
}

impl Request {
    /// One row.
    pub fn single(prompt: Vec<u32>, seed: u64) -> Request {
        Request {
            rows: vec![RowRequest { prompt, seed }],
        }
    }

    /// Rows with seeds `seed, seed + 1, …` in order.
    pub fn with_seeds(prompts: Vec<Vec<u32>>, seed: u64) -> Request {
        Request {
            rows: prompts
                .into_iter()
                .enumerate()
                .map(|(i, prompt)| RowRequest {
                    prompt,
                    seed: seed.wrapping_add(i as u64),
                })
                .collect(),
        }
    }
}

/// One row's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowOutput {
    /// The generation region (canvas without prompt), `gen_length` ids. After an early stop
    /// everything past the first EOS is EOS; after a cancel, unfinished positions are MASK.
    pub ids: Vec<u32>,
    /// The row was finished by early stop at a committed EOS.
    pub stopped_at_eos: bool,
    /// Steps in which this row had masked positions to work on.
    pub steps: usize,
    /// Forwards (full or window) that ran while this row was still being denoised.
    pub nfe: usize,
}

/// A request's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub rows: Vec<RowOutput>,
    /// Steps run for the batch.
    pub steps: usize,
    /// Model forwards run for the batch (full + window).
    pub nfe: usize,
    /// Of those, window forwards through the block-wise cache.
    pub window_nfe: usize,
    /// The callback stopped the generation early.
    pub cancelled: bool,
    /// DGR: (row, position) deltas applied over all forwards.
    pub dgr_applied: usize,
    /// DGR: the distinct patterns those deltas composed, per band — what the caller records
    /// with [`crate::bank::Usage::record`] once the generation is over.
    pub dgr_used: crate::bank::Usage,
}

/// One row's view of a step.
#[derive(Debug, Clone)]
pub struct RowStep<'a> {
    /// Fraction of the current block still masked when the step's forward ran (the step's t).
    pub t: f64,
    /// Positions (relative to the start of generation) committed by this step.
    pub committed: Vec<usize>,
    /// The row's canvas after the step, without left pads: prompt then generation.
    pub canvas: &'a [u32],
    /// Length of the row's prompt at the start of `canvas`.
    pub prompt_len: usize,
    /// The row is complete (early stop or nothing left to unmask).
    pub finished: bool,
    /// DGR: the positions whose delta this step's forward applied (selected after the previous
    /// step), with the pattern ids composed for each. Empty without DGR.
    pub dgr_applied: Vec<DgrUse>,
    /// DGR: the positions selected after this step's forward; those with patterns get their
    /// delta in the next step's forward.
    pub dgr_selected: Vec<DgrUse>,
}

/// What the per-step callback sees.
#[derive(Debug, Clone)]
pub struct StepEvent<'a> {
    /// Step index over the whole generation.
    pub step: usize,
    pub block: usize,
    pub step_in_block: usize,
    /// Forwards so far, this step's included.
    pub nfe: usize,
    pub rows: Vec<RowStep<'a>>,
}

/// Generates every row of `request` with `model` on `device`. `on_step` is called after each
/// step; returning `ControlFlow::Break(())` cancels (the output then has `cancelled` set).
pub fn generate<D, F>(
    model: &D,
    device: &Device,
    special: &SpecialTokens,
    options: &Options,
    request: &Request,
    on_step: F,
) -> Result<Output, Error>
where
    D: Denoiser,
    F: FnMut(&StepEvent<'_>) -> ControlFlow<()>,
{
    engine::run(model, device, special, options, request, None, on_step)
}

/// [`generate`] with the banks DGR retrieves from (used when `options.dgr` is set; DGR without
/// a retrieval is an [`Error::InvalidOption`]).
pub fn generate_with<D, F>(
    model: &D,
    device: &Device,
    special: &SpecialTokens,
    options: &Options,
    request: &Request,
    retrieval: Option<Retrieval<'_>>,
    on_step: F,
) -> Result<Output, Error>
where
    D: Denoiser,
    F: FnMut(&StepEvent<'_>) -> ControlFlow<()>,
{
    engine::run(model, device, special, options, request, retrieval, on_step)
}
