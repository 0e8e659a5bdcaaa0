//! The LLaDA transformer: a Llama block stack with bidirectional attention.
//!
//! `h = x + attn_out(SDPA(RoPE(q(n)), RoPE(k(n)), v(n)))`, `n = RMSNorm(x)`;
//! `out = h + down(silu(gate(m)) · up(m))`, `m = RMSNorm(h)`; `logits = head(RMSNorm(out))`.
//! There is never a causal mask — only a key-padding mask for left-padded batches. GQA and qkv
//! biases come from the config, so Dream/Qwen2-style checkpoints run through the same code.
//!
//! For Fast-dLLM's block-wise caches the model can return the (post-RoPE) keys and values of every
//! layer, and later recompute only a window of positions while the other positions' keys and
//! values are read from that cache.
//!
//! Low-rank hooks ([`super::lora`]) ride on every linear of the blocks: an adapter attached to
//! the model (weighted per row by `Batch::t`) and a per-position delta carried by the batch.
//! `Model` is cheap to clone (weights are reference-counted tensors), so a daemon can hold one
//! base and several adapted views of it.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

use super::config::Config;
use super::layers::{Linear, LinearWeight, RmsNorm, Rope, softmax_last};
use super::lora::{Adapter, PositionDelta};
use super::weights::{LayerRole, Role, WeightSource};
use crate::adapter::Target;
use crate::denoiser::{Batch, Denoiser};

#[derive(Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

#[derive(Clone)]
struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    ffn_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// Per-layer keys and values `[B, n_kv_heads, L, head_dim]` (keys after RoPE).
#[derive(Debug, Clone)]
pub struct KvCache {
    pub layers: Vec<(Tensor, Tensor)>,
}

/// A LLaDA-architecture masked-diffusion model.
#[derive(Clone)]
pub struct Model {
    cfg: Config,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    head: Linear,
    rope: Rope,
    device: Device,
    dtype: DType,
    differentiable: bool,
    adapter: Option<Arc<Adapter>>,
}

/// The hooks of one forward, resolved once and handed to every block.
struct Hooks<'a> {
    /// The attached adapter and its per-row column weights `[B, 1, R]`.
    adapter: Option<(&'a Adapter, Tensor)>,
    /// The batch's per-position delta and the first canvas position of `x`.
    positions: Option<(&'a PositionDelta, usize)>,
}

/// What a forward computes besides logits.
pub struct Forward {
    /// Final hidden states after the last RMSNorm, `[B, Lq, d_model]`.
    pub hidden: Tensor,
    /// Logits `[B, Lq, V]` in f32.
    pub logits: Tensor,
}

impl Model {
    /// Builds the model from any weight source. `dtype` is the compute dtype of dense weights.
    pub fn load(
        src: &dyn WeightSource,
        cfg: &Config,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<Self, super::Error> {
        cfg.validate()?;
        let d = cfg.d_model;
        let q_dim = cfg.n_heads * cfg.head_dim;
        let kv_dim = cfg.n_kv_heads * cfg.head_dim;
        let dense = |w: super::weights::Weight| -> std::result::Result<super::weights::Weight, super::Error> {
            Ok(match w {
                super::weights::Weight::Dense(t) => super::weights::Weight::Dense(t.to_dtype(dtype)?.to_device(device)?),
                q => q,
            })
        };
        let vec = |role: Role, len: usize| -> std::result::Result<Tensor, super::Error> {
            Ok(src.vector(role, len)?.to_dtype(dtype)?.to_device(device)?)
        };
        let linear = |role: Role,
                      out: usize,
                      inp: usize,
                      bias: Option<Role>|
         -> std::result::Result<Linear, super::Error> {
            let w = dense(src.matrix(role, out, inp)?)?;
            let b = match bias {
                Some(br) => Some(vec(br, out)?),
                None => None,
            };
            Ok(Linear::new(w, b)?)
        };
        let embed = src
            .matrix(Role::Embed, cfg.vocab_size, d)?
            .to_dense(dtype)?
            .to_device(device)?;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let l = |r| Role::Layer(i, r);
            let bias = |r| {
                if cfg.qkv_bias {
                    Some(Role::Layer(i, r))
                } else {
                    None
                }
            };
            blocks.push(Block {
                attn_norm: RmsNorm::new(vec(l(LayerRole::AttnNorm), d)?, cfg.rms_norm_eps),
                attn: Attention {
                    q: linear(l(LayerRole::Q), q_dim, d, bias(LayerRole::QBias))?,
                    k: linear(l(LayerRole::K), kv_dim, d, bias(LayerRole::KBias))?,
                    v: linear(l(LayerRole::V), kv_dim, d, bias(LayerRole::VBias))?,
                    o: linear(l(LayerRole::O), d, q_dim, None)?,
                },
                ffn_norm: RmsNorm::new(vec(l(LayerRole::FfnNorm), d)?, cfg.rms_norm_eps),
                gate: linear(l(LayerRole::Gate), cfg.mlp_hidden, d, None)?,
                up: linear(l(LayerRole::Up), cfg.mlp_hidden, d, None)?,
                down: linear(l(LayerRole::Down), d, cfg.mlp_hidden, None)?,
            });
        }
        let norm = RmsNorm::new(vec(Role::FinalNorm, d)?, cfg.rms_norm_eps);
        let head = if cfg.tie_embeddings {
            Linear::new(super::weights::Weight::Dense(embed.clone()), None)?
        } else {
            linear(Role::Head, cfg.vocab_size, d, None)?
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            blocks,
            norm,
            head,
            rope: Rope::new(cfg.head_dim, cfg.rope_theta, device)?,
            device: device.clone(),
            dtype,
            differentiable: false,
            adapter: None,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Use primitive (differentiable) ops instead of candle's fused kernels. Required for training.
    pub fn set_differentiable(&mut self, on: bool) {
        self.differentiable = on;
    }

    /// Attaches low-rank hooks to every forward (replacing any attached adapter).
    pub fn set_adapter(&mut self, adapter: Adapter) {
        self.adapter = Some(Arc::new(adapter));
    }

    /// Removes the attached adapter: forwards are the base model's again.
    pub fn clear_adapter(&mut self) {
        self.adapter = None;
    }

    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_deref()
    }

    /// A block's linear layer.
    pub fn linear(&self, layer: usize, target: Target) -> Option<&Linear> {
        let b = self.blocks.get(layer)?;
        Some(match target {
            Target::Q => &b.attn.q,
            Target::K => &b.attn.k,
            Target::V => &b.attn.v,
            Target::O => &b.attn.o,
            Target::Gate => &b.gate,
            Target::Up => &b.up,
            Target::Down => &b.down,
        })
    }

    /// Replaces a block linear's dense weight `W` by `W + delta` (`delta` `[out, in]`, cast to
    /// the model's dtype). The old tensor is not modified, so clones of this model keep it.
    /// Quantized weights cannot be merged into.
    pub fn add_to_weight(&mut self, layer: usize, target: Target, delta: &Tensor) -> Result<()> {
        let dtype = self.dtype;
        let Some(b) = self.blocks.get_mut(layer) else {
            candle_core::bail!("layer {layer} out of range");
        };
        let lin = match target {
            Target::Q => &mut b.attn.q,
            Target::K => &mut b.attn.k,
            Target::V => &mut b.attn.v,
            Target::O => &mut b.attn.o,
            Target::Gate => &mut b.gate,
            Target::Up => &mut b.up,
            Target::Down => &mut b.down,
        };
        let LinearWeight::Dense(w) = &lin.weight else {
            candle_core::bail!("layer {layer} {target} is quantized; merge needs a dense weight");
        };
        if w.dims() != delta.dims() {
            candle_core::bail!(
                "layer {layer} {target}: weight {:?}, delta {:?}",
                w.dims(),
                delta.dims()
            );
        }
        let merged = (w + delta.to_dtype(dtype)?.to_device(w.device())?)?;
        lin.weight = LinearWeight::Dense(merged);
        Ok(())
    }

    fn hooks<'a>(
        &'a self,
        batch: &'a Batch,
        rows: usize,
        len: usize,
        start: usize,
    ) -> Result<Hooks<'a>> {
        let adapter = match &self.adapter {
            Some(a) => {
                let w = a.column_weights(batch.t.as_deref(), rows, self.dtype, &self.device)?;
                Some((a.as_ref(), w))
            }
            None => None,
        };
        let positions = match &batch.position_delta {
            Some(pd) => {
                pd.check(rows, len)?;
                Some((pd.as_ref(), start))
            }
            None => None,
        };
        Ok(Hooks { adapter, positions })
    }

    /// A block linear with its hooks.
    fn lin(
        &self,
        hooks: &Hooks<'_>,
        layer: usize,
        target: Target,
        linear: &Linear,
        x: &Tensor,
    ) -> Result<Tensor> {
        let mut y = linear.forward(x)?;
        if let Some((a, w)) = &hooks.adapter {
            y = a.apply(layer, target, x, y, w)?;
        }
        if let Some((pd, start)) = hooks.positions {
            y = pd.apply(layer, target, x, y, start)?;
        }
        Ok(y)
    }

    /// Positions `0..L` for every row, and no padding: the batch for unpadded canvases.
    pub fn plain_batch(&self, ids: &Tensor) -> Result<Batch> {
        let (b, l) = ids.dims2()?;
        let positions = Tensor::arange(0u32, l as u32, &self.device)?
            .unsqueeze(0)?
            .repeat((b, 1))?;
        Ok(Batch {
            ids: ids.clone(),
            positions,
            key_mask: None,
            t: None,
            position_delta: None,
        })
    }

    /// Additive key bias `[B, 1, 1, L]`: 0 for real keys, −∞ for padding.
    fn key_bias(&self, batch: &Batch) -> Result<Option<Tensor>> {
        let Some(mask) = &batch.key_mask else {
            return Ok(None);
        };
        let (b, l) = mask.dims2()?;
        let zeros = Tensor::zeros((b, l), DType::F32, &self.device)?;
        let ninf = Tensor::full(f32::NEG_INFINITY, (b, l), &self.device)?;
        let bias = mask.ne(0u8)?.where_cond(&zeros, &ninf)?;
        Ok(Some(bias.reshape((b, 1, 1, l))?))
    }

    /// Full forward over the canvas. With `cache`, also records every layer's keys and values.
    pub fn forward_full(&self, batch: &Batch, mut cache: Option<&mut KvCache>) -> Result<Forward> {
        let (b, l) = batch.ids.dims2()?;
        let mut x = self
            .embed
            .index_select(&batch.ids.flatten_all()?, 0)?
            .reshape((b, l, self.cfg.d_model))?;
        let (cos, sin) = self.rope.tables(&batch.positions)?;
        let bias = self.key_bias(batch)?;
        let hooks = self.hooks(batch, b, l, 0)?;
        if let Some(c) = cache.as_deref_mut() {
            c.layers.clear();
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let (y, kv) =
                self.block_forward(block, i, &hooks, &x, &cos, &sin, bias.as_ref(), None)?;
            if let Some(c) = cache.as_deref_mut() {
                c.layers.push(kv);
            }
            x = y;
        }
        self.finish(&x)
    }

    /// Recomputes positions `[start, start + len)`; the other positions' keys and values come from
    /// `cache`, and the window's fresh keys and values are written into it.
    pub fn forward_window(
        &self,
        batch: &Batch,
        start: usize,
        len: usize,
        cache: &mut KvCache,
    ) -> Result<Forward> {
        let (b, l) = batch.ids.dims2()?;
        if start + len > l || len == 0 {
            candle_core::bail!(
                "window [{start}, {}) outside canvas of length {l}",
                start + len
            );
        }
        if cache.layers.len() != self.blocks.len() {
            candle_core::bail!(
                "cache has {} layers, model has {}",
                cache.layers.len(),
                self.blocks.len()
            );
        }
        let ids = batch.ids.narrow(1, start, len)?.contiguous()?;
        let mut x =
            self.embed
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((b, len, self.cfg.d_model))?;
        let (cos, sin) = self
            .rope
            .tables(&batch.positions.narrow(1, start, len)?.contiguous()?)?;
        let bias = self.key_bias(batch)?;
        let hooks = self.hooks(batch, b, l, start)?;
        for (i, (block, kv)) in self.blocks.iter().zip(cache.layers.iter_mut()).enumerate() {
            let (y, fresh) = self.block_forward(
                block,
                i,
                &hooks,
                &x,
                &cos,
                &sin,
                bias.as_ref(),
                Some((start, &*kv)),
            )?;
            *kv = fresh;
            x = y;
        }
        self.finish(&x)
    }

    fn finish(&self, x: &Tensor) -> Result<Forward> {
        let hidden = self.norm.forward(x, self.differentiable)?;
        let logits = self.head.forward(&hidden)?.to_dtype(DType::F32)?;
        Ok(Forward { hidden, logits })
    }

    /// One block. With `window = Some((start, cache))`, `x` holds only the window's rows and the
    /// returned keys/values are the full-length ones with the window spliced in.
    #[allow(clippy::too_many_arguments)]
    fn block_forward(
        &self,
        block: &Block,
        layer: usize,
        hooks: &Hooks<'_>,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        bias: Option<&Tensor>,
        window: Option<(usize, &(Tensor, Tensor))>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let cfg = &self.cfg;
        let (b, lq, _) = x.dims3()?;
        let diff = self.differentiable;
        let n = block.attn_norm.forward(x, diff)?;
        let q = self
            .lin(hooks, layer, Target::Q, &block.attn.q, &n)?
            .reshape((b, lq, cfg.n_heads, cfg.head_dim))?
            .transpose(1, 2)?;
        let k = self
            .lin(hooks, layer, Target::K, &block.attn.k, &n)?
            .reshape((b, lq, cfg.n_kv_heads, cfg.head_dim))?
            .transpose(1, 2)?;
        let v = self
            .lin(hooks, layer, Target::V, &block.attn.v, &n)?
            .reshape((b, lq, cfg.n_kv_heads, cfg.head_dim))?
            .transpose(1, 2)?;
        let q = self.rope.apply(&q.contiguous()?, cos, sin, diff)?;
        let k = self.rope.apply(&k.contiguous()?, cos, sin, diff)?;
        let v = v.contiguous()?;
        let (k_all, v_all) = match window {
            None => (k, v),
            Some((start, (ck, cv))) => (splice(ck, &k, start)?, splice(cv, &v, start)?),
        };
        let attn = self.attention(&q, &k_all, &v_all, bias)?;
        let attn = attn
            .transpose(1, 2)?
            .reshape((b, lq, cfg.n_heads * cfg.head_dim))?;
        let h = (x + self.lin(hooks, layer, Target::O, &block.attn.o, &attn)?)?;
        let m = block.ffn_norm.forward(&h, diff)?;
        let gate = candle_nn::ops::silu(&self.lin(hooks, layer, Target::Gate, &block.gate, &m)?)?;
        let up = self.lin(hooks, layer, Target::Up, &block.up, &m)?;
        let ff = self.lin(hooks, layer, Target::Down, &block.down, &(gate * up)?)?;
        Ok(((h + ff)?, (k_all, v_all)))
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let rep = cfg.n_heads / cfg.n_kv_heads;
        let (k, v) = if rep == 1 {
            (k.clone(), v.clone())
        } else {
            (repeat_kv(k, rep)?, repeat_kv(v, rep)?)
        };
        let scale = 1.0 / (cfg.head_dim as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(&bias.to_dtype(scores.dtype())?)?;
        }
        let probs = softmax_last(&scores, self.differentiable)?;
        probs.matmul(&v)
    }
}

/// `cache` with rows `[start, start + fresh_len)` of dim 2 replaced by `fresh`.
fn splice(cache: &Tensor, fresh: &Tensor, start: usize) -> Result<Tensor> {
    let l = cache.dim(2)?;
    let len = fresh.dim(2)?;
    let mut parts = Vec::with_capacity(3);
    if start > 0 {
        parts.push(cache.narrow(2, 0, start)?);
    }
    parts.push(fresh.clone());
    if start + len < l {
        parts.push(cache.narrow(2, start + len, l - start - len)?);
    }
    Tensor::cat(&parts, 2)?.contiguous()
}

fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    let (b, h, l, d) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((b, h, rep, l, d))?
        .reshape((b, h * rep, l, d))
}

impl Denoiser for Model {
    type Cache = KvCache;

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn shift_logits(&self) -> bool {
        self.cfg.shift_logits
    }

    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        Ok(self.forward_full(batch, None)?.logits)
    }

    fn forward_cached(&self, batch: &Batch) -> Result<(Tensor, KvCache)> {
        let mut cache = KvCache { layers: Vec::new() };
        let out = self.forward_full(batch, Some(&mut cache))?;
        Ok((out.logits, cache))
    }

    fn forward_window(
        &self,
        batch: &Batch,
        start: usize,
        len: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        Ok(Model::forward_window(self, batch, start, len, cache)?.logits)
    }

    fn hidden_states(&self) -> Option<(usize, DType)> {
        Some((self.cfg.d_model, self.dtype))
    }

    fn forward_hidden(&self, batch: &Batch) -> Result<(Tensor, Tensor)> {
        let out = self.forward_full(batch, None)?;
        Ok((out.logits, out.hidden))
    }

    fn forward_cached_hidden(&self, batch: &Batch) -> Result<(Tensor, Tensor, KvCache)> {
        let mut cache = KvCache { layers: Vec::new() };
        let out = self.forward_full(batch, Some(&mut cache))?;
        Ok((out.logits, out.hidden, cache))
    }

    fn forward_window_hidden(
        &self,
        batch: &Batch,
        start: usize,
        len: usize,
        cache: &mut KvCache,
    ) -> Result<(Tensor, Tensor)> {
        let out = Model::forward_window(self, batch, start, len, cache)?;
        Ok((out.logits, out.hidden))
    }
}
