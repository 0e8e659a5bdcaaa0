//! DGR inside the sampler: the bank-side rule ([`crate::bank::dgr`]) wired into the step loop.
//!
//! The step loop already runs one forward per step; DGR rides on it instead of adding a second.
//! After the forward of step `s` the loop hands this module the block's logits and the final
//! hidden states those logits were read from; per row, the masked positions whose uncertainty
//! (entropy / ln V or 1 − margin, over √t of the row) exceeds the threshold — at most
//! `max_positions` — retrieve the top-k patterns of the row's current band, keyed on their own
//! hidden state. The composed deltas become a [`PositionDelta`] on the batch of step `s + 1`
//! and on no other: the lag is what makes the hidden state available without a second forward.
//!
//! With Dream-style shifted logits, the prediction for position `p` is read from the hidden state
//! of `p − 1`, so both the key and the delta use that source column: the delta then changes the
//! very computation that predicts `p`.
//!
//! Block-wise caches are supported: the lagged delta targets positions of the block just
//! denoised, and every window forward recomputes at least the current block (the first step of
//! a block is always a full forward). Only what a forward actually computed is reported as
//! applied — the step callback sees exactly the positions and pattern ids of the delta that ran.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::Error;
use crate::adapter::Target as ModelTarget;
use crate::bank::dgr::{BankSource, Config, Dgr, RowObservation};
use crate::bank::{Band, Banks, KeyProjection, Measure, Method, Target, band_of};
use crate::model::Model;
use crate::model::lora::PositionDelta;
use crate::train::{Example, LikelihoodOptions, NllBound, nll_bound_by};

/// Most positions DGR may touch per row and step (bounds the work a request can ask for).
pub const MAX_DGR_POSITIONS: usize = 256;
/// Most patterns composed per position.
pub const MAX_DGR_TOP_K: usize = 16;

/// DGR settings of one generation (DESIGN §5 defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DgrOptions {
    /// Positions whose uncertainty (over √t) is strictly above this retrieve.
    pub threshold: f32,
    /// At most this many positions per row and step.
    pub max_positions: usize,
    /// Patterns retrieved and composed per position.
    pub top_k: usize,
    /// `entropy` (H / ln V) or `margin` (1 − (p₁ − p₂)).
    pub measure: Measure,
}

impl Default for DgrOptions {
    fn default() -> Self {
        let c = Config::default();
        DgrOptions {
            threshold: c.threshold,
            max_positions: c.max_positions,
            top_k: c.top_k,
            measure: c.measure,
        }
    }
}

impl DgrOptions {
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |option, reason: String| Err(Error::InvalidOption { option, reason });
        if !self.threshold.is_finite() {
            return bad("dgr.threshold", format!("{} is not finite", self.threshold));
        }
        if self.max_positions > MAX_DGR_POSITIONS {
            return bad(
                "dgr.max_positions",
                format!("{} exceeds {MAX_DGR_POSITIONS}", self.max_positions),
            );
        }
        if !(1..=MAX_DGR_TOP_K).contains(&self.top_k) {
            return bad(
                "dgr.top_k",
                format!("{} is not in 1..={MAX_DGR_TOP_K}", self.top_k),
            );
        }
        Ok(())
    }

    fn config(&self) -> Config {
        Config {
            measure: self.measure,
            threshold: self.threshold,
            max_positions: self.max_positions,
            top_k: self.top_k,
            method: Method::default(),
        }
    }
}

/// What a generation with DGR retrieves from: the node's banks, the key projection their keys
/// were made with, and the banks' clock (for recency).
#[derive(Clone, Copy)]
pub struct Retrieval<'a> {
    pub banks: &'a Banks,
    pub projection: &'a KeyProjection,
    pub now: u64,
}

/// One position DGR selected or applied a delta at.
#[derive(Debug, Clone, PartialEq)]
pub struct DgrUse {
    /// Position relative to the start of generation (like [`super::RowStep::committed`]).
    pub position: usize,
    /// The band whose bank was searched (the band of the row's t at selection).
    pub band: Band,
    /// Uncertainty over √t at selection.
    pub uncertainty: f32,
    /// Ids of the composed patterns, best first (empty: the bank had none).
    pub patterns: Vec<u64>,
}

/// A planned delta: the row, its source column and what the callback reports.
pub(crate) struct Planned {
    pub row: usize,
    pub column: usize,
    pub report: DgrUse,
}

/// DGR's state during one generation.
pub(crate) struct Runner<'a> {
    dgr: Dgr,
    retrieval: Retrieval<'a>,
    d: usize,
    dtype: DType,
    shift: bool,
    prompt_len: usize,
}

impl<'a> Runner<'a> {
    pub fn new(
        opts: &DgrOptions,
        retrieval: Retrieval<'a>,
        hidden: (usize, DType),
        shift: bool,
        prompt_len: usize,
    ) -> Result<Self, Error> {
        opts.validate()?;
        let (d, dtype) = hidden;
        if retrieval.projection.d_model() != d {
            return Err(Error::InvalidOption {
                option: "dgr",
                reason: format!(
                    "the key projection is for hidden width {}, the model's is {d}",
                    retrieval.projection.d_model()
                ),
            });
        }
        Ok(Runner {
            dgr: Dgr::new(opts.config(), retrieval.projection.clone())?,
            retrieval,
            d,
            dtype,
            shift,
            prompt_len,
        })
    }

    fn column(&self, position: usize) -> usize {
        if self.shift && position > 0 {
            position - 1
        } else {
            position
        }
    }

    /// The delta for the forward of `step` (computed after step − 1), and what it targets.
    pub fn delta_for(
        &self,
        step: u64,
        device: &Device,
    ) -> Result<(Option<Arc<PositionDelta>>, Vec<Planned>), Error> {
        let Some(plan) = self.dgr.plan_for(step) else {
            return Ok((None, Vec::new()));
        };
        let entries = &plan.entries;
        let mut planned = Vec::with_capacity(entries.len());
        for e in entries {
            planned.push(Planned {
                row: e.row,
                column: self.column(e.position),
                report: DgrUse {
                    position: e.position - self.prompt_len,
                    band: e.band,
                    uncertainty: e.uncertainty,
                    patterns: e.patterns.iter().map(|s| s.id).collect(),
                },
            });
        }
        if entries.is_empty() {
            return Ok((None, planned));
        }
        // One group per entry (its single position). Each entry's `Σ w_i B_i A_i` is written
        // straight from the int8 patterns into one stacked buffer per linear: no composed
        // matrices, two tensors per linear instead of two per entry and linear.
        let parts =
            entries
                .iter()
                .map(|e| {
                    let bank = self.retrieval.banks.bank(e.band).ok_or_else(|| {
                        crate::bank::Error::Dgr {
                            reason: format!("no {} bank for a planned retrieval", e.band),
                        }
                    })?;
                    e.parts(bank)
                })
                .collect::<Result<Vec<_>, crate::bank::Error>>()?;
        let g = entries.len();
        let rank = parts.iter().map(Vec::len).max().unwrap_or(0) * crate::bank::PATTERN_RANK;
        let Some(&(first, _)) = parts.iter().find_map(|p| p.first()) else {
            return Ok((None, planned));
        };
        let mut delta =
            PositionDelta::stacked(planned.iter().map(|p| vec![(p.row, p.column)]).collect())?;
        for layer in 0..first.n_layers() {
            for (t, mt) in [(Target::Q, ModelTarget::Q), (Target::V, ModelTarget::V)] {
                let f = first.factors(layer, t);
                let (inp, out) = (f.in_dim(), f.out_dim());
                let mut a = vec![0.0f32; g * rank * inp];
                let mut bt = vec![0.0f32; g * rank * out];
                for (i, p) in parts.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
                    let r = p.len() * crate::bank::PATTERN_RANK;
                    crate::bank::compose::compose_rows_into(
                        p,
                        layer,
                        t,
                        &mut a[i * rank * inp..(i * rank + r) * inp],
                        &mut bt[i * rank * out..(i * rank + r) * out],
                    )?;
                }
                let a = Tensor::from_vec(a, (g, rank, inp), device)?.to_dtype(self.dtype)?;
                let bt = Tensor::from_vec(bt, (g, rank, out), device)?.to_dtype(self.dtype)?;
                delta.insert_stacked(layer, mt, a, bt)?;
            }
        }
        Ok((Some(Arc::new(delta)), planned))
    }

    /// After the forward of `step`: `masked[r]` are row r's masked canvas columns in the block
    /// `[start, start + nb)`, `logits` / `hidden` the block outputs of the conditional rows.
    /// Returns, per row, the positions selected for the next step.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        step: u64,
        masked: &[Vec<usize>],
        block: (usize, usize),
        logits: &[f32],
        hidden: &[f32],
        vocab: usize,
    ) -> Result<Vec<Vec<DgrUse>>, Error> {
        let (start, nb) = block;
        let d = self.d;
        let b = masked.len();
        if logits.len() < b * nb * vocab || hidden.len() != b * nb * d {
            return Err(Error::HiddenShape {
                expected: vec![b, nb, d],
                got: vec![hidden.len()],
            });
        }
        let mut bufs: Vec<(usize, f32, Vec<f32>, Vec<f32>)> = Vec::new();
        for (r, cols) in masked.iter().enumerate() {
            if cols.is_empty() {
                continue;
            }
            let mut lg = Vec::with_capacity(cols.len() * vocab);
            let mut hd = Vec::with_capacity(cols.len() * d);
            for &p in cols {
                let i = r * nb + (p - start);
                lg.extend_from_slice(&logits[i * vocab..(i + 1) * vocab]);
                hd.extend_from_slice(&hidden[i * d..(i + 1) * d]);
            }
            let t = cols.len() as f32 / nb as f32;
            bufs.push((r, t, lg, hd));
        }
        let rows: Vec<RowObservation<'_>> = bufs
            .iter()
            .map(|(r, t, lg, hd)| RowObservation {
                row: *r,
                t: *t,
                positions: &masked[*r],
                logits: lg,
                vocab,
                hidden: hd,
            })
            .collect();
        let plan = self
            .dgr
            .observe(step, &rows, self.retrieval.banks, self.retrieval.now)?;
        let mut out = vec![Vec::new(); b];
        for (row, s) in &plan.selected {
            let t = bufs.iter().find(|x| x.0 == *row).map_or(1.0, |x| x.1);
            let patterns = plan
                .entries
                .iter()
                .find(|e| e.row == *row && e.position == s.position)
                .map(|e| e.patterns.iter().map(|p| p.id).collect())
                .unwrap_or_default();
            out[*row].push(DgrUse {
                position: s.position - self.prompt_len,
                band: band_of(t),
                uncertainty: s.uncertainty,
                patterns,
            });
        }
        Ok(out)
    }
}

/// What DGR did while [`nll_bound_dgr`] scored a set of sequences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DgrBoundStats {
    /// Minibatches of draws scored.
    pub minibatches: usize,
    /// Minibatches in which DGR applied at least one delta (each cost a second forward).
    pub with_delta: usize,
    /// Position deltas applied, summed over all draws.
    pub positions: usize,
}

/// LLaDA's Monte-Carlo perplexity bound ([`crate::train::nll_bound`]: the same draws, seed and
/// weighting) of the model *as DGR runs it*. The estimator scores masked canvases that no
/// sampler step preceded, so the one-step lag is played out on each canvas: a first forward
/// gives the uncertainty of every masked position of the target region (t = the row's masked
/// fraction, as in a sampler block) and the final hidden states; DGR selects and retrieves
/// exactly as it would after a sampler step; a second forward carries those position deltas
/// and its logits are scored. Minibatches where nothing crosses the threshold are scored from
/// the first forward. With no pattern in the banks the result equals the plain bound.
pub fn nll_bound_dgr(
    model: &Model,
    examples: &[Example],
    opts: &LikelihoodOptions,
    dgr: &DgrOptions,
    retrieval: Retrieval<'_>,
) -> Result<(NllBound, DgrBoundStats), Error> {
    dgr.validate()?;
    let cfg = model.config();
    let (d, vocab) = (cfg.d_model, cfg.vocab_size);
    let shift = cfg.shift_logits;
    let device = model.device().clone();
    let mut stats = DgrBoundStats::default();
    let bound = nll_bound_by(model, examples, opts, |draws| -> Result<Tensor, Error> {
        let (start, len) = draws.region;
        let l = draws.canvas.first().map_or(0, Vec::len);
        let flat: Vec<u32> = draws.canvas.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (draws.canvas.len(), l), &device)?;
        let mut batch = model.plain_batch(&ids)?;
        batch.t = Some(draws.t.to_vec());
        let first = model.forward_full(&batch, None)?;
        stats.minibatches += 1;
        // The logits predicting the region (one column earlier for shifted models) and the
        // hidden states they were read from.
        let src = start - usize::from(shift);
        let block = |t: &Tensor| -> Result<Vec<f32>, Error> {
            Ok(t.narrow(1, src, len)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        let (logits, hidden) = (block(&first.logits)?, block(&first.hidden)?);
        let mut runner = Runner::new(dgr, retrieval, (d, model.dtype()), shift, start)?;
        runner.observe(0, draws.masked, (start, len), &logits, &hidden, vocab)?;
        let (delta, planned) = runner.delta_for(1, &device)?;
        let Some(delta) = delta else {
            return Ok(first.logits);
        };
        stats.with_delta += 1;
        stats.positions += planned.len();
        batch.position_delta = Some(delta);
        Ok(model.forward_full(&batch, None)?.logits)
    })?;
    Ok((bound, stats))
}
