//! Tokenizers: text ↔ token ids, plus the special ids a masked-diffusion model needs.
//!
//! The sampler, the trainer and the canvas display only see the [`Tokenizer`] trait, so the built-in
//! byte vocabulary (always available, no files, used by the `tiny` demo model) and Hugging Face
//! `tokenizer.json` files (feature `model`, for LLaDA/Dream checkpoints) are interchangeable.
//! [`load`] picks one from a folder; [`encode_sample`] packs a prompt/answer pair the way LLaDA
//! trains: `BOS prompt answer EOS`, right-padded with EOS (the model learns to emit EOS padding,
//! which is how a fixed-length canvas ends early).

mod byte;
#[cfg(feature = "model")]
pub mod chat;
#[cfg(feature = "model")]
pub mod gguf_vocab;
#[cfg(feature = "model")]
mod hf;

use std::path::{Path, PathBuf};

pub use byte::ByteTokenizer;
#[cfg(feature = "model")]
pub use chat::{ChatError, ChatTemplate};
#[cfg(feature = "model")]
pub use hf::{HfTokenizer, SpecialOverrides};

pub use crate::tokens::SpecialTokens;

/// What the canvas shows for a still-masked position.
pub const MASK_GLYPH: &str = "░";

/// Errors of the tokenizer area.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading tokenizer {path}: {source}")]
    Load {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("reading {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is larger than the {limit}-byte limit for a config file")]
    ConfigTooLarge { path: PathBuf, limit: u64 },
    #[error("tokenizer in {dir}: no {name} token found in its configs and none given explicitly")]
    MissingSpecial { name: &'static str, dir: PathBuf },
    #[error("tokenizer in {dir}: {name} token `{token}` is not in the vocabulary")]
    UnknownToken {
        name: &'static str,
        token: String,
        dir: PathBuf,
    },
    #[error("encoding text: {source}")]
    Encode {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{path} holds a Hugging Face tokenizer, but this build lacks the `model` feature")]
    HfUnavailable { path: PathBuf },
    #[error("sample needs {needed} tokens (with BOS and EOS) but the sequence length is {seq_len}")]
    TooLong { needed: usize, seq_len: usize },
}

/// Text ↔ ids for one vocabulary.
pub trait Tokenizer: Send + Sync {
    /// Token ids of `text`, without BOS/EOS. Infallible for the byte tokenizer; an HF tokenizer that
    /// cannot encode (e.g. a word-level vocabulary without `[UNK]`) logs and returns what
    /// [`Tokenizer::try_encode`] reports as an error — callers that must not lose text use that.
    fn encode(&self, text: &str) -> Vec<u32>;

    /// Token ids of `text`, or why it cannot be encoded.
    fn try_encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        Ok(self.encode(text))
    }

    /// Text of `ids`, skipping special tokens; never fails (invalid UTF-8 becomes U+FFFD).
    fn decode(&self, ids: &[u32]) -> String;

    /// Number of ids the model's embedding must cover (specials included).
    fn vocab_size(&self) -> usize;

    /// The special token ids.
    fn specials(&self) -> SpecialTokens;

    /// A short display form of one id for a diffusion canvas: [`MASK_GLYPH`] for the mask,
    /// bracketed names for other specials.
    fn token_str(&self, id: u32) -> String;
}

/// Loads the tokenizer for a model folder: a folder with `tokenizer.json` gets the HF tokenizer
/// (specials resolved from its configs), anything else — including no folder — the byte tokenizer.
pub fn load(dir: Option<&Path>) -> Result<Box<dyn Tokenizer>, Error> {
    let Some(dir) = dir else {
        return Ok(Box::new(ByteTokenizer));
    };
    let json = dir.join("tokenizer.json");
    if !json.is_file() {
        tracing::debug!(dir = %dir.display(), "no tokenizer.json: using the byte tokenizer");
        return Ok(Box::new(ByteTokenizer));
    }
    #[cfg(feature = "model")]
    {
        Ok(Box::new(HfTokenizer::from_dir(dir)?))
    }
    #[cfg(not(feature = "model"))]
    {
        Err(Error::HfUnavailable { path: json })
    }
}

/// A prompt/answer pair packed into one fixed-length training sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// `BOS prompt answer EOS EOS…`, exactly `seq_len` ids.
    pub ids: Vec<u32>,
    /// Length of `BOS prompt`: SFT never masks these positions.
    pub prompt_len: usize,
    /// Length of `BOS prompt answer EOS` before padding.
    pub content_len: usize,
}

/// Packs `prompt` + `answer` as `BOS prompt answer EOS` right-padded with EOS to `seq_len`
/// (LLaDA's SFT convention: the padding counts as answer, so the model learns to end).
pub fn encode_sample(
    tokenizer: &dyn Tokenizer,
    prompt: &str,
    answer: &str,
    seq_len: usize,
) -> Result<Packed, Error> {
    let specials = tokenizer.specials();
    let prompt_ids = tokenizer.try_encode(prompt)?;
    let answer_ids = tokenizer.try_encode(answer)?;
    let content_len = prompt_ids.len() + answer_ids.len() + 2;
    if content_len > seq_len {
        return Err(Error::TooLong {
            needed: content_len,
            seq_len,
        });
    }
    let mut ids = Vec::with_capacity(seq_len);
    ids.push(specials.bos);
    ids.extend_from_slice(&prompt_ids);
    let prompt_len = ids.len();
    ids.extend_from_slice(&answer_ids);
    ids.resize(seq_len, specials.eos);
    Ok(Packed {
        ids,
        prompt_len,
        content_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DEFAULT_SEED, Domain, Generator, Split};

    #[test]
    fn load_without_tokenizer_json_is_the_byte_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        for tok in [load(None).unwrap(), load(Some(dir.path())).unwrap()] {
            assert_eq!(tok.vocab_size(), SpecialTokens::BYTE_VOCAB);
            assert_eq!(tok.specials(), SpecialTokens::BYTE);
        }
    }

    #[cfg(not(feature = "model"))]
    #[test]
    fn hf_folders_need_the_model_feature() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        match load(Some(dir.path())) {
            Err(Error::HfUnavailable { path }) => {
                assert_eq!(path, dir.path().join("tokenizer.json"))
            }
            Err(other) => panic!("expected HfUnavailable, got {other:?}"),
            Ok(_) => panic!("loaded an HF tokenizer without the model feature"),
        }
    }

    #[test]
    fn packs_bos_prompt_answer_eos_padding() {
        let tok = ByteTokenizer;
        let p = encode_sample(&tok, "1+2=", "3", 10).unwrap();
        let b = SpecialTokens::BYTE;
        assert_eq!(
            p.ids,
            vec![b.bos, 49, 43, 50, 61, 51, b.eos, b.eos, b.eos, b.eos]
        );
        assert_eq!((p.prompt_len, p.content_len), (5, 7));
        assert!(matches!(
            encode_sample(&tok, "1+2=", "3", 6),
            Err(Error::TooLong {
                needed: 7,
                seq_len: 6
            })
        ));
    }

    #[test]
    fn every_generated_sample_fits_a_64_token_canvas() {
        let g = Generator::new(DEFAULT_SEED);
        for (split, d) in Split::ALL
            .into_iter()
            .flat_map(|s| Domain::ALL.map(|d| (s, d)))
        {
            for s in g.samples(split, d, 50) {
                let p = encode_sample(&ByteTokenizer, &s.prompt, &s.answer, 64).unwrap();
                assert_eq!(ByteTokenizer.decode(&p.ids), s.text());
            }
        }
    }
}
