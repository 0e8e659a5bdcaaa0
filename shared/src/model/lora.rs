//! Low-rank hooks on the model's linear layers: the model side of LoRA, TALoRA and DGR.
//!
//! Two kinds of hook, both `y += (x Aᵀ) Bᵀ · weight`:
//!
//! * an [`Adapter`] attached to the whole model ([`super::Model::set_adapter`]) — a list of
//!   [`Term`]s (plain LoRA: one term with a constant scale; TALoRA: one term per band) whose
//!   weight may depend on each row's diffusion time `t` (`Batch::t`), because every row of a
//!   batch can sit at a different timestep. The A of all terms are concatenated once, so a
//!   linear costs two thin matmuls whatever the number of terms: `h = x·A_catᵀ` `[B, L, R]`,
//!   `h ⊙ w_row` (a `[B, 1, R]` column weight per row), `y += h·B_catᵀ`;
//! * a [`PositionDelta`] carried by one forward (`Batch::position_delta`) — groups of
//!   `(row, position)` pairs, each group with its own factors per `(layer, target)`, applied to
//!   those positions only (DGR applies composed pattern adapters to its selected positions). The
//!   groups' factors are stacked per linear, so it gathers the selected rows of `x`, computes all
//!   their low-rank terms in two batched matmuls and scatter-adds them into `y`.
//!
//! Adapters hold candle tensors, so building one from trainable `Var`s makes the hook
//! differentiable in B while A and the base stay constants.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};

use crate::adapter::band::{self, Band};
use crate::adapter::names::Target;

/// One factor pair for one linear: A `[r, in]`, B `[out, r]`.
#[derive(Debug, Clone)]
pub struct LowRank {
    pub a: Tensor,
    pub b: Tensor,
}

impl LowRank {
    /// `(rank, in, out)`, checking that A and B agree.
    pub fn dims(&self) -> Result<(usize, usize, usize)> {
        let (r, inp) = self.a.dims2()?;
        let (out, rb) = self.b.dims2()?;
        if r != rb {
            candle_core::bail!("low-rank factors disagree: A is [{r}, {inp}], B is [{out}, {rb}]");
        }
        Ok((r, inp, out))
    }
}

/// How one term is weighted per row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Weighting {
    /// The same scale for every row (plain LoRA: `alpha / r`).
    Constant(f64),
    /// `scale · band_weights(t_row, fade)[band]` (a TALoRA band).
    Band { band: Band, scale: f64 },
}

/// One term of an [`Adapter`]: its rank and its weighting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Term {
    pub rank: usize,
    pub weighting: Weighting,
}

#[derive(Debug, Clone)]
struct Factors {
    /// A of every term, concatenated along the rank: `[R, in]`.
    a: Tensor,
    /// B of each term, `[out, r_i]` (kept apart so a term's B may be a trainable variable).
    b: Vec<Tensor>,
}

/// Low-rank terms on some of the model's linears, weighted per row.
#[derive(Debug, Clone)]
pub struct Adapter {
    terms: Vec<Term>,
    /// Cross-fade half-width (0..1000 scale) for banded terms.
    fade: f64,
    linears: HashMap<(usize, Target), Factors>,
}

impl Adapter {
    /// An adapter with `terms` and no factors yet; `fade` is used by banded terms.
    pub fn new(terms: Vec<Term>, fade: f64) -> Adapter {
        Adapter {
            terms,
            fade,
            linears: HashMap::new(),
        }
    }

    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// Total rank `R` (sum over terms).
    pub fn total_rank(&self) -> usize {
        self.terms.iter().map(|t| t.rank).sum()
    }

    /// Sets the factors of one linear: one pair per term, in term order.
    pub fn insert(&mut self, layer: usize, target: Target, factors: Vec<LowRank>) -> Result<()> {
        if factors.len() != self.terms.len() {
            candle_core::bail!(
                "{} factor pairs for {} terms at layer {layer} {target}",
                factors.len(),
                self.terms.len()
            );
        }
        let mut shape = None;
        for (f, term) in factors.iter().zip(&self.terms) {
            let (r, inp, out) = f.dims()?;
            if r != term.rank {
                candle_core::bail!(
                    "layer {layer} {target}: factor rank {r}, term rank {}",
                    term.rank
                );
            }
            if *shape.get_or_insert((inp, out)) != (inp, out) {
                candle_core::bail!("layer {layer} {target}: factors of different shapes");
            }
        }
        let a_parts: Vec<&Tensor> = factors.iter().map(|f| &f.a).collect();
        let a = Tensor::cat(&a_parts, 0)?.contiguous()?;
        let b = factors.into_iter().map(|f| f.b).collect();
        self.linears.insert((layer, target), Factors { a, b });
        Ok(())
    }

    /// Whether `(layer, target)` carries factors.
    pub fn covers(&self, layer: usize, target: Target) -> bool {
        self.linears.contains_key(&(layer, target))
    }

    /// The per-row column weights `[rows, 1, R]`: each of a term's `r` columns gets the term's
    /// weight at the row's `t` (`None`: every row at [`band::DEFAULT_T`]).
    pub fn column_weights(
        &self,
        t: Option<&[f64]>,
        rows: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if let Some(t) = t
            && t.len() != rows
        {
            candle_core::bail!("batch has {rows} rows but {} timesteps", t.len());
        }
        let total = self.total_rank();
        let mut w = Vec::with_capacity(rows * total);
        for row in 0..rows {
            let tr = t.map_or(band::DEFAULT_T, |t| t[row]);
            let bw = band::band_weights(tr, self.fade);
            for term in &self.terms {
                let v = match term.weighting {
                    Weighting::Constant(s) => s,
                    Weighting::Band { band, scale } => scale * f64::from(bw[band.index()]),
                };
                w.extend(std::iter::repeat_n(v as f32, term.rank));
            }
        }
        Tensor::from_vec(w, (rows, 1, total), device)?.to_dtype(dtype)
    }

    /// `y + (x A_catᵀ ⊙ weights) B_catᵀ` for one linear (`y` unchanged when not covered).
    pub(crate) fn apply(
        &self,
        layer: usize,
        target: Target,
        x: &Tensor,
        y: Tensor,
        weights: &Tensor,
    ) -> Result<Tensor> {
        let Some(f) = self.linears.get(&(layer, target)) else {
            return Ok(y);
        };
        let (b, l, i) = x.dims3()?;
        let r = f.a.dim(0)?;
        let h = x.reshape((b * l, i))?.matmul(&f.a.t()?)?;
        let h = h.reshape((b, l, r))?.broadcast_mul(weights)?;
        let bcat = if f.b.len() == 1 {
            f.b[0].clone()
        } else {
            Tensor::cat(&f.b, 1)?
        };
        let d = h.reshape((b * l, r))?.matmul(&bcat.t()?)?;
        y + d.reshape((b, l, ()))?
    }
}

/// One set of positions sharing one set of factors.
#[derive(Debug, Clone)]
pub struct PositionGroup {
    rows: Vec<(usize, usize)>,
    scale: f64,
    factors: HashMap<(usize, Target), LowRank>,
}

impl PositionGroup {
    /// Positions as `(batch row, canvas position)` pairs (distinct), and the scale of the term.
    pub fn new(rows: Vec<(usize, usize)>, scale: f64) -> Result<PositionGroup> {
        check_distinct(&rows)?;
        if !scale.is_finite() {
            candle_core::bail!("position group scale {scale} is not finite");
        }
        Ok(PositionGroup {
            rows,
            scale,
            factors: HashMap::new(),
        })
    }

    pub fn rows(&self) -> &[(usize, usize)] {
        &self.rows
    }

    /// Sets the factors of one linear.
    pub fn insert(&mut self, layer: usize, target: Target, f: LowRank) -> Result<()> {
        f.dims()?;
        self.factors.insert((layer, target), f);
        Ok(())
    }
}

/// One linear's factors of every group, stacked: A `[G, R, in]` and `(scale·B)ᵀ` `[G, R, out]`
/// (a group of lower rank, or without this linear, is zero-padded, which adds exactly nothing).
#[derive(Debug, Clone)]
struct Stack {
    a: Tensor,
    bt: Tensor,
}

/// Low-rank terms applied at chosen `(row, position)` pairs only, for one forward.
///
/// The factors of all groups are stacked per linear, so a forward costs the same few tensor ops
/// per linear whatever the number of groups (one gather, two batched matmuls, one scatter-add):
/// DGR's ten positions no longer mean ten rounds of small ops in every linear.
#[derive(Debug, Clone, Default)]
pub struct PositionDelta {
    /// The `(row, position)` pairs of each group.
    rows: Vec<Vec<(usize, usize)>>,
    linears: HashMap<(usize, Target), Stack>,
}

impl PositionDelta {
    /// Stacks general groups (any ranks, any subsets of linears).
    pub fn new(groups: Vec<PositionGroup>) -> Result<PositionDelta> {
        let mut keys: Vec<(usize, Target)> = groups
            .iter()
            .flat_map(|g| g.factors.keys().copied())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut linears = HashMap::with_capacity(keys.len());
        for key in keys {
            let present: Vec<(&PositionGroup, &LowRank)> = groups
                .iter()
                .filter_map(|g| g.factors.get(&key).map(|f| (g, f)))
                .collect();
            let (_, first) = present[0];
            let (_, inp, out) = first.dims()?;
            let (dtype, device) = (first.a.dtype(), first.a.device().clone());
            let mut rank = 0;
            for (_, f) in &present {
                let (r, i, o) = f.dims()?;
                if (i, o) != (inp, out) {
                    candle_core::bail!(
                        "position groups disagree on layer {} {:?}: [{out}, {inp}] vs [{o}, {i}]",
                        key.0,
                        key.1
                    );
                }
                rank = rank.max(r);
            }
            let (mut a_all, mut bt_all) = (Vec::new(), Vec::new());
            for g in &groups {
                let (a, bt) = match g.factors.get(&key) {
                    Some(f) => {
                        let r = f.a.dim(0)?;
                        let a = f.a.to_dtype(dtype)?;
                        let bt = (f.b.to_dtype(DType::F32)? * g.scale)?
                            .t()?
                            .to_dtype(dtype)?;
                        if r < rank {
                            (
                                Tensor::cat(
                                    &[a, Tensor::zeros((rank - r, inp), dtype, &device)?],
                                    0,
                                )?,
                                Tensor::cat(
                                    &[bt, Tensor::zeros((rank - r, out), dtype, &device)?],
                                    0,
                                )?,
                            )
                        } else {
                            (a, bt)
                        }
                    }
                    None => (
                        Tensor::zeros((rank, inp), dtype, &device)?,
                        Tensor::zeros((rank, out), dtype, &device)?,
                    ),
                };
                a_all.push(a);
                bt_all.push(bt.contiguous()?);
            }
            linears.insert(
                key,
                Stack {
                    a: Tensor::stack(&a_all, 0)?,
                    bt: Tensor::stack(&bt_all, 0)?,
                },
            );
        }
        Ok(PositionDelta {
            rows: groups.into_iter().map(|g| g.rows).collect(),
            linears,
        })
    }

    /// An empty delta over these groups of `(row, position)` pairs (each group's pairs distinct);
    /// add each linear's stacked factors with [`PositionDelta::insert_stacked`]. The fast path for
    /// callers that build the factors of all groups in one buffer (DGR).
    pub fn stacked(rows: Vec<Vec<(usize, usize)>>) -> Result<PositionDelta> {
        for r in &rows {
            check_distinct(r)?;
        }
        Ok(PositionDelta {
            rows,
            linears: HashMap::new(),
        })
    }

    /// Sets one linear's factors of every group: A `[G, R, in]`, `(scale·B)ᵀ` `[G, R, out]`.
    pub fn insert_stacked(
        &mut self,
        layer: usize,
        target: Target,
        a: Tensor,
        bt: Tensor,
    ) -> Result<()> {
        let (g, r, _) = a.dims3()?;
        let (gb, rb, _) = bt.dims3()?;
        if g != self.rows.len() || gb != g || rb != r {
            candle_core::bail!(
                "stacked factors for {} groups: A is {:?}, Bᵀ is {:?}",
                self.rows.len(),
                a.dims(),
                bt.dims()
            );
        }
        self.linears.insert((layer, target), Stack { a, bt });
        Ok(())
    }

    /// The `(row, position)` pairs of each group.
    pub fn rows(&self) -> &[Vec<(usize, usize)>] {
        &self.rows
    }

    /// Errors if a pair lies outside a `[rows, len]` canvas.
    pub fn check(&self, rows: usize, len: usize) -> Result<()> {
        for g in &self.rows {
            if let Some(&(r, p)) = g.iter().find(|&&(r, p)| r >= rows || p >= len) {
                candle_core::bail!(
                    "position delta targets ({r}, {p}) outside the [{rows}, {len}] canvas"
                );
            }
        }
        Ok(())
    }

    /// Adds every group's term at its positions that fall inside the window `[start, start+Lq)`
    /// of `x` `[B, Lq, in]` / `y` `[B, Lq, out]`.
    pub(crate) fn apply(
        &self,
        layer: usize,
        target: Target,
        x: &Tensor,
        y: Tensor,
        start: usize,
    ) -> Result<Tensor> {
        let Some(stack) = self.linears.get(&(layer, target)) else {
            return Ok(y);
        };
        let (b, lq, i) = x.dims3()?;
        let out = y.dim(2)?;
        let (mut idx, mut gid) = (Vec::new(), Vec::new());
        for (g, rows) in self.rows.iter().enumerate() {
            for &(r, p) in rows {
                if r < b && p >= start && p < start + lq {
                    idx.push((r * lq + (p - start)) as u32);
                    gid.push(g as u32);
                }
            }
        }
        if idx.is_empty() {
            return Ok(y);
        }
        let k = idx.len();
        let device = x.device();
        // One position per group, all in the window (DGR's case): the stacks line up as they are.
        let (a, bt) =
            if gid.iter().enumerate().all(|(i, &g)| i == g as usize) && k == self.rows.len() {
                (stack.a.clone(), stack.bt.clone())
            } else {
                let gid = Tensor::from_vec(gid, k, device)?;
                (
                    stack.a.index_select(&gid, 0)?,
                    stack.bt.index_select(&gid, 0)?,
                )
            };
        let idx = Tensor::from_vec(idx, k, device)?;
        let xs = x
            .reshape((b * lq, i))?
            .index_select(&idx, 0)?
            .to_dtype(a.dtype())?
            .unsqueeze(1)?;
        let d = xs.matmul(&a.transpose(1, 2)?)?.matmul(&bt)?;
        y.reshape((b * lq, out))?
            .index_add(&idx, &d.reshape((k, out))?.to_dtype(y.dtype())?, 0)?
            .reshape((b, lq, out))
    }
}

fn check_distinct(rows: &[(usize, usize)]) -> Result<()> {
    let mut sorted = rows.to_vec();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        candle_core::bail!("position group lists a (row, position) twice");
    }
    Ok(())
}
