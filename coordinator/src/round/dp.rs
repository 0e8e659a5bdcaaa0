//! Central differential privacy at the coordinator: DP-FedAvg (McMahan et al. 2018; DESIGN §6).
//!
//! The server is trusted with plaintext updates. At close it clips each accepted update to L2
//! norm C (flat, over every band), averages them uniformly with the fixed denominator m
//! (`expected_nodes`: the aggregate is Σ clipped / m, whatever number arrived), and adds
//! N(0, (z·C/m)²) to every coordinate — Flower's `compute_stdv(z, C, m)`. One round is then a
//! Gaussian mechanism of sensitivity C/m on the mean, and the RDP accountant composes the rounds
//! (every node takes part in every round: q = 1) into ε for `delta`.
//!
//! With [`AdaptiveClip`] the bound follows a quantile of the update norms (Andrew et al.,
//! "Differentially Private Learning with Adaptive Clipping", NeurIPS 2021, Alg. 1): after each
//! round C ← C·exp(−η(b̄ − γ)), where b̄ is the fraction of updates *not* clipped, released with
//! N(0, σ_b²) on the count (σ_b = m/20 by default), over m. The aggregate's noise multiplier is
//! raised to z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2) so that the two releases together are a Gaussian
//! mechanism of multiplier z, which the accountant uses. (This is TF-Privacy's
//! `QuantileAdaptiveClipSumQuery` rule; Flower's `DifferentialPrivacyServerSideAdaptiveClipping`
//! counts the *clipped* fraction with the same sign, which drives C away from the quantile.)
//!
//! Only uniform FedAvg keeps that sensitivity, so the configuration must use `rule = "fedavg"`
//! with `weights = "uniform"` in every band ([`check_daf`]); sample-count or quality weights are
//! self-reported and would let one node weigh more than 1/m. Pre-filters may still drop updates:
//! dropping one node's update changes the sum by at most C.

use ruvdllm::aggregate::Rule;
use ruvdllm::aggregate::daf::{DafConfig, WeightSource};
use ruvdllm::delta::Delta;
use ruvdllm::privacy::{add_gaussian, clip_l2, normal_stream};

/// The validated `[privacy]` settings of the coordinator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CentralDp {
    /// L2 bound C of each update.
    pub clip: f64,
    /// Noise multiplier z.
    pub noise_multiplier: f64,
    /// The fixed denominator m.
    pub expected_nodes: usize,
    /// δ of the reported (ε, δ).
    pub delta: f64,
    /// Key of the noise stream (a secret from the OS unless the operator fixed a seed).
    pub key: u64,
    /// Adapt C to a quantile of the update norms (`None`: C stays fixed).
    pub adaptive: Option<AdaptiveClip>,
}

/// Andrew et al.'s geometric update of the clip bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveClip {
    /// γ: the fraction of updates that should pass unclipped (0.5: C follows the median norm).
    pub target_quantile: f64,
    /// η of C ← C·exp(−η(b̄ − γ)).
    pub lr: f64,
    /// σ_b of the noise on the unclipped count.
    pub count_stddev: f64,
}

impl CentralDp {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        ruvdllm::privacy::check_params(self.clip, self.noise_multiplier, self.delta)?;
        if self.expected_nodes == 0 {
            return Err(("expected_nodes", "must be at least 1".into()));
        }
        if let Some(a) = self.adaptive {
            if !(0.0..=1.0).contains(&a.target_quantile) {
                return Err((
                    "target_quantile",
                    format!("{}: must be in [0, 1]", a.target_quantile),
                ));
            }
            if !(a.lr.is_finite() && a.lr > 0.0) {
                return Err(("clip_lr", format!("{}: must be finite and > 0", a.lr)));
            }
            if !(a.count_stddev.is_finite() && a.count_stddev > 0.0) {
                return Err((
                    "count_stddev",
                    format!("{}: must be finite and > 0", a.count_stddev),
                ));
            }
            if self.noise_multiplier >= 2.0 * a.count_stddev {
                return Err((
                    "noise_multiplier",
                    format!(
                        "{} with adaptive clipping must be below 2·count_stddev = {} (the \
                         count's own noise already spends that much privacy)",
                        self.noise_multiplier,
                        2.0 * a.count_stddev
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The noise multiplier of the aggregate: z, or with adaptive clipping the z_Δ that leaves
    /// room for the count's noise.
    pub fn sum_noise_multiplier(&self) -> f64 {
        match self.adaptive {
            Some(a) if self.noise_multiplier > 0.0 => {
                (self.noise_multiplier.powi(-2) - (2.0 * a.count_stddev).powi(-2)).powf(-0.5)
            }
            _ => self.noise_multiplier,
        }
    }

    /// The clip bound for the round after `round`, from this round's update norms (before
    /// clipping); the configured bound without [`AdaptiveClip`].
    pub fn next_clip(&self, round: u64, norms: &[f64]) -> f64 {
        let Some(a) = self.adaptive else {
            return self.clip;
        };
        let unclipped = norms.iter().filter(|&&n| n <= self.clip).count() as f64;
        // Another stream than the aggregate's noise of the same round.
        let noisy = unclipped
            + a.count_stddev
                * normal_stream(self.key ^ 0xC0_u64.rotate_left(56), round).next_normal();
        let frac = noisy / self.expected_nodes as f64;
        (self.clip * (-a.lr * (frac - a.target_quantile)).exp()).clamp(1e-12, 1e12)
    }

    /// Each update clipped to C.
    pub fn clip_all(&self, inputs: &[&Delta]) -> Result<Vec<Delta>, String> {
        inputs
            .iter()
            .map(|d| {
                let mut flat = d.flatten();
                clip_l2(&mut flat, self.clip);
                d.with_flat(&flat).map_err(|e| format!("central DP: {e}"))
            })
            .collect()
    }

    /// The uniform mean of clipped updates turned into Σ/m plus N(0, (z·C/m)²) per coordinate,
    /// keyed by `round`; `used(name)` is how many updates the mean of that tensor's band took.
    pub fn privatize_mean(
        &self,
        round: u64,
        mean: &Delta,
        used: impl Fn(&str) -> usize,
    ) -> Result<Delta, String> {
        let m = self.expected_nodes as f64;
        let mut flat = Vec::with_capacity(mean.numel());
        for t in &mean.tensors {
            let scale = used(&t.name) as f64 / m;
            flat.extend(t.data.iter().map(|&v| (f64::from(v) * scale) as f32));
        }
        let std = self.sum_noise_multiplier() * self.clip / m;
        add_gaussian(&mut flat, std, &mut normal_stream(self.key, round));
        mean.with_flat(&flat)
            .map_err(|e| format!("central DP: {e}"))
    }

    /// ε after `rounds` aggregated rounds (`None` without noise).
    pub fn epsilon(&self, rounds: u64) -> Option<f64> {
        (self.noise_multiplier > 0.0)
            .then(|| ruvdllm::privacy::epsilon(1.0, self.noise_multiplier, rounds, self.delta).ok())
            .flatten()
    }
}

/// Refuses an aggregation configuration under which the DP guarantee would not hold.
pub fn check_daf(daf: &DafConfig) -> Result<(), String> {
    for (name, g) in [
        ("coarse", &daf.coarse),
        ("domain", &daf.domain),
        ("fine", &daf.fine),
        ("other", &daf.other),
    ] {
        if g.rule.rule != Rule::FedAvg {
            return Err(format!(
                "central DP needs rule = \"fedavg\" in every band; [aggregation.{name}] uses {}",
                g.rule.rule
            ));
        }
        if g.weights != WeightSource::Uniform {
            return Err(format!(
                "central DP needs weights = \"uniform\" in every band (sample counts and \
                 improvements are self-reported); [aggregation.{name}] uses {:?}",
                g.weights
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ruvdllm::delta::NamedTensor;

    use super::*;

    fn delta(v: Vec<f32>) -> Delta {
        Delta::new(vec![NamedTensor::new("w", vec![v.len()], v).unwrap()]).unwrap()
    }

    #[test]
    fn clip_fixed_denominator_and_noise_scale() {
        let dp = CentralDp {
            clip: 1.0,
            noise_multiplier: 0.0,
            expected_nodes: 4,
            delta: 1e-5,
            key: 9,
            adaptive: None,
        };
        let clipped = dp
            .clip_all(&[&delta(vec![3.0, 4.0]), &delta(vec![0.3, 0.4])])
            .unwrap();
        assert_eq!(clipped[0].flatten(), vec![0.6, 0.8]);
        assert_eq!(clipped[1].flatten(), vec![0.3, 0.4]);
        // Two of the four expected arrived: mean · 2/4 = Σ/4.
        let mean = delta(vec![0.45, 0.6]);
        let out = dp.privatize_mean(1, &mean, |_| 2).unwrap().flatten();
        assert!((out[0] - 0.225).abs() < 1e-7 && (out[1] - 0.3).abs() < 1e-7);
        assert_eq!(dp.epsilon(3), None);

        // Noise: std z·C/m, keyed by the round.
        let noisy = CentralDp {
            noise_multiplier: 2.0,
            ..dp
        };
        let zero = delta(vec![0.0; 40_000]);
        let a = noisy.privatize_mean(5, &zero, |_| 4).unwrap().flatten();
        let std = (a.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
        assert!((std - 2.0 * 1.0 / 4.0).abs() < 0.01, "std {std}");
        assert_eq!(noisy.privatize_mean(5, &zero, |_| 4).unwrap().flatten(), a);
        assert_ne!(noisy.privatize_mean(6, &zero, |_| 4).unwrap().flatten(), a);
        let (e1, e2) = (noisy.epsilon(1).unwrap(), noisy.epsilon(2).unwrap());
        assert!(e2 > e1 && e1 > 0.0);
    }

    #[test]
    fn only_uniform_fedavg_is_accepted() {
        let mut daf = DafConfig::new(0);
        assert!(check_daf(&daf).unwrap_err().contains("fedavg"));
        for g in [
            &mut daf.coarse,
            &mut daf.domain,
            &mut daf.fine,
            &mut daf.other,
        ] {
            *g = ruvdllm::aggregate::daf::GroupConfig::plain(Rule::FedAvg, 0);
        }
        assert!(check_daf(&daf).unwrap_err().contains("uniform"));
        for g in [
            &mut daf.coarse,
            &mut daf.domain,
            &mut daf.fine,
            &mut daf.other,
        ] {
            g.weights = WeightSource::Uniform;
        }
        check_daf(&daf).unwrap();
    }

    /// Andrew et al.'s defaults for 10 nodes: γ 0.5, η 0.2, σ_b = m/20; z 0.5.
    fn median_tracker() -> CentralDp {
        CentralDp {
            clip: 1.0,
            noise_multiplier: 0.5,
            expected_nodes: 10,
            delta: 1e-5,
            key: 3,
            adaptive: Some(AdaptiveClip {
                target_quantile: 0.5,
                lr: 0.2,
                count_stddev: 0.5,
            }),
        }
    }

    #[test]
    fn adaptive_clip_follows_the_median_norm_from_either_side() {
        // Log-normal norms with median 5 and 10 nodes, η 0.2, γ 0.5, σ_b = m/20 (Andrew et
        // al.'s defaults): from C = 1 and from C = 50 the bound settles near 5 within 200 rounds.
        let mut normals = normal_stream(1, 0);
        for start in [1.0, 50.0] {
            let mut dp = CentralDp {
                clip: start,
                ..median_tracker()
            };
            dp.validate().unwrap();
            let mut tail = Vec::new();
            for round in 1..=300u64 {
                let norms: Vec<f64> = (0..10)
                    .map(|_| (5f64.ln() + 0.5 * normals.next_normal()).exp())
                    .collect();
                dp.clip = dp.next_clip(round, &norms);
                if round > 200 {
                    tail.push(dp.clip);
                }
            }
            let mean = tail.iter().sum::<f64>() / tail.len() as f64;
            assert!((4.0..6.5).contains(&mean), "from {start}: {mean}");
        }
        // The aggregate's noise multiplier makes room for the count's: 1/z² = 1/z_Δ² + 1/(2σ_b)².
        let dp = CentralDp {
            clip: 1.0,
            ..median_tracker()
        };
        let zd = dp.sum_noise_multiplier();
        assert!((zd.powi(-2) + 1.0 - 0.5f64.powi(-2)).abs() < 1e-12, "{zd}");
        // z ≥ 2σ_b leaves nothing for the aggregate: refused, naming the field.
        let bad = CentralDp {
            noise_multiplier: 1.0,
            ..dp
        };
        assert_eq!(bad.validate().unwrap_err().0, "noise_multiplier");
        // Without adaptation the bound never moves.
        let fixed = CentralDp {
            adaptive: None,
            ..dp
        };
        assert_eq!(fixed.next_clip(1, &[100.0; 10]), 1.0);
    }
}
