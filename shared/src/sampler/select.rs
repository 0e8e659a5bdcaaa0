//! Which of a row's candidate positions get committed at a step: top-k by confidence (LLaDA,
//! Dream), Fast-dLLM's confidence threshold, independent Bernoulli reveals (Dream `origin`,
//! MDLM) and Dream's `alg_temp` sampling of positions.
//!
//! All functions take the confidences of one row's candidates (the masked positions of the
//! current block, ascending) and return indices into that list.

use super::noise::{self, RowRng};

/// What the rule proposes for one masked position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Proposal {
    pub token: u32,
    /// Higher is committed earlier; `-inf` ranks after everything (EOS/EoT with
    /// `confidence_eos_eot_inf`).
    pub confidence: f64,
}

/// The `k` most confident candidates, most confident first. Ties go to the lower position (the
/// reference's `torch.topk` leaves tie order unspecified).
pub(crate) fn top_k(conf: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..conf.len()).collect();
    order.sort_by(|&a, &b| conf[b].total_cmp(&conf[a]).then(a.cmp(&b)));
    order.truncate(k.min(conf.len()));
    order
}

/// Fast-dLLM's threshold rule: the most confident candidate always, then every other one whose
/// confidence is at least `tau`.
pub(crate) fn above_threshold(conf: &[f64], tau: f64) -> Vec<usize> {
    let order = top_k(conf, conf.len());
    order
        .iter()
        .enumerate()
        .filter(|&(rank, &i)| rank == 0 || conf[i] >= tau)
        .map(|(_, &i)| i)
        .collect()
}

/// Each candidate independently with probability `p` (one uniform per candidate, in order).
pub(crate) fn bernoulli(n: usize, p: f64, rng: &mut RowRng) -> Vec<usize> {
    (0..n).filter(|_| noise::uniform(rng) < p).collect()
}

/// Dream with `alg_temp > 0`: `k` positions drawn without replacement from
/// `softmax(confidence / alg_temp)`.
pub(crate) fn sampled(conf: &[f64], k: usize, alg_temp: f64, rng: &mut RowRng) -> Vec<usize> {
    let scaled: Vec<f64> = conf.iter().map(|c| c / alg_temp).collect();
    let mut w = Vec::new();
    noise::softmax(&scaled, &mut w);
    noise::multinomial(&w, k, rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_confidence_then_position() {
        assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.9], 3), vec![1, 3, 2]);
        assert_eq!(top_k(&[0.1, f64::NEG_INFINITY], 5), vec![0, 1]);
        assert!(top_k(&[0.3], 0).is_empty());
    }

    #[test]
    fn threshold_always_commits_top1() {
        assert_eq!(above_threshold(&[0.2, 0.4, 0.3], 0.9), vec![1]);
        assert_eq!(above_threshold(&[0.95, 0.4, 0.91], 0.9), vec![0, 2]);
        assert_eq!(above_threshold(&[0.9, 0.9], 0.9), vec![0, 1]);
    }

    #[test]
    fn bernoulli_extremes() {
        let mut rng = noise::row_rng(0);
        assert_eq!(bernoulli(4, 1.0, &mut rng), vec![0, 1, 2, 3]);
        assert!(bernoulli(4, 0.0, &mut rng).is_empty());
    }

    #[test]
    fn sampled_positions_are_distinct_and_favour_confident() {
        let mut rng = noise::row_rng(5);
        let picks = sampled(&[10.0, -10.0, 9.0], 2, 0.5, &mut rng);
        let mut s = picks.clone();
        s.sort();
        assert_eq!(s, vec![0, 2]);
    }
}
