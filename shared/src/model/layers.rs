//! The building blocks of the forward pass: linear layers (dense or quantized), RMSNorm in f32,
//! and non-interleaved (NeoX / HF-Llama) rotary embeddings with per-row positions.
//!
//! Each has a fused inference path (candle's custom ops) and an explicit path made of primitive
//! tensor ops, which is the one used when gradients are needed: candle's fused RMSNorm, softmax and
//! RoPE kernels have no backward pass.

use candle_core::quantized::QMatMul;
use candle_core::{D, DType, Module, Result, Tensor};

use super::weights::Weight;

/// `y = x Wᵀ + b` with `W` dense or quantized.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) weight: LinearWeight,
    pub(crate) bias: Option<Tensor>,
}

#[derive(Debug, Clone)]
pub(crate) enum LinearWeight {
    Dense(Tensor),
    Quant(QMatMul),
}

impl Linear {
    pub fn new(weight: Weight, bias: Option<Tensor>) -> Result<Self> {
        let weight = match weight {
            Weight::Dense(t) => LinearWeight::Dense(t),
            Weight::Quant(q) => LinearWeight::Quant(QMatMul::from_arc(q)?),
        };
        Ok(Self { weight, bias })
    }

    /// The dense weight `[out, in]`, if this layer is not quantized.
    pub fn dense_weight(&self) -> Option<&Tensor> {
        match &self.weight {
            LinearWeight::Dense(t) => Some(t),
            LinearWeight::Quant(_) => None,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            LinearWeight::Dense(w) => {
                let (b, l, i) = x.dims3()?;
                let y = x.reshape((b * l, i))?.matmul(&w.t()?)?;
                y.reshape((b, l, ()))?
            }
            LinearWeight::Quant(q) => {
                let dt = x.dtype();
                q.forward(&x.to_dtype(DType::F32)?)?.to_dtype(dt)?
            }
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// RMSNorm computed in f32 (`x · rsqrt(mean(x²) + eps)`), cast back, then scaled by the weight.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub(crate) weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps }
    }

    pub fn forward(&self, x: &Tensor, differentiable: bool) -> Result<Tensor> {
        if !differentiable && x.is_contiguous() && x.dtype() == DType::F32 {
            return candle_nn::ops::rms_norm(x, &self.weight, self.eps as f32);
        }
        let dt = x.dtype();
        let x32 = x.to_dtype(DType::F32)?;
        let ms = x32.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x32.broadcast_div(&(ms + self.eps)?.sqrt()?)?.to_dtype(dt)?;
        normed.broadcast_mul(&self.weight)
    }
}

/// Rotary embedding tables for arbitrary per-row positions.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Tensor,
}

impl Rope {
    /// `inv_freq[j] = 1 / θ^(2j / head_dim)`.
    pub fn new(head_dim: usize, theta: f64, device: &candle_core::Device) -> Result<Self> {
        let inv: Vec<f32> = (0..head_dim / 2)
            .map(|j| (1.0 / theta.powf(2.0 * j as f64 / head_dim as f64)) as f32)
            .collect();
        Ok(Self {
            inv_freq: Tensor::from_vec(inv, (1, 1, head_dim / 2), device)?,
        })
    }

    /// `(cos, sin)` of shape `[B, L, head_dim / 2]` (f32) for positions `[B, L]`.
    pub fn tables(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let angles = positions
            .to_dtype(DType::F32)?
            .unsqueeze(2)?
            .broadcast_mul(&self.inv_freq)?;
        Ok((angles.cos()?.contiguous()?, angles.sin()?.contiguous()?))
    }

    /// Rotates `x` `[B, H, L, head_dim]` (non-interleaved halves), computed in f32.
    pub fn apply(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        differentiable: bool,
    ) -> Result<Tensor> {
        let dt = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let y = if differentiable {
            let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
            let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
            let half = x.dim(D::Minus1)? / 2;
            let x1 = x.narrow(D::Minus1, 0, half)?;
            let x2 = x.narrow(D::Minus1, half, half)?;
            let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            (x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?)?
        } else {
            candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?
        };
        y.to_dtype(dt)
    }
}

/// Softmax over the last dimension (fused when no gradient is needed).
pub fn softmax_last(x: &Tensor, differentiable: bool) -> Result<Tensor> {
    if differentiable {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_and_explicit_paths_agree() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 8), &dev)?;
        let rope = Rope::new(8, 10_000.0, &dev)?;
        let pos = Tensor::new(&[[0u32, 1, 2, 3, 4], [0, 0, 1, 2, 3]], &dev)?;
        let (c, s) = rope.tables(&pos)?;
        let a = rope.apply(&x, &c, &s, false)?;
        let b = rope.apply(&x, &c, &s, true)?;
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "rope paths differ by {diff}");

        let w = Tensor::randn(0f32, 1.0, 8, &dev)?;
        let norm = RmsNorm::new(w, 1e-5);
        let h = Tensor::randn(0f32, 1.0, (2, 5, 8), &dev)?;
        let d = (norm.forward(&h, false)? - norm.forward(&h, true)?)?
            .abs()?
            .max_all()?;
        assert!(d.to_scalar::<f32>()? < 1e-5);

        let z = Tensor::randn(0f32, 1.0, (2, 5, 8), &dev)?;
        let d = (softmax_last(&z, false)? - softmax_last(&z, true)?)?
            .abs()?
            .max_all()?;
        assert!(d.to_scalar::<f32>()? < 1e-6);
        Ok(())
    }

    #[test]
    fn rope_position_zero_is_identity_and_rotation_is_norm_preserving() -> Result<()> {
        let dev = Device::Cpu;
        let rope = Rope::new(4, 10_000.0, &dev)?;
        let x = Tensor::new(&[[[[1f32, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]]]], &dev)?;
        let pos = Tensor::new(&[[0u32, 7]], &dev)?;
        let (c, s) = rope.tables(&pos)?;
        let y = rope.apply(&x, &c, &s, true)?;
        let rows = y.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?;
        assert_eq!(rows[0], vec![1.0, 2.0, 3.0, 4.0]);
        // Pairs (x_j, x_{j+half}) rotate by pos·inv_freq[j]: norms of each pair are preserved.
        let n = |r: &Vec<f32>, j: usize| (r[j] * r[j] + r[j + 2] * r[j + 2]).sqrt();
        assert!((n(&rows[1], 0) - n(&rows[0], 0)).abs() < 1e-5);
        assert!((n(&rows[1], 1) - n(&rows[0], 1)).abs() < 1e-5);
        // First pair rotates by exactly 7 radians (inv_freq[0] = 1).
        let expect0 = 1.0 * 7f32.cos() - 3.0 * 7f32.sin();
        assert!((rows[1][0] - expect0).abs() < 1e-5);
        Ok(())
    }
}
