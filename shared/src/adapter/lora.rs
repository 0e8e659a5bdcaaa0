//! A plain LoRA adapter as named f32 tensors: rank `r`, scale `alpha / r`, A `[r, in]` and
//! B `[out, r]` per adapted linear, PEFT names, canonical order (layer, then target).
//!
//! On disk it is a PEFT folder ([`Lora::save_peft`] / [`Lora::load_peft`]) with the base
//! family's module paths (see [`super::names::Naming`]); `tests/peft_reference.rs` checks both
//! directions against the `peft` library (its files give its logits here, ours load there).
//!
//! It is pure data (no candle), so it can be built, saved, loaded and compared anywhere; with
//! feature `model`, [`super::attach`] applies it to a model as a hook or merges it into the
//! dense weights. Each band of a [`super::Talora`] is one of these.

use std::path::Path;

use super::Error;
use super::frozen_a;
use super::names::{self, MAX_RANK, Naming, Shape, Target};
use super::peft::{self, PeftConfig};
use crate::delta::{Delta, NamedTensor};

#[derive(Debug, Clone, PartialEq)]
pub struct Lora {
    pub r: usize,
    pub alpha: f64,
    /// Sorted, distinct.
    pub targets: Vec<Target>,
    pub shape: Shape,
    /// A tensors (PEFT names), canonical order.
    pub a: Delta,
    /// B tensors (PEFT names), canonical order.
    pub b: Delta,
}

impl Lora {
    /// A fresh adapter: A derived from `seed` as in [`frozen_a`] (keyed by each A's PEFT name),
    /// B zero — so the adapted model starts equal to the base, as in PEFT.
    pub fn new(
        r: usize,
        alpha: f64,
        targets: Vec<Target>,
        shape: Shape,
        seed: u64,
    ) -> Result<Lora, Error> {
        let mut spec = names::Spec::new([r; 3], targets)?;
        spec.alphas = [alpha; 3];
        spec.validate()?;
        let mut a = Vec::new();
        let mut b = Vec::new();
        for layer in 0..shape.n_layers {
            for &t in &spec.targets {
                let (out, inp) = shape.dims(t);
                let name = names::peft_a(layer, t);
                let values = frozen_a::derive(seed, &name, r, inp);
                a.push(NamedTensor::new(name, vec![r, inp], values)?);
                b.push(NamedTensor::new(
                    names::peft_b(layer, t),
                    vec![out, r],
                    vec![0.0; out * r],
                )?);
            }
        }
        Ok(Lora {
            r,
            alpha,
            targets: spec.targets,
            shape,
            a: Delta::new(a)?,
            b: Delta::new(b)?,
        })
    }

    /// `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    /// Index of `(layer, target)` in [`Self::a`] / [`Self::b`].
    pub fn index(&self, layer: usize, target: Target) -> Option<usize> {
        let ti = self.targets.iter().position(|&t| t == target)?;
        (layer < self.shape.n_layers).then(|| layer * self.targets.len() + ti)
    }

    /// Checks internal consistency: names, shapes and order match `(r, targets, shape)`, values
    /// finite.
    pub fn validate(&self) -> Result<(), Error> {
        if self.r == 0 || self.r > MAX_RANK {
            return Err(Error::Spec {
                field: "r",
                reason: format!("{} not in 1..={MAX_RANK}", self.r),
            });
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::Spec {
                field: "lora_alpha",
                reason: format!("{} must be finite and > 0", self.alpha),
            });
        }
        let mut k = 0;
        for layer in 0..self.shape.n_layers {
            for &t in &self.targets {
                let (out, inp) = self.shape.dims(t);
                for (set, name, shape) in [
                    (&self.a, names::peft_a(layer, t), vec![self.r, inp]),
                    (&self.b, names::peft_b(layer, t), vec![out, self.r]),
                ] {
                    let got = set
                        .tensors
                        .get(k)
                        .ok_or_else(|| crate::delta::DeltaError::Missing(name.clone()))?;
                    if got.name != name || got.shape != shape {
                        return Err(crate::delta::DeltaError::LayoutMismatch {
                            name,
                            expected: shape,
                            got: got.shape.clone(),
                        }
                        .into());
                    }
                    if !got.data.iter().all(|v| v.is_finite()) {
                        return Err(Error::NonFinite { name });
                    }
                }
                k += 1;
            }
        }
        if self.a.tensors.len() != k || self.b.tensors.len() != k {
            return Err(Error::Spec {
                field: "tensors",
                reason: format!(
                    "{} A and {} B tensors, layout has {k}",
                    self.a.tensors.len(),
                    self.b.tensors.len()
                ),
            });
        }
        Ok(())
    }

    /// A and B together (A first), PEFT names: what `adapter_model.safetensors` holds.
    pub fn tensors(&self) -> Delta {
        let mut all = self.a.tensors.clone();
        all.extend(self.b.tensors.iter().cloned());
        Delta { tensors: all }
    }

    /// Saves the PEFT folder (`adapter_model.safetensors` + `adapter_config.json`) with the
    /// module paths of a base whose checkpoints use `naming` (what `peft` writes for that base).
    pub fn save_peft(&self, dir: &Path, base_model: &str, naming: Naming) -> Result<(), Error> {
        self.validate()?;
        let config = PeftConfig::new(self.r, self.alpha, &self.targets, naming, base_model);
        let mut tensors = self.tensors();
        for t in &mut tensors.tensors {
            t.name = naming.rename(&t.name);
        }
        peft::save(dir, &tensors, &config)
    }

    /// Loads a PEFT folder for a model of `shape`, written with either [`Naming`] (`peft`'s own
    /// output for a LLaDA or a Dream/Llama base, or ours). Targets are read from the tensor
    /// names; rank and scale from the config (`use_rslora`'s `alpha/√r` is kept as the
    /// equivalent `alpha`); the layout must be complete (every layer of every target).
    pub fn load_peft(dir: &Path, shape: Shape) -> Result<(Lora, PeftConfig), Error> {
        // At most every target of every layer at the config's rank.
        let bound = |c: &PeftConfig| {
            let numel: usize = Target::ALL
                .iter()
                .map(|&t| {
                    let (o, i) = shape.dims(t);
                    c.r.saturating_mul(o + i)
                })
                .sum::<usize>()
                .saturating_mul(shape.n_layers);
            peft::max_file_bytes(numel, 2 * Target::ALL.len() * shape.n_layers)
        };
        let (mut delta, config) = peft::load(dir, bound)?;
        let r = config.r;
        let mut targets: Vec<Target> = Vec::new();
        let mut naming: Option<Naming> = None;
        for t in &mut delta.tensors {
            let (layer, target, is_a, n) = names::parse_peft_naming(&t.name).ok_or_else(|| {
                Error::file(dir, format!("`{}` is not a PEFT LoRA tensor name", t.name))
            })?;
            if *naming.get_or_insert(n) != n {
                return Err(Error::file(
                    dir,
                    format!(
                        "`{}` uses {n} module paths, the tensors before it {}",
                        t.name,
                        naming.unwrap_or_default()
                    ),
                ));
            }
            t.name = if is_a {
                names::peft_a(layer, target)
            } else {
                names::peft_b(layer, target)
            };
            targets.push(target);
        }
        // Two spellings of one tensor would otherwise pick one silently.
        let mut seen = std::collections::HashSet::new();
        for t in &delta.tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(Error::file(dir, format!("`{}` appears twice", t.name)));
            }
        }
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return Err(Error::file(dir, "no LoRA tensors"));
        }
        // Build the expected layout and pick tensors in canonical order.
        let mut a = Vec::new();
        let mut b = Vec::new();
        for layer in 0..shape.n_layers {
            for &t in &targets {
                let (out, inp) = shape.dims(t);
                for (dst, name, sh) in [
                    (&mut a, names::peft_a(layer, t), vec![r, inp]),
                    (&mut b, names::peft_b(layer, t), vec![out, r]),
                ] {
                    let got = delta
                        .get(&name)
                        .ok_or_else(|| crate::delta::DeltaError::Missing(name.clone()))?;
                    if got.shape != sh {
                        return Err(crate::delta::DeltaError::LayoutMismatch {
                            name,
                            expected: sh,
                            got: got.shape.clone(),
                        }
                        .into());
                    }
                    dst.push(got.clone());
                }
            }
        }
        if delta.tensors.len() != a.len() + b.len() {
            return Err(Error::file(
                dir,
                format!(
                    "{} tensors, but {} layers × {} targets need {}",
                    delta.tensors.len(),
                    shape.n_layers,
                    targets.len(),
                    a.len() + b.len()
                ),
            ));
        }
        let lora = Lora {
            r,
            // PEFT's scale as ours (`alpha / r`): rsLoRA's `alpha / √r` is `alpha·√r / r`.
            alpha: if config.use_rslora {
                config.lora_alpha * (r as f64).sqrt()
            } else {
                config.lora_alpha
            },
            targets,
            shape,
            a: Delta::new(a)?,
            b: Delta::new(b)?,
        };
        lora.validate()?;
        Ok((lora, config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            n_layers: 2,
            d_model: 8,
            q_dim: 8,
            kv_dim: 4,
            mlp_hidden: 12,
        }
    }

    #[test]
    fn peft_folder_roundtrip_layout_and_config() {
        let mut lora = Lora::new(4, 8.0, Target::ALL.to_vec(), shape(), 3).unwrap();
        lora.validate().unwrap();
        assert_eq!(lora.scale(), 2.0);
        for (i, v) in lora.b.tensors[5].data.iter_mut().enumerate() {
            *v = i as f32 * 0.5;
        }
        let dir = tempfile::tempdir().unwrap();
        lora.save_peft(dir.path(), "ruvdllm/tiny", Naming::Llada)
            .unwrap();
        let (back, cfg) = Lora::load_peft(dir.path(), shape()).unwrap();
        assert_eq!(back, lora);
        assert_eq!(cfg.r, 4);
        assert_eq!(cfg.base_model_name_or_path.as_deref(), Some("ruvdllm/tiny"));
        // The file holds exactly the PEFT keys with PEFT shapes.
        let (raw, meta) = crate::delta_io::load(&dir.path().join(peft::WEIGHTS_FILE)).unwrap();
        assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
        assert_eq!(raw.tensors.len(), 2 * 2 * 7);
        let q_a = raw
            .get("base_model.model.model.transformer.blocks.1.q_proj.lora_A.weight")
            .unwrap();
        assert_eq!(q_a.shape, vec![4, 8]);
        let down_b = raw
            .get("base_model.model.model.transformer.blocks.0.ff_out.lora_B.weight")
            .unwrap();
        assert_eq!(down_b.shape, vec![8, 4]);
        // Wrong model shape → a layout error naming the tensor.
        let mut other = shape();
        other.kv_dim = 8;
        assert!(matches!(
            Lora::load_peft(dir.path(), other),
            Err(Error::Layout(_))
        ));
        // A missing layer is refused.
        let mut three = shape();
        three.n_layers = 3;
        assert!(Lora::load_peft(dir.path(), three).is_err());
    }
}
