//! Bench helpers: deterministic synthetic workloads shared by the criterion benches and the report
//! binaries, so every table in the README measures the same data.

pub mod inference;
pub mod retrieval;
pub mod round;

use ruvdllm::delta::{Delta, NamedTensor};
use ruvdllm::privacy::{NormalStream, normal_stream};

/// TALoRA bands and their default ranks (DESIGN §5).
pub const TALORA_BANDS: [(&str, usize); 3] = [("coarse", 8), ("domain", 4), ("fine", 2)];
/// Layers and hidden size of the 7B benchmark shape.
pub const LAYERS_7B: usize = 32;
pub const HIDDEN_7B: usize = 4096;
/// Standard deviation (Gaussian) or scale (Student-t) of synthetic delta values.
pub const DELTA_SCALE: f32 = 1e-3;

/// One Student-t sample with 3 degrees of freedom: Z / sqrt(χ²₃ / 3).
pub fn student_t3(normal: &mut NormalStream) -> f32 {
    let z = normal.next_normal();
    let chi2: f64 = (0..3).map(|_| normal.next_normal().powi(2)).sum();
    (z / (chi2 / 3.0).max(f64::MIN_POSITIVE).sqrt()) as f32
}

/// The 7B-shaped TALoRA wire delta: B matrices only, 32 layers × {q_proj, v_proj} × [4096 × r] for
/// r = 8 (coarse), 4 (domain), 2 (fine) — 3,670,016 values, 14.7 MB at f32. Values are
/// N(0, 1e-3²), or 1e-3 · Student-t(3) when `heavy_tail`; the same seed gives the same delta.
pub fn talora_7b_delta(seed: u64, heavy_tail: bool) -> Delta {
    let mut rng = normal_stream(seed, 0);
    let mut tensors = Vec::with_capacity(TALORA_BANDS.len() * LAYERS_7B * 2);
    for (band, rank) in TALORA_BANDS {
        for layer in 0..LAYERS_7B {
            for proj in ["q_proj", "v_proj"] {
                let name = format!(
                    "talora.{band}.base_model.model.model.transformer.blocks.{layer}.{proj}.lora_B.weight"
                );
                let data = (0..HIDDEN_7B * rank)
                    .map(|_| {
                        let v = if heavy_tail {
                            student_t3(&mut rng)
                        } else {
                            rng.next_normal() as f32
                        };
                        v * DELTA_SCALE
                    })
                    .collect();
                tensors.push(
                    NamedTensor::new(name, vec![HIDDEN_7B, rank], data)
                        .expect("shape and data agree by construction"),
                );
            }
        }
    }
    Delta::new(tensors).expect("names are unique by construction")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_b_delta_has_the_documented_shape() {
        let d = talora_7b_delta(1, false);
        assert_eq!(d.numel(), 3_670_016);
        assert_eq!(d.tensors.len(), 192);
        assert_eq!(
            d.tensors[0].name,
            "talora.coarse.base_model.model.model.transformer.blocks.0.q_proj.lora_B.weight"
        );
        assert_eq!(d.tensors[191].shape, vec![4096, 2]);
        let sd = (d.l2_norm().powi(2) / d.numel() as f64).sqrt();
        assert!((sd - 1e-3).abs() < 2e-5, "{sd}");
        assert_eq!(talora_7b_delta(1, false), d);
        let t = talora_7b_delta(1, true);
        let max_t = t.flatten().iter().fold(0f32, |m, v| m.max(v.abs()));
        let max_g = d.flatten().iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max_t > 3.0 * max_g, "t3 tails {max_t} vs gaussian {max_g}");
    }
}
