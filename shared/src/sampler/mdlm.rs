//! MDLM's per-position proposal: the token is a sample of `softmax(logits / T)` (Gumbel-max in
//! f64, argmax at `T = 0`). MDLM has no confidence ordering — which positions are revealed is an
//! independent coin flip per position with probability `(ᾱ_s − ᾱ_t) / (1 − ᾱ_t)`
//! ([`super::schedule::mdlm_unmask_prob`]) — so the proposal's confidence is unused (0).

use super::llada::Scratch;
use super::noise::{self, RowRng};
use super::select::Proposal;

pub(crate) fn propose(
    logits: &[f64],
    temperature: f64,
    rng: &mut RowRng,
    scratch: &mut Scratch,
) -> Option<Proposal> {
    let token = noise::gumbel_sample(logits, temperature, rng, &mut scratch.uniforms)?;
    Some(Proposal {
        token: u32::try_from(token).ok()?,
        confidence: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_sampled_tokens() {
        let mut rng = noise::row_rng(0);
        let mut s = Scratch::default();
        let p = propose(&[0.0, 1.0, f64::NEG_INFINITY], 0.0, &mut rng, &mut s).unwrap();
        assert_eq!(p.token, 1);
        for _ in 0..50 {
            let p = propose(&[0.0, 1.0, f64::NEG_INFINITY], 1.0, &mut rng, &mut s).unwrap();
            assert_ne!(p.token, 2);
        }
    }
}
