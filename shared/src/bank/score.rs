//! The retrieval score of DESIGN §5: `0.5·similarity + 0.3·success + 0.2·recency`, with
//! `recency = exp(−age/τ)`.
//!
//! Similarity is the cosine of the keys (−1..1), success the pattern's EMA of clamped held-out
//! improvements (−1..1), recency 1 for a pattern used now, falling to 1/e after τ. A pattern
//! whose last use lies in the caller's future (clock skew after a restart) counts as age 0.

use super::config::ScoreWeights;

/// A retrieved pattern with its score parts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub id: u64,
    pub score: f32,
    pub similarity: f32,
    pub success: f32,
    pub recency: f32,
}

/// `exp(−age/τ)` with `age = now − last_use` (0 if negative).
pub fn recency(now: u64, last_use: u64, tau: f64) -> f32 {
    let age = now.saturating_sub(last_use) as f64;
    (-age / tau).exp() as f32
}

/// The weighted score.
pub fn score(w: &ScoreWeights, similarity: f32, success: f32, recency: f32) -> f32 {
    w.similarity * similarity + w.success * success + w.recency * recency
}

/// Orders by score (highest first), then similarity, then id, so results are deterministic.
pub fn rank(a: &Scored, b: &Scored) -> std::cmp::Ordering {
    b.score
        .total_cmp(&a.score)
        .then(b.similarity.total_cmp(&a.similarity))
        .then(a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula() {
        let w = ScoreWeights::default();
        assert!((score(&w, 1.0, 0.0, 0.0) - 0.5).abs() < 1e-7);
        assert!((score(&w, 0.0, 1.0, 0.0) - 0.3).abs() < 1e-7);
        assert!((score(&w, 0.0, 0.0, 1.0) - 0.2).abs() < 1e-7);
        let s = score(&w, 0.8, -0.5, recency(150, 50, 100.0));
        let expected = 0.5 * 0.8 + 0.3 * -0.5 + 0.2 * (-1.0f32).exp();
        assert!((s - expected).abs() < 1e-6, "{s} vs {expected}");
    }

    #[test]
    fn recency_decays_and_clamps_future() {
        assert_eq!(recency(10, 10, 5.0), 1.0);
        assert_eq!(recency(10, 20, 5.0), 1.0);
        assert!((recency(15, 10, 5.0) - (-1.0f32).exp()).abs() < 1e-7);
        assert!(recency(1000, 0, 5.0) < recency(10, 0, 5.0));
    }

    #[test]
    fn rank_breaks_ties_deterministically() {
        let a = Scored {
            id: 2,
            score: 0.5,
            similarity: 0.1,
            success: 0.0,
            recency: 0.0,
        };
        let b = Scored { id: 1, ..a };
        let c = Scored {
            similarity: 0.2,
            id: 9,
            ..a
        };
        let mut v = [a, b, c];
        v.sort_by(rank);
        assert_eq!(v.iter().map(|s| s.id).collect::<Vec<_>>(), vec![9, 1, 2]);
    }
}
