//! Pattern keys: a fixed seeded projection of final hidden states to 64 dimensions.
//!
//! Retrieval compares the situation a pattern was trained in with the situation at hand. Both are
//! summarised by the model's final hidden states (`d_model` wide); a random projection to 64
//! dimensions preserves their angles (Johnson–Lindenstrauss) while making the HNSW distance four
//! to sixty times cheaper than on raw states. The projection must be identical in every process
//! and across restarts, so — like TALoRA's frozen A (DESIGN §5) — it is drawn from a ChaCha20
//! stream keyed by `SHA-256(seed ‖ "ruvdllm.bank.key" ‖ d_model)` with values computed from the
//! raw u32 words (`(w >> 8) / 2²⁴`, mapped to `[−1/√d, 1/√d)`), never through `rand`'s
//! distributions, which may change between versions.
//!
//! Keys are L2-normalised, so cosine similarity is a dot product. The key of a *set* of hidden
//! states (the data a pattern was trained on) is the projection of their mean.

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use super::error::{Error, Result};

/// Width of every pattern key.
pub const KEY_DIM: usize = 64;

/// The projection seed a node's banks use unless configured otherwise: keys made at insertion
/// and at retrieval must come from the same projection, so the CLI and the daemon share it.
pub const DEFAULT_KEY_SEED: u64 = 0x6b65_7973;

/// The fixed projection `d_model → 64`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyProjection {
    seed: u64,
    d_model: usize,
    /// `[KEY_DIM, d_model]` row-major.
    weights: Vec<f32>,
}

impl KeyProjection {
    pub fn new(seed: u64, d_model: usize) -> Result<Self> {
        if d_model == 0 {
            return Err(Error::Empty { what: "d_model" });
        }
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(b"ruvdllm.bank.key");
        h.update((d_model as u64).to_le_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(digest);
        let bound = 1.0 / (d_model as f32).sqrt();
        let weights = (0..KEY_DIM * d_model)
            .map(|_| {
                let u = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
                (2.0 * u - 1.0) * bound
            })
            .collect();
        Ok(Self {
            seed,
            d_model,
            weights,
        })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn d_model(&self) -> usize {
        self.d_model
    }

    /// The projection matrix `[64, d_model]`, row-major.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// The key of one hidden state.
    pub fn project(&self, hidden: &[f32]) -> Result<Vec<f32>> {
        if hidden.len() != self.d_model {
            return Err(Error::Dimension {
                what: "hidden state",
                expected: self.d_model,
                got: hidden.len(),
            });
        }
        if hidden.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "hidden state",
            });
        }
        let raw: Vec<f32> = self
            .weights
            .chunks_exact(self.d_model)
            .map(|row| row.iter().zip(hidden).map(|(w, x)| w * x).sum())
            .collect();
        normalize(raw, "projected key")
    }

    /// The key of a set of hidden states (`rows` concatenated, each `d_model` wide): the
    /// projection of their mean.
    pub fn project_mean(&self, rows: &[f32]) -> Result<Vec<f32>> {
        if rows.is_empty() {
            return Err(Error::Empty {
                what: "hidden states",
            });
        }
        if !rows.len().is_multiple_of(self.d_model) {
            return Err(Error::Dimension {
                what: "hidden states (a multiple of d_model)",
                expected: rows.len().div_ceil(self.d_model) * self.d_model,
                got: rows.len(),
            });
        }
        let n = rows.len() / self.d_model;
        let mut mean = vec![0.0f64; self.d_model];
        for row in rows.chunks_exact(self.d_model) {
            mean.iter_mut().zip(row).for_each(|(m, x)| *m += *x as f64);
        }
        let mean: Vec<f32> = mean.iter().map(|m| (m / n as f64) as f32).collect();
        self.project(&mean)
    }
}

/// Scales `v` to unit L2 norm; a zero or non-finite vector is an error.
pub fn normalize(mut v: Vec<f32>, what: &'static str) -> Result<Vec<f32>> {
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::NonFinite { what });
    }
    let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return Err(Error::ZeroVector { what });
    }
    v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
    Ok(v)
}

/// Checks a key's width and normalises it.
pub fn checked_key(key: &[f32]) -> Result<Vec<f32>> {
    if key.len() != KEY_DIM {
        return Err(Error::Dimension {
            what: "key",
            expected: KEY_DIM,
            got: key.len(),
        });
    }
    normalize(key.to_vec(), "key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_bounded() {
        let a = KeyProjection::new(42, 16).unwrap();
        let b = KeyProjection::new(42, 16).unwrap();
        let c = KeyProjection::new(43, 16).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.weights(), c.weights());
        let bound = 1.0 / 4.0;
        assert!(a.weights().iter().all(|w| (-bound..bound).contains(w)));
        // not degenerate: values spread over the range
        let max = a.weights().iter().fold(0.0f32, |m, w| m.max(w.abs()));
        assert!(max > 0.9 * bound);
    }

    #[test]
    fn keys_are_unit_and_linear_in_the_mean() {
        let p = KeyProjection::new(1, 8).unwrap();
        let x: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let y: Vec<f32> = (0..8).map(|i| (i * i) as f32 * 0.1).collect();
        let k = p.project(&x).unwrap();
        let norm: f32 = k.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        let mean: Vec<f32> = x.iter().zip(&y).map(|(a, b)| (a + b) / 2.0).collect();
        let rows: Vec<f32> = x.iter().chain(&y).copied().collect();
        let km = p.project_mean(&rows).unwrap();
        let kd = p.project(&mean).unwrap();
        for (a, b) in km.iter().zip(&kd) {
            assert!((a - b).abs() < 1e-5);
        }
        // scale invariant
        let x2: Vec<f32> = x.iter().map(|v| v * 3.0).collect();
        for (a, b) in p.project(&x2).unwrap().iter().zip(&k) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn bad_inputs() {
        let p = KeyProjection::new(1, 8).unwrap();
        assert!(matches!(p.project(&[0.0; 7]), Err(Error::Dimension { .. })));
        assert!(matches!(
            p.project(&[0.0; 8]),
            Err(Error::ZeroVector { .. })
        ));
        assert!(matches!(
            p.project(&[f32::INFINITY; 8]),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(p.project_mean(&[]), Err(Error::Empty { .. })));
        assert!(matches!(
            p.project_mean(&[1.0; 12]),
            Err(Error::Dimension { .. })
        ));
        assert!(KeyProjection::new(1, 0).is_err());
        assert!(checked_key(&[1.0; 63]).is_err());
    }
}
