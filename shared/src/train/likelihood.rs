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
    if opts.mc_samples == 0 || opts.batch == 0 {
        candle_core::bail!("mc_samples and batch must be positive");
    }
    let specials = model.config().specials;
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
                    index.push((i * clean.len() + c) as u32);
                    targets.push(clean[c]);
                    weights.push((1.0 / p) as f32);
                }
                canvas.push(row);
            }
            let logits = logits_for(model, &canvas, Some(ts))?;
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
}
