//! LLaDA's Monte-Carlo bound on the negative log-likelihood (`get_log_likelihood.py`).
//!
//! For a sequence whose *target region* has `T` tokens, each Monte-Carlo draw masks exactly `x`
//! random positions of the region and scores `Σ_masked CE / (x/T)`; the mean over draws is an upper
//! bound on the region's NLL in nats. Draws are stratified as in the reference: within a minibatch
//! of `b` draws, `x_i = round(linspace(k, k + (b−1)·T/b))` wrapped into `1..=T` for a random `k`.
//! The prompt (and BOS) is never masked. The region is the answer followed by its EOS padding up
//! to `seq_len` — what the sampler generates — so the bound matches the SFT objective.

use candle_core::{Device, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::batch::{Example, pack};
use super::objective::{logits_for, weighted_ce};
use crate::model::Model;

#[derive(Debug, Clone)]
pub struct LikelihoodOptions {
    /// Monte-Carlo draws per sequence (LLaDA uses 128).
    pub mc_samples: usize,
    /// Draws per forward (the stratification unit; LLaDA uses 16).
    pub batch: usize,
    pub seq_len: usize,
    pub seed: u64,
}

impl Default for LikelihoodOptions {
    fn default() -> Self {
        Self {
            mc_samples: 32,
            batch: 16,
            seq_len: 64,
            seed: 0,
        }
    }
}

/// Summed NLL bound (nats) over a set of sequences, and their target token count.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NllBound {
    pub nll: f64,
    pub tokens: usize,
}

impl NllBound {
    pub fn per_token(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.nll / self.tokens as f64
        }
    }

    /// `exp(NLL bound per token)`: an upper bound on perplexity.
    pub fn perplexity(&self) -> f64 {
        self.per_token().exp()
    }
}

/// The stratified numbers of masked tokens for one minibatch of `b` draws over `t` targets.
pub fn stratified_counts(k: usize, t: usize, b: usize) -> Vec<usize> {
    (0..b)
        .map(|i| {
            let x = if b > 1 {
                k as f64 + i as f64 * (t as f64 / b as f64)
            } else {
                k as f64
            };
            let x = x.round() as usize;
            ((x + t - 1) % t) + 1
        })
        .collect()
}

/// Computes the bound for every example (summed), deterministic for a given seed.
pub fn nll_bound(
    model: &Model,
    examples: &[Example],
    opts: &LikelihoodOptions,
) -> Result<NllBound> {
    nll_bound_by(model, examples, opts, |draws| {
        logits_for(model, draws.canvas, Some(draws.t.to_vec()))
    })
}

/// One minibatch of Monte-Carlo draws of one sequence, as handed to the scorer of
/// [`nll_bound_by`].
pub struct Draws<'a> {
    /// The masked canvases `[b][seq_len]`.
    pub canvas: &'a [Vec<u32>],
    /// Each row's diffusion time (its masked fraction of the target region).
    pub t: &'a [f64],
    /// Each row's masked columns, ascending.
    pub masked: &'a [Vec<usize>],
    /// The target region `[start, start + len)` (the answer and its EOS padding).
    pub region: (usize, usize),
}

/// [`nll_bound`] with the logits of each minibatch of draws supplied by `score` (`[b, seq_len,
/// V]`): the same draws, stratification and weighting, whatever computes the logits — a plain
/// forward, or DGR's selection forward followed by the forward with its deltas
/// ([`crate::sampler::nll_bound_dgr`]).
pub fn nll_bound_by<E: From<candle_core::Error>>(
    model: &Model,
    examples: &[Example],
    opts: &LikelihoodOptions,
    mut score: impl FnMut(&Draws<'_>) -> std::result::Result<candle_core::Tensor, E>,
) -> std::result::Result<NllBound, E> {
    if opts.mc_samples == 0 || opts.batch == 0 {
        return Err(candle_core::Error::Msg("mc_samples and batch must be positive".into()).into());
    }
    let specials = model.config().specials;
    // Dream-style models predict position c from the logits of column c − 1 (the region never
    // starts at column 0: BOS is there).
    let shift = usize::from(model.config().shift_logits);
    let dev: Device = model.device().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut total = NllBound::default();
    for ex in examples {
        let packed = pack(std::slice::from_ref(ex), opts.seq_len, specials, false);
        let clean = &packed.ids[0];
        let region: Vec<usize> = (0..clean.len())
            .filter(|&c| packed.maskable[0][c])
            .collect();
        let t = region.len();
        if t == 0 {
            continue;
        }
        let mut sum = 0.0;
        let mut draws = 0usize;
        while draws < opts.mc_samples {
            let b = opts.batch.min(opts.mc_samples - draws);
            let k = 1 + (rand::RngCore::next_u32(&mut rng) as usize % t);
            let counts = stratified_counts(k, t, b);
            let mut canvas = Vec::with_capacity(b);
            let mut ts = Vec::with_capacity(b);
            let mut masked = Vec::with_capacity(b);
            let (mut index, mut targets, mut weights) = (Vec::new(), Vec::new(), Vec::new());
            for (i, &x) in counts.iter().enumerate() {
                let mut order = region.clone();
                // Partial Fisher–Yates: the first x entries are a uniform random subset.
                for j in 0..x {
                    let r = j + (rand::RngCore::next_u32(&mut rng) as usize % (t - j));
                    order.swap(j, r);
                }
                let mut row = clean.clone();
                let p = x as f64 / t as f64;
                // The row's diffusion time is its masked fraction.
                ts.push(p);
                for &c in &order[..x] {
                    row[c] = specials.mask;
                    index.push((i * clean.len() + c - shift) as u32);
                    targets.push(clean[c]);
                    weights.push((1.0 / p) as f32);
                }
                let mut cols = order[..x].to_vec();
                cols.sort_unstable();
                masked.push(cols);
                canvas.push(row);
            }
            let logits = score(&Draws {
                canvas: &canvas,
                t: &ts,
                masked: &masked,
                region: (region[0], t),
            })?;
            let loss =
                weighted_ce(&logits, &index, &targets, &weights, &dev)?.to_scalar::<f32>()? as f64;
            sum += loss;
            draws += b;
        }
        total.nll += sum / opts.mc_samples as f64;
        total.tokens += t;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_counts_cover_the_range() {
        assert_eq!(stratified_counts(1, 16, 4), vec![1, 5, 9, 13]);
        assert_eq!(stratified_counts(15, 16, 4), vec![15, 3, 7, 11]);
        let c = stratified_counts(7, 10, 16);
        assert!(c.iter().all(|&x| (1..=10).contains(&x)));
        assert_eq!(stratified_counts(3, 5, 1), vec![3]);
    }

    /// The scorer's logits are read at the column that predicts each target: `c` for LLaDA,
    /// `c − 1` for Dream-style shifted models. Logits that are perfect at exactly those columns
    /// give a bound of ~0; read at the wrong column they would give a large one.
    #[test]
    fn bound_reads_the_predicting_column() {
        use crate::model::{Config, checkpoint};
        for shift in [false, true] {
            let cfg = Config {
                d_model: 16,
                n_layers: 1,
                n_heads: 2,
                n_kv_heads: 2,
                head_dim: 8,
                mlp_hidden: 16,
                shift_logits: shift,
                ..Config::tiny()
            };
            let vm = candle_nn::VarMap::new();
            let model = checkpoint::trainable(&vm, &cfg, &Device::Cpu).unwrap();
            let ex = Example {
                prompt: vec![70, 71],
                answer: vec![72, 73, 74],
            };
            let opts = LikelihoodOptions {
                mc_samples: 4,
                batch: 2,
                seq_len: 10,
                seed: 1,
            };
            let clean = pack(std::slice::from_ref(&ex), 10, cfg.specials, false).ids[0].clone();
            let v = cfg.vocab_size;
            let bound = nll_bound_by(&model, std::slice::from_ref(&ex), &opts, |d| {
                let b = d.canvas.len();
                let mut logits = vec![0f32; b * 10 * v];
                for r in 0..b {
                    for c in 1..10 {
                        let col = if shift { c - 1 } else { c };
                        logits[(r * 10 + col) * v + clean[c] as usize] = 50.0;
                    }
                }
                candle_core::Tensor::from_vec(logits, (b, 10, v), &Device::Cpu)
            })
            .unwrap();
            assert_eq!(bound.tokens, 7);
            assert!(bound.per_token() < 1e-6, "shift {shift}: {bound:?}");
        }
    }
}
