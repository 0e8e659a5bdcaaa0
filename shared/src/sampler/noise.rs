//! Randomness and distribution helpers: per-row RNG streams, f64 Gumbel-max, softmax, top-p /
//! top-k filters, categorical and multinomial draws.
//!
//! Every row of a batch owns one ChaCha stream seeded from its own seed, and the loop draws from
//! it only for that row's own positions in a fixed order, so a row's output never depends on
//! which other rows share its batch. Gumbel-max runs in f64 because low-precision Gumbel noise
//! measurably hurts generation quality (arXiv:2409.02908, cited by LLaDA's `add_gumbel_noise`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One row's random stream (ChaCha with 8 rounds: statistically sound and about twice as fast
/// as ChaCha20, which matters at ~126k uniforms per position for Gumbel-max).
pub type RowRng = ChaCha8Rng;

/// The random stream of a row with seed `seed`.
pub fn row_rng(seed: u64) -> RowRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A uniform draw in `[0, 1)` (as `torch.rand`).
pub fn uniform(rng: &mut RowRng) -> f64 {
    rng.random::<f64>()
}

/// Index of the first maximum, ignoring `-inf` (and NaN); `None` if nothing is finite-or-`+inf`.
pub fn argmax(xs: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &x) in xs.iter().enumerate() {
        if x == f64::NEG_INFINITY || x.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i)
}

/// Gumbel-max with the given uniforms: `argmax_v exp(l_v) / (-ln u_v)^T`, which LLaDA computes in
/// f64 and which equals `argmax_v (l_v / T + g_v)` with `g_v = -ln(-ln u_v)` Gumbel noise, i.e. a
/// sample from `softmax(l / T)`. Evaluated in the log domain (`l_v − T·ln(−ln u_v)`, the same
/// order) so that large logits cannot overflow `exp`. `T == 0` is plain argmax, as in the
/// reference. `uniforms` must be as long as `logits`.
///
/// Evaluated as the reference's ratio raised to the power `1/T` (the same order) and shifted by
/// the largest logit: `exp((l_v − max) / T) / (−ln u_v)`, so it cannot overflow and costs one
/// `exp` and one `ln` per token.
pub fn gumbel_argmax(logits: &[f64], temperature: f64, uniforms: &[f64]) -> Option<usize> {
    let top = argmax(logits)?;
    if temperature == 0.0 {
        return Some(top);
    }
    let max = logits[top];
    let mut best: Option<(usize, f64)> = None;
    for (i, (&l, &u)) in logits.iter().zip(uniforms).enumerate() {
        if l == f64::NEG_INFINITY || l.is_nan() {
            continue;
        }
        let score = ((l - max) / temperature).exp() / -u.ln();
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

/// Draws `logits.len()` uniforms from `rng` into `buf` and returns the Gumbel-max sample.
pub fn gumbel_sample(
    logits: &[f64],
    temperature: f64,
    rng: &mut RowRng,
    buf: &mut Vec<f64>,
) -> Option<usize> {
    if temperature == 0.0 {
        return argmax(logits);
    }
    buf.clear();
    buf.extend((0..logits.len()).map(|_| uniform(rng)));
    gumbel_argmax(logits, temperature, buf)
}

/// Softmax in f64 into `out`; `-inf` entries get probability 0. All `-inf` gives all zeros.
pub fn softmax(logits: &[f64], out: &mut Vec<f64>) {
    out.clear();
    let max = logits
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        out.resize(logits.len(), 0.0);
        return;
    }
    out.extend(logits.iter().map(|&l| (l - max).exp()));
    let sum: f64 = out.iter().sum();
    for p in out.iter_mut() {
        *p /= sum;
    }
}

/// `softmax(logits)[token]` with the ids in `excluded` treated as `-inf`, in one online pass
/// (running maximum, rescaled sum) and without a probability buffer.
pub fn softmax_prob(logits: &[f64], token: usize, excluded: &[u32]) -> f64 {
    let (mut max, mut sum) = (f64::NEG_INFINITY, 0.0f64);
    for (i, &l) in logits.iter().enumerate() {
        if l == f64::NEG_INFINITY || (!excluded.is_empty() && excluded.contains(&(i as u32))) {
            continue;
        }
        if l > max {
            sum = sum * (max - l).exp() + 1.0;
            max = l;
        } else {
            sum += (l - max).exp();
        }
    }
    match logits.get(token) {
        Some(&l) if sum > 0.0 && !excluded.contains(&(token as u32)) => (l - max).exp() / sum,
        _ => 0.0,
    }
}

/// Dream's `top_p_logits`: sort descending, drop every token whose cumulative probability
/// (including itself) exceeds `top_p`, except that the first token past the threshold is kept.
/// Dropped logits become `-inf`. `top_p >= 1` is a no-op.
///
/// Only the head of the sorted order is materialised (a partial selection that doubles until the
/// nucleus is complete), so a 126k vocabulary is not fully sorted per position.
pub fn top_p_filter(logits: &mut [f64], top_p: f64, scratch: &mut Vec<f64>) {
    let n = logits.len();
    if top_p >= 1.0 || n == 0 {
        return;
    }
    softmax(logits, scratch);
    let desc = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..n).collect();
    let mut k = 64.min(n);
    let keep = loop {
        if k < n {
            order.select_nth_unstable_by(k - 1, desc);
        }
        order[..k].sort_unstable_by(desc);
        let mut cum = 0.0;
        // The first rank whose cumulative probability exceeds top_p is kept, later ones go.
        let cut = order[..k].iter().position(|&i| {
            cum += scratch[i];
            cum > top_p
        });
        match cut {
            Some(r) => break r + 1,
            None if k == n => break n,
            None => k = (2 * k).min(n),
        }
    };
    if keep < n {
        let kept: Vec<(usize, f64)> = order[..keep].iter().map(|&i| (i, logits[i])).collect();
        logits.fill(f64::NEG_INFINITY);
        for (i, l) in kept {
            logits[i] = l;
        }
    }
}

/// Dream's `top_k_logits`: every logit strictly below the k-th largest becomes `-inf` (ties with
/// the k-th are kept, as in the reference).
pub fn top_k_filter(logits: &mut [f64], top_k: usize) {
    let k = top_k.min(logits.len());
    if k == 0 || k == logits.len() {
        return;
    }
    let mut sorted: Vec<f64> = logits.to_vec();
    let (_, &mut kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    for l in logits.iter_mut() {
        if *l < kth {
            *l = f64::NEG_INFINITY;
        }
    }
}

/// Inverse-CDF draw from `probs` with one uniform `u`; skips zero-probability entries.
pub fn sample_categorical(probs: &[f64], u: f64) -> Option<usize> {
    let total: f64 = probs.iter().sum();
    if total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let target = u * total;
    let mut cum = 0.0;
    let mut last = None;
    for (i, &p) in probs.iter().enumerate() {
        if p <= 0.0 {
            continue;
        }
        cum += p;
        last = Some(i);
        if target < cum {
            return Some(i);
        }
    }
    last
}

/// `torch.multinomial(weights, n, replacement=False)`: `n` distinct indices drawn one after the
/// other proportionally to the remaining weights. Once only zero weights remain, the remaining
/// picks follow index order (torch would refuse instead).
pub fn multinomial(weights: &[f64], n: usize, rng: &mut RowRng) -> Vec<usize> {
    let mut w: Vec<f64> = weights.iter().map(|&x| x.max(0.0)).collect();
    let mut taken = vec![false; w.len()];
    let mut out = Vec::with_capacity(n.min(w.len()));
    while out.len() < n.min(w.len()) {
        let u = uniform(rng);
        let pick = sample_categorical(&w, u)
            .or_else(|| (0..w.len()).find(|&i| !taken[i]))
            .expect("fewer picks than entries, so an untaken index exists");
        taken[pick] = true;
        w[pick] = 0.0;
        out.push(pick);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gumbel_matches_hand_computed_exp_form() {
        // exp(l) / (-ln u)^T with l = [1, 2, 0.5], u = [0.9, 0.2, 0.99], T = 1:
        // -ln u = [0.10536, 1.60944, 0.01005]; exp(l) = [2.718, 7.389, 1.6487]
        // ratios = [25.80, 4.591, 164.0] → index 2 even though its logit is the smallest.
        let l = [1.0, 2.0, 0.5];
        let u = [0.9, 0.2, 0.99];
        assert_eq!(gumbel_argmax(&l, 1.0, &u), Some(2));
        let direct = |t: f64| {
            let v: Vec<f64> = l
                .iter()
                .zip(u)
                .map(|(&l, u): (&f64, f64)| l.exp() / (-u.ln()).powf(t))
                .collect();
            argmax(&v)
        };
        for t in [0.1, 0.5, 1.0, 2.0] {
            assert_eq!(gumbel_argmax(&l, t, &u), direct(t), "T = {t}");
        }
        // Small T: the noise barely matters → plain argmax (index 1).
        assert_eq!(gumbel_argmax(&l, 0.1, &u), Some(1));
        // T = 0: plain argmax, uniforms ignored.
        assert_eq!(gumbel_argmax(&l, 0.0, &[]), Some(1));
        // -inf logits are never chosen.
        assert_eq!(
            gumbel_argmax(&[f64::NEG_INFINITY, 0.0, -1.0], 1.0, &[0.999, 0.5, 0.5]),
            Some(1)
        );
    }

    #[test]
    fn gumbel_samples_follow_softmax() {
        let l = [0.0, 1.0, 2.0];
        let mut rng = row_rng(7);
        let mut buf = Vec::new();
        let mut counts = [0usize; 3];
        for _ in 0..6000 {
            counts[gumbel_sample(&l, 1.0, &mut rng, &mut buf).unwrap()] += 1;
        }
        let mut p = Vec::new();
        softmax(&l, &mut p);
        for (c, p) in counts.iter().zip(&p) {
            let f = *c as f64 / 6000.0;
            assert!((f - p).abs() < 0.03, "{counts:?} vs {p}");
        }
    }

    #[test]
    fn softmax_and_argmax_edge_cases() {
        let mut p = Vec::new();
        softmax(&[0.0, f64::NEG_INFINITY, 0.0], &mut p);
        assert_eq!(p, vec![0.5, 0.0, 0.5]);
        softmax(&[f64::NEG_INFINITY; 2], &mut p);
        assert_eq!(p, vec![0.0, 0.0]);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(argmax(&[f64::NEG_INFINITY]), None);
    }

    #[test]
    fn top_p_keeps_first_token_past_threshold() {
        // probs ≈ [0.6652, 0.2447, 0.0900] for logits [2, 1, 0].
        let mut l = vec![1.0, 2.0, 0.0];
        let mut s = Vec::new();
        top_p_filter(&mut l, 0.5, &mut s);
        assert_eq!(l, vec![f64::NEG_INFINITY, 2.0, f64::NEG_INFINITY]);
        let mut l = vec![1.0, 2.0, 0.0];
        top_p_filter(&mut l, 0.8, &mut s);
        assert_eq!(l, vec![1.0, 2.0, f64::NEG_INFINITY]);
        let mut l = vec![1.0, 2.0, 0.0];
        top_p_filter(&mut l, 1.0, &mut s);
        assert_eq!(l, vec![1.0, 2.0, 0.0]);
    }

    /// Dream's `top_p_logits` written naively: full sort, cumulative sum, shifted removal mask.
    fn top_p_naive(logits: &mut [f64], top_p: f64) {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let sorted: Vec<f64> = order.iter().map(|&i| logits[i]).collect();
        let mut p = Vec::new();
        softmax(&sorted, &mut p);
        let mut cum = 0.0;
        let remove: Vec<bool> = p
            .iter()
            .map(|&x| {
                cum += x;
                cum > top_p
            })
            .collect();
        for (rank, &i) in order.iter().enumerate().skip(1) {
            if remove[rank - 1] {
                logits[i] = f64::NEG_INFINITY;
            }
        }
    }

    #[test]
    fn partial_top_p_equals_full_sort() {
        let mut rng = row_rng(11);
        let mut s = Vec::new();
        for (n, scale) in [(5, 1.0), (300, 0.5), (1000, 8.0), (1000, 0.01)] {
            for top_p in [0.1, 0.5, 0.9, 0.999] {
                let l: Vec<f64> = (0..n).map(|_| uniform(&mut rng) * scale * 10.0).collect();
                let (mut a, mut b) = (l.clone(), l);
                top_p_filter(&mut a, top_p, &mut s);
                top_p_naive(&mut b, top_p);
                assert_eq!(a, b, "n = {n}, top_p = {top_p}");
            }
        }
    }

    #[test]
    fn one_pass_prob_equals_softmax() {
        let l = [0.5, -1.0, f64::NEG_INFINITY, 3.0, 2.0];
        let mut p = Vec::new();
        softmax(&l, &mut p);
        for (t, &want) in p.iter().enumerate() {
            assert!((softmax_prob(&l, t, &[]) - want).abs() < 1e-15);
        }
        let mut ex = l;
        ex[3] = f64::NEG_INFINITY;
        softmax(&ex, &mut p);
        assert!((softmax_prob(&l, 4, &[3]) - p[4]).abs() < 1e-15);
        assert_eq!(softmax_prob(&l, 3, &[3]), 0.0);
    }

    #[test]
    fn top_k_keeps_ties() {
        let mut l = vec![1.0, 3.0, 2.0, 2.0, 0.0];
        top_k_filter(&mut l, 2);
        let n = f64::NEG_INFINITY;
        assert_eq!(l, vec![n, 3.0, 2.0, 2.0, n]);
    }

    #[test]
    fn categorical_and_multinomial() {
        assert_eq!(sample_categorical(&[0.0, 0.25, 0.75], 0.2), Some(1));
        assert_eq!(sample_categorical(&[0.0, 0.25, 0.75], 0.3), Some(2));
        assert_eq!(sample_categorical(&[0.0, 0.0], 0.3), None);
        let mut rng = row_rng(1);
        let picks = multinomial(&[0.0, 1.0, 0.0, 1.0], 3, &mut rng);
        assert_eq!(picks.len(), 3);
        assert!(picks[..2].contains(&1) && picks[..2].contains(&3));
        assert_eq!(picks[2], 0);
        let mut sorted = picks.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 3);
    }

    #[test]
    fn row_streams_are_reproducible() {
        let a: Vec<f64> = (0..4).map(|_| uniform(&mut row_rng(3))).collect();
        let mut r = row_rng(3);
        assert_eq!(uniform(&mut r), a[0]);
        assert_ne!(uniform(&mut row_rng(4)), a[0]);
    }
}
