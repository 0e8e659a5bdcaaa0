//! The tokenizer a GGUF file carries in its metadata, rebuilt as a `tokenizers` tokenizer.
//!
//! llama.cpp's converter stores a byte-level BPE vocabulary as `tokenizer.ggml.model = "gpt2"`,
//! the tokens in id order (`tokenizer.ggml.tokens`, byte-level strings as in `tokenizer.json`),
//! their types (`tokenizer.ggml.token_type`: 3 control, 4 user-defined), the merges
//! (`tokenizer.ggml.merges`, `"a b"`) and, in `tokenizer.ggml.pre`, the *name* of the
//! pre-tokenizer (the regex itself is not stored). We rebuild the names whose regex we know from
//! the models' own `tokenizer.json`: `qwen2` (Qwen2 / Qwen2.5, so Dream), `llama-bpe` (Llama 3) and
//! `gpt2`. Anything else — another pre-tokenizer, a SentencePiece (`llama`) vocabulary — is an
//! error that says to put the checkpoint's `tokenizer.json` beside the file, never a guess.
//! `tests/gguf_vocab.rs` checks the rebuilt tokenizers against the `tokenizers` library's.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::{Error, HfTokenizer, SpecialTokens};

const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's token types that are added tokens rather than BPE pieces.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

fn err(reason: impl Into<String>) -> Error {
    Error::Load {
        path: "<gguf metadata>".into(),
        source: reason.into().into(),
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::U8(x) => Some(i64::from(*x)),
        Value::I8(x) => Some(i64::from(*x)),
        Value::U16(x) => Some(i64::from(*x)),
        Value::I16(x) => Some(i64::from(*x)),
        Value::U32(x) => Some(i64::from(*x)),
        Value::I32(x) => Some(i64::from(*x)),
        Value::U64(x) => i64::try_from(*x).ok(),
        Value::I64(x) => Some(*x),
        _ => None,
    }
}

fn strings<'a>(meta: &'a HashMap<String, Value>, key: &str) -> Result<Vec<&'a str>, Error> {
    match meta.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(err(format!("`{key}` holds a non-string"))),
            })
            .collect(),
        Some(_) => Err(err(format!("`{key}` is not an array"))),
        None => Err(err(format!("`{key}` is missing"))),
    }
}

/// The chat template in `meta` (`tokenizer.chat_template`; `None` when the file has none), with
/// the BOS / EOS strings of its vocabulary as `bos_token` / `eos_token`.
pub fn chat_template(
    meta: &HashMap<String, Value>,
    specials: SpecialTokens,
) -> Option<Result<super::ChatTemplate, String>> {
    let source = match meta.get("tokenizer.chat_template")? {
        Value::String(s) => s,
        _ => return Some(Err("`tokenizer.chat_template` is not a string".into())),
    };
    let tokens = strings(meta, "tokenizer.ggml.tokens").ok();
    let text = |id: u32| {
        tokens
            .as_ref()
            .and_then(|t| t.get(id as usize))
            .map(|s| s.to_string())
    };
    Some(
        super::ChatTemplate::from_gguf(source, text(specials.bos), text(specials.eos))
            .map_err(|e| e.to_string()),
    )
}

/// The tokenizer in `meta` (`None` when the file has no vocabulary), with `specials` from the
/// model's metadata.
pub fn from_metadata(
    meta: &HashMap<String, Value>,
    specials: SpecialTokens,
) -> Result<Option<HfTokenizer>, Error> {
    let model = match meta.get("tokenizer.ggml.model") {
        None => return Ok(None),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(err("`tokenizer.ggml.model` is not a string")),
    };
    let pre = match meta.get("tokenizer.ggml.pre") {
        Some(Value::String(s)) => s.as_str(),
        _ => "default",
    };
    let unsupported = |what: String| {
        err(format!(
            "{what} is not rebuilt from GGUF metadata; put the checkpoint's tokenizer.json \
             (with tokenizer_config.json) beside the file"
        ))
    };
    if model != "gpt2" {
        return Err(unsupported(format!("a `{model}` vocabulary")));
    }
    let split = match pre {
        "qwen2" => Some(QWEN2),
        "llama-bpe" | "llama3" => Some(LLAMA3),
        "gpt2" | "default" => None,
        other => return Err(unsupported(format!("the `{other}` pre-tokenizer"))),
    };
    let tokens = strings(meta, "tokenizer.ggml.tokens")?;
    let merges = strings(meta, "tokenizer.ggml.merges")?;
    let types: Vec<i64> = match meta.get("tokenizer.ggml.token_type") {
        Some(Value::Array(a)) => a.iter().map(|v| int(v).unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(err(format!(
            "{} token types for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    let (mut control, mut user) = (Vec::new(), Vec::new());
    for (id, (&t, &ty)) in tokens.iter().zip(&types).enumerate() {
        let id = u32::try_from(id).map_err(|_| err("more than 2^32 tokens"))?;
        match ty {
            CONTROL => control.push(AddedToken::from(t.to_string(), true)),
            USER_DEFINED => user.push(AddedToken::from(t.to_string(), false)),
            _ => {}
        }
        vocab.entry(t.to_string()).or_insert(id);
    }
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| err(format!("merge `{m}` is not two pieces")))
        })
        .collect::<Result<_, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| err(format!("building the BPE model: {e}")))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    match split {
        Some(re) => {
            let split = Split::new(
                SplitPattern::Regex(re.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| err(format!("the `{pre}` regex: {e}")))?;
            tok.with_pre_tokenizer(Some(Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, false, false).into(),
            ])));
        }
        None => {
            tok.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
        }
    }
    tok.with_decoder(Some(ByteLevel::default()));
    tok.add_special_tokens(control)
        .map_err(|e| err(format!("adding control tokens: {e}")))?;
    tok.add_tokens(user)
        .map_err(|e| err(format!("adding user-defined tokens: {e}")))?;
    Ok(Some(HfTokenizer::with_specials(
        tok,
        specials,
        tokens.len(),
    )))
}
