//! Dream's per-position proposal (`sample_tokens` in Dream's `_sample`): temperature, then
//! top-p, then top-k, then softmax; a categorical draw at `T > 0` (argmax at `T = 0`); and the
//! confidence of the chosen algorithm — `maskgit_plus` the chosen token's probability,
//! `topk_margin` the gap between the two most likely tokens, `entropy` `Σ p·ln(p + 1e-10)`
//! (negative entropy). All probabilities are those after temperature and filtering, as in the
//! reference. How many positions a step reveals lives in [`super::schedule`].

use super::llada::Scratch;
use super::noise::{self, RowRng};
use super::options::DreamAlg;
use super::select::Proposal;

/// Dream's token-distribution settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sampling {
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub alg: DreamAlg,
}

/// Proposes a token and its confidence for one masked position; `last` tokens rank last.
pub(crate) fn propose(
    logits: &[f64],
    s: &Sampling,
    last: &[u32],
    rng: &mut RowRng,
    scratch: &mut Scratch,
) -> Option<Proposal> {
    let work = &mut scratch.work;
    work.clear();
    work.extend_from_slice(logits);
    if s.temperature > 0.0 {
        for l in work.iter_mut() {
            *l /= s.temperature;
        }
    }
    if let Some(p) = s.top_p {
        noise::top_p_filter(work, p, &mut scratch.uniforms);
    }
    if let Some(k) = s.top_k {
        noise::top_k_filter(work, k);
    }
    let probs = &mut scratch.probs;
    noise::softmax(work, probs);
    let token = if s.temperature > 0.0 {
        noise::sample_categorical(probs, noise::uniform(rng))?
    } else {
        noise::argmax(probs)?
    };
    let confidence = match s.alg {
        DreamAlg::Origin | DreamAlg::MaskgitPlus => probs[token],
        DreamAlg::TopkMargin => {
            let (mut p1, mut p2) = (0.0f64, 0.0f64);
            for &p in probs.iter() {
                if p > p1 {
                    p2 = p1;
                    p1 = p;
                } else if p > p2 {
                    p2 = p;
                }
            }
            p1 - p2
        }
        DreamAlg::Entropy => probs.iter().map(|&p| p * (p + 1e-10).ln()).sum(),
    };
    let token = u32::try_from(token).ok()?;
    let confidence = if last.contains(&token) {
        f64::NEG_INFINITY
    } else {
        confidence
    };
    Some(Proposal { token, confidence })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greedy(alg: DreamAlg) -> Sampling {
        Sampling {
            temperature: 0.0,
            top_p: None,
            top_k: None,
            alg,
        }
    }

    #[test]
    fn confidences_by_alg() {
        let mut rng = noise::row_rng(0);
        let mut s = Scratch::default();
        // probs = [0.25, 0.5, 0.25]
        let l = [0.0, 2.0f64.ln(), 0.0];
        let p = propose(&l, &greedy(DreamAlg::MaskgitPlus), &[], &mut rng, &mut s).unwrap();
        assert_eq!(p.token, 1);
        assert!((p.confidence - 0.5).abs() < 1e-12);
        let p = propose(&l, &greedy(DreamAlg::TopkMargin), &[], &mut rng, &mut s).unwrap();
        assert!((p.confidence - 0.25).abs() < 1e-12);
        let p = propose(&l, &greedy(DreamAlg::Entropy), &[], &mut rng, &mut s).unwrap();
        let want = 0.5 * 0.5f64.ln() + 2.0 * 0.25 * 0.25f64.ln();
        assert!((p.confidence - want).abs() < 1e-8, "{}", p.confidence);
    }

    #[test]
    fn top_k_one_makes_sampling_greedy() {
        let mut rng = noise::row_rng(3);
        let mut s = Scratch::default();
        let cfg = Sampling {
            temperature: 5.0,
            top_p: None,
            top_k: Some(1),
            alg: DreamAlg::MaskgitPlus,
        };
        for _ in 0..20 {
            let p = propose(&[0.0, 0.3, 0.1], &cfg, &[], &mut rng, &mut s).unwrap();
            assert_eq!(p.token, 1);
            assert_eq!(p.confidence, 1.0);
        }
    }
}
