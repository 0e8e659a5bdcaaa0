//! The contract between the sampler and a model.
//!
//! The sampler (LLaDA / Dream / MDLM loops, Fast-dLLM threshold decoding and caches) only needs
//! logits for a canvas, and for the block-wise caches a way to recompute a window of the canvas
//! while the keys/values of every other position come from a cache. [`crate::model::Model`]
//! implements this trait; tests implement it with scripted logits.

use std::sync::Arc;

use candle_core::{DType, Result, Tensor};

use crate::model::lora::PositionDelta;

/// One forward's inputs for a batch of canvases.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids `[B, L]`, `u32`.
    pub ids: Tensor,
    /// RoPE position ids `[B, L]`, `u32` (pad-aware: left pads do not shift a row's positions).
    pub positions: Tensor,
    /// Key-padding mask `[B, L]`, `u8`: 1 = real token, 0 = padding (never attended to).
    /// `None` means every position is real. There is never a causal mask.
    pub key_mask: Option<Tensor>,
    /// Diffusion time `t ∈ [0, 1]` of each row (the fraction of the row's current block still
    /// masked when sampling; the noise level drawn for the row when training or scoring). An
    /// attached TALoRA adapter weights its bands by it. `None`: every row counts as
    /// `adapter::band::DEFAULT_T` (0.5, the domain band); models without adapters ignore it.
    pub t: Option<Vec<f64>>,
    /// Low-rank terms applied at chosen `(row, position)` pairs only (DGR); `None` for none.
    pub position_delta: Option<Arc<PositionDelta>>,
}

/// What the sampler needs from a masked-diffusion model.
pub trait Denoiser {
    /// Per-layer keys and values kept between steps by the block-wise caches.
    type Cache;

    fn vocab_size(&self) -> usize;

    /// Dream-style models predict position `i` from hidden state `i-1`; the sampler shifts the
    /// logits right by one when this is true.
    fn shift_logits(&self) -> bool;

    /// Logits `[B, L, V]` (f32) for the whole canvas.
    fn forward(&self, batch: &Batch) -> Result<Tensor>;

    /// Like [`Self::forward`], and also returns the keys/values of every position of every layer.
    fn forward_cached(&self, batch: &Batch) -> Result<(Tensor, Self::Cache)>;

    /// Width and dtype of the final hidden states, for models that can return them alongside
    /// their logits (DGR keys its retrieval on them and applies its deltas in that dtype).
    /// `None` (the default): the `*_hidden` forwards are unsupported.
    fn hidden_states(&self) -> Option<(usize, DType)> {
        None
    }

    /// Like [`Self::forward`], also returning the final hidden states `[B, L, d]`.
    fn forward_hidden(&self, _batch: &Batch) -> Result<(Tensor, Tensor)> {
        candle_core::bail!("this model does not report hidden states")
    }

    /// Like [`Self::forward_cached`], also returning the final hidden states `[B, L, d]`.
    fn forward_cached_hidden(&self, _batch: &Batch) -> Result<(Tensor, Tensor, Self::Cache)> {
        candle_core::bail!("this model does not report hidden states")
    }

    /// Like [`Self::forward_window`], also returning the window's final hidden states
    /// `[B, len, d]`.
    fn forward_window_hidden(
        &self,
        _batch: &Batch,
        _start: usize,
        _len: usize,
        _cache: &mut Self::Cache,
    ) -> Result<(Tensor, Tensor)> {
        candle_core::bail!("this model does not report hidden states")
    }

    /// Recomputes only positions `[start, start + len)` of the canvas: queries come from that
    /// window of `batch` (whose `ids`/`positions` still cover the whole canvas), keys/values of the
    /// window are computed fresh and written into `cache`, keys/values of every other position are
    /// read from `cache`. Returns logits `[B, len, V]`.
    fn forward_window(
        &self,
        batch: &Batch,
        start: usize,
        len: usize,
        cache: &mut Self::Cache,
    ) -> Result<Tensor>;
}
