//! Adapters on a candle model: building the model's low-rank hooks from a [`Lora`] or a
//! [`Talora`], and merging a plain LoRA into (or out of) the dense weights.
//!
//! A TALoRA adapter cannot be merged: its update depends on each row's diffusion time. A plain
//! LoRA merges as `W ← W + (alpha/r)·B·A`; unmerging subtracts the same product, which restores
//! `W` up to float rounding (the merged forward equals the hooked forward within tolerance).

use candle_core::{DType, Device, Tensor};

use super::Error;
use super::band::Band;
use super::lora::Lora;
use super::names::{Shape, Target};
use super::talora::Talora;
use crate::delta::NamedTensor;
use crate::model::Model;
use crate::model::lora::{Adapter, LowRank, Term, Weighting};

/// Errors unless `shape` is the model's.
pub fn check_shape(model: &Model, shape: Shape) -> Result<(), Error> {
    let own = Shape::from(model.config());
    if own != shape {
        return Err(Error::Incompatible {
            what: "model shape",
            left: format!("{own:?}"),
            right: format!("{shape:?}"),
        });
    }
    Ok(())
}

/// A named f32 tensor as a candle tensor of `dtype` on `device`.
pub fn tensor(t: &NamedTensor, dtype: DType, device: &Device) -> Result<Tensor, Error> {
    Ok(Tensor::from_slice(&t.data, t.shape.as_slice(), device)?.to_dtype(dtype)?)
}

impl Talora {
    /// The model hook for this adapter: three banded terms (coarse, domain, fine), each scaled
    /// `alpha/r` and weighted by the cross-fade at each row's `t`.
    pub fn to_adapter(&self, model: &Model) -> Result<Adapter, Error> {
        check_shape(model, self.shape())?;
        let (dtype, dev) = (model.dtype(), model.device());
        let b: Vec<Tensor> = self
            .b()
            .tensors
            .iter()
            .map(|t| tensor(t, dtype, dev))
            .collect::<Result<_, _>>()?;
        self.adapter_with_b(model, |i| Ok(b[i].clone()))
    }

    /// Builds the hook with B supplied per canonical index (training passes variables).
    pub(crate) fn adapter_with_b(
        &self,
        model: &Model,
        mut b: impl FnMut(usize) -> Result<Tensor, Error>,
    ) -> Result<Adapter, Error> {
        let spec = self.spec();
        let (dtype, dev) = (model.dtype(), model.device());
        let terms = Band::ALL
            .iter()
            .map(|&band| Term {
                rank: spec.rank(band),
                weighting: Weighting::Band {
                    band,
                    scale: spec.scale(band),
                },
            })
            .collect();
        let mut adapter = Adapter::new(terms, spec.fade);
        for layer in 0..self.shape().n_layers {
            for &target in &spec.targets {
                let mut factors = Vec::with_capacity(3);
                for band in Band::ALL {
                    let i = self.index(band, layer, target).ok_or_else(|| Error::Spec {
                        field: "targets",
                        reason: format!("no tensor for {band} layer {layer} {target}"),
                    })?;
                    factors.push(LowRank {
                        a: tensor(&self.a().tensors[i], dtype, dev)?,
                        b: b(i)?,
                    });
                }
                adapter.insert(layer, target, factors)?;
            }
        }
        Ok(adapter)
    }
}

impl Lora {
    /// The model hook: one term with the constant scale `alpha/r`.
    pub fn to_adapter(&self, model: &Model) -> Result<Adapter, Error> {
        self.validate()?;
        check_shape(model, self.shape)?;
        let (dtype, dev) = (model.dtype(), model.device());
        let mut adapter = Adapter::new(
            vec![Term {
                rank: self.r,
                weighting: Weighting::Constant(self.scale()),
            }],
            0.0,
        );
        for (a, b) in self.a.tensors.iter().zip(&self.b.tensors) {
            let (layer, target) = self.module_of(&a.name)?;
            adapter.insert(
                layer,
                target,
                vec![LowRank {
                    a: tensor(a, dtype, dev)?,
                    b: tensor(b, dtype, dev)?,
                }],
            )?;
        }
        Ok(adapter)
    }

    /// `(alpha/r)·B·A` of every module as `[out, in]` f32 tensors.
    fn products(&self, device: &Device) -> Result<Vec<(usize, Target, Tensor)>, Error> {
        self.validate()?;
        let mut out = Vec::with_capacity(self.a.tensors.len());
        for (a, b) in self.a.tensors.iter().zip(&self.b.tensors) {
            let (layer, target) = self.module_of(&a.name)?;
            let at = tensor(a, DType::F32, device)?;
            let bt = tensor(b, DType::F32, device)?;
            out.push((layer, target, (bt.matmul(&at)? * self.scale())?));
        }
        Ok(out)
    }

    /// Merges `W ← W + (alpha/r)·B·A` into every adapted (dense) linear of `model`.
    pub fn merge_into(&self, model: &mut Model) -> Result<(), Error> {
        check_shape(model, self.shape)?;
        for (layer, target, dw) in self.products(model.device())? {
            model.add_to_weight(layer, target, &dw)?;
        }
        Ok(())
    }

    /// Undoes [`Self::merge_into`] (up to float rounding).
    pub fn unmerge_from(&self, model: &mut Model) -> Result<(), Error> {
        check_shape(model, self.shape)?;
        for (layer, target, dw) in self.products(model.device())? {
            model.add_to_weight(layer, target, &dw.neg()?)?;
        }
        Ok(())
    }

    fn module_of(&self, name: &str) -> Result<(usize, Target), Error> {
        super::names::parse_peft(name)
            .map(|(l, t, _)| (l, t))
            .ok_or_else(|| Error::Spec {
                field: "tensors",
                reason: format!("`{name}` is not a PEFT LoRA name"),
            })
    }
}

#[cfg(test)]
pub(crate) mod tests;
