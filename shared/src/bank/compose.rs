//! Composing retrieved patterns into one low-rank delta.
//!
//! The composed update of a layer and target is `ΔW = Σ_i w_i B_i A_i`. Instead of materialising
//! the dense `[out, in]` sum, it is written exactly as one low-rank pair by concatenation:
//!
//! ```text
//! Σ_i w_i B_i A_i = [w_1 B_1 | w_2 B_2 | … | w_k B_k] · [A_1; A_2; …; A_k]
//! ```
//!
//! (block matrix product: the `i`-th column block of the left factor meets the `i`-th row block of
//! the right one). With k rank-2 patterns the result has rank `2k` (6 for DGR's top-3), and applying
//! it to a hidden state costs `2k·(in + out)` multiply-adds instead of `in·out`.
//!
//! Weights ([`Method`]): softmax of the retrieval scores (default, temperature 0.1, so a score gap
//! of 0.1 is a factor e), equal `1/k`, or task arithmetic (every pattern added with the same scale
//! λ, the weights do not sum to one).

use super::error::{Error, Result};
use super::matrix::{Adapter, LayerFactors, Layout, LowRank, Matrix, Target};
use super::pattern::Pattern;
use super::truncate::PATTERN_RANK;

/// How retrieved patterns are weighted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// `w_i = softmax(score_i / temperature)`.
    Softmax { temperature: f32 },
    /// `w_i = 1/k`.
    Equal,
    /// `w_i = λ`.
    TaskArithmetic { lambda: f32 },
}

impl Default for Method {
    fn default() -> Self {
        Method::Softmax { temperature: 0.1 }
    }
}

/// The weight of each pattern given its score.
pub fn weights(method: Method, scores: &[f32]) -> Result<Vec<f32>> {
    if scores.is_empty() {
        return Err(Error::Empty {
            what: "patterns to compose",
        });
    }
    if scores.iter().any(|s| !s.is_finite()) {
        return Err(Error::NonFinite { what: "scores" });
    }
    let k = scores.len() as f32;
    Ok(match method {
        Method::Softmax { temperature } => {
            if !(temperature.is_finite() && temperature > 0.0) {
                return Err(Error::Config {
                    field: "softmax temperature",
                    value: temperature.to_string(),
                    reason: "must be positive",
                });
            }
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, s| m.max(*s));
            let e: Vec<f64> = scores
                .iter()
                .map(|s| (((s - max) / temperature) as f64).exp())
                .collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|x| (x / z) as f32).collect()
        }
        Method::Equal => vec![1.0 / k; scores.len()],
        Method::TaskArithmetic { lambda } => {
            if !lambda.is_finite() {
                return Err(Error::NonFinite { what: "lambda" });
            }
            vec![lambda; scores.len()]
        }
    })
}

/// One layer and target of `Σ_i w_i B_i A_i` in *row* form, the layout the model's position hook
/// stacks: rows `2i, 2i+1` of `a` `[2k, in]` are pattern i's A and the same rows of `bt`
/// `[2k, out]` are `w_i·B_iᵀ`, so `ΔW = btᵀ·a`. Every write is a contiguous dequantised row.
/// The patterns must share `layer`'s shape and the buffers hold exactly `2k·in` and `2k·out`
/// values.
pub fn compose_rows_into(
    parts: &[(&Pattern, f32)],
    layer: usize,
    target: Target,
    a: &mut [f32],
    bt: &mut [f32],
) -> Result<()> {
    let Some((first, _)) = parts.first() else {
        return Err(Error::Empty {
            what: "patterns to compose",
        });
    };
    if layer >= first.n_layers() {
        return Err(Error::LayerCount {
            expected: layer + 1,
            got: first.n_layers(),
        });
    }
    let (out, inp) = {
        let f = first.factors(layer, target);
        (f.out_dim(), f.in_dim())
    };
    let r = PATTERN_RANK * parts.len();
    for (what, buf, width) in [
        ("composed A rows", &*a, inp),
        ("composed Bᵀ rows", &*bt, out),
    ] {
        if buf.len() != r * width {
            return Err(Error::Dimension {
                what,
                expected: r * width,
                got: buf.len(),
            });
        }
    }
    for (i, (p, w)) in parts.iter().enumerate() {
        if layer >= p.n_layers() {
            return Err(Error::LayerCount {
                expected: first.n_layers(),
                got: p.n_layers(),
            });
        }
        let f = p.factors(layer, target);
        if (f.out_dim(), f.in_dim()) != (out, inp) {
            return Err(Error::LayoutMismatch {
                layer,
                target: target.name(),
                expected_out: out,
                expected_in: inp,
                got_out: f.out_dim(),
                got_in: f.in_dim(),
            });
        }
        if !w.is_finite() {
            return Err(Error::NonFinite { what: "weights" });
        }
        for j in 0..PATTERN_RANK {
            let row = i * PATTERN_RANK + j;
            f.a.row_scaled_into(j, 1.0, &mut a[row * inp..(row + 1) * inp]);
            f.bt.row_scaled_into(j, *w, &mut bt[row * out..(row + 1) * out]);
        }
    }
    Ok(())
}

/// Composes weighted patterns (all of one layout) into a rank-`2k` q/v adapter:
/// `[w_1 B_1 | … | w_k B_k] · [A_1; …; A_k]` per layer and target.
pub fn compose(parts: &[(&Pattern, f32)]) -> Result<Adapter> {
    let Some((first, _)) = parts.first() else {
        return Err(Error::Empty {
            what: "patterns to compose",
        });
    };
    let layout: Layout = first.layout();
    for (p, _) in parts {
        layout.check_layout(&p.layout())?;
    }
    let r = PATTERN_RANK * parts.len();
    let layers = (0..layout.layers.len())
        .map(|l| {
            let pair = |t: Target| {
                let (out, inp) = layout.layers[l][t.index()];
                let (mut a, mut bt) = (vec![0.0f32; r * inp], vec![0.0f32; r * out]);
                compose_rows_into(parts, l, t, &mut a, &mut bt)?;
                let mut b = vec![0.0f32; out * r];
                for (c, row) in bt.chunks_exact(out).enumerate() {
                    for (o, v) in row.iter().enumerate() {
                        b[o * r + c] = *v;
                    }
                }
                LowRank::new(
                    Matrix::new(r, inp, a, "composed A")?,
                    Matrix::new(out, r, b, "composed B")?,
                )
            };
            Ok(LayerFactors {
                q: pair(Target::Q)?,
                v: pair(Target::V)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Adapter { layers })
}

/// Weights from scores, then [`compose`].
pub fn compose_scored(patterns: &[(&Pattern, f32)], method: Method) -> Result<Adapter> {
    let scores: Vec<f32> = patterns.iter().map(|(_, s)| *s).collect();
    let w = weights(method, &scores)?;
    let parts: Vec<(&Pattern, f32)> = patterns.iter().zip(w).map(|((p, _), w)| (*p, w)).collect();
    compose(&parts)
}

impl LowRank {
    /// `ΔW · x = B · (A · x)` for one input vector.
    pub fn apply(&self, x: &[f32]) -> Result<Vec<f32>> {
        if x.len() != self.in_dim() {
            return Err(Error::Dimension {
                what: "adapter input",
                expected: self.in_dim(),
                got: x.len(),
            });
        }
        let ax: Vec<f32> = (0..self.rank())
            .map(|r| super::index::dot(self.a.row(r), x))
            .collect();
        Ok((0..self.out_dim())
            .map(|o| super::index::dot(self.b.row(o), &ax))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::daf::Band;
    use crate::bank::key::KEY_DIM;
    use rand::{Rng, SeedableRng};

    fn pattern(id: u64, seed: u64) -> Pattern {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut m = |r: usize, c: usize| {
            Matrix::new(
                r,
                c,
                (0..r * c).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
                "m",
            )
            .unwrap()
        };
        let layers = (0..2)
            .map(|_| LayerFactors {
                q: LowRank::new(m(2, 12), m(12, 2)).unwrap(),
                v: LowRank::new(m(2, 12), m(6, 2)).unwrap(),
            })
            .collect();
        let key: Vec<f32> = (0..KEY_DIM)
            .map(|i| ((i as u64 + seed) as f32).cos())
            .collect();
        Pattern::new(id, Band::Domain, &key, &Adapter { layers }, 0).unwrap()
    }

    #[test]
    fn composition_is_exact() {
        let ps = [pattern(1, 1), pattern(2, 2), pattern(3, 3)];
        let w = [0.5f32, -0.25, 2.0];
        let parts: Vec<(&Pattern, f32)> = ps.iter().zip(w).collect();
        let c = compose(&parts).unwrap();
        for l in 0..2 {
            for t in Target::ALL {
                let got = c.layers[l].get(t);
                assert_eq!(got.rank(), 6);
                let got = got.product();
                let mut want = vec![0.0f32; got.data().len()];
                for (p, w) in &parts {
                    let d = p.dequantize();
                    for (acc, v) in want.iter_mut().zip(d.layers[l].get(t).product().data()) {
                        *acc += w * v;
                    }
                }
                for (a, b) in got.data().iter().zip(&want) {
                    assert!((a - b).abs() < 1e-4, "{a} vs {b}");
                }
            }
        }
        // apply agrees with the dense product
        let x: Vec<f32> = (0..12).map(|i| i as f32 * 0.1 - 0.5).collect();
        let f = c.layers[1].get(Target::V);
        let y = f.apply(&x).unwrap();
        let dense = f.product();
        for (o, yo) in y.iter().enumerate() {
            let d: f32 = (0..12).map(|i| dense.get(o, i) * x[i]).sum();
            assert!((yo - d).abs() < 1e-4);
        }
        assert!(f.apply(&x[..3]).is_err());
    }

    #[test]
    fn weight_methods() {
        let w = weights(Method::Softmax { temperature: 1.0 }, &[0.0, (2.0f32).ln()]).unwrap();
        assert!((w[0] - 1.0 / 3.0).abs() < 1e-6 && (w[1] - 2.0 / 3.0).abs() < 1e-6);
        let w = weights(Method::default(), &[0.9, 0.8, 0.1]).unwrap();
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6 && w[0] > w[1] && w[1] > w[2]);
        assert_eq!(weights(Method::Equal, &[3.0, 1.0]).unwrap(), vec![0.5, 0.5]);
        assert_eq!(
            weights(Method::TaskArithmetic { lambda: 0.7 }, &[3.0, 1.0]).unwrap(),
            vec![0.7, 0.7]
        );
        assert!(weights(Method::Equal, &[]).is_err());
        assert!(weights(Method::Softmax { temperature: 0.0 }, &[1.0]).is_err());
        assert!(weights(Method::Equal, &[f32::NAN]).is_err());
        // softmax stays finite for huge scores
        let w = weights(Method::Softmax { temperature: 0.01 }, &[1e4, 0.0]).unwrap();
        assert_eq!(w, vec![1.0, 0.0]);
    }

    #[test]
    fn layouts_must_match() {
        let a = pattern(1, 1);
        let mut layers = a.dequantize().layers;
        layers.pop();
        let b = Pattern::new(2, Band::Domain, a.key(), &Adapter { layers }, 0).unwrap();
        assert!(matches!(
            compose(&[(&a, 1.0), (&b, 1.0)]),
            Err(Error::LayerCount { .. })
        ));
        assert!(compose(&[]).is_err());
    }
}
