//! Local differential privacy for a node's updates (DESIGN §6, `[privacy]` in `node.toml`).
//!
//! Before an update leaves the node it is clipped to L2 norm `clip` (flat, over every band) and
//! gets N(0, (z·clip)²) per coordinate — the local form of DP-FedAvg, so the node needs to trust
//! neither the coordinator nor the transport. Each round is one Gaussian mechanism of sensitivity
//! `clip` on this node's data (the node takes part in every round, q = 1); the RDP accountant
//! composes the rounds this process has privatized into ε for the configured δ.
//!
//! The noise comes from ChaCha20 keyed by a secret drawn from the operating system at start-up;
//! `seed` fixes it instead, for reproducible experiments only (whoever knows the seed can
//! subtract the noise). What the update is privatized against is its content: the per-band
//! validation improvements a node reports for the coordinator's quality weighting are not
//! noised, and the round count restarts with the process (ε covers this process's rounds).

use ruvdllm::delta::Delta;
use ruvdllm::privacy::{add_gaussian, clip_l2, normal_stream};

/// The validated `[privacy]` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalDp {
    /// L2 bound of the whole update.
    pub clip: f64,
    /// Noise multiplier z: std z·clip per coordinate (0: clipping only, no ε).
    pub noise_multiplier: f64,
    /// δ of the reported (ε, δ).
    pub delta: f64,
    /// Fixed noise seed (experiments); `None`: a secret from the operating system.
    pub seed: Option<u64>,
}

impl LocalDp {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        ruvdllm::privacy::check_params(self.clip, self.noise_multiplier, self.delta)
    }
}

/// What privatizing one update did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Privatized {
    /// The update's L2 norm before clipping.
    pub norm: f64,
    /// ε after this round for the configured δ (`None` without noise).
    pub epsilon: Option<f64>,
}

/// Clips and noises a node's updates, and accounts for them.
#[derive(Debug)]
pub struct Privatizer {
    cfg: LocalDp,
    key: u64,
    rounds: u64,
}

impl Privatizer {
    pub fn new(cfg: LocalDp) -> Self {
        let key = cfg.seed.unwrap_or_else(rand::random);
        Self {
            cfg,
            key,
            rounds: 0,
        }
    }

    pub fn config(&self) -> &LocalDp {
        &self.cfg
    }

    /// Rounds privatized so far.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// `delta` clipped and noised for `round` (the noise stream is keyed by the round, so a
    /// retried round draws the same noise and releases nothing new).
    pub fn apply(&mut self, round: u64, delta: &Delta) -> Result<(Delta, Privatized), String> {
        let mut flat = delta.flatten();
        let norm = flat
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        clip_l2(&mut flat, self.cfg.clip);
        let z = self.cfg.noise_multiplier;
        if z > 0.0 {
            let mut noise = normal_stream(self.key, round);
            add_gaussian(&mut flat, z * self.cfg.clip, &mut noise);
        }
        let out = delta
            .with_flat(&flat)
            .map_err(|e| format!("local DP: {e}"))?;
        self.rounds += 1;
        let epsilon = if z > 0.0 {
            Some(
                ruvdllm::privacy::epsilon(1.0, z, self.rounds, self.cfg.delta)
                    .map_err(|e| format!("local DP accounting: {e}"))?,
            )
        } else {
            None
        };
        Ok((out, Privatized { norm, epsilon }))
    }
}

#[cfg(test)]
mod tests {
    use ruvdllm::delta::NamedTensor;

    use super::*;

    fn delta(scale: f32) -> Delta {
        Delta::new(vec![
            NamedTensor::new("a", vec![2, 3], (0..6).map(|i| scale * i as f32).collect()).unwrap(),
            NamedTensor::new("b", vec![4], vec![scale; 4]).unwrap(),
        ])
        .unwrap()
    }

    fn norm(d: &Delta) -> f64 {
        d.flatten()
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn clips_noises_and_accounts() {
        let cfg = LocalDp {
            clip: 1.0,
            noise_multiplier: 0.0,
            delta: 1e-5,
            seed: Some(3),
        };
        // Clipping only: the norm becomes the bound, the direction stays, no ε.
        let mut p = Privatizer::new(cfg);
        let d = delta(1.0);
        let (out, info) = p.apply(0, &d).unwrap();
        assert!((info.norm - norm(&d)).abs() < 1e-9);
        assert!((norm(&out) - 1.0).abs() < 1e-6);
        assert_eq!(info.epsilon, None);
        // A small update is not scaled up.
        let (out, _) = p.apply(1, &delta(0.01)).unwrap();
        assert_eq!(out, delta(0.01));

        // With noise: the same seed and round give the same noise, another round other noise,
        // and ε grows with the rounds (equal to the accountant's for q = 1).
        let noisy = LocalDp {
            noise_multiplier: 1.5,
            ..cfg
        };
        let (mut a, mut b) = (Privatizer::new(noisy), Privatizer::new(noisy));
        let (x, i1) = a.apply(7, &d).unwrap();
        let (y, _) = b.apply(7, &d).unwrap();
        assert_eq!(x, y);
        let (z, i2) = a.apply(8, &d).unwrap();
        assert_ne!(x, z);
        let (e1, e2) = (i1.epsilon.unwrap(), i2.epsilon.unwrap());
        assert!(e2 > e1 && e1 > 0.0);
        assert_eq!(e2, ruvdllm::privacy::epsilon(1.0, 1.5, 2, 1e-5).unwrap());
        assert_eq!(a.rounds(), 2);
        // The noise has the configured scale: std z·clip per coordinate.
        let big = Delta::new(vec![
            NamedTensor::new("w", vec![20_000], vec![0.0; 20_000]).unwrap(),
        ])
        .unwrap();
        let (n, _) = Privatizer::new(noisy).apply(0, &big).unwrap();
        let std = norm(&n) / (20_000f64).sqrt();
        assert!((std - 1.5).abs() < 0.05, "std {std}");
        // Without a seed, two nodes draw different noise.
        let secret = LocalDp {
            seed: None,
            ..noisy
        };
        let (p1, _) = Privatizer::new(secret).apply(0, &d).unwrap();
        let (p2, _) = Privatizer::new(secret).apply(0, &d).unwrap();
        assert_ne!(p1, p2);
    }

    #[test]
    fn bad_settings_name_the_field() {
        let ok = LocalDp {
            clip: 1.0,
            noise_multiplier: 1.0,
            delta: 1e-5,
            seed: None,
        };
        ok.validate().unwrap();
        for (bad, field) in [
            (LocalDp { clip: 0.0, ..ok }, "clip"),
            (
                LocalDp {
                    clip: f64::NAN,
                    ..ok
                },
                "clip",
            ),
            (
                LocalDp {
                    noise_multiplier: -1.0,
                    ..ok
                },
                "noise_multiplier",
            ),
            (LocalDp { delta: 1.0, ..ok }, "delta"),
        ] {
            assert_eq!(bad.validate().unwrap_err().0, field);
        }
    }
}
