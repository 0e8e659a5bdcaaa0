//! The TALoRA adapter: three LoRA adapters (coarse / domain / fine) on the same targets, with A
//! frozen and derived from the run seed, B trained.
//!
//! This is the federated object. It is pure data, so the coordinator (built without candle) can
//! hold the global adapter, check and apply aggregated updates, and write the files:
//!
//! * [`Talora::to_delta`] — the wire payload: B only, names `talora.<band>.<PEFT B name>`,
//!   canonical order ([`super::names::b_layout`]);
//! * [`Talora::update_from`] — `trained − global`, what a node sends after a round;
//! * [`Talora::apply_delta`] — adds an aggregated update;
//! * [`Talora::save`] / [`Talora::load`] — three PEFT folders `coarse/ domain/ fine/` (A included
//!   so Python can load each band; on load A is checked bit-for-bit against the seed-derived A)
//!   plus `talora.json` with the spec, run seed and shape.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Error;
use super::band::Band;
use super::frozen_a;
use super::lora::Lora;
use super::names::{self, Naming, Shape, Spec, Target};
use crate::delta::{Delta, NamedTensor};

/// Marker in `talora.json`.
pub const FORMAT: &str = "ruvdllm-talora-v1";
pub const META_FILE: &str = "talora.json";

#[derive(Debug, Clone, PartialEq)]
pub struct Talora {
    spec: Spec,
    run_seed: u64,
    shape: Shape,
    /// Frozen A, TALoRA names, canonical order.
    a: Delta,
    /// Trained B, TALoRA names, canonical order.
    b: Delta,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format: String,
    spec: Spec,
    run_seed: u64,
    shape: Shape,
    base_model: String,
    /// The module paths of the PEFT folders (absent in files before it was recorded: LLaDA's).
    #[serde(default)]
    naming: Naming,
}

impl Talora {
    /// A fresh adapter: A derived from `run_seed`, B zero (the adapted model equals the base).
    pub fn new(spec: Spec, run_seed: u64, shape: Shape) -> Result<Talora, Error> {
        let a_layout = names::a_layout(&spec, &shape)?;
        let b_layout = names::b_layout(&spec, &shape)?;
        let a = a_layout
            .into_iter()
            .map(|(name, s)| {
                let values = frozen_a::derive(run_seed, &name, s[0], s[1]);
                NamedTensor::new(name, s, values)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let b = b_layout
            .into_iter()
            .map(|(name, s)| {
                let n = s[0] * s[1];
                NamedTensor::new(name, s, vec![0.0; n])
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Talora {
            spec,
            run_seed,
            shape,
            a: Delta::new(a)?,
            b: Delta::new(b)?,
        })
    }

    /// An adapter whose B comes from `delta` (B layout in any order; see [`Self::to_delta`]).
    pub fn from_delta(
        spec: Spec,
        run_seed: u64,
        shape: Shape,
        delta: &Delta,
    ) -> Result<Talora, Error> {
        let mut t = Talora::new(spec, run_seed, shape)?;
        t.set_b(delta)?;
        Ok(t)
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn run_seed(&self) -> u64 {
        self.run_seed
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The frozen A tensors (TALoRA names, canonical order).
    pub fn a(&self) -> &Delta {
        &self.a
    }

    /// The B tensors (TALoRA names, canonical order).
    pub fn b(&self) -> &Delta {
        &self.b
    }

    /// Position of `(band, layer, target)` in the canonical order.
    pub fn index(&self, band: Band, layer: usize, target: Target) -> Option<usize> {
        let ti = self.spec.targets.iter().position(|&t| t == target)?;
        if layer >= self.shape.n_layers {
            return None;
        }
        let per_band = self.shape.n_layers * self.spec.targets.len();
        Some(band.index() * per_band + layer * self.spec.targets.len() + ti)
    }

    /// The wire payload: B only, TALoRA names, canonical order.
    pub fn to_delta(&self) -> Delta {
        self.b.clone()
    }

    /// Replaces B with `delta`'s values (exact B layout required, every value finite).
    pub fn set_b(&mut self, delta: &Delta) -> Result<(), Error> {
        let aligned = self.b.aligned(delta)?;
        check_finite(&aligned)?;
        self.b = aligned;
        Ok(())
    }

    /// Adds an aggregated update to B (exact B layout required, every value finite).
    pub fn apply_delta(&mut self, delta: &Delta) -> Result<(), Error> {
        let aligned = self.b.aligned(delta)?;
        check_finite(&aligned)?;
        let mut next = self.b.clone();
        for (dst, src) in next.tensors.iter_mut().zip(&aligned.tensors) {
            for (d, s) in dst.data.iter_mut().zip(&src.data) {
                *d += s;
            }
        }
        check_finite(&next)?;
        self.b = next;
        Ok(())
    }

    /// `self.B − global.B`: the update a node sends after training from `global`. Both must be
    /// the same run (spec, seed, shape).
    pub fn update_from(&self, global: &Talora) -> Result<Delta, Error> {
        self.check_compatible(global)?;
        let mut out = self.b.clone();
        for (dst, g) in out.tensors.iter_mut().zip(&global.b.tensors) {
            for (d, s) in dst.data.iter_mut().zip(&g.data) {
                *d -= s;
            }
        }
        Ok(out)
    }

    /// Errors unless `other` has the same spec, run seed and shape.
    pub fn check_compatible(&self, other: &Talora) -> Result<(), Error> {
        let differ = |what, l: String, r: String| {
            Err(Error::Incompatible {
                what,
                left: l,
                right: r,
            })
        };
        if self.spec != other.spec {
            return differ(
                "spec",
                format!("{:?}", self.spec),
                format!("{:?}", other.spec),
            );
        }
        if self.run_seed != other.run_seed {
            return differ(
                "run seed",
                self.run_seed.to_string(),
                other.run_seed.to_string(),
            );
        }
        if self.shape != other.shape {
            return differ(
                "shape",
                format!("{:?}", self.shape),
                format!("{:?}", other.shape),
            );
        }
        Ok(())
    }

    /// One band as a plain LoRA adapter with PEFT names (the content of its folder).
    pub fn band_lora(&self, band: Band) -> Lora {
        let prefix = names::band_prefix(band);
        let strip = |d: &Delta| Delta {
            tensors: d
                .tensors
                .iter()
                .filter_map(|t| {
                    t.name.strip_prefix(&prefix).map(|n| NamedTensor {
                        name: n.to_string(),
                        shape: t.shape.clone(),
                        data: t.data.clone(),
                    })
                })
                .collect(),
        };
        Lora {
            r: self.spec.rank(band),
            alpha: self.spec.alphas[band.index()],
            targets: self.spec.targets.clone(),
            shape: self.shape,
            a: strip(&self.a),
            b: strip(&self.b),
        }
    }

    /// SHA-256 (hex) over every A value's little-endian f32 bytes in canonical order: two
    /// processes with the same run seed and spec must print the same digest.
    pub fn a_digest(&self) -> String {
        let mut h = Sha256::new();
        for t in &self.a.tensors {
            for v in &t.data {
                h.update(v.to_le_bytes());
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Writes `dir/{coarse,domain,fine}/` (PEFT folders, A and B in F32, with the module paths
    /// of a base that uses `naming`) and `dir/talora.json`.
    pub fn save(&self, dir: &Path, base_model: &str, naming: Naming) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
        for band in Band::ALL {
            self.band_lora(band)
                .save_peft(&dir.join(band.name()), base_model, naming)?;
        }
        let meta = Meta {
            format: FORMAT.into(),
            spec: self.spec.clone(),
            run_seed: self.run_seed,
            shape: self.shape,
            base_model: base_model.into(),
            naming,
        };
        let json = serde_json::to_string_pretty(&meta).map_err(|e| Error::file(dir, e))?;
        crate::fsutil::write_atomic(&dir.join(META_FILE), json.as_bytes())
            .map_err(|e| Error::file(dir, e))
    }

    /// Reads a folder written by [`Self::save`]. Each band's rank, alpha and targets must match
    /// the spec, and its A must equal the A derived from the run seed bit for bit.
    pub fn load(dir: &Path) -> Result<Talora, Error> {
        let meta_path = dir.join(META_FILE);
        let len = std::fs::metadata(&meta_path)
            .map_err(|e| Error::file(&meta_path, e))?
            .len();
        if len > 1 << 20 {
            return Err(Error::file(&meta_path, format!("{len} bytes, limit 1 MiB")));
        }
        let text = std::fs::read(&meta_path).map_err(|e| Error::file(&meta_path, e))?;
        let meta: Meta = serde_json::from_slice(&text).map_err(|e| Error::file(&meta_path, e))?;
        if meta.format != FORMAT {
            return Err(Error::file(
                &meta_path,
                format!("format `{}`, expected `{FORMAT}`", meta.format),
            ));
        }
        let mut t = Talora::new(meta.spec, meta.run_seed, meta.shape)?;
        let mut b = Vec::with_capacity(t.b.tensors.len());
        for band in Band::ALL {
            let sub = dir.join(band.name());
            let (lora, _) = Lora::load_peft(&sub, t.shape)?;
            let expected = t.band_lora(band);
            let mismatch = |what: &'static str, l: String, r: String| Error::Incompatible {
                what,
                left: l,
                right: r,
            };
            if lora.r != expected.r {
                return Err(mismatch(
                    "band rank",
                    lora.r.to_string(),
                    expected.r.to_string(),
                ));
            }
            if lora.alpha != expected.alpha {
                return Err(mismatch(
                    "band lora_alpha",
                    lora.alpha.to_string(),
                    expected.alpha.to_string(),
                ));
            }
            if lora.targets != expected.targets {
                return Err(mismatch(
                    "band targets",
                    format!("{:?}", lora.targets),
                    format!("{:?}", expected.targets),
                ));
            }
            for (got, want) in lora.a.tensors.iter().zip(&expected.a.tensors) {
                let same = got.data.len() == want.data.len()
                    && got
                        .data
                        .iter()
                        .zip(&want.data)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                if !same {
                    return Err(Error::FrozenAMismatch {
                        name: format!("{}{}", names::band_prefix(band), want.name),
                        run_seed: t.run_seed,
                    });
                }
            }
            let prefix = names::band_prefix(band);
            b.extend(lora.b.tensors.into_iter().map(|mut x| {
                x.name = format!("{prefix}{}", x.name);
                x
            }));
        }
        t.set_b(&Delta::new(b)?)?;
        Ok(t)
    }
}

fn check_finite(d: &Delta) -> Result<(), Error> {
    match d
        .tensors
        .iter()
        .find(|t| !t.data.iter().all(|v| v.is_finite()))
    {
        Some(t) => Err(Error::NonFinite {
            name: t.name.clone(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
