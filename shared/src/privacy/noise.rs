//! DP-FedAvg: flat L2 clipping and seeded Gaussian noise, central or local.
//!
//! Central (the server is trusted with plaintext updates): clip each update to C, sum in f64, add
//! N(0, (z·C)²) per coordinate to the sum, divide by the fixed denominator m — the same as Flower's
//! `compute_stdv(z, C, m) = z·C/m` on the mean. Local (nodes do not trust the server): each update
//! is clipped and gets N(0, (z·C)²) itself before it leaves the node, then the mean is taken.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::PrivacyError;

/// Where the noise is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseMode {
    /// Once, on the sum of the clipped updates.
    Central,
    /// On every clipped update.
    Local,
}

/// Range checks shared by every DP configuration: C finite and > 0, z finite and ≥ 0, δ in
/// (0, 1). The error names the parameter (`clip`, `noise_multiplier`, `delta`).
pub fn check_params(clip: f64, z: f64, delta: f64) -> Result<(), (&'static str, String)> {
    if !(clip.is_finite() && clip > 0.0) {
        return Err(("clip", format!("{clip}: must be finite and > 0")));
    }
    if !(z.is_finite() && z >= 0.0) {
        return Err(("noise_multiplier", format!("{z}: must be finite and ≥ 0")));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(("delta", format!("{delta}: must be in (0, 1)")));
    }
    Ok(())
}

/// Clip norm C, noise multiplier z, mode and seed.
#[derive(Debug, Clone, PartialEq)]
pub struct DpConfig {
    pub clip: f64,
    pub z: f64,
    pub mode: NoiseMode,
    pub seed: u64,
}

impl DpConfig {
    fn validate(&self) -> Result<(), PrivacyError> {
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return Err(PrivacyError::InvalidParam {
                param: "clip",
                value: self.clip.to_string(),
                reason: "must be finite and > 0",
            });
        }
        if !(self.z.is_finite() && self.z >= 0.0) {
            return Err(PrivacyError::InvalidParam {
                param: "z",
                value: self.z.to_string(),
                reason: "must be finite and >= 0",
            });
        }
        Ok(())
    }
}

/// Standard normal samples from a ChaCha20 stream (Box–Muller on 53-bit uniforms in (0, 1]).
pub struct NormalStream {
    rng: ChaCha20Rng,
    spare: Option<f64>,
}

impl NormalStream {
    pub fn next_normal(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let u1 = ((self.rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
        let u2 = (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }
}

/// A normal stream for `seed`, on ChaCha20 stream `stream` (independent streams per use).
pub fn normal_stream(seed: u64, stream: u64) -> NormalStream {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    NormalStream { rng, spare: None }
}

/// Scales `x` so that ‖x‖ ≤ c; returns the factor applied (1 when already inside).
pub fn clip_l2(x: &mut [f32], c: f64) -> f64 {
    let norm = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    if norm <= c {
        return 1.0;
    }
    let s = c / norm;
    x.iter_mut().for_each(|v| *v = (*v as f64 * s) as f32);
    s
}

/// Adds N(0, std²) to every value.
pub fn add_gaussian(x: &mut [f32], std: f64, noise: &mut NormalStream) {
    if std == 0.0 {
        return;
    }
    x.iter_mut()
        .for_each(|v| *v = (*v as f64 + std * noise.next_normal()) as f32);
}

/// Std of the noise per coordinate of the *mean* of m updates: z·C/m central, z·C/√m local.
pub fn noise_std(cfg: &DpConfig, m: usize) -> f64 {
    let m = m.max(1) as f64;
    match cfg.mode {
        NoiseMode::Central => cfg.z * cfg.clip / m,
        NoiseMode::Local => cfg.z * cfg.clip / m.sqrt(),
    }
}

/// The private mean and how each update was clipped.
#[derive(Debug, Clone, PartialEq)]
pub struct DpMean {
    pub mean: Vec<f32>,
    /// Clip factor per update (1 = not clipped).
    pub clip_factors: Vec<f64>,
    /// Effective noise std per coordinate of the mean.
    pub noise_std: f64,
}

/// DP-FedAvg over `updates`: clip, noise (central or local), fixed-denominator mean.
pub fn dp_mean(updates: &[&[f32]], cfg: &DpConfig) -> Result<DpMean, PrivacyError> {
    cfg.validate()?;
    let d = updates.first().ok_or(PrivacyError::NoUpdates)?.len();
    let m = updates.len();
    let mut sum = vec![0f64; d];
    let mut clip_factors = Vec::with_capacity(m);
    for (index, u) in updates.iter().enumerate() {
        if u.len() != d {
            return Err(PrivacyError::LengthMismatch {
                index,
                expected: d,
                got: u.len(),
            });
        }
        if !u.iter().all(|v| v.is_finite()) {
            return Err(PrivacyError::NonFinite { index });
        }
        let mut x = u.to_vec();
        clip_factors.push(clip_l2(&mut x, cfg.clip));
        if cfg.mode == NoiseMode::Local {
            add_gaussian(
                &mut x,
                cfg.z * cfg.clip,
                &mut normal_stream(cfg.seed, index as u64 + 1),
            );
        }
        sum.iter_mut().zip(&x).for_each(|(s, v)| *s += *v as f64);
    }
    if cfg.mode == NoiseMode::Central && cfg.z > 0.0 {
        let std = cfg.z * cfg.clip;
        let mut noise = normal_stream(cfg.seed, 0);
        sum.iter_mut().for_each(|s| *s += std * noise.next_normal());
    }
    Ok(DpMean {
        mean: sum.iter().map(|s| (s / m as f64) as f32).collect(),
        clip_factors,
        noise_std: noise_std(cfg, m),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_bounds_the_norm() {
        let mut x = vec![3.0f32, 4.0];
        assert_eq!(clip_l2(&mut x, 10.0), 1.0);
        assert!((clip_l2(&mut x, 1.0) - 0.2).abs() < 1e-12);
        assert!((x[0] - 0.6).abs() < 1e-6 && (x[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn normal_stream_has_unit_moments_and_is_seeded() {
        let mut s = normal_stream(42, 0);
        let xs: Vec<f64> = (0..200_000).map(|_| s.next_normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.01, "{var}");
        let mut again = normal_stream(42, 0);
        assert_eq!(again.next_normal(), xs[0]);
        assert_ne!(normal_stream(42, 1).next_normal(), xs[0]);
    }

    #[test]
    fn central_noise_has_std_zc_over_m_on_the_mean() {
        let d = 50_000;
        let zeros = vec![0f32; d];
        let big = vec![1f32; d]; // norm sqrt(d), clipped to C
        let ups: Vec<&[f32]> = vec![&zeros, &zeros, &zeros, &big];
        let cfg = DpConfig {
            clip: 2.0,
            z: 1.5,
            mode: NoiseMode::Central,
            seed: 1,
        };
        let out = dp_mean(&ups, &cfg).unwrap();
        assert!(out.clip_factors[3] < 1.0 && out.clip_factors[0] == 1.0);
        assert!((out.noise_std - 0.75).abs() < 1e-12);
        let bias = 2.0 / (d as f64).sqrt() / 4.0;
        let var = out
            .mean
            .iter()
            .map(|v| (*v as f64 - bias).powi(2))
            .sum::<f64>()
            / d as f64;
        assert!((var.sqrt() - 0.75).abs() < 0.01, "{}", var.sqrt());
        let local = DpConfig {
            mode: NoiseMode::Local,
            ..cfg.clone()
        };
        let out = dp_mean(&ups, &local).unwrap();
        let var = out.mean.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / d as f64;
        assert!((var.sqrt() - 1.5).abs() < 0.02, "{}", var.sqrt());
        assert_eq!(dp_mean(&ups, &cfg).unwrap(), dp_mean(&ups, &cfg).unwrap());
        let bad = DpConfig { clip: 0.0, ..cfg };
        assert!(dp_mean(&ups, &bad).is_err());
        assert_eq!(dp_mean(&[], &local), Err(PrivacyError::NoUpdates));
    }
}
