//! A pattern: one retrievable rank-2 q/v adapter with the key that says when it applies.
//!
//! Patterns are built from plain f32 factors (`A [2, in]`, `B [out, 2]` per layer and target), so
//! the adapter code can hand over its band adapters without this module knowing about candle. A
//! higher-rank band adapter (coarse rank 8, domain rank 4) becomes a pattern through
//! [`Pattern::from_low_rank`], the best rank-2 approximation of each `B·A` (see [`super::truncate`]).
//! Factors are stored int8 with per-row scales ([`super::quant`]).

use crate::aggregate::daf::Band;

use super::error::{Error, Result};
use super::key::{KEY_DIM, checked_key};
use super::matrix::{Adapter, LayerFactors, Layout, LowRank, Matrix, Target};
use super::quant::QMatrix;
use super::truncate::{PATTERN_RANK, truncate_rank2};

/// A stored rank-2 factor pair. B is kept transposed, so each stored row is one rank
/// component (a row of A, a column of B) with its own scale: four scales per pair instead of one
/// per output row, which would cost more than the int8 values of a `[out, 2]` B.
#[derive(Debug, Clone, PartialEq)]
pub struct QLowRank {
    /// `A [2, in]`
    pub a: QMatrix,
    /// `Bᵀ [2, out]`
    pub bt: QMatrix,
}

fn transpose(m: &Matrix) -> Matrix {
    let (r, c) = (m.rows(), m.cols());
    let mut t = vec![0.0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = m.get(i, j);
        }
    }
    // Same finite values, transposed shape.
    Matrix::new(c, r, t, "transpose").unwrap_or_else(|_| Matrix::zeros(c, r))
}

impl QLowRank {
    fn quantize(f: &LowRank) -> Self {
        Self {
            a: QMatrix::quantize(&f.a),
            bt: QMatrix::quantize(&transpose(&f.b)),
        }
    }

    pub fn dequantize(&self) -> LowRank {
        LowRank {
            a: self.a.dequantize(),
            b: transpose(&self.bt.dequantize()),
        }
    }

    pub fn out_dim(&self) -> usize {
        self.bt.cols()
    }

    pub fn in_dim(&self) -> usize {
        self.a.cols()
    }

    pub fn bytes(&self) -> usize {
        self.a.bytes() + self.bt.bytes()
    }
}

/// One pattern of a bank.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub id: u64,
    pub band: Band,
    key: Vec<f32>,
    /// EMA of the (clamped) held-out loss improvement the pattern gave when applied.
    pub success: f32,
    /// Logical time of the last insertion or use (the caller's clock, e.g. seconds or steps).
    pub last_use: u64,
    /// `[q, v]` per layer.
    layers: Vec<[QLowRank; 2]>,
}

impl Pattern {
    /// A pattern from a rank-2 adapter. `key` must be 64 wide (it is re-normalised).
    pub fn new(id: u64, band: Band, key: &[f32], adapter: &Adapter, now: u64) -> Result<Self> {
        let key = checked_key(key)?;
        if adapter.layers.is_empty() {
            return Err(Error::Empty {
                what: "adapter layers",
            });
        }
        let mut layers = Vec::with_capacity(adapter.layers.len());
        for l in &adapter.layers {
            for t in Target::ALL {
                let r = l.get(t).rank();
                if r != PATTERN_RANK {
                    return Err(Error::Rank {
                        expected: PATTERN_RANK,
                        got: r,
                    });
                }
            }
            layers.push([QLowRank::quantize(&l.q), QLowRank::quantize(&l.v)]);
        }
        Ok(Self {
            id,
            band,
            key,
            success: 0.0,
            last_use: now,
            layers,
        })
    }

    /// A pattern from an adapter of any rank: each `B·A` is truncated to its best rank-2
    /// approximation first.
    pub fn from_low_rank(
        id: u64,
        band: Band,
        key: &[f32],
        adapter: &Adapter,
        now: u64,
    ) -> Result<Self> {
        let layers = adapter
            .layers
            .iter()
            .map(|l| {
                Ok(LayerFactors {
                    q: truncate_rank2(&l.q)?,
                    v: truncate_rank2(&l.v)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(id, band, key, &Adapter { layers }, now)
    }

    /// Rebuilds a stored pattern (a loaded bank).
    pub(crate) fn from_parts(
        id: u64,
        band: Band,
        key: Vec<f32>,
        success: f32,
        last_use: u64,
        layers: Vec<[QLowRank; 2]>,
    ) -> Result<Self> {
        if key.len() != KEY_DIM {
            return Err(Error::Dimension {
                what: "key",
                expected: KEY_DIM,
                got: key.len(),
            });
        }
        if !success.is_finite() {
            return Err(Error::NonFinite { what: "success" });
        }
        Ok(Self {
            id,
            band,
            key: checked_key(&key)?,
            success,
            last_use,
            layers,
        })
    }

    /// The unit-norm 64-d key.
    pub fn key(&self) -> &[f32] {
        &self.key
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn factors(&self, layer: usize, target: Target) -> &QLowRank {
        &self.layers[layer][target.index()]
    }

    pub(crate) fn layers(&self) -> &[[QLowRank; 2]] {
        &self.layers
    }

    /// The `(out, in)` shapes per layer and target.
    pub fn layout(&self) -> Layout {
        Layout {
            layers: self
                .layers
                .iter()
                .map(|l| {
                    [
                        (l[0].out_dim(), l[0].in_dim()),
                        (l[1].out_dim(), l[1].in_dim()),
                    ]
                })
                .collect(),
        }
    }

    /// The f32 adapter (rank 2) the pattern stands for.
    pub fn dequantize(&self) -> Adapter {
        Adapter {
            layers: self
                .layers
                .iter()
                .map(|l| LayerFactors {
                    q: l[0].dequantize(),
                    v: l[1].dequantize(),
                })
                .collect(),
        }
    }

    /// Bytes of the stored adapter (int8 values and f32 row scales).
    pub fn adapter_bytes(&self) -> usize {
        self.layers.iter().flatten().map(QLowRank::bytes).sum()
    }

    /// Bytes of the whole pattern's payload: adapter, key, success, last use and id.
    pub fn bytes(&self) -> usize {
        self.adapter_bytes() + 4 * KEY_DIM + 4 + 8 + 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    pub(crate) fn adapter(layers: usize, d: usize, rank: usize, seed: u64) -> Adapter {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut m = |r: usize, c: usize| {
            Matrix::new(
                r,
                c,
                (0..r * c).map(|_| rng.random_range(-0.5f32..0.5)).collect(),
                "m",
            )
            .unwrap()
        };
        Adapter {
            layers: (0..layers)
                .map(|_| LayerFactors {
                    q: LowRank::new(m(rank, d), m(d, rank)).unwrap(),
                    v: LowRank::new(m(rank, d), m(d / 2, rank)).unwrap(),
                })
                .collect(),
        }
    }

    fn key(seed: f32) -> Vec<f32> {
        (0..KEY_DIM).map(|i| (i as f32 * seed).sin()).collect()
    }

    #[test]
    fn round_trip_within_int8_error_and_bytes() {
        let a = adapter(2, 16, 2, 1);
        let p = Pattern::new(5, Band::Fine, &key(0.3), &a, 9).unwrap();
        assert_eq!(p.last_use, 9);
        let d = p.dequantize();
        for (x, y) in a.layers.iter().zip(&d.layers) {
            for t in Target::ALL {
                let (fx, fy) = (x.get(t), y.get(t));
                for (u, v) in fx.a.data().iter().zip(fy.a.data()) {
                    assert!((u - v).abs() <= 0.5 / 127.0 + 1e-6);
                }
            }
        }
        // per layer: q A 2·16 + B 16·2, v A 2·16 + B 8·2 values; 2 + 2 scales per target.
        let values = 2 * (64 + 48);
        let scales = 2 * (4 + 4);
        assert_eq!(p.adapter_bytes(), values + 4 * scales);
        assert_eq!(p.layout(), Layout::uniform(2, 16, 16, 8));
    }

    #[test]
    fn rank_is_checked_and_truncation_accepts_any_rank() {
        let a8 = adapter(1, 16, 8, 2);
        assert!(matches!(
            Pattern::new(1, Band::Coarse, &key(0.1), &a8, 0),
            Err(Error::Rank {
                expected: 2,
                got: 8
            })
        ));
        let p = Pattern::from_low_rank(1, Band::Coarse, &key(0.1), &a8, 0).unwrap();
        assert_eq!(p.factors(0, Target::Q).a.rows(), 2);
        assert!(Pattern::new(1, Band::Coarse, &key(0.1)[..10], &adapter(1, 16, 2, 3), 0).is_err());
        assert!(Pattern::new(1, Band::Coarse, &key(0.1), &Adapter { layers: vec![] }, 0).is_err());
    }
}
