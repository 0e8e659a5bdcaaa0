//! Central differential privacy at the coordinator: DP-FedAvg (McMahan et al. 2018; DESIGN §6).
//!
//! The server is trusted with plaintext updates. At close it clips each accepted update to L2
//! norm C (flat, over every band), averages them uniformly with the fixed denominator m
//! (`expected_nodes`: the aggregate is Σ clipped / m, whatever number arrived), and adds
//! N(0, (z·C/m)²) to every coordinate — Flower's `compute_stdv(z, C, m)`. One round is then a
//! Gaussian mechanism of sensitivity C/m on the mean, and the RDP accountant composes the rounds
//! (every node takes part in every round: q = 1) into ε for `delta`.
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
}

impl CentralDp {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return Err(("clip", format!("{}: must be finite and > 0", self.clip)));
        }
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return Err((
                "noise_multiplier",
                format!("{}: must be finite and ≥ 0", self.noise_multiplier),
            ));
        }
        if self.expected_nodes == 0 {
            return Err(("expected_nodes", "must be at least 1".into()));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(("delta", format!("{}: must be in (0, 1)", self.delta)));
        }
        Ok(())
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
        let std = self.noise_multiplier * self.clip / m;
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
}
