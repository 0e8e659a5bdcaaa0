//! Byzantine attacks for tests and simulation (DESIGN §6, REFERENCE-federation §3.3).
//!
//! Model-poisoning attacks are omniscient: they see the honest updates of the round and return the
//! f attacker updates (seeded, so a run is reproducible). Label flipping is a data attack instead:
//! [`label_flip`] corrupts a training sample's answer before the attacker trains honestly on it.
//!
//! Names (`FromStr`): `sign-flip`, `gaussian`, `scaling`, `random`, `alie`, `ipm`, `min-max`,
//! `label-flip`, optionally followed by `:<param>` (e.g. `ipm:0.5`, `gaussian:10`).

use std::fmt;
use std::str::FromStr;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

use crate::aggregate::ParseNameError;
use crate::privacy::normal_stream;

/// Min-max perturbation direction ∇p (Shejwalkar & Houmansadr 2021).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perturbation {
    /// −μ/‖μ‖.
    InverseUnit,
    /// −σ (coordinate-wise std of the honest updates).
    InverseStd,
    /// −sign(μ).
    InverseSign,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attack {
    /// −c · mean(honest).
    SignFlip { c: f64 },
    /// N(0, σ²) per coordinate.
    Gaussian { sigma: f64 },
    /// `factor` · honest update (attacker k scales honest update k mod h).
    Scaling { factor: f64 },
    /// Uniform in [−a, a] per coordinate.
    Random { amplitude: f64 },
    /// A Little Is Enough: μ − z·σ per coordinate; z from Baruch et al. when None.
    Alie { z: Option<f64> },
    /// Inner product manipulation: −ε · mean(honest).
    Ipm { epsilon: f64 },
    /// μ + γ·∇p with the largest γ (bisection) keeping max_i ‖m − h_i‖ ≤ max_ij ‖h_i − h_j‖.
    MinMax { direction: Perturbation },
    /// Data attack (see [`label_flip`]); produces no model update itself.
    LabelFlip,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttackError {
    #[error("no honest updates to attack")]
    NoHonest,
    #[error("honest update {index} has {got} values, expected {expected}")]
    LengthMismatch {
        index: usize,
        expected: usize,
        got: usize,
    },
    #[error("{attack}: invalid parameter {param} = {value}: {reason}")]
    InvalidParam {
        attack: &'static str,
        param: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("label-flip is a data attack: corrupt samples with attack::label_flip instead")]
    DataAttack,
}

impl Attack {
    pub fn name(&self) -> &'static str {
        match self {
            Attack::SignFlip { .. } => "sign-flip",
            Attack::Gaussian { .. } => "gaussian",
            Attack::Scaling { .. } => "scaling",
            Attack::Random { .. } => "random",
            Attack::Alie { .. } => "alie",
            Attack::Ipm { .. } => "ipm",
            Attack::MinMax { .. } => "min-max",
            Attack::LabelFlip => "label-flip",
        }
    }

    /// Every attack with its default parameter (the values `FromStr` uses without `:<param>`).
    pub fn all() -> [Attack; 8] {
        [
            Attack::SignFlip { c: 1.0 },
            Attack::Gaussian { sigma: 1.0 },
            Attack::Scaling { factor: 10.0 },
            Attack::Random { amplitude: 1.0 },
            Attack::Alie { z: None },
            Attack::Ipm { epsilon: 0.1 },
            Attack::MinMax {
                direction: Perturbation::InverseStd,
            },
            Attack::LabelFlip,
        ]
    }

    /// The `f` attacker updates for a round with these honest updates; `n` = honest + f.
    pub fn generate(
        &self,
        honest: &[&[f32]],
        f: usize,
        seed: u64,
    ) -> Result<Vec<Vec<f32>>, AttackError> {
        let d = honest.first().ok_or(AttackError::NoHonest)?.len();
        for (index, h) in honest.iter().enumerate() {
            if h.len() != d {
                return Err(AttackError::LengthMismatch {
                    index,
                    expected: d,
                    got: h.len(),
                });
            }
        }
        let n = honest.len() + f;
        let (mu, sigma) = moments(honest);
        let repeat = |v: Vec<f32>| vec![v; f];
        Ok(match *self {
            Attack::SignFlip { c } => repeat(mu.iter().map(|m| (-c * m) as f32).collect()),
            Attack::Ipm { epsilon } => repeat(mu.iter().map(|m| (-epsilon * m) as f32).collect()),
            Attack::Scaling { factor } => (0..f)
                .map(|k| {
                    honest[k % honest.len()]
                        .iter()
                        .map(|x| (factor * *x as f64) as f32)
                        .collect()
                })
                .collect(),
            Attack::Gaussian { sigma: s } => (0..f)
                .map(|k| {
                    let mut g = normal_stream(seed, k as u64);
                    (0..d).map(|_| (s * g.next_normal()) as f32).collect()
                })
                .collect(),
            Attack::Random { amplitude } => (0..f)
                .map(|k| {
                    let mut rng = ChaCha20Rng::seed_from_u64(seed);
                    rng.set_stream(k as u64);
                    (0..d)
                        .map(|_| {
                            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                            (amplitude * (2.0 * u - 1.0)) as f32
                        })
                        .collect()
                })
                .collect(),
            Attack::Alie { z } => {
                let z = match z {
                    Some(z) => z,
                    None => alie_z(n, f)?,
                };
                repeat(
                    mu.iter()
                        .zip(&sigma)
                        .map(|(m, s)| (m - z * s) as f32)
                        .collect(),
                )
            }
            Attack::MinMax { direction } => {
                let p = perturbation(direction, &mu, &sigma);
                let gamma = min_max_gamma(honest, &mu, &p);
                repeat(
                    mu.iter()
                        .zip(&p)
                        .map(|(m, p)| (m + gamma * p) as f32)
                        .collect(),
                )
            }
            Attack::LabelFlip => return Err(AttackError::DataAttack),
        })
    }
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attack::SignFlip { c } => write!(f, "sign-flip:{c}"),
            Attack::Gaussian { sigma } => write!(f, "gaussian:{sigma}"),
            Attack::Scaling { factor } => write!(f, "scaling:{factor}"),
            Attack::Random { amplitude } => write!(f, "random:{amplitude}"),
            Attack::Alie { z: Some(z) } => write!(f, "alie:{z}"),
            Attack::Alie { z: None } => write!(f, "alie"),
            Attack::Ipm { epsilon } => write!(f, "ipm:{epsilon}"),
            Attack::MinMax { direction } => write!(
                f,
                "min-max:{}",
                match direction {
                    Perturbation::InverseUnit => "unit",
                    Perturbation::InverseStd => "std",
                    Perturbation::InverseSign => "sign",
                }
            ),
            Attack::LabelFlip => write!(f, "label-flip"),
        }
    }
}

impl FromStr for Attack {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseNameError {
            kind: "attack",
            got: s.to_string(),
            expected: "sign-flip, gaussian, scaling, random, alie, ipm, min-max, label-flip \
                       (optionally `:<param>`)",
        };
        let (name, param) = match s.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (s, None),
        };
        let num = |default: f64| -> Result<f64, ParseNameError> {
            match param {
                None => Ok(default),
                Some(p) => p
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(err),
            }
        };
        Ok(match name {
            "sign-flip" => Attack::SignFlip { c: num(1.0)? },
            "gaussian" => Attack::Gaussian { sigma: num(1.0)? },
            "scaling" => Attack::Scaling { factor: num(10.0)? },
            "random" => Attack::Random {
                amplitude: num(1.0)?,
            },
            "alie" => Attack::Alie {
                z: param.map(|_| num(0.0)).transpose()?,
            },
            "ipm" => Attack::Ipm { epsilon: num(0.1)? },
            "min-max" => Attack::MinMax {
                direction: match param {
                    None | Some("std") => Perturbation::InverseStd,
                    Some("unit") => Perturbation::InverseUnit,
                    Some("sign") => Perturbation::InverseSign,
                    Some(_) => return Err(err()),
                },
            },
            "label-flip" if param.is_none() => Attack::LabelFlip,
            _ => return Err(err()),
        })
    }
}

/// Coordinate-wise mean and population std of the honest updates (f64).
fn moments(honest: &[&[f32]]) -> (Vec<f64>, Vec<f64>) {
    let d = honest[0].len();
    let h = honest.len() as f64;
    let mut mu = vec![0f64; d];
    for r in honest {
        mu.iter_mut()
            .zip(r.iter())
            .for_each(|(m, x)| *m += *x as f64);
    }
    mu.iter_mut().for_each(|m| *m /= h);
    let mut var = vec![0f64; d];
    for r in honest {
        var.iter_mut()
            .zip(r.iter().zip(&mu))
            .for_each(|(v, (x, m))| *v += (*x as f64 - m).powi(2));
    }
    (mu, var.into_iter().map(|v| (v / h).sqrt()).collect())
}

/// Standard normal CDF.
fn phi(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Φ⁻¹(p) by bisection (p in (0, 1)).
fn phi_inv(p: f64) -> f64 {
    let (mut lo, mut hi) = (-40.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if phi(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// ALIE's z_max (Baruch et al. 2019): s = ⌊n/2 + 1⌋ − f, z = Φ⁻¹((n − s)/n).
pub fn alie_z(n: usize, f: usize) -> Result<f64, AttackError> {
    let s = (n / 2 + 1) as i64 - f as i64;
    let p = (n as i64 - s) as f64 / n as f64;
    if !(p > 0.0 && p < 1.0) {
        return Err(AttackError::InvalidParam {
            attack: "alie",
            param: "f",
            value: f.to_string(),
            reason: "no z for this n and f: need 0 < (n - s)/n < 1",
        });
    }
    Ok(phi_inv(p))
}

fn perturbation(dir: Perturbation, mu: &[f64], sigma: &[f64]) -> Vec<f64> {
    match dir {
        Perturbation::InverseStd => sigma.iter().map(|s| -s).collect(),
        Perturbation::InverseSign => mu
            .iter()
            .map(|m| if *m == 0.0 { 0.0 } else { -m.signum() })
            .collect(),
        Perturbation::InverseUnit => {
            let norm = mu.iter().map(|m| m * m).sum::<f64>().sqrt();
            if norm == 0.0 {
                vec![0.0; mu.len()]
            } else {
                mu.iter().map(|m| -m / norm).collect()
            }
        }
    }
}

/// Largest γ with max_i ‖μ + γp − h_i‖ ≤ max_{i,j} ‖h_i − h_j‖, by bisection. The distances are
/// quadratics in γ (a_i + 2γ b_i + γ² c), so each probe costs O(h) after one O(h·d) pass.
fn min_max_gamma(honest: &[&[f32]], mu: &[f64], p: &[f64]) -> f64 {
    let c: f64 = p.iter().map(|x| x * x).sum();
    if c == 0.0 {
        return 0.0;
    }
    let ab: Vec<(f64, f64)> = honest
        .iter()
        .map(|h| {
            h.iter()
                .zip(mu)
                .zip(p)
                .fold((0.0, 0.0), |(a, b), ((x, m), pk)| {
                    let t = m - *x as f64;
                    (a + t * t, b + t * pk)
                })
        })
        .collect();
    let mut threshold = 0.0f64;
    for (i, hi) in honest.iter().enumerate() {
        for hj in &honest[i + 1..] {
            let dd: f64 = hi
                .iter()
                .zip(hj.iter())
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum();
            threshold = threshold.max(dd);
        }
    }
    let ok = |g: f64| {
        ab.iter()
            .all(|(a, b)| a + 2.0 * g * b + g * g * c <= threshold)
    };
    let mut hi = 1.0;
    while ok(hi) && hi < 1e30 {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if ok(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Label flipping as a data hook: deterministically replaces `answer` with a wrong one.
///
/// An integer answer becomes a different integer (shifted by 1–9, chosen from a hash of the
/// prompt, so the same sample is always corrupted the same way); yes/no and true/false are
/// swapped; any other text has its word order reversed (a single word its letters), with
/// " not" appended when that would leave it unchanged. The result always differs from the input.
pub fn label_flip(prompt: &str, answer: &mut String) {
    let h = Sha256::digest(prompt.as_bytes());
    let shift = 1 + i64::from(h[0] % 9);
    let trimmed = answer.trim();
    if let Ok(x) = trimmed.parse::<i64>() {
        *answer = x.wrapping_add(shift).to_string();
        return;
    }
    let swapped = match trimmed.to_ascii_lowercase().as_str() {
        "yes" => Some("no"),
        "no" => Some("yes"),
        "true" => Some("false"),
        "false" => Some("true"),
        _ => None,
    };
    if let Some(s) = swapped {
        *answer = s.to_string();
        return;
    }
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    let flipped = if words.len() > 1 {
        words.iter().rev().copied().collect::<Vec<_>>().join(" ")
    } else {
        trimmed.chars().rev().collect()
    };
    *answer = if flipped == *answer {
        format!("{flipped} not")
    } else {
        flipped
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn honest() -> Vec<Vec<f32>> {
        (0..7)
            .map(|i| {
                (0..16)
                    .map(|j| 1.0 + 0.1 * ((i * 7 + j * 3) % 5) as f32)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn names_roundtrip() {
        for a in Attack::all() {
            assert_eq!(a.to_string().parse::<Attack>().unwrap(), a);
            assert_eq!(a.name().parse::<Attack>().unwrap(), a, "defaults agree");
            assert_eq!(a.name().parse::<Attack>().unwrap().name(), a.name());
        }
        assert_eq!(
            "ipm:0.5".parse::<Attack>().unwrap(),
            Attack::Ipm { epsilon: 0.5 }
        );
        assert!("ipm:x".parse::<Attack>().is_err());
        assert!("flip".parse::<Attack>().is_err());
    }

    #[test]
    fn alie_z_matches_reference() {
        // REFERENCE-federation §3.3: n = 10, f = 3 gives z ≈ 0.52 (Φ⁻¹(0.7) = 0.5244).
        assert!((alie_z(10, 3).unwrap() - 0.524_400_5).abs() < 1e-6);
        assert!(alie_z(10, 7).is_err());
    }

    #[test]
    fn attacks_have_their_definitions() {
        let h = honest();
        let rows: Vec<&[f32]> = h.iter().map(|r| r.as_slice()).collect();
        let (mu, sigma) = moments(&rows);
        let sf = Attack::SignFlip { c: 2.0 }.generate(&rows, 3, 0).unwrap();
        assert_eq!(sf.len(), 3);
        assert!((sf[0][0] as f64 + 2.0 * mu[0]).abs() < 1e-5);
        let ipm = Attack::Ipm { epsilon: 0.1 }.generate(&rows, 3, 0).unwrap();
        assert!((ipm[1][5] as f64 + 0.1 * mu[5]).abs() < 1e-6);
        let sc = Attack::Scaling { factor: 10.0 }
            .generate(&rows, 2, 0)
            .unwrap();
        assert_eq!(sc[1][0], 10.0 * h[1][0]);
        let alie = Attack::Alie { z: None }.generate(&rows, 3, 0).unwrap();
        assert!((alie[0][2] as f64 - (mu[2] - 0.5244 * sigma[2])).abs() < 1e-4);
        let g1 = Attack::Gaussian { sigma: 1.0 }
            .generate(&rows, 2, 9)
            .unwrap();
        assert_eq!(
            g1,
            Attack::Gaussian { sigma: 1.0 }
                .generate(&rows, 2, 9)
                .unwrap()
        );
        assert_ne!(g1[0], g1[1]);
        let r = Attack::Random { amplitude: 0.5 }
            .generate(&rows, 2, 9)
            .unwrap();
        assert!(r.iter().flatten().all(|v| v.abs() <= 0.5));
        assert_eq!(
            Attack::LabelFlip.generate(&rows, 1, 0),
            Err(AttackError::DataAttack)
        );
        assert_eq!(
            Attack::Ipm { epsilon: 1.0 }.generate(&[], 1, 0),
            Err(AttackError::NoHonest)
        );
    }

    #[test]
    fn min_max_sits_on_the_honest_diameter() {
        let h = honest();
        let rows: Vec<&[f32]> = h.iter().map(|r| r.as_slice()).collect();
        for dir in ["min-max", "min-max:unit", "min-max:sign"] {
            let m = dir
                .parse::<Attack>()
                .unwrap()
                .generate(&rows, 1, 0)
                .unwrap();
            let dist = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                    .sum::<f64>()
            };
            let diam = rows
                .iter()
                .flat_map(|a| rows.iter().map(move |b| dist(a, b)))
                .fold(0.0, f64::max);
            let worst = rows.iter().map(|r| dist(&m[0], r)).fold(0.0, f64::max);
            // γ is maximal: the attacker is as far as allowed (up to f32 rounding), not further.
            assert!(worst <= diam * (1.0 + 1e-5), "{dir}: {worst} vs {diam}");
            assert!(worst >= diam * (1.0 - 1e-3), "{dir}: {worst} vs {diam}");
        }
    }

    #[test]
    fn label_flip_is_deterministic_and_always_changes() {
        for (p, a) in [
            ("q1", "42"),
            ("q2", "Yes"),
            ("q3", "the cat sat"),
            ("q4", "abba"),
            ("q5", ""),
        ] {
            let mut x = a.to_string();
            label_flip(p, &mut x);
            let mut y = a.to_string();
            label_flip(p, &mut y);
            assert_eq!(x, y);
            assert_ne!(x, a, "{p}");
        }
        let mut s = "the cat sat".to_string();
        label_flip("p", &mut s);
        assert_eq!(s, "sat cat the");
    }
}
