//! Model configuration: presets and HF `config.json` parsing for the LLaDA and Dream families.
//!
//! One struct describes both families: LLaDA is a bidirectional Llama (no qkv bias, MHA, untied
//! head); Dream is a bidirectional Qwen2 (qkv bias, GQA, logits shifted by one). Everything the
//! loaders and the forward pass need is here, so a checkpoint of either family — or our own — is
//! a folder or file plus one of these.

use serde::{Deserialize, Serialize};

use super::Error;
use crate::tokens::SpecialTokens;

/// Which family's tensor names and conventions a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llada,
    Dream,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub arch: Arch,
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub mlp_hidden: usize,
    pub max_seq_len: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub qkv_bias: bool,
    /// Dream-style: position `i` is predicted from hidden state `i-1`.
    pub shift_logits: bool,
    pub specials: SpecialTokens,
    /// The LM head is the token embedding (`weight_tying` / `tie_word_embeddings`; a GGUF file
    /// without `output.weight`): the checkpoint holds no head tensor.
    #[serde(default)]
    pub tie_embeddings: bool,
}

/// The presets `node` knows by name.
pub const PRESETS: &[&str] = &["tiny", "small", "llada-8b", "dream-7b"];

impl Config {
    /// The demo model: d_model 256 (Q4_K's multiple-of-256 rule holds), byte vocabulary.
    pub fn tiny() -> Self {
        Self {
            arch: Arch::Llada,
            vocab_size: SpecialTokens::BYTE_VOCAB,
            d_model: 256,
            n_layers: 4,
            n_heads: 4,
            n_kv_heads: 4,
            head_dim: 64,
            mlp_hidden: 768,
            max_seq_len: 512,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            qkv_bias: false,
            shift_logits: false,
            specials: SpecialTokens::BYTE,
            tie_embeddings: false,
        }
    }

    /// Tens of millions of parameters, same byte vocabulary: the benchmark model.
    pub fn small() -> Self {
        Self {
            d_model: 512,
            n_layers: 8,
            n_heads: 8,
            n_kv_heads: 8,
            head_dim: 64,
            mlp_hidden: 1536,
            max_seq_len: 1024,
            ..Self::tiny()
        }
    }

    /// LLaDA-8B (GSAI-ML/LLaDA-8B-Base / -Instruct).
    pub fn llada_8b() -> Self {
        Self {
            arch: Arch::Llada,
            vocab_size: 126_464,
            d_model: 4096,
            n_layers: 32,
            n_heads: 32,
            n_kv_heads: 32,
            head_dim: 128,
            mlp_hidden: 12_288,
            max_seq_len: 4096,
            rope_theta: 500_000.0,
            rms_norm_eps: 1e-5,
            qkv_bias: false,
            shift_logits: false,
            specials: SpecialTokens::LLADA,
            tie_embeddings: false,
        }
    }

    /// Dream-v0-7B (Qwen2.5-7B backbone).
    pub fn dream_7b() -> Self {
        Self {
            arch: Arch::Dream,
            vocab_size: 152_064,
            d_model: 3584,
            n_layers: 28,
            n_heads: 28,
            n_kv_heads: 4,
            head_dim: 128,
            mlp_hidden: 18_944,
            max_seq_len: 2048,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            qkv_bias: true,
            shift_logits: true,
            specials: SpecialTokens::DREAM,
            tie_embeddings: false,
        }
    }

    pub fn preset(name: &str) -> Result<Self, Error> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "small" => Ok(Self::small()),
            "llada-8b" => Ok(Self::llada_8b()),
            "dream-7b" => Ok(Self::dream_7b()),
            other => Err(Error::Config(format!(
                "unknown preset `{other}` (known: {})",
                PRESETS.join(", ")
            ))),
        }
    }

    /// Number of parameters (weights of every linear, norm, embedding and head).
    pub fn n_params(&self) -> usize {
        let q = self.n_heads * self.head_dim;
        let kv = self.n_kv_heads * self.head_dim;
        let attn = self.d_model * (q + 2 * kv) + q * self.d_model;
        let bias = if self.qkv_bias { q + 2 * kv } else { 0 };
        let mlp = 3 * self.d_model * self.mlp_hidden;
        let per_layer = attn + bias + mlp + 2 * self.d_model;
        self.n_layers * per_layer + 2 * self.vocab_size * self.d_model + self.d_model
    }

    /// Checks the invariants the forward pass relies on.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        if self.vocab_size == 0 || self.d_model == 0 || self.n_layers == 0 || self.head_dim == 0 {
            return bad("vocab_size, d_model, n_layers and head_dim must be positive".into());
        }
        if self.n_heads == 0
            || self.n_kv_heads == 0
            || !self.n_heads.is_multiple_of(self.n_kv_heads)
        {
            return bad(format!(
                "n_heads ({}) must be a positive multiple of n_kv_heads ({})",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim
            ));
        }
        let s = self.specials;
        for (what, id) in [
            ("mask", s.mask),
            ("bos", s.bos),
            ("eos", s.eos),
            ("pad", s.pad),
        ] {
            if id as usize >= self.vocab_size {
                return bad(format!(
                    "{what} id {id} is outside the vocabulary ({})",
                    self.vocab_size
                ));
            }
        }
        if self.rms_norm_eps.is_nan()
            || self.rms_norm_eps <= 0.0
            || self.rope_theta.is_nan()
            || self.rope_theta <= 0.0
        {
            return bad("rms_norm_eps and rope_theta must be positive".into());
        }
        Ok(())
    }

    /// Parses an HF `config.json` of the LLaDA family (`model_type: "llada"`, OLMo-style keys) or
    /// the Dream/Qwen2 family (`model_type` `dream` or `qwen2`: `hidden_size`,
    /// `num_hidden_layers`, …).
    ///
    /// Options these families define that change the forward pass are read, not skipped: tied
    /// embeddings (`weight_tying`, `tie_word_embeddings`) and multi-query attention are
    /// supported; the others (ALiBi, LayerNorm instead of RMSNorm, another activation or block
    /// type, logit or embedding scaling, QK norm, QKV clipping, biases on every linear, RoPE
    /// scaling, sliding windows, mixture-of-experts) are refused with the key named, so a
    /// checkpoint is never run as something it is not.
    pub fn from_hf_json(text: &str) -> Result<Self, Error> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("config.json: {e}")))?;
        let get = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
        let getf = |k: &str| v.get(k).and_then(|x| x.as_f64());
        let getb = |k: &str| v.get(k).and_then(|x| x.as_bool());
        let gets = |k: &str| v.get(k).and_then(|x| x.as_str());
        let need = |k: &str| {
            get(k).ok_or_else(|| Error::Config(format!("config.json: missing integer `{k}`")))
        };
        let refuse = |k: &str, what: &str| {
            Err(Error::Config(format!(
                "config.json: `{k}` = {}: {what} is not supported",
                v.get(k).map_or("?".into(), |x| x.to_string())
            )))
        };
        // A key that is set (not absent, null, false, 0, "" or empty).
        let set = |k: &str| match v.get(k) {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => false,
            Some(serde_json::Value::Number(n)) => n.as_f64() != Some(0.0),
            Some(serde_json::Value::String(s)) => !s.is_empty(),
            Some(serde_json::Value::Object(m)) => !m.is_empty(),
            Some(serde_json::Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        let model_type = gets("model_type").unwrap_or("").to_lowercase();
        for k in ["num_experts", "num_local_experts", "moe_intermediate_size"] {
            if set(k) {
                return refuse(k, "a mixture-of-experts model");
            }
        }
        if model_type.contains("moe") {
            return refuse("model_type", "a mixture-of-experts model");
        }
        let is_llada = model_type.contains("llada") || v.get("d_model").is_some();
        if is_llada {
            // OLMo-style options of modeling_llada.py and what LLaDA-8B sets them to.
            if getb("alibi") == Some(true) {
                return refuse("alibi", "ALiBi");
            }
            if getb("rope") == Some(false) {
                return refuse("rope", "a model without RoPE");
            }
            if gets("layer_norm_type").is_some_and(|t| t != "rms") {
                return refuse("layer_norm_type", "a norm other than RMSNorm");
            }
            if getb("layer_norm_with_affine") == Some(false) {
                return refuse("layer_norm_with_affine", "a norm without weights");
            }
            if gets("activation_type").is_some_and(|t| t != "silu" && t != "swiglu") {
                return refuse("activation_type", "an activation other than SiLU (SwiGLU)");
            }
            if gets("block_type").is_some_and(|t| t != "llama") {
                return refuse("block_type", "a block other than `llama`");
            }
            for (k, what) in [
                ("scale_logits", "scaled logits"),
                ("input_emb_norm", "scaled input embeddings"),
                ("attention_layer_norm", "QK norm"),
                ("clip_qkv", "QKV clipping"),
                (
                    "include_bias",
                    "a bias on every linear (`include_qkv_bias` is)",
                ),
                ("bias_for_layer_norm", "norm biases"),
            ] {
                if set(k) {
                    return refuse(k, what);
                }
            }
            let d_model = need("d_model")?;
            let n_heads = need("n_heads")?;
            let n_kv_heads = if getb("multi_query_attention") == Some(true) {
                1
            } else {
                get("n_kv_heads").unwrap_or(n_heads)
            };
            let vocab = get("embedding_size").or(get("vocab_size")).ok_or_else(|| {
                Error::Config("config.json: missing `embedding_size`/`vocab_size`".into())
            })?;
            let mask = get("mask_token_id").unwrap_or(126_336) as u32;
            let eos = get("eos_token_id").unwrap_or(126_081) as u32;
            let pad = get("pad_token_id").unwrap_or(eos as usize) as u32;
            let bos = get("bos_token_id").unwrap_or(126_080) as u32;
            let cfg = Self {
                arch: Arch::Llada,
                vocab_size: vocab,
                d_model,
                n_layers: need("n_layers")?,
                n_heads,
                n_kv_heads,
                head_dim: d_model / n_heads.max(1),
                mlp_hidden: need("mlp_hidden_size")?,
                max_seq_len: get("max_sequence_length").unwrap_or(4096),
                rope_theta: getf("rope_theta").unwrap_or(10_000.0),
                rms_norm_eps: getf("rms_norm_eps").unwrap_or(1e-5),
                qkv_bias: getb("include_qkv_bias").unwrap_or(false),
                shift_logits: false,
                specials: SpecialTokens {
                    mask,
                    bos,
                    eos,
                    pad,
                    eot: Some(126_348).filter(|&e| (e as usize) < vocab),
                },
                tie_embeddings: getb("weight_tying").unwrap_or(false),
            };
            cfg.validate()?;
            return Ok(cfg);
        }
        if model_type != "dream" && model_type != "qwen2" {
            return Err(Error::Config(format!(
                "config.json: model_type `{model_type}`: expected a LLaDA (`llada`) or Dream \
                 (`dream`, or its `qwen2` backbone) checkpoint"
            )));
        }
        if gets("hidden_act").is_some_and(|a| a != "silu") {
            return refuse("hidden_act", "an activation other than SiLU (SwiGLU)");
        }
        if getb("use_sliding_window") == Some(true) {
            return refuse("use_sliding_window", "sliding-window attention");
        }
        if let Some(scaling) = v.get("rope_scaling").filter(|s| !s.is_null()) {
            let kind = scaling
                .get("rope_type")
                .or_else(|| scaling.get("type"))
                .and_then(|t| t.as_str());
            if kind != Some("default") {
                return refuse("rope_scaling", "RoPE scaling");
            }
        }
        let d_model = need("hidden_size")?;
        let n_heads = need("num_attention_heads")?;
        let vocab = need("vocab_size")?;
        let eos = get("eos_token_id").unwrap_or(151_643) as u32;
        let cfg = Self {
            arch: Arch::Dream,
            vocab_size: vocab,
            d_model,
            n_layers: need("num_hidden_layers")?,
            n_heads,
            n_kv_heads: get("num_key_value_heads").unwrap_or(n_heads),
            head_dim: get("head_dim").unwrap_or(d_model / n_heads.max(1)),
            mlp_hidden: need("intermediate_size")?,
            max_seq_len: get("max_position_embeddings").unwrap_or(2048),
            rope_theta: getf("rope_theta").unwrap_or(1_000_000.0),
            rms_norm_eps: getf("rms_norm_eps").unwrap_or(1e-6),
            qkv_bias: true,
            shift_logits: true,
            specials: SpecialTokens {
                mask: get("mask_token_id").unwrap_or(151_666) as u32,
                bos: get("bos_token_id").unwrap_or(151_665) as u32,
                eos,
                pad: get("pad_token_id").unwrap_or(eos as usize) as u32,
                eot: Some(151_645).filter(|&e| (e as usize) < vocab),
            },
            tie_embeddings: getb("tie_word_embeddings").unwrap_or(false),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_have_expected_sizes() {
        for name in PRESETS {
            Config::preset(name).unwrap().validate().unwrap();
        }
        let p = Config::llada_8b().n_params() as f64 / 1e9;
        assert!((p - 8.02).abs() < 0.02, "llada-8b has {p} B params");
        let s = Config::small().n_params() as f64 / 1e6;
        assert!((10.0..100.0).contains(&s), "small has {s} M params");
        assert!(Config::preset("huge").is_err());
    }

    #[test]
    fn parses_llada_and_dream_configs() {
        let llada = r#"{"model_type":"llada","d_model":4096,"n_heads":32,"n_kv_heads":32,
            "n_layers":32,"mlp_hidden_size":12288,"vocab_size":126464,"embedding_size":126464,
            "max_sequence_length":4096,"rope_theta":500000.0,"rms_norm_eps":1e-05,
            "include_qkv_bias":false,"mask_token_id":126336,"eos_token_id":126081}"#;
        assert_eq!(Config::from_hf_json(llada).unwrap(), Config::llada_8b());
        let dream = r#"{"model_type":"Dream","hidden_size":3584,"num_attention_heads":28,
            "num_key_value_heads":4,"num_hidden_layers":28,"intermediate_size":18944,
            "vocab_size":152064,"max_position_embeddings":2048,"rope_theta":1000000.0,
            "rms_norm_eps":1e-06,"mask_token_id":151666,"bos_token_id":151665,
            "eos_token_id":151643,"pad_token_id":151643}"#;
        assert_eq!(Config::from_hf_json(dream).unwrap(), Config::dream_7b());
        assert!(Config::from_hf_json(r#"{"model_type":"llada"}"#).is_err());
        assert!(Config::from_hf_json("not json").is_err());
    }
}
