//! Which forward a step runs: full, or Fast-dLLM's block-wise approximate KV cache.
//!
//! * `prefix` (`generate_with_prefix_cache`): at a block's first step (and at every refresh) a
//!   full `forward_cached` produces the step's logits and the keys/values of every position;
//!   later steps recompute `[block_start, canvas_end)` with the prefix read from the cache.
//! * `dual` (`generate_with_dual_cache`): later steps recompute only the current block; both
//!   the prefix and the (still fully masked) future blocks come from the cache.
//!
//! With bidirectional attention the cached keys/values go stale as the block fills in, so both
//! are approximations; refreshing at every step makes every forward a full one, which reproduces
//! the uncached result exactly. With shifted (Dream-style) logits the window starts one position
//! earlier so that the block's first position has the hidden state it is predicted from.

use candle_core::{DType, Tensor};

use super::Error;
use super::options::CacheMode;
use crate::denoiser::{Batch, Denoiser};

/// The most logits a single step may pull to the host (`rows × block × vocab`).
pub const MAX_STEP_LOGITS: usize = 1 << 30;

/// Runs a step's forward and keeps the cache between steps of a block.
pub(crate) struct Forwarder<'m, D: Denoiser> {
    model: &'m D,
    mode: CacheMode,
    refresh_every: usize,
    cache: Option<D::Cache>,
    /// Full forwards (plain or cached) run so far.
    pub full: usize,
    /// Window forwards run so far.
    pub windows: usize,
    /// Canvas columns `[start, start + len)` the last forward computed (DGR's deltas only act
    /// there).
    pub last_window: (usize, usize),
}

/// One step's model outputs for the current block.
pub(crate) struct BlockOut {
    /// `rows × (end − start) × vocab` f32, row-major, shift applied.
    pub logits: Vec<f32>,
    /// With `hidden_rows = Some(n)`: the final hidden state each of those logits was read from,
    /// for the first `n` rows, `n × (end − start) × d` f32.
    pub hidden: Option<Vec<f32>>,
}

/// What one step needs.
pub(crate) struct StepWindow {
    /// Canvas length.
    pub len: usize,
    /// Current block `[start, end)`.
    pub start: usize,
    pub end: usize,
    /// Step index within the block.
    pub step_in_block: usize,
    pub shift: bool,
}

impl<'m, D: Denoiser> Forwarder<'m, D> {
    pub fn new(model: &'m D, mode: CacheMode, refresh_every: usize) -> Self {
        Forwarder {
            model,
            mode,
            refresh_every,
            cache: None,
            full: 0,
            windows: 0,
            last_window: (0, 0),
        }
    }

    /// The logits of the current block, `rows × (end − start) × vocab` f32 (row-major), with the
    /// shift already applied; with `hidden_rows`, also the matching final hidden states of the
    /// first `hidden_rows` rows.
    pub fn block_logits(
        &mut self,
        batch: &Batch,
        rows: usize,
        vocab: usize,
        w: &StepWindow,
        hidden_rows: Option<usize>,
    ) -> Result<BlockOut, Error> {
        let nb = w.end - w.start;
        let total = rows.saturating_mul(nb).saturating_mul(vocab);
        if total > MAX_STEP_LOGITS {
            return Err(Error::TooLarge {
                what: "logits per step (rows × block × vocab)",
                got: total,
                max: MAX_STEP_LOGITS,
            });
        }
        // First model output needed: with shifted logits position p is predicted from p − 1.
        let first = if w.shift {
            w.start.saturating_sub(1)
        } else {
            w.start
        };
        let refresh = self.cache.is_none() || w.step_in_block.is_multiple_of(self.refresh_every);
        let want = hidden_rows.is_some();
        let (out, hidden, out_start, expected_q) = match (self.mode, self.cache.as_mut()) {
            (CacheMode::None, _) => {
                self.full += 1;
                let (out, hidden) = if want {
                    let (o, h) = self.model.forward_hidden(batch)?;
                    (o, Some(h))
                } else {
                    (self.model.forward(batch)?, None)
                };
                (out, hidden, 0, w.len)
            }
            (_, Some(cache)) if !refresh => {
                let end = match self.mode {
                    CacheMode::Dual => w.end,
                    _ => w.len,
                };
                self.windows += 1;
                let (out, hidden) = if want {
                    let (o, h) =
                        self.model
                            .forward_window_hidden(batch, first, end - first, cache)?;
                    (o, Some(h))
                } else {
                    let o = self
                        .model
                        .forward_window(batch, first, end - first, cache)?;
                    (o, None)
                };
                (out, hidden, first, end - first)
            }
            _ => {
                self.full += 1;
                let (out, hidden, cache) = if want {
                    let (o, h, c) = self.model.forward_cached_hidden(batch)?;
                    (o, Some(h), c)
                } else {
                    let (o, c) = self.model.forward_cached(batch)?;
                    (o, None, c)
                };
                self.cache = Some(cache);
                (out, hidden, 0, w.len)
            }
        };
        self.last_window = (out_start, expected_q);
        let dims = out.dims().to_vec();
        if dims != [rows, expected_q, vocab] {
            return Err(Error::LogitsShape {
                expected: vec![rows, expected_q, vocab],
                got: dims,
            });
        }
        let pick = |t: &Tensor| -> candle_core::Result<Tensor> {
            if w.shift && w.start == 0 {
                // Position 0 keeps its own logits: cat([logits[:, :1], logits[:, :-1]]).
                let head = t.narrow(1, 0, 1)?;
                if nb > 1 {
                    Tensor::cat(&[head, t.narrow(1, 0, nb - 1)?], 1)
                } else {
                    Ok(head)
                }
            } else {
                t.narrow(1, first - out_start, nb)
            }
        };
        let logits = pick(&out)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let hidden = match (hidden, hidden_rows) {
            (Some(h), Some(n)) => {
                let hd = h.dims().to_vec();
                if hd.len() != 3 || hd[0] != rows || hd[1] != expected_q || n > rows {
                    return Err(Error::HiddenShape {
                        expected: vec![rows, expected_q],
                        got: hd,
                    });
                }
                Some(
                    pick(&h.narrow(0, 0, n)?)?
                        .to_dtype(DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()?,
                )
            }
            _ => None,
        };
        Ok(BlockOut { logits, hidden })
    }
}
