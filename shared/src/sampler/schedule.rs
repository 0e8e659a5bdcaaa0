//! How many tokens each step unmasks: LLaDA's even split, Dream's eps timesteps and MDLM's
//! ᾱ schedules.
//!
//! These are pure functions of counts and step indices, kept apart from the loop so that the
//! per-step accounting can be checked against the reference formulas by hand.

use serde::{Deserialize, Serialize};

/// LLaDA's `get_num_transfer_tokens` for one row: `masked` tokens spread over `steps` steps,
/// `base = masked / steps` each and the remainder to the first steps. LLaDA's noise schedule is
/// linear, so the expected number of tokens unmasked per step is constant.
pub fn num_transfer_tokens(masked: usize, steps: usize) -> Vec<usize> {
    if steps == 0 {
        return Vec::new();
    }
    let (base, rem) = (masked / steps, masked % steps);
    (0..steps).map(|i| base + usize::from(i < rem)).collect()
}

/// Dream's `torch.linspace(1, eps, steps + 1)`, computed the way torch's CPU kernel does in f32
/// (the first half counted up from `start`, the second half down from `end`), so that the
/// `int(#masked * (1 - s/t))` counts truncate exactly as in the reference.
pub fn dream_timesteps(steps: usize, eps: f64) -> Vec<f32> {
    let n = steps + 1;
    let (start, end) = (1.0f32, eps as f32);
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (n - i - 1) as f32
            }
        })
        .collect()
}

/// Dream's reveal fraction at step `i`: `1 - s/t` (f32, as in the reference), and 1 at the last
/// step.
pub fn dream_reveal_fraction(ts: &[f32], i: usize) -> f32 {
    if i + 2 >= ts.len() {
        return 1.0;
    }
    1.0 - ts[i + 1] / ts[i]
}

/// Dream's number of positions to reveal at step `i` of `steps` for a row with `masked` masked
/// positions: `int(masked * (1 - s/t))`, or all of them at the last step. It can be 0 (a forward
/// that commits nothing), exactly as in the reference.
pub fn dream_transfer_count(masked: usize, ts: &[f32], i: usize) -> usize {
    if i + 2 >= ts.len() {
        return masked;
    }
    let n = masked as f32 * dream_reveal_fraction(ts, i);
    // `int()` truncation; `n` is finite and in [0, masked].
    (n.max(0.0) as usize).min(masked)
}

/// MDLM's ᾱ(t): the probability that a token is still unmasked at time `t` (`ᾱ(0) = 1`,
/// `ᾱ(1) = 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alpha {
    /// `ᾱ = 1 − t`.
    #[default]
    Linear,
    /// `ᾱ = cos(πt/2)` (MDLM's cosine noise without its ε floor).
    Cosine,
}

impl Alpha {
    pub fn at(self, t: f64) -> f64 {
        match self {
            Alpha::Linear => 1.0 - t,
            Alpha::Cosine => (std::f64::consts::FRAC_PI_2 * t).cos(),
        }
    }
}

/// MDLM's per-token unmask probability at step `i` of `steps`, from `t = 1 − i/steps` to
/// `s = 1 − (i+1)/steps`: `(ᾱ_s − ᾱ_t) / (1 − ᾱ_t)`; exactly 1 at the last step so that the
/// block always completes.
pub fn mdlm_unmask_prob(alpha: Alpha, i: usize, steps: usize) -> f64 {
    if i + 1 >= steps {
        return 1.0;
    }
    let t = 1.0 - i as f64 / steps as f64;
    let s = 1.0 - (i + 1) as f64 / steps as f64;
    let (a_t, a_s) = (alpha.at(t), alpha.at(s));
    ((a_s - a_t) / (1.0 - a_t)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llada_split_puts_remainder_first() {
        assert_eq!(num_transfer_tokens(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(num_transfer_tokens(8, 8), vec![1; 8]);
        assert_eq!(num_transfer_tokens(3, 5), vec![1, 1, 1, 0, 0]);
        assert_eq!(num_transfer_tokens(32, 32).iter().sum::<usize>(), 32);
    }

    #[test]
    fn dream_timesteps_match_linspace() {
        let ts = dream_timesteps(4, 1e-3);
        let want = [1.0f32, 0.75025, 0.5005, 0.25075, 0.001];
        assert_eq!(ts.len(), 5);
        for (a, b) in ts.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{ts:?}");
        }
        assert_eq!(ts[0], 1.0);
        assert_eq!(ts[4], 0.001f32);
    }

    #[test]
    fn dream_counts_truncate_and_finish_at_last_step() {
        // Hand-checked: 8 masked, s/t = 0.75025 → int(8 * 0.24975) = int(1.998) = 1.
        let ts = dream_timesteps(4, 1e-3);
        assert_eq!(dream_transfer_count(8, &ts, 0), 1);
        // 7 masked: 1 - 0.5005/0.75025 = 0.33289 → int(2.33) = 2.
        assert_eq!(dream_transfer_count(7, &ts, 1), 2);
        // 5 masked: 1 - 0.25075/0.5005 = 0.49900 → int(2.495) = 2.
        assert_eq!(dream_transfer_count(5, &ts, 2), 2);
        // Last step: everything.
        assert_eq!(dream_transfer_count(3, &ts, 3), 3);
        // Many steps: zero-transfer steps exist, as in the reference.
        let ts = dream_timesteps(64, 1e-3);
        assert_eq!(dream_transfer_count(8, &ts, 0), 0);
    }

    #[test]
    fn mdlm_probabilities() {
        // Linear: (t - s) / t = 1 / (steps - i).
        for i in 0..8 {
            let p = mdlm_unmask_prob(Alpha::Linear, i, 8);
            assert!((p - 1.0 / (8 - i) as f64).abs() < 1e-12, "{i}: {p}");
        }
        assert_eq!(mdlm_unmask_prob(Alpha::Cosine, 7, 8), 1.0);
        // Cosine, first of 2 steps: t = 1, s = 0.5 → ᾱ_s = cos(π/4).
        let p = mdlm_unmask_prob(Alpha::Cosine, 0, 2);
        assert!((p - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
    }
}
