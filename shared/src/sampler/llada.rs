//! LLaDA's per-position proposal (`generate.py`): the token by Gumbel-max in f64 (argmax at
//! `T = 0`) and its confidence for low-confidence or random remasking.
//!
//! `confidence_eos_eot_inf` follows the *intended* semantics (LLaDA paper, App. B.4: commit EOS
//! and EoT last). The reference line `logits_with_noise[..., EOS] = logits[..., EoT] = -inf`
//! only does that at `T = 0`, where both names are the same tensor; at `T > 0` it zeroes EoT's
//! probability alone. Here both tokens are removed from the softmax that scores confidence (the
//! reference's `T = 0` behaviour) and a position whose chosen token is EOS or EoT ranks after
//! every other candidate, at any temperature and for random remasking too.

use super::noise::{self, RowRng};
use super::options::Remasking;
use super::select::Proposal;

/// Reusable buffers for per-position work.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub uniforms: Vec<f64>,
    pub probs: Vec<f64>,
    pub work: Vec<f64>,
}

/// Proposes a token and a confidence for one masked position from its (already guided and
/// filtered) logits. `last` lists the tokens to commit last. `None`: no token is allowed.
pub(crate) fn propose(
    logits: &[f64],
    temperature: f64,
    remasking: Remasking,
    last: &[u32],
    rng: &mut RowRng,
    scratch: &mut Scratch,
) -> Option<Proposal> {
    let token = noise::gumbel_sample(logits, temperature, rng, &mut scratch.uniforms)?;
    let token = u32::try_from(token).ok()?;
    let confidence = match remasking {
        Remasking::LowConfidence => {
            if last.contains(&token) {
                f64::NEG_INFINITY
            } else {
                noise::softmax_prob(logits, token as usize, last)
            }
        }
        Remasking::Random => {
            let u = noise::uniform(rng);
            if last.contains(&token) {
                f64::NEG_INFINITY
            } else {
                u
            }
        }
    };
    Some(Proposal { token, confidence })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_confidence_is_softmax_of_chosen() {
        let mut rng = noise::row_rng(0);
        let mut s = Scratch::default();
        let l = [0.0, 2.0_f64.ln(), 0.0];
        let p = propose(&l, 0.0, Remasking::LowConfidence, &[], &mut rng, &mut s).unwrap();
        assert_eq!(p.token, 1);
        assert!((p.confidence - 0.5).abs() < 1e-12);
    }

    #[test]
    fn eos_eot_rank_last_and_leave_the_softmax() {
        let mut rng = noise::row_rng(0);
        let mut s = Scratch::default();
        // Token 2 (EOS) wins the argmax: it is still proposed but ranks last.
        let l = [0.0, 1.0, 3.0, 1.0];
        let p = propose(&l, 0.0, Remasking::LowConfidence, &[2, 3], &mut rng, &mut s).unwrap();
        assert_eq!(p.token, 2);
        assert_eq!(p.confidence, f64::NEG_INFINITY);
        // Otherwise the confidence is renormalised without EOS/EoT: softmax([0, 1]) for token 1.
        let l = [0.0, 1.0, 0.5, 0.5];
        let p = propose(&l, 0.0, Remasking::LowConfidence, &[2, 3], &mut rng, &mut s).unwrap();
        assert_eq!(p.token, 1);
        let want = 1.0f64.exp() / (1.0 + 1.0f64.exp());
        assert!((p.confidence - want).abs() < 1e-12);
    }

    #[test]
    fn random_remasking_draws_uniform_confidence() {
        let mut a = noise::row_rng(9);
        let mut s = Scratch::default();
        let p = propose(&[0.0, 1.0], 0.0, Remasking::Random, &[], &mut a, &mut s).unwrap();
        let mut b = noise::row_rng(9);
        assert_eq!(p.confidence, noise::uniform(&mut b));
        assert_eq!(p.token, 1);
    }

    #[test]
    fn nothing_allowed_gives_none() {
        let mut rng = noise::row_rng(0);
        let mut s = Scratch::default();
        let l = [f64::NEG_INFINITY; 3];
        assert!(propose(&l, 0.7, Remasking::LowConfidence, &[], &mut rng, &mut s).is_none());
    }
}
