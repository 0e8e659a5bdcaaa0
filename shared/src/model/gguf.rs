//! GGUF checkpoints exactly as llama.cpp's converter writes the `llada` and `dream` architectures,
//! read through candle's `gguf_file` and kept quantized for candle's quantized matmul.
//!
//! # What llama.cpp writes (verified in ggml-org/llama.cpp, read-only)
//!
//! * `conversion/llada.py` (`LLaDAModel`, registered for `LLaDAModelLM`,
//!   `model_arch = MODEL_ARCH.LLADA`, `undo_permute = True`) and `conversion/dream.py`
//!   (`DreamModel`, `MODEL_ARCH.DREAM`); older trees keep both classes in `convert_hf_to_gguf.py`.
//! * Tensor names (`gguf-py/gguf/constants.py`, `MODEL_TENSORS[LLADA]` = `[DREAM]` =
//!   TOKEN_EMBD, OUTPUT_NORM, OUTPUT, ROPE_FREQS, ATTN_NORM, ATTN_Q, ATTN_K, ATTN_V, ATTN_OUT,
//!   FFN_NORM, FFN_GATE, FFN_DOWN, FFN_UP): `token_embd`, `output_norm`, `output`,
//!   `blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up,
//!   ffn_down}` `.weight`, and Dream's `blk.N.attn_{q,k,v}.bias`. `tensor_mapping.py` maps
//!   LLaDA's `model.transformer.blocks.N.ff_proj` to FFN_GATE, `up_proj` to FFN_UP, `ff_out` to
//!   FFN_DOWN, `attn_out` to ATTN_OUT, `model.transformer.{wte, ln_f, ff_out}` to
//!   `token_embd` / `output_norm` / `output` (Dream's are the Qwen2 names).
//! * Keys: `TextModel.set_gguf_parameters` (`conversion/base.py`) writes `<arch>.block_count`,
//!   `.context_length` (`max_position_embeddings` … `max_sequence_length`), `.embedding_length`,
//!   `.feed_forward_length`, `.attention.head_count`, `.attention.head_count_kv`
//!   (`num_key_value_heads` / `n_kv_heads`), `.rope.freq_base`,
//!   `.attention.layer_norm_rms_epsilon` (f32), `general.file_type`. `LLaDAModel` adds
//!   `llada.vocab_size`, `llada.rope.dimension_count`, re-writes context/embedding/feed-forward
//!   lengths from `max_sequence_length` / `d_model` / `mlp_hidden_size`, `llada.attention.causal
//!   = false` and `diffusion.shift_logits = false`. `DreamModel` adds `dream.attention.causal =
//!   false` and `tokenizer.ggml.mask_token_id`, and writes no shift key: `llama-diffusion-cli`
//!   treats a missing `diffusion.shift_logits` as true. Dream's vocabulary size is the length of
//!   `tokenizer.ggml.tokens`. Special ids are `tokenizer.ggml.{bos,eos,padding,mask,eot}_token_id`.
//!   `LLaDAModel` writes no mask key itself (only the tokenizer's special-token map can), so the
//!   loader falls back to the id of the `<|mdm_mask|>` token in the token list; a missing
//!   bos/pad id falls back to eos.
//! * RoPE: `llama_model_rope_type` (`src/llama-model.cpp`) lists `LLM_ARCH_LLADA` under
//!   `LLAMA_ROPE_TYPE_NORM` (adjacent pairs) and `LLM_ARCH_DREAM` under `LLAMA_ROPE_TYPE_NEOX`
//!   (halves). So `LLaDAModel.modify_tensors` permutes `q_proj.{weight,bias}` with `n_head` and
//!   `k_proj.{weight,bias}` with `n_kv_head` (`reshape(n_head, 2, rows/n_head/2, …)
//!   .swapaxes(1, 2)`), and Dream tensors are stored unpermuted. [`permute`] undoes it on load.
//! * 1-D tensors (norms, biases) stay F32; `convert_hf_to_gguf.py --outtype` gives F32/F16/BF16/
//!   Q8_0 for 2-D weights, and `llama-quantize` the other types.
//!
//! # What this module writes
//!
//! [`write()`] emits those names and keys, permuted q/k for `llada`, every 2-D weight in one type
//! (like `llama-quantize --pure`; a weight whose rows do not split into blocks falls back to F16).
//! Differences: candle's writer emits GGUF version 2 (llama.cpp: 3); the vocabulary is written
//! only for the built-in byte tokenizer (as a SentencePiece-style byte vocabulary), otherwise only
//! `<arch>.vocab_size` and the special ids are written, which is all [`load`] needs.

mod meta;
pub mod permute;
mod source;
mod writer;

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::str::FromStr;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device};

pub use meta::{ARCHITECTURE, SHIFT_LOGITS, arch_name};
pub use source::GgufSource;
pub use writer::{Vocab, WriteOptions, convert, write};

use super::checkpoint::LoadedModel;
use super::transformer::Model;
use super::weights::{LayerRole, Naming, Role};

/// Errors specific to GGUF files (tensor problems are [`super::Error::MissingTensor`] and friends).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("unsupported GGUF architecture `{arch}` (supported: llada, dream)")]
    UnknownArch { arch: String },
    #[error("GGUF metadata key `{key}` is missing")]
    MissingKey { key: String },
    #[error("GGUF metadata key `{key}` should be a {expected}, found {got}")]
    KeyType {
        key: String,
        expected: &'static str,
        got: String,
    },
    #[error("GGUF metadata `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("unknown GGUF output type `{0}` (expected f32, f16, bf16, q8_0, q4_0 or q4_k)")]
    UnknownDtype(String),
}

/// The tensor types [`write()`] produces (those `convert_hf_to_gguf.py` and `llama-quantize` do and
/// candle can quantize to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4K,
}

impl Dtype {
    pub fn ggml(self) -> GgmlDType {
        match self {
            Dtype::F32 => GgmlDType::F32,
            Dtype::F16 => GgmlDType::F16,
            Dtype::Bf16 => GgmlDType::BF16,
            Dtype::Q8_0 => GgmlDType::Q8_0,
            Dtype::Q4_0 => GgmlDType::Q4_0,
            Dtype::Q4K => GgmlDType::Q4K,
        }
    }

    /// llama.cpp's `LlamaFileType` (`general.file_type`); Q4_K is `MOSTLY_Q4_K_S` since every
    /// tensor is Q4_K.
    pub fn file_type(self) -> u32 {
        match self {
            Dtype::F32 => 0,
            Dtype::F16 => 1,
            Dtype::Q4_0 => 2,
            Dtype::Q8_0 => 7,
            Dtype::Q4K => 14,
            Dtype::Bf16 => 32,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::Q8_0 => "q8_0",
            Dtype::Q4_0 => "q4_0",
            Dtype::Q4K => "q4_k",
        })
    }
}

impl FromStr for Dtype {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => Dtype::F32,
            "f16" => Dtype::F16,
            "bf16" => Dtype::Bf16,
            "q8_0" | "q8" => Dtype::Q8_0,
            "q4_0" | "q4" => Dtype::Q4_0,
            "q4_k" | "q4k" | "q4_k_s" => Dtype::Q4K,
            _ => return Err(Error::UnknownDtype(s.to_string())),
        })
    }
}

/// llama.cpp's name of a ggml type (`q4_k`, `q8_0`, `f16`, …).
pub fn ggml_name(t: GgmlDType) -> String {
    let s = format!("{t:?}").to_lowercase();
    match s.strip_suffix('k') {
        Some(stem) if stem.starts_with('q') => format!("{stem}_k"),
        _ => s,
    }
}

fn file_err(path: &Path, reason: impl ToString) -> Error {
    Error::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Opens a GGUF file: its tensor table and metadata parsed into a [`super::Config`], nothing else
/// read yet.
pub fn open(path: &Path, device: &Device) -> Result<(GgufSource, super::Config), super::Error> {
    let mut f = File::open(path).map_err(|e| file_err(path, e))?;
    let content = Content::read(&mut f).map_err(|e| file_err(path, e))?;
    let q_bias = Naming::Gguf.name(Role::Layer(0, LayerRole::QBias));
    let mut cfg = meta::config(
        &meta::Meta(&content.metadata),
        content.tensor_infos.contains_key(&q_bias),
    )?;
    // llama.cpp's converter writes no `output.weight` for a model whose head is its embedding
    // (and llama.cpp then uses `token_embd.weight`).
    cfg.tie_embeddings = !content
        .tensor_infos
        .contains_key(&Naming::Gguf.name(Role::Head));
    // Every layer has at least nine tensors: reject a block count the table cannot hold before
    // anything is sized by it.
    let per_layer = 9;
    if cfg.n_layers.saturating_mul(per_layer) > content.tensor_infos.len() {
        return Err(Error::Invalid {
            key: meta::key(cfg.arch, "block_count"),
            reason: format!(
                "{} layers, but the file has only {} tensors",
                cfg.n_layers,
                content.tensor_infos.len()
            ),
        }
        .into());
    }
    let src = GgufSource::new(content, f, device, cfg.arch, (cfg.n_heads, cfg.n_kv_heads));
    Ok((src, cfg))
}

/// Loads a `.gguf` checkpoint. Dense tensors (F32/F16/BF16) become `dtype` weights; quantized ones
/// stay quantized.
pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<LoadedModel, super::Error> {
    let (src, config) = open(path, device)?;
    let q = Role::Layer(0, LayerRole::Q);
    let kind = match src.dtype_of(q) {
        Some(t) => format!("gguf:{}", ggml_name(t)),
        None => "gguf".to_string(),
    };
    let model = Model::load(&src, &config, dtype, device)?;
    let tokenizer_dir = path
        .parent()
        .filter(|d| d.join("tokenizer.json").is_file())
        .map(Path::to_path_buf);
    // Our own writer stores the built-in byte vocabulary, which needs no rebuilding.
    let embedded_tokenizer =
        if tokenizer_dir.is_none() && config.specials != crate::tokens::SpecialTokens::BYTE {
            crate::tokenizer::gguf_vocab::from_metadata(&src.content().metadata, config.specials)
                .map_err(|e| e.to_string())
                .transpose()
        } else {
            None
        };
    // A folder beside the file with its own template wins, as its tokenizer.json does.
    let chat_template = tokenizer_dir
        .as_deref()
        .and_then(super::checkpoint::folder_chat_template)
        .or_else(|| {
            crate::tokenizer::gguf_vocab::chat_template(&src.content().metadata, config.specials)
        });
    Ok(LoadedModel {
        embedded_tokenizer,
        chat_template,
        model,
        config,
        tokenizer_dir,
        kind,
    })
}
