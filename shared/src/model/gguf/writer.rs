//! Writes a model as llama.cpp's converter would: GGUF names and keys, q/k rows permuted to the
//! interleaved-RoPE order for `llada`, every 2-D weight in one ggml type, 1-D tensors in F32.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::meta::{self, TOKENS};
use super::permute::{self, Direction};
use super::{Dtype, Error, file_err};
use crate::model::Error as ModelError;
use crate::model::checkpoint;
use crate::model::config::{Arch, Config};
use crate::model::weights::{LayerRole, Naming, Role, VarBuilderSource, WeightSource};
use crate::tokens::SpecialTokens;

/// Which vocabulary to embed in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vocab {
    /// No token list: `<arch>.vocab_size` and the special ids only.
    None,
    /// The built-in byte vocabulary as a SentencePiece-style list: `<0x00>`…`<0xFF>` byte tokens
    /// (type BYTE) and the special tokens (type CONTROL).
    Bytes,
}

#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    pub dtype: Dtype,
    /// Permute q/k rows for `llada` as the converter does. Only tests turn this off, to produce a
    /// file in HF row order and show that the loader's un-permutation matters.
    pub permute_qk: bool,
    pub vocab: Vocab,
}

impl WriteOptions {
    pub fn new(dtype: Dtype) -> Self {
        Self {
            dtype,
            permute_qk: true,
            vocab: Vocab::None,
        }
    }
}

fn quantize(name: &str, t: &Tensor, want: GgmlDType) -> Result<QTensor, ModelError> {
    let cols = t.dims().last().copied().unwrap_or(0);
    let dt = if cols.is_multiple_of(want.block_size()) {
        want
    } else {
        tracing::warn!(
            tensor = name,
            cols,
            "row length is not a multiple of the {want:?} block size; writing F16"
        );
        GgmlDType::F16
    };
    Ok(QTensor::quantize(&t.to_dtype(DType::F32)?, dt)?)
}

fn permute_dense(t: &Tensor, n_head: usize, name: &str) -> Result<Tensor, ModelError> {
    let rows = t.dim(0)?;
    let map = permute::row_map(rows, n_head, Direction::ToGguf).map_err(|e| ModelError::Load {
        name: name.to_string(),
        expected: t.dims().to_vec(),
        reason: e.to_string(),
    })?;
    let idx: Vec<u32> = map.into_iter().map(|i| i as u32).collect();
    Ok(t.index_select(&Tensor::new(idx, t.device())?, 0)?)
}

/// Collects the tensors in GGUF names and layout.
fn tensors(
    src: &dyn WeightSource,
    cfg: &Config,
    opts: &WriteOptions,
) -> Result<Vec<(String, QTensor)>, ModelError> {
    let want = opts.dtype.ggml();
    let permute = cfg.arch == Arch::Llada && opts.permute_qk;
    let d = cfg.d_model;
    let q_dim = cfg.n_heads * cfg.head_dim;
    let kv_dim = cfg.n_kv_heads * cfg.head_dim;
    let heads_of = |r: LayerRole| match r {
        LayerRole::Q | LayerRole::QBias if permute => Some(cfg.n_heads),
        LayerRole::K | LayerRole::KBias if permute => Some(cfg.n_kv_heads),
        _ => None,
    };
    let mut out = Vec::new();
    let mut matrix = |role: Role, rows: usize, cols: usize| -> Result<(), ModelError> {
        let name = Naming::Gguf.name(role);
        let mut t = src.matrix(role, rows, cols)?.to_dense(DType::F32)?;
        if let Role::Layer(_, r) = role
            && let Some(h) = heads_of(r)
        {
            t = permute_dense(&t, h, &name)?;
        }
        let q = quantize(&name, &t, want)?;
        out.push((name, q));
        Ok(())
    };
    let mut vectors = Vec::new();
    let mut vector = |role: Role, len: usize| -> Result<(), ModelError> {
        let name = Naming::Gguf.name(role);
        let mut t = src.vector(role, len)?.to_dtype(DType::F32)?;
        if let Role::Layer(_, r) = role
            && let Some(h) = heads_of(r)
        {
            t = permute_dense(&t, h, &name)?;
        }
        vectors.push((name, QTensor::quantize(&t, GgmlDType::F32)?));
        Ok(())
    };
    matrix(Role::Embed, cfg.vocab_size, d)?;
    for i in 0..cfg.n_layers {
        let l = |r| Role::Layer(i, r);
        vector(l(LayerRole::AttnNorm), d)?;
        matrix(l(LayerRole::Q), q_dim, d)?;
        matrix(l(LayerRole::K), kv_dim, d)?;
        matrix(l(LayerRole::V), kv_dim, d)?;
        if cfg.qkv_bias {
            vector(l(LayerRole::QBias), q_dim)?;
            vector(l(LayerRole::KBias), kv_dim)?;
            vector(l(LayerRole::VBias), kv_dim)?;
        }
        matrix(l(LayerRole::O), d, q_dim)?;
        vector(l(LayerRole::FfnNorm), d)?;
        matrix(l(LayerRole::Gate), cfg.mlp_hidden, d)?;
        matrix(l(LayerRole::Up), cfg.mlp_hidden, d)?;
        matrix(l(LayerRole::Down), d, cfg.mlp_hidden)?;
    }
    vector(Role::FinalNorm, d)?;
    if !cfg.tie_embeddings {
        matrix(Role::Head, cfg.vocab_size, d)?;
    }
    out.extend(vectors);
    Ok(out)
}

/// The byte vocabulary's keys (see [`Vocab::Bytes`]).
fn byte_vocab(cfg: &Config) -> Result<Vec<(String, Value)>, Error> {
    if cfg.specials != SpecialTokens::BYTE || cfg.vocab_size != SpecialTokens::BYTE_VOCAB {
        return Err(Error::Invalid {
            key: TOKENS.into(),
            reason: "the byte vocabulary needs the built-in byte tokenizer's ids".into(),
        });
    }
    let s = cfg.specials;
    let (mut tokens, mut types) = (Vec::new(), Vec::new());
    for id in 0..cfg.vocab_size as u32 {
        let (text, ty) = match id {
            b if b < 256 => (format!("<0x{b:02X}>"), 6),
            m if m == s.mask => (meta::LLADA_MASK_TEXT.to_string(), 3),
            b if b == s.bos => ("<s>".to_string(), 3),
            e if e == s.eos => ("</s>".to_string(), 3),
            p if p == s.pad => ("<pad>".to_string(), 3),
            other => (format!("[PAD{other}]"), 5),
        };
        tokens.push(Value::String(text));
        types.push(Value::I32(ty));
    }
    let scores = vec![Value::F32(0.0); cfg.vocab_size];
    Ok(vec![
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        (TOKENS.into(), Value::Array(tokens)),
        ("tokenizer.ggml.scores".into(), Value::Array(scores)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)),
        (
            "tokenizer.ggml.add_bos_token".into(),
            Value::Bool(cfg.arch == Arch::Llada),
        ),
    ])
}

/// Writes `src`'s weights for `cfg` to `path` as GGUF (atomically: a temporary file, then a
/// rename).
pub fn write(
    src: &dyn WeightSource,
    cfg: &Config,
    path: &Path,
    opts: &WriteOptions,
) -> Result<(), ModelError> {
    cfg.validate()?;
    let tensors = tensors(src, cfg, opts)?;
    let mut keys = meta::model_keys(cfg, opts.dtype.file_type());
    match opts.vocab {
        Vocab::Bytes => keys.extend(byte_vocab(cfg)?),
        Vocab::None if cfg.arch == Arch::Dream => {
            keys.push((
                meta::key(cfg.arch, "vocab_size"),
                Value::U32(cfg.vocab_size as u32),
            ));
        }
        Vocab::None => {}
    }
    let kv: Vec<(&str, &Value)> = keys.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let file_name = path
        .file_name()
        .ok_or_else(|| file_err(path, "not a file path"))?
        .to_string_lossy()
        .into_owned();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let res = (|| -> Result<(), ModelError> {
        let f = File::create(&tmp).map_err(|e| file_err(&tmp, e))?;
        let mut w = BufWriter::new(f);
        gguf_file::write(&mut w, &kv, &ts)?;
        w.flush().map_err(|e| file_err(&tmp, e))?;
        let f = w.into_inner().map_err(|e| file_err(&tmp, e))?;
        f.sync_all().map_err(|e| file_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))?;
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Converts a checkpoint folder (ours, or an HF LLaDA/Dream folder) into a GGUF file of `dtype`:
/// the library side of `node convert --to gguf --dtype q4_k IN OUT`.
pub fn convert(checkpoint_dir: &Path, out: &Path, dtype: Dtype) -> Result<(), ModelError> {
    let opened = checkpoint::open(checkpoint_dir)?;
    // SAFETY: the files are memory-mapped read-only; they must not be modified while mapped.
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&opened.files, DType::F32, &Device::Cpu)? };
    let src = VarBuilderSource::new(vb, opened.naming);
    let cfg = &opened.config;
    let vocab =
        if cfg.specials == SpecialTokens::BYTE && cfg.vocab_size == SpecialTokens::BYTE_VOCAB {
            Vocab::Bytes
        } else {
            tracing::warn!(
                "no token list written: llama.cpp needs the tokenizer added to run this file"
            );
            Vocab::None
        };
    let opts = WriteOptions {
        dtype,
        permute_qk: true,
        vocab,
    };
    write(&src, cfg, out, &opts)
}
