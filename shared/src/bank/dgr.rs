//! DGR — denoising-guided retrieval with a one-step lag (DESIGN §5).
//!
//! Retrieval needs the hidden state of an uncertain position, which only exists after a forward.
//! Running a second forward per step would double the cost, so DGR lags by one step: after the
//! forward of step `s` the caller hands [`Dgr::observe`] that step's logits and final hidden
//! states of the still-masked positions; DGR selects the uncertain positions
//! ([`super::uncertainty`]), retrieves the top-3 patterns of the row's current band (the band of
//! the row's own `t`: rows of one batch may sit in different bands) for each, keyed on the
//! projected hidden state of that position, and composes them into one low-rank q/v delta per
//! position. That plan is for step `s + 1` only: [`Dgr::plan_for`] returns it for exactly that
//! step and nothing for any other, so a delta derived from step `s` can never leak into step `s`
//! itself or linger past `s + 1`.
//!
//! The plan is plain data — per (row, position) the patterns and their composition weights. The
//! sampler writes each position's `Σ w_i B_i A_i` straight into the stacked rows the model's
//! position hook applies ([`super::compose::compose_rows_into`]: `A [6, in]`, `w·Bᵀ [6, out]` per
//! layer and q|v), so the hook only adds `B·(A·x)` at those positions.

use crate::aggregate::daf::Band;

use super::banks::{Banks, band_of};
use super::compose::{Method, weights};
use super::error::{Error, Result};
use super::key::KeyProjection;
use super::pattern::Pattern;
use super::score::Scored;
use super::store::Bank;
use super::uncertainty::{Measure, Selected, select};

/// DGR settings (DESIGN §5 defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub measure: Measure,
    /// Positions with uncertainty strictly above this are selected.
    pub threshold: f32,
    /// At most this many positions per row and step.
    pub max_positions: usize,
    /// Patterns retrieved and composed per position.
    pub top_k: usize,
    pub method: Method,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            measure: Measure::Entropy,
            threshold: 0.5,
            max_positions: 10,
            top_k: 3,
            method: Method::default(),
        }
    }
}

/// What the forward of one step reported for one batch row (masked positions only).
#[derive(Debug, Clone, Copy)]
pub struct RowObservation<'a> {
    pub row: usize,
    /// The row's diffusion time at this step (fraction of its block still masked): it scales the
    /// uncertainty and picks the band.
    pub t: f32,
    /// Canvas positions of the masked tokens, one per logits/hidden row.
    pub positions: &'a [usize],
    /// `positions.len() × vocab` logits.
    pub logits: &'a [f32],
    pub vocab: usize,
    /// `positions.len() × d_model` final hidden states.
    pub hidden: &'a [f32],
}

/// The retrieval for one position.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub row: usize,
    /// The band whose bank the patterns came from.
    pub band: Band,
    pub position: usize,
    pub uncertainty: f32,
    /// The composed patterns, best first.
    pub patterns: Vec<Scored>,
    /// The composition weight of each pattern (same order; from the scores by the configured
    /// [`Method`]): the delta is `Σ w_i B_i A_i`, built where it is applied
    /// ([`super::compose::compose_rows_into`], or [`super::compose()`] with [`Entry::parts`]).
    pub weights: Vec<f32>,
}

impl Entry {
    /// The entry's patterns, from the bank they were retrieved from, with their weights.
    pub fn parts<'b>(&self, bank: &'b Bank) -> Result<Vec<(&'b Pattern, f32)>> {
        self.patterns
            .iter()
            .zip(&self.weights)
            .map(|(s, w)| {
                bank.get(s.id).map(|p| (p, *w)).ok_or_else(|| Error::Dgr {
                    reason: format!(
                        "pattern {} left the {} bank after retrieval",
                        s.id, self.band
                    ),
                })
            })
            .collect()
    }
}

/// Everything to apply during one step's forward.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The step whose forward applies this plan.
    pub step: u64,
    /// Every selected position per row (also those for which the bank had no pattern).
    pub selected: Vec<(usize, Selected)>,
    pub entries: Vec<Entry>,
}

impl Plan {
    /// Ids of every pattern the plan uses (for [`Bank::touch`]).
    pub fn pattern_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .entries
            .iter()
            .flat_map(|e| e.patterns.iter().map(|s| s.id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Where DGR finds the bank of a band.
pub trait BankSource {
    /// The bank of `band`, or `None` when there is none (nothing is retrieved).
    fn bank(&self, band: Band) -> Option<&Bank>;
}

impl BankSource for Banks {
    fn bank(&self, band: Band) -> Option<&Bank> {
        Some(self.get(band))
    }
}

/// A single bank serves its own band only.
impl BankSource for Bank {
    fn bank(&self, band: Band) -> Option<&Bank> {
        (self.band() == band).then_some(self)
    }
}

/// The DGR state across the steps of one generation.
pub struct Dgr {
    cfg: Config,
    projection: KeyProjection,
    pending: Option<Plan>,
    last_observed: Option<u64>,
}

impl Dgr {
    pub fn new(cfg: Config, projection: KeyProjection) -> Result<Self> {
        if !cfg.threshold.is_finite() || cfg.top_k == 0 {
            return Err(Error::Config {
                field: "dgr",
                value: format!("{cfg:?}"),
                reason: "threshold must be finite and top_k at least 1",
            });
        }
        Ok(Self {
            cfg,
            projection,
            pending: None,
            last_observed: None,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Forgets any pending plan (a new generation).
    pub fn reset(&mut self) {
        self.pending = None;
        self.last_observed = None;
    }

    /// After the forward of `step`: per row, selects by the row's `t`, retrieves from the bank of
    /// `band_of(t)` and composes the plan for `step + 1`. Steps must increase.
    pub fn observe(
        &mut self,
        step: u64,
        rows: &[RowObservation<'_>],
        banks: &impl BankSource,
        now: u64,
    ) -> Result<&Plan> {
        if let Some(prev) = self.last_observed
            && step <= prev
        {
            return Err(Error::Dgr {
                reason: format!("step {step} observed after step {prev}"),
            });
        }
        let d = self.projection.d_model();
        let mut selected = Vec::new();
        let mut entries = Vec::new();
        for r in rows {
            if r.hidden.len() != r.positions.len() * d {
                return Err(Error::Dgr {
                    reason: format!(
                        "row {}: {} hidden values for {} positions of width {d}",
                        r.row,
                        r.hidden.len(),
                        r.positions.len()
                    ),
                });
            }
            let band = band_of(r.t);
            let bank = banks.bank(band);
            let picks = select(
                r.logits,
                r.vocab,
                r.positions,
                r.t,
                self.cfg.measure,
                self.cfg.threshold,
                self.cfg.max_positions,
            )?;
            for s in picks {
                selected.push((r.row, s));
                let Some(bank) = bank else { continue };
                if bank.is_empty() {
                    continue;
                }
                // Index of this position among the row's masked positions (selected positions
                // come from `positions`, so it exists).
                let Some(i) = r.positions.iter().position(|p| *p == s.position) else {
                    continue;
                };
                let key = self.projection.project(&r.hidden[i * d..(i + 1) * d])?;
                let top = bank.search(&key, self.cfg.top_k, now)?;
                if top.is_empty() {
                    continue;
                }
                let scores: Vec<f32> = top.iter().map(|sc| sc.score).collect();
                let weights = weights(self.cfg.method, &scores)?;
                entries.push(Entry {
                    row: r.row,
                    band,
                    position: s.position,
                    uncertainty: s.uncertainty,
                    patterns: top,
                    weights,
                });
            }
        }
        self.last_observed = Some(step);
        Ok(&*self.pending.insert(Plan {
            step: step + 1,
            selected,
            entries,
        }))
    }

    /// The plan to apply in the forward of `step`: only the one computed after `step − 1`.
    pub fn plan_for(&self, step: u64) -> Option<&Plan> {
        self.pending.as_ref().filter(|p| p.step == step)
    }
}
