//! DGR's position selection (pure): which masked positions are uncertain enough to retrieve for.
//!
//! Per masked position, from the logits row of the step just run:
//!
//! * entropy: `H(p) / ln V` (1 for a uniform distribution, 0 for a certain one), or
//! * margin: `1 − (p₁ − p₂)` with the two largest probabilities,
//!
//! divided by `√t` (t = the fraction of the block still masked), so the same spread counts more late
//! in denoising, when the model should have made up its mind. Positions strictly above the
//! threshold (0.5) are selected, the most uncertain first (ties: smaller position first), at most
//! `max_positions` (10).

use super::error::{Error, Result};

/// Which spread measure DGR uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    #[default]
    Entropy,
    Margin,
}

/// A selected position with its uncertainty (already divided by √t).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selected {
    pub position: usize,
    pub uncertainty: f32,
}

/// The spread of one logits row, before the √t division.
pub fn spread(logits: &[f32], measure: Measure) -> Result<f32> {
    let v = logits.len();
    if v < 2 {
        return Err(Error::Dgr {
            reason: format!("a logits row needs at least 2 entries, got {v}"),
        });
    }
    if logits.iter().any(|x| x.is_nan() || *x == f32::INFINITY) {
        return Err(Error::NonFinite { what: "logits" });
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
    if max == f32::NEG_INFINITY {
        return Err(Error::Dgr {
            reason: "every logit of a row is −∞".into(),
        });
    }
    let exps: Vec<f64> = logits.iter().map(|x| ((x - max) as f64).exp()).collect();
    let z: f64 = exps.iter().sum();
    Ok(match measure {
        Measure::Entropy => {
            let h: f64 = exps
                .iter()
                .filter(|e| **e > 0.0)
                .map(|e| {
                    let p = e / z;
                    -p * p.ln()
                })
                .sum();
            (h / (v as f64).ln()) as f32
        }
        Measure::Margin => {
            let (mut p1, mut p2) = (0.0f64, 0.0f64);
            for e in &exps {
                let p = e / z;
                if p > p1 {
                    p2 = p1;
                    p1 = p;
                } else if p > p2 {
                    p2 = p;
                }
            }
            (1.0 - (p1 - p2)) as f32
        }
    })
}

/// Scores every row (`rows` = `positions.len()` rows of `vocab` logits) and returns the selected
/// positions, most uncertain first.
pub fn select(
    rows: &[f32],
    vocab: usize,
    positions: &[usize],
    t: f32,
    measure: Measure,
    threshold: f32,
    max_positions: usize,
) -> Result<Vec<Selected>> {
    if !(t.is_finite() && t > 0.0 && t <= 1.0) {
        return Err(Error::Dgr {
            reason: format!("t must be in (0, 1], got {t}"),
        });
    }
    if vocab == 0 || rows.len() != positions.len() * vocab {
        return Err(Error::Dgr {
            reason: format!(
                "{} logits for {} positions of vocabulary {vocab}",
                rows.len(),
                positions.len()
            ),
        });
    }
    let root = t.sqrt();
    let mut out = Vec::new();
    for (row, &position) in rows.chunks_exact(vocab).zip(positions) {
        let u = spread(row, measure)? / root;
        if u > threshold {
            out.push(Selected {
                position,
                uncertainty: u,
            });
        }
    }
    out.sort_by(|a, b| {
        b.uncertainty
            .total_cmp(&a.uncertainty)
            .then(a.position.cmp(&b.position))
    });
    out.truncate(max_positions);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_and_margin_extremes() {
        let uniform = [0.0f32; 8];
        assert!((spread(&uniform, Measure::Entropy).unwrap() - 1.0).abs() < 1e-6);
        assert!((spread(&uniform, Measure::Margin).unwrap() - 1.0).abs() < 1e-6);
        let sharp = [100.0f32, 0.0, 0.0, 0.0];
        assert!(spread(&sharp, Measure::Entropy).unwrap() < 1e-6);
        assert!(spread(&sharp, Measure::Margin).unwrap() < 1e-6);
        // two equally likely tokens out of 4: entropy ln2/ln4 = 0.5, margin 1
        let two = [0.0f32, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY];
        assert!((spread(&two, Measure::Entropy).unwrap() - 0.5).abs() < 1e-6);
        assert!((spread(&two, Measure::Margin).unwrap() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn bad_rows_are_errors() {
        assert!(spread(&[1.0], Measure::Entropy).is_err());
        assert!(spread(&[f32::NAN, 0.0], Measure::Entropy).is_err());
        assert!(spread(&[f32::NEG_INFINITY; 3], Measure::Margin).is_err());
        assert!(select(&[0.0; 4], 2, &[1], 0.5, Measure::Entropy, 0.5, 10).is_err());
        assert!(select(&[0.0; 2], 2, &[1], 0.0, Measure::Entropy, 0.5, 10).is_err());
        assert!(select(&[0.0; 2], 0, &[], 0.5, Measure::Entropy, 0.5, 10).is_err());
    }

    /// A row whose probability mass is spread evenly over `m` of `v` tokens: entropy ln m / ln v.
    fn row(m: usize, v: usize) -> Vec<f32> {
        (0..v)
            .map(|i| if i < m { 1.5 } else { f32::NEG_INFINITY })
            .collect()
    }

    #[test]
    fn selects_exactly_above_threshold_capped_highest_first() {
        let v = 16;
        let ms = [
            1usize, 16, 3, 9, 2, 12, 7, 5, 11, 6, 14, 8, 10, 13, 15, 4, 16, 1, 9, 6,
        ];
        let positions: Vec<usize> = (0..ms.len()).map(|i| 100 + 3 * i).collect();
        let rows: Vec<f32> = ms.iter().flat_map(|m| row(*m, v)).collect();
        for (t, cap) in [
            (1.0f32, 10usize),
            (0.64, 10),
            (1.0, 3),
            (0.25, 10),
            (1.0, 100),
        ] {
            let got = select(&rows, v, &positions, t, Measure::Entropy, 0.5, cap).unwrap();
            // expected, computed independently from the closed form
            let mut want: Vec<(f64, usize)> = ms
                .iter()
                .zip(&positions)
                .map(|(m, p)| ((*m as f64).ln() / (v as f64).ln() / (t as f64).sqrt(), *p))
                .filter(|(u, _)| *u > 0.5 + 1e-6)
                .collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            want.truncate(cap);
            let gp: Vec<usize> = got.iter().map(|s| s.position).collect();
            let wp: Vec<usize> = want.iter().map(|w| w.1).collect();
            assert_eq!(gp, wp, "t={t} cap={cap}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g.uncertainty as f64 - w.0).abs() < 1e-5);
                assert!(g.uncertainty > 0.5);
            }
            assert!(got.len() <= cap);
        }
        // with a cap the kept ones are the most uncertain: none left out is higher
        let got = select(&rows, v, &positions, 0.25, Measure::Entropy, 0.5, 10).unwrap();
        assert_eq!(got.len(), 10);
        let min_kept = got
            .iter()
            .map(|s| s.uncertainty)
            .fold(f32::INFINITY, f32::min);
        let all = select(&rows, v, &positions, 0.25, Measure::Entropy, 0.5, 1000).unwrap();
        assert!(all.len() > 10);
        assert!(all[10..].iter().all(|s| s.uncertainty <= min_kept));
    }

    #[test]
    fn margin_measure_selects_near_ties() {
        // p1 ≈ p2 → margin spread ≈ 1; a confident row → ≈ 0
        let rows = [0.0f32, 0.0, -9.0, -9.0, 9.0, 0.0, 0.0, 0.0];
        let got = select(&rows, 4, &[7, 8], 1.0, Measure::Margin, 0.5, 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].position, 7);
    }
}
