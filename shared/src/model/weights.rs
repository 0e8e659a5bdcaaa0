//! Where weights come from, and what each checkpoint family calls them.
//!
//! The forward pass asks for a weight by [`Role`]; a [`Naming`] turns the role into the tensor name
//! of one family (LLaDA's HF names, Dream's Qwen2 names, llama.cpp's GGUF names) and a
//! [`WeightSource`] fetches it with its expected shape. A missing or mis-shaped tensor is reported
//! with the family's tensor name and the shape the model expected.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Tensor};
use candle_nn::{Init, VarBuilder};

use super::Error;

/// A tensor's role in the model, independent of any file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Embed,
    FinalNorm,
    Head,
    Layer(usize, LayerRole),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerRole {
    AttnNorm,
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    FfnNorm,
    Gate,
    Up,
    Down,
}

/// A checkpoint family's tensor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `model.transformer.blocks.N.q_proj.weight`, … (LLaDA's HF checkpoints and ours).
    Llada,
    /// `model.layers.N.self_attn.q_proj.weight`, … (Dream / Qwen2).
    Dream,
    /// `blk.N.attn_q.weight`, … (llama.cpp's converter).
    Gguf,
}

impl Naming {
    pub fn name(self, role: Role) -> String {
        use LayerRole::*;
        match (self, role) {
            (Naming::Llada, Role::Embed) => "model.transformer.wte.weight".into(),
            (Naming::Llada, Role::FinalNorm) => "model.transformer.ln_f.weight".into(),
            (Naming::Llada, Role::Head) => "model.transformer.ff_out.weight".into(),
            (Naming::Llada, Role::Layer(i, r)) => {
                let leaf = match r {
                    AttnNorm => "attn_norm.weight",
                    Q => "q_proj.weight",
                    K => "k_proj.weight",
                    V => "v_proj.weight",
                    O => "attn_out.weight",
                    QBias => "q_proj.bias",
                    KBias => "k_proj.bias",
                    VBias => "v_proj.bias",
                    FfnNorm => "ff_norm.weight",
                    Gate => "ff_proj.weight",
                    Up => "up_proj.weight",
                    Down => "ff_out.weight",
                };
                format!("model.transformer.blocks.{i}.{leaf}")
            }
            (Naming::Dream, Role::Embed) => "model.embed_tokens.weight".into(),
            (Naming::Dream, Role::FinalNorm) => "model.norm.weight".into(),
            (Naming::Dream, Role::Head) => "lm_head.weight".into(),
            (Naming::Dream, Role::Layer(i, r)) => {
                let leaf = match r {
                    AttnNorm => "input_layernorm.weight",
                    Q => "self_attn.q_proj.weight",
                    K => "self_attn.k_proj.weight",
                    V => "self_attn.v_proj.weight",
                    O => "self_attn.o_proj.weight",
                    QBias => "self_attn.q_proj.bias",
                    KBias => "self_attn.k_proj.bias",
                    VBias => "self_attn.v_proj.bias",
                    FfnNorm => "post_attention_layernorm.weight",
                    Gate => "mlp.gate_proj.weight",
                    Up => "mlp.up_proj.weight",
                    Down => "mlp.down_proj.weight",
                };
                format!("model.layers.{i}.{leaf}")
            }
            (Naming::Gguf, Role::Embed) => "token_embd.weight".into(),
            (Naming::Gguf, Role::FinalNorm) => "output_norm.weight".into(),
            (Naming::Gguf, Role::Head) => "output.weight".into(),
            (Naming::Gguf, Role::Layer(i, r)) => {
                let leaf = match r {
                    AttnNorm => "attn_norm.weight",
                    Q => "attn_q.weight",
                    K => "attn_k.weight",
                    V => "attn_v.weight",
                    O => "attn_output.weight",
                    QBias => "attn_q.bias",
                    KBias => "attn_k.bias",
                    VBias => "attn_v.bias",
                    FfnNorm => "ffn_norm.weight",
                    Gate => "ffn_gate.weight",
                    Up => "ffn_up.weight",
                    Down => "ffn_down.weight",
                };
                format!("blk.{i}.{leaf}")
            }
        }
    }
}

/// A 2-D weight `[out, in]`: dense, or quantized (kept quantized for candle's quantized matmul).
#[derive(Debug, Clone)]
pub enum Weight {
    Dense(Tensor),
    Quant(Arc<QTensor>),
}

impl Weight {
    /// The weight as a dense tensor of `dtype` (dequantizing if needed).
    pub fn to_dense(&self, dtype: DType) -> Result<Tensor, Error> {
        Ok(match self {
            Weight::Dense(t) => t.to_dtype(dtype)?,
            Weight::Quant(q) => q.dequantize(&q.device())?.to_dtype(dtype)?,
        })
    }
}

/// Something that can hand out the model's weights by role.
pub trait WeightSource {
    /// A matrix of shape `[out, inp]`.
    fn matrix(&self, role: Role, out: usize, inp: usize) -> Result<Weight, Error>;
    /// A vector of length `len` (norm weights, biases).
    fn vector(&self, role: Role, len: usize) -> Result<Tensor, Error>;
    /// Whether the source has this tensor at all (optional biases).
    fn contains(&self, role: Role) -> bool;
    /// The family naming used in error messages.
    fn naming(&self) -> Naming;
}

/// Weights from a candle [`VarBuilder`]: memory-mapped safetensors, or a `VarMap` when training
/// (then missing tensors are created with the usual initialisation: N(0, 0.02) matrices, unit norm
/// weights, zero biases).
pub struct VarBuilderSource<'a> {
    vb: VarBuilder<'a>,
    naming: Naming,
    create_missing: bool,
}

impl<'a> VarBuilderSource<'a> {
    /// Read-only: every tensor must exist in the backing files.
    pub fn new(vb: VarBuilder<'a>, naming: Naming) -> Self {
        Self {
            vb,
            naming,
            create_missing: false,
        }
    }

    /// Backed by a `VarMap` (training): tensors not yet in the map are created and initialised.
    pub fn training(vb: VarBuilder<'a>, naming: Naming) -> Self {
        Self {
            vb,
            naming,
            create_missing: true,
        }
    }

    fn get(&self, role: Role, shape: &[usize], init: Init) -> Result<Tensor, Error> {
        let name = self.naming.name(role);
        if !self.create_missing && !self.vb.contains_tensor(&name) {
            return Err(Error::MissingTensor {
                name,
                expected: shape.to_vec(),
            });
        }
        self.vb
            .get_with_hints(shape, &name, init)
            .map_err(|e| match e {
                candle_core::Error::UnexpectedShape { got, .. } => Error::TensorShape {
                    name: name.clone(),
                    expected: shape.to_vec(),
                    got: got.dims().to_vec(),
                },
                other => Error::Load {
                    name: name.clone(),
                    expected: shape.to_vec(),
                    reason: other.to_string(),
                },
            })
    }
}

impl WeightSource for VarBuilderSource<'_> {
    fn matrix(&self, role: Role, out: usize, inp: usize) -> Result<Weight, Error> {
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        Ok(Weight::Dense(self.get(role, &[out, inp], init)?))
    }

    fn vector(&self, role: Role, len: usize) -> Result<Tensor, Error> {
        let init = match role {
            Role::Layer(_, LayerRole::QBias | LayerRole::KBias | LayerRole::VBias) => {
                Init::Const(0.0)
            }
            _ => Init::Const(1.0),
        };
        self.get(role, &[len], init)
    }

    fn contains(&self, role: Role) -> bool {
        self.create_missing || self.vb.contains_tensor(&self.naming.name(role))
    }

    fn naming(&self) -> Naming {
        self.naming
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_families() {
        let r = Role::Layer(3, LayerRole::Down);
        assert_eq!(
            Naming::Llada.name(r),
            "model.transformer.blocks.3.ff_out.weight"
        );
        assert_eq!(Naming::Dream.name(r), "model.layers.3.mlp.down_proj.weight");
        assert_eq!(Naming::Gguf.name(r), "blk.3.ffn_down.weight");
        assert_eq!(
            Naming::Llada.name(Role::Head),
            "model.transformer.ff_out.weight"
        );
        assert_eq!(
            Naming::Gguf.name(Role::Layer(0, LayerRole::O)),
            "blk.0.attn_output.weight"
        );
    }
}
