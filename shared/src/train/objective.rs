//! LLaDA's training objective.
//!
//! `t ~ U(0,1)` per row; each maskable token is replaced by `[MASK]` with probability
//! `p = (1−ε)t + ε` (ε = 1e-3); the loss is the cross-entropy of the clean token at masked positions,
//! weighted by `1/p`. Pretraining divides the sum by `B·L`; SFT divides each row's sum by its answer
//! length (answer + EOS padding) and averages the rows.

use candle_core::{D, DType, Device, Result, Tensor};
use rand::RngCore;

use super::batch::PackedBatch;
use super::unit_f64;
use crate::denoiser::Batch;
use crate::model::Model;

/// Which normalisation the loss uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Σ CE/p over the batch, divided by B·L.
    Pretrain,
    /// Per row Σ CE/p divided by the row's answer length, averaged over rows.
    Sft,
}

/// The noised batch and the per-token weights of the loss.
pub struct Noised {
    pub noisy: Vec<Vec<u32>>,
    /// Flat indices (row·L + col) of masked positions, their clean targets and weights.
    pub index: Vec<u32>,
    pub targets: Vec<u32>,
    pub weights: Vec<f32>,
    /// The diffusion time drawn for each row (what an attached TALoRA adapter is weighted by).
    pub t: Vec<f64>,
}

pub const EPS: f64 = 1e-3;

/// How the rows of a batch draw `t`, and how masked tokens are weighted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoiseOptions {
    /// Low-discrepancy `t` (MDLM's sampler): one uniform `u` per batch and `t_r = (u + r/B) mod
    /// 1` for row `r`, so every batch covers `[0, 1)` evenly. Each `t_r` is still uniform, so
    /// the loss stays an unbiased estimate of the same objective; its variance drops, which a
    /// small batch needs (the 1/p weights make rows with small `t` dominate otherwise).
    pub stratified_t: bool,
    pub weighting: Weighting,
}

/// The weight of each masked token's cross-entropy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Weighting {
    /// LLaDA's 1/p (the negative-ELBO bound; see [`Objective`] for the normalisation).
    #[default]
    Elbo,
    /// Plain mean cross-entropy over the batch's masked tokens (MaskGIT-style): not a
    /// likelihood bound, but low-variance — a denoiser-only training signal for pretraining.
    Mean,
}

impl std::str::FromStr for Weighting {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "elbo" => Ok(Weighting::Elbo),
            "mean" => Ok(Weighting::Mean),
            other => Err(format!(
                "unknown weighting `{other}` (expected elbo or mean)"
            )),
        }
    }
}

/// Draws the forward process for one batch. `t_range` restricts `t` (TALoRA bands train inside
/// their band); `(0, 1)` is the plain objective.
pub fn noise(
    batch: &PackedBatch,
    mask_id: u32,
    objective: Objective,
    t_range: (f64, f64),
    rng: &mut impl RngCore,
) -> Noised {
    noise_with(
        batch,
        mask_id,
        objective,
        t_range,
        NoiseOptions::default(),
        rng,
    )
}

/// [`noise`] with the `t` sampler and token weighting of `opts`.
pub fn noise_with(
    batch: &PackedBatch,
    mask_id: u32,
    objective: Objective,
    t_range: (f64, f64),
    opts: NoiseOptions,
    rng: &mut impl RngCore,
) -> Noised {
    let (b, l) = (batch.len(), batch.seq_len());
    let mut noisy = batch.ids.clone();
    let (mut index, mut targets, mut weights) = (Vec::new(), Vec::new(), Vec::new());
    let mut ts = Vec::with_capacity(b);
    let u0 = if opts.stratified_t {
        unit_f64(rng)
    } else {
        0.0
    };
    for (r, row) in noisy.iter_mut().enumerate() {
        let u = if opts.stratified_t {
            (u0 + r as f64 / b as f64).fract()
        } else {
            unit_f64(rng)
        };
        let t = t_range.0 + (t_range.1 - t_range.0) * u;
        ts.push(t);
        let p = (1.0 - EPS) * t + EPS;
        let norm = match objective {
            Objective::Pretrain => (b * l) as f64,
            Objective::Sft => (batch.answer_len[r] * b) as f64,
        };
        for (c, tok) in row.iter_mut().enumerate() {
            if batch.maskable[r][c] && unit_f64(rng) < p {
                *tok = mask_id;
                index.push((r * l + c) as u32);
                targets.push(batch.ids[r][c]);
                weights.push((1.0 / (p * norm)) as f32);
            }
        }
    }
    if opts.weighting == Weighting::Mean && !weights.is_empty() {
        let w = 1.0 / weights.len() as f32;
        weights.iter_mut().for_each(|x| *x = w);
    }
    Noised {
        noisy,
        index,
        targets,
        weights,
        t: ts,
    }
}

/// Weighted cross-entropy at the given flat positions of `logits` `[B, L, V]`.
pub fn weighted_ce(
    logits: &Tensor,
    index: &[u32],
    targets: &[u32],
    weights: &[f32],
    device: &Device,
) -> Result<Tensor> {
    if index.is_empty() {
        return Tensor::zeros((), DType::F32, device);
    }
    let (b, l, v) = logits.dims3()?;
    let rows = logits
        .reshape((b * l, v))?
        .index_select(&Tensor::new(index, device)?, 0)?;
    let logp = candle_nn::ops::log_softmax(&rows, D::Minus1)?;
    let tgt = Tensor::new(targets, device)?.unsqueeze(1)?;
    let ce = logp.gather(&tgt, 1)?.squeeze(1)?.neg()?;
    (ce * Tensor::new(weights, device)?)?.sum_all()
}

/// One evaluation of the objective on `batch`: returns the scalar loss tensor (differentiable when
/// the model is).
pub fn masked_diffusion_loss(
    model: &Model,
    batch: &PackedBatch,
    objective: Objective,
    t_range: (f64, f64),
    rng: &mut impl RngCore,
) -> Result<Tensor> {
    masked_diffusion_loss_with(
        model,
        batch,
        objective,
        t_range,
        NoiseOptions::default(),
        rng,
    )
}

/// [`masked_diffusion_loss`] with the `t` sampler and token weighting of `opts`.
pub fn masked_diffusion_loss_with(
    model: &Model,
    batch: &PackedBatch,
    objective: Objective,
    t_range: (f64, f64),
    opts: NoiseOptions,
    rng: &mut impl RngCore,
) -> Result<Tensor> {
    let dev = model.device().clone();
    let mask_id = model.config().specials.mask;
    let n = noise_with(batch, mask_id, objective, t_range, opts, rng);
    let flat: Vec<u32> = n.noisy.iter().flatten().copied().collect();
    let ids = Tensor::from_vec(flat, (batch.len(), batch.seq_len()), &dev)?;
    let mut fb = model.plain_batch(&ids)?;
    fb.key_mask = batch.key_mask_tensor(&dev)?;
    fb.t = Some(n.t);
    let fwd = model.forward_full(&fb, None)?;
    weighted_ce(&fwd.logits, &n.index, &n.targets, &n.weights, &dev)
}

/// Forward on an explicit canvas (used by likelihood and tests); `t` is each row's diffusion time
/// (see [`Batch::t`]).
pub fn logits_for(model: &Model, canvas: &[Vec<u32>], t: Option<Vec<f64>>) -> Result<Tensor> {
    let dev = model.device();
    let l = canvas.first().map_or(0, Vec::len);
    let flat: Vec<u32> = canvas.iter().flatten().copied().collect();
    let ids = Tensor::from_vec(flat, (canvas.len(), l), dev)?;
    let mut batch: Batch = model.plain_batch(&ids)?;
    batch.t = t;
    Ok(model.forward_full(&batch, None)?.logits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::SpecialTokens;
    use crate::train::batch::{Example, pack};
    use rand::SeedableRng;

    #[test]
    fn masking_rate_follows_t_and_weights_are_inverse_p() {
        let s = SpecialTokens::BYTE;
        let ex: Vec<Example> = (0..64)
            .map(|_| Example {
                prompt: vec![],
                answer: vec![7; 63],
            })
            .collect();
        let b = pack(&ex, 64, s, true);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let n = noise(&b, s.mask, Objective::Pretrain, (0.0, 1.0), &mut rng);
        // E[p] = 0.5 → about half of 64·63 maskable positions.
        let frac = n.index.len() as f64 / (64.0 * 63.0);
        assert!((0.4..0.6).contains(&frac), "masked fraction {frac}");
        // BOS never masked; weights are 1/(p·B·L) ≥ 1/(B·L).
        assert!(n.noisy.iter().all(|r| r[0] == s.bos));
        assert!(n.weights.iter().all(|&w| w >= 1.0 / (64.0 * 64.0) - 1e-9));
        // A band restricts the masking rate.
        let n = noise(&b, s.mask, Objective::Pretrain, (0.0, 0.1), &mut rng);
        let frac = n.index.len() as f64 / (64.0 * 63.0);
        assert!(frac < 0.1, "masked fraction {frac} with t < 0.1");
    }

    #[test]
    fn stratified_t_covers_each_stratum_and_mean_weights_sum_to_one() {
        let s = SpecialTokens::BYTE;
        let ex: Vec<Example> = (0..8)
            .map(|_| Example {
                prompt: vec![],
                answer: vec![7; 31],
            })
            .collect();
        let b = pack(&ex, 32, s, true);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let opts = NoiseOptions {
            stratified_t: true,
            weighting: Weighting::Mean,
        };
        for _ in 0..20 {
            let n = noise_with(&b, s.mask, Objective::Pretrain, (0.2, 0.6), opts, &mut rng);
            // One t per stratum of width (0.6 − 0.2)/8, all inside the range.
            let mut strata: Vec<usize> =
                n.t.iter()
                    .map(|t| ((t - 0.2) / 0.05).floor() as usize)
                    .collect();
            strata.sort_unstable();
            assert_eq!(strata, (0..8).collect::<Vec<_>>(), "{:?}", n.t);
            let sum: f32 = n.weights.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "mean weights sum to {sum}");
            assert!(n.weights.windows(2).all(|w| w[0] == w[1]));
        }
        // The default stays LLaDA's: independent t and 1/p weights.
        let n = noise_with(
            &b,
            s.mask,
            Objective::Pretrain,
            (0.0, 1.0),
            NoiseOptions::default(),
            &mut rng,
        );
        let expect: Vec<f32> = n
            .index
            .iter()
            .map(|&i| {
                let p = (1.0 - EPS) * n.t[i as usize / 32] + EPS;
                (1.0 / (p * 8.0 * 32.0)) as f32
            })
            .collect();
        assert_eq!(n.weights, expect);
        assert!("mean".parse::<Weighting>().is_ok() && "x".parse::<Weighting>().is_err());
    }

    #[test]
    fn weighted_ce_matches_hand_computation() -> Result<()> {
        let dev = Device::Cpu;
        // One row, two positions, vocab 2.
        let logits = Tensor::new(&[[[0f32, 0.0], [2.0, 0.0]]], &dev)?;
        let loss = weighted_ce(&logits, &[0, 1], &[1, 0], &[1.0, 2.0], &dev)?.to_scalar::<f32>()?;
        let expected = 2f32.ln() + 2.0 * (1.0 + (-2f32).exp()).ln();
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
        Ok(())
    }
}
