//! GGUF metadata ↔ [`Config`]: the keys llama.cpp's converter writes for `llada` and `dream`.
//!
//! Reading accepts any integer width for integer keys and f32 or f64 for float keys (GGUF writers
//! differ), names the missing or mistyped key in every error, and fills only the gaps llama.cpp
//! itself fills (`head_count_kv` = `head_count`, `rope.freq_base` = 10000, `diffusion.shift_logits`
//! = true for Dream as in `llama-diffusion-cli`). Writing emits the keys in the converter's order.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use super::Error;
use crate::model::config::{Arch, Config};
use crate::tokens::SpecialTokens;

pub const ARCHITECTURE: &str = "general.architecture";
pub const SHIFT_LOGITS: &str = "diffusion.shift_logits";
pub const TOKENS: &str = "tokenizer.ggml.tokens";
pub const MASK_ID: &str = "tokenizer.ggml.mask_token_id";
pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
pub const PAD_ID: &str = "tokenizer.ggml.padding_token_id";
pub const EOT_ID: &str = "tokenizer.ggml.eot_token_id";
/// LLaDA's mask token text, looked up in the vocabulary when the id key is absent.
pub const LLADA_MASK_TEXT: &str = "<|mdm_mask|>";

/// The architecture string llama.cpp uses.
pub fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::Llada => "llada",
        Arch::Dream => "dream",
    }
}

/// `<arch>.<suffix>`.
pub fn key(arch: Arch, suffix: &str) -> String {
    format!("{}.{suffix}", arch_name(arch))
}

fn type_name(v: &Value) -> String {
    format!("{:?}", v.value_type())
}

/// A metadata map with typed, error-naming accessors.
pub struct Meta<'a>(pub &'a HashMap<String, Value>);

impl Meta<'_> {
    fn get(&self, k: &str) -> Result<&Value, Error> {
        self.0
            .get(k)
            .ok_or_else(|| Error::MissingKey { key: k.into() })
    }

    pub fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }

    pub fn uint(&self, k: &str) -> Result<u64, Error> {
        let v = self.get(k)?;
        let got = match v {
            Value::U8(x) => Some(*x as u64),
            Value::U16(x) => Some(*x as u64),
            Value::U32(x) => Some(*x as u64),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        got.ok_or_else(|| Error::KeyType {
            key: k.into(),
            expected: "non-negative integer",
            got: type_name(v),
        })
    }

    pub fn usize(&self, k: &str) -> Result<usize, Error> {
        let x = self.uint(k)?;
        usize::try_from(x).map_err(|_| Error::KeyType {
            key: k.into(),
            expected: "integer that fits usize",
            got: x.to_string(),
        })
    }

    pub fn u32(&self, k: &str) -> Result<u32, Error> {
        let x = self.uint(k)?;
        u32::try_from(x).map_err(|_| Error::KeyType {
            key: k.into(),
            expected: "32-bit token id",
            got: x.to_string(),
        })
    }

    /// A float key. f32 values are widened through their shortest decimal form, so `1e-5` written
    /// as f32 reads back as exactly `1e-5`.
    pub fn float(&self, k: &str) -> Result<f64, Error> {
        let v = self.get(k)?;
        match v {
            Value::F32(x) => Ok(x.to_string().parse::<f64>().unwrap_or(*x as f64)),
            Value::F64(x) => Ok(*x),
            _ => Err(Error::KeyType {
                key: k.into(),
                expected: "float",
                got: type_name(v),
            }),
        }
    }

    pub fn bool(&self, k: &str) -> Result<bool, Error> {
        let v = self.get(k)?;
        match v {
            Value::Bool(b) => Ok(*b),
            _ => Err(Error::KeyType {
                key: k.into(),
                expected: "bool",
                got: type_name(v),
            }),
        }
    }

    pub fn string(&self, k: &str) -> Result<&str, Error> {
        let v = self.get(k)?;
        match v {
            Value::String(s) => Ok(s),
            _ => Err(Error::KeyType {
                key: k.into(),
                expected: "string",
                got: type_name(v),
            }),
        }
    }

    /// The token strings, if the file has a vocabulary.
    pub fn tokens(&self) -> Result<Option<&Vec<Value>>, Error> {
        match self.0.get(TOKENS) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(Error::KeyType {
                key: TOKENS.into(),
                expected: "array of strings",
                got: type_name(v),
            }),
        }
    }

    fn opt<T>(
        &self,
        k: &str,
        f: impl Fn(&Self, &str) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        if self.has(k) {
            f(self, k).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The architecture named by `general.architecture`.
pub fn arch(meta: &Meta) -> Result<Arch, Error> {
    match meta.string(ARCHITECTURE)? {
        "llada" => Ok(Arch::Llada),
        "dream" => Ok(Arch::Dream),
        other => Err(Error::UnknownArch {
            arch: other.to_string(),
        }),
    }
}

/// Builds the model config from the metadata. `qkv_bias` comes from the tensors (whether
/// `blk.0.attn_q.bias` exists), since the converter writes no key for it.
pub fn config(meta: &Meta, qkv_bias: bool) -> Result<Config, Error> {
    let arch = arch(meta)?;
    let k = |s: &str| key(arch, s);
    let d_model = meta.usize(&k("embedding_length"))?;
    let n_heads = meta.usize(&k("attention.head_count"))?;
    let n_kv_heads = meta
        .opt(&k("attention.head_count_kv"), Meta::usize)?
        .unwrap_or(n_heads);
    if n_heads == 0 {
        return Err(Error::Invalid {
            key: k("attention.head_count"),
            reason: "must be positive".into(),
        });
    }
    let head_dim = meta
        .opt(&k("attention.key_length"), Meta::usize)?
        .unwrap_or(d_model / n_heads);
    if let Some(rot) = meta.opt(&k("rope.dimension_count"), Meta::usize)?
        && rot != head_dim
    {
        return Err(Error::Invalid {
            key: k("rope.dimension_count"),
            reason: format!("partial rotary ({rot} of head_dim {head_dim}) is not supported"),
        });
    }
    let tokens = meta.tokens()?;
    let vocab_size = match meta.opt(&k("vocab_size"), Meta::usize)? {
        Some(v) => v,
        None => tokens.map(Vec::len).ok_or_else(|| Error::MissingKey {
            key: format!("{} or {TOKENS}", k("vocab_size")),
        })?,
    };
    let mask = match meta.opt(MASK_ID, Meta::u32)? {
        Some(m) => m,
        None => tokens
            .and_then(|t| {
                t.iter()
                    .position(|v| matches!(v, Value::String(s) if s == LLADA_MASK_TEXT))
            })
            .map(|i| i as u32)
            .ok_or_else(|| Error::MissingKey {
                key: MASK_ID.into(),
            })?,
    };
    let eos = meta.u32(EOS_ID)?;
    let specials = SpecialTokens {
        mask,
        bos: meta.opt(BOS_ID, Meta::u32)?.unwrap_or(eos),
        eos,
        pad: meta.opt(PAD_ID, Meta::u32)?.unwrap_or(eos),
        eot: meta.opt(EOT_ID, Meta::u32)?,
    };
    let cfg = Config {
        arch,
        vocab_size,
        d_model,
        n_layers: meta.usize(&k("block_count"))?,
        n_heads,
        n_kv_heads,
        head_dim,
        mlp_hidden: meta.usize(&k("feed_forward_length"))?,
        max_seq_len: meta.usize(&k("context_length"))?,
        rope_theta: meta
            .opt(&k("rope.freq_base"), Meta::float)?
            .unwrap_or(10_000.0),
        rms_norm_eps: meta.float(&k("attention.layer_norm_rms_epsilon"))?,
        qkv_bias,
        shift_logits: meta
            .opt(SHIFT_LOGITS, Meta::bool)?
            .unwrap_or(arch == Arch::Dream),
        specials,
        // Set by the caller, which sees the tensor table.
        tie_embeddings: false,
    };
    // Sizes derived from the metadata must not overflow: tensor shapes are computed from them
    // before they are checked against the file's tensor table.
    let products = [
        ("attention.head_count", cfg.n_heads, cfg.head_dim),
        ("attention.head_count_kv", cfg.n_kv_heads, cfg.head_dim),
        ("embedding_length", cfg.vocab_size, cfg.d_model),
        ("feed_forward_length", cfg.mlp_hidden, cfg.d_model),
    ];
    for (name, a, b) in products {
        if a.checked_mul(b).is_none_or(|n| n > isize::MAX as usize) {
            return Err(Error::Invalid {
                key: k(name),
                reason: format!("{a} × {b} overflows"),
            });
        }
    }
    cfg.validate().map_err(|e| Error::Invalid {
        key: ARCHITECTURE.into(),
        reason: e.to_string(),
    })?;
    Ok(cfg)
}

fn u32v(x: usize) -> Value {
    Value::U32(x as u32)
}

/// The model keys as `convert_hf_to_gguf.py` writes them (`TextModel.set_gguf_parameters`, then the
/// `LLaDAModel` / `DreamModel` overrides), followed by the special-token ids. `file_type` is the
/// `LlamaFileType` number of the tensors' type.
pub fn model_keys(cfg: &Config, file_type: u32) -> Vec<(String, Value)> {
    let a = cfg.arch;
    let k = |s: &str| key(a, s);
    let mut m: Vec<(String, Value)> = vec![
        (ARCHITECTURE.into(), Value::String(arch_name(a).into())),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String("ruvdllm".into())),
        (k("block_count"), u32v(cfg.n_layers)),
        (k("context_length"), u32v(cfg.max_seq_len)),
        (k("embedding_length"), u32v(cfg.d_model)),
        (k("feed_forward_length"), u32v(cfg.mlp_hidden)),
        (k("attention.head_count"), u32v(cfg.n_heads)),
        (k("attention.head_count_kv"), u32v(cfg.n_kv_heads)),
        (k("rope.freq_base"), Value::F32(cfg.rope_theta as f32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        ("general.file_type".into(), Value::U32(file_type)),
    ];
    if cfg.head_dim * cfg.n_heads != cfg.d_model {
        m.push((k("attention.key_length"), u32v(cfg.head_dim)));
        m.push((k("attention.value_length"), u32v(cfg.head_dim)));
    }
    match a {
        Arch::Llada => {
            m.push((k("vocab_size"), u32v(cfg.vocab_size)));
            m.push((k("rope.dimension_count"), u32v(cfg.head_dim)));
            m.push((k("attention.causal"), Value::Bool(false)));
            m.push((SHIFT_LOGITS.into(), Value::Bool(cfg.shift_logits)));
        }
        Arch::Dream => {
            m.push((k("attention.causal"), Value::Bool(false)));
            // The converter writes no shift key for Dream (llama.cpp defaults it to true); write
            // it only when it differs from that default so the file still means what it says.
            if !cfg.shift_logits {
                m.push((SHIFT_LOGITS.into(), Value::Bool(false)));
            }
        }
    }
    m.push(("general.quantization_version".into(), Value::U32(2)));
    let s = cfg.specials;
    m.push((BOS_ID.into(), Value::U32(s.bos)));
    m.push((EOS_ID.into(), Value::U32(s.eos)));
    m.push((PAD_ID.into(), Value::U32(s.pad)));
    m.push((MASK_ID.into(), Value::U32(s.mask)));
    if let Some(eot) = s.eot {
        m.push((EOT_ID.into(), Value::U32(eot)));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(cfg: &Config) -> HashMap<String, Value> {
        model_keys(cfg, 0).into_iter().collect()
    }

    #[test]
    fn presets_round_trip_through_the_keys() {
        for cfg in [Config::llada_8b(), Config::dream_7b(), Config::tiny()] {
            let mut m = map(&cfg);
            if cfg.arch == Arch::Dream {
                // Dream files carry the vocabulary size as the token list's length.
                let toks = (0..cfg.vocab_size).map(|i| Value::String(format!("t{i}")));
                m.insert(TOKENS.into(), Value::Array(toks.collect()));
            }
            let back = config(&Meta(&m), cfg.qkv_bias).unwrap();
            assert_eq!(back, cfg);
        }
    }

    #[test]
    fn errors_name_the_key() {
        let mut m = map(&Config::llada_8b());
        m.remove("llada.block_count");
        let e = config(&Meta(&m), false).unwrap_err();
        assert!(e.to_string().contains("llada.block_count"), "{e}");

        let mut m = map(&Config::llada_8b());
        m.insert("llada.embedding_length".into(), Value::String("x".into()));
        let e = config(&Meta(&m), false).unwrap_err();
        assert!(matches!(e, Error::KeyType { ref key, .. } if key == "llada.embedding_length"));

        let mut m = map(&Config::llada_8b());
        m.insert(ARCHITECTURE.into(), Value::String("llama".into()));
        let e = config(&Meta(&m), false).unwrap_err();
        assert!(matches!(e, Error::UnknownArch { ref arch } if arch == "llama"));

        let mut m = map(&Config::llada_8b());
        m.insert("llada.attention.head_count".into(), Value::U64(1 << 40));
        m.insert("llada.attention.key_length".into(), Value::U64(1 << 40));
        m.insert("llada.rope.dimension_count".into(), Value::U64(1 << 40));
        let e = config(&Meta(&m), false).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
    }

    #[test]
    fn mask_falls_back_to_the_token_text_and_shift_to_the_arch_default() {
        let mut cfg = Config::tiny();
        cfg.arch = Arch::Dream;
        let mut m = map(&cfg);
        m.remove(MASK_ID);
        let mut toks: Vec<Value> = (0..cfg.vocab_size)
            .map(|i| Value::String(format!("t{i}")))
            .collect();
        m.insert(TOKENS.into(), Value::Array(toks.clone()));
        let e = config(&Meta(&m), false).unwrap_err();
        assert!(
            matches!(e, Error::MissingKey { ref key } if key == MASK_ID),
            "{e}"
        );
        toks[7] = Value::String(LLADA_MASK_TEXT.into());
        m.insert(TOKENS.into(), Value::Array(toks));
        let back = config(&Meta(&m), false).unwrap();
        assert_eq!(back.specials.mask, 7);
        m.remove(SHIFT_LOGITS);
        assert!(config(&Meta(&m), false).unwrap().shift_logits);
    }
}
