//! Hugging Face `tokenizer.json` tokenizers (LLaDA, Dream, any HF model folder), feature `model`.
//!
//! The `tokenizers` crate does the encoding; what it does not know is which ids play the roles a
//! masked-diffusion sampler needs. Model folders spread that over several files, so each special is
//! resolved in a fixed order — explicit override, `generation_config.json`, `config.json`
//! (`*_token_id`, an int or a list), `tokenizer_config.json` (`*_token`, a string or an
//! `{"content": …}` object), then well-known token names (`<|mdm_mask|>`, `<|mask|>`, …). A folder
//! that leaves mask, BOS or EOS unresolved is an error naming the folder, not a silent guess.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Error, MASK_GLYPH, SpecialTokens, Tokenizer};

/// Explicit special ids; each `Some` wins over anything found in the folder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialOverrides {
    pub mask: Option<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub eot: Option<u32>,
}

/// Largest model-folder JSON config accepted.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

const MASK_NAMES: [&str; 4] = ["<|mdm_mask|>", "<|mask|>", "[MASK]", "<mask>"];
const BOS_NAMES: [&str; 4] = ["<|startoftext|>", "<|beginoftext|>", "<s>", "<bos>"];
const EOS_NAMES: [&str; 3] = ["<|endoftext|>", "</s>", "<eos>"];
const PAD_NAMES: [&str; 2] = ["<pad>", "[PAD]"];
const EOT_NAMES: [&str; 2] = ["<|eot_id|>", "<|im_end|>"];

/// A `tokenizer.json` tokenizer with resolved special ids.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    specials: SpecialTokens,
    vocab_size: usize,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("specials", &self.specials)
            .field("vocab_size", &self.vocab_size)
            .finish_non_exhaustive()
    }
}

/// The JSON config files of a model folder that exist (missing ones are `None`).
struct Configs {
    generation: Option<Value>,
    model: Option<Value>,
    tokenizer: Option<Value>,
}

fn read_json(path: &Path) -> Result<Option<Value>, Error> {
    if !path.is_file() {
        return Ok(None);
    }
    let read_err = |source| Error::ReadConfig {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    // Configs are a few KiB; read one byte past the limit to detect a runaway file.
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Error::ConfigTooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| Error::ParseConfig {
            path: path.to_path_buf(),
            source,
        })
}

/// An id field: a non-negative integer, or the first of a list of them.
fn id_field(config: Option<&Value>, key: &str) -> Option<u32> {
    let value = config?.get(key)?;
    let first = match value {
        Value::Array(items) => items.first()?,
        other => other,
    };
    first.as_u64().and_then(|v| u32::try_from(v).ok())
}

/// A token field of `tokenizer_config.json`: `"<s>"` or `{"content": "<s>", …}`.
fn token_field<'a>(config: Option<&'a Value>, key: &str) -> Option<&'a str> {
    let value = config?.get(key)?;
    value
        .as_str()
        .or_else(|| value.get("content").and_then(Value::as_str))
}

impl HfTokenizer {
    /// Loads `dir/tokenizer.json` and resolves specials from the folder's configs.
    pub fn from_dir(dir: &Path) -> Result<Self, Error> {
        Self::from_dir_with(dir, SpecialOverrides::default())
    }

    /// Like [`HfTokenizer::from_dir`], with explicit ids taking precedence.
    pub fn from_dir_with(dir: &Path, overrides: SpecialOverrides) -> Result<Self, Error> {
        let inner = load_json(&dir.join("tokenizer.json"))?;
        let configs = Configs {
            generation: read_json(&dir.join("generation_config.json"))?,
            model: read_json(&dir.join("config.json"))?,
            tokenizer: read_json(&dir.join("tokenizer_config.json"))?,
        };
        let resolver = Resolver {
            inner: &inner,
            configs: &configs,
            dir,
        };
        let mask = resolver.required("mask", overrides.mask, &MASK_NAMES)?;
        let bos = resolver.required("bos", overrides.bos, &BOS_NAMES)?;
        let eos = resolver.required("eos", overrides.eos, &EOS_NAMES)?;
        let pad = resolver
            .optional("pad", overrides.pad, &PAD_NAMES)?
            .unwrap_or(eos);
        let eot = match overrides.eot {
            Some(id) => Some(id),
            None => EOT_NAMES.iter().find_map(|n| inner.token_to_id(n)),
        };
        let specials = SpecialTokens {
            mask,
            bos,
            eos,
            pad,
            eot,
        };
        let config_vocab = configs
            .model
            .as_ref()
            .and_then(|c| c.get("vocab_size"))
            .and_then(Value::as_u64)
            .map_or(0, |v| usize::try_from(v).unwrap_or(0));
        tracing::debug!(dir = %dir.display(), ?specials, "loaded HF tokenizer");
        Ok(Self::assemble(inner, specials, config_vocab))
    }

    /// Loads a `tokenizer.json` file with the given special ids (no config lookup).
    pub fn from_file(path: &Path, specials: SpecialTokens) -> Result<Self, Error> {
        Ok(Self::assemble(load_json(path)?, specials, 0))
    }

    /// A tokenizer built in code (e.g. from GGUF metadata) with known special ids.
    pub(crate) fn with_specials(
        inner: tokenizers::Tokenizer,
        specials: SpecialTokens,
        vocab_size: usize,
    ) -> Self {
        Self::assemble(inner, specials, vocab_size)
    }

    fn assemble(
        inner: tokenizers::Tokenizer,
        specials: SpecialTokens,
        config_vocab: usize,
    ) -> Self {
        let largest_special = [specials.mask, specials.bos, specials.eos, specials.pad]
            .into_iter()
            .chain(specials.eot)
            .max()
            .unwrap_or(0) as usize;
        let vocab_size = inner
            .get_vocab_size(true)
            .max(largest_special + 1)
            .max(config_vocab);
        Self {
            inner,
            specials,
            vocab_size,
        }
    }

    fn is_special(&self, id: u32) -> bool {
        let s = self.specials;
        id == s.mask || id == s.bos || id == s.eos || id == s.pad || Some(id) == s.eot
    }
}

fn load_json(path: &Path) -> Result<tokenizers::Tokenizer, Error> {
    tokenizers::Tokenizer::from_file(path).map_err(|source| Error::Load {
        path: path.to_path_buf(),
        source,
    })
}

/// Looks one special up through the resolution order.
struct Resolver<'a> {
    inner: &'a tokenizers::Tokenizer,
    configs: &'a Configs,
    dir: &'a Path,
}

impl Resolver<'_> {
    fn optional(
        &self,
        name: &'static str,
        explicit: Option<u32>,
        known: &[&str],
    ) -> Result<Option<u32>, Error> {
        if explicit.is_some() {
            return Ok(explicit);
        }
        let key = format!("{name}_token_id");
        if let Some(id) = id_field(self.configs.generation.as_ref(), &key)
            .or_else(|| id_field(self.configs.model.as_ref(), &key))
        {
            return Ok(Some(id));
        }
        if let Some(token) = token_field(self.configs.tokenizer.as_ref(), &format!("{name}_token"))
        {
            return match self.inner.token_to_id(token) {
                Some(id) => Ok(Some(id)),
                None => Err(Error::UnknownToken {
                    name,
                    token: token.to_string(),
                    dir: PathBuf::from(self.dir),
                }),
            };
        }
        Ok(known.iter().find_map(|t| self.inner.token_to_id(t)))
    }

    fn required(
        &self,
        name: &'static str,
        explicit: Option<u32>,
        known: &[&str],
    ) -> Result<u32, Error> {
        self.optional(name, explicit, known)?
            .ok_or_else(|| Error::MissingSpecial {
                name,
                dir: PathBuf::from(self.dir),
            })
    }
}

impl Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        self.try_encode(text).unwrap_or_else(|error| {
            tracing::warn!(%error, "HF tokenizer could not encode text; dropping it");
            Vec::new()
        })
    }

    fn try_encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|source| Error::Encode { source })
    }

    fn decode(&self, ids: &[u32]) -> String {
        let kept: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| !self.is_special(id))
            .collect();
        self.inner.decode(&kept, true).unwrap_or_else(|error| {
            tracing::debug!(%error, "HF decode failed; joining raw tokens");
            kept.iter()
                .filter_map(|&id| self.inner.id_to_token(id))
                .collect()
        })
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn specials(&self) -> SpecialTokens {
        self.specials
    }

    fn token_str(&self, id: u32) -> String {
        let s = self.specials;
        if id == s.mask {
            return MASK_GLYPH.to_string();
        }
        let named = [(s.bos, "[BOS]"), (s.eos, "[EOS]"), (s.pad, "[PAD]")]
            .into_iter()
            .chain(s.eot.map(|e| (e, "[EOT]")));
        for (special, label) in named {
            if id == special {
                return label.to_string();
            }
        }
        match self.inner.decode(&[id], false) {
            Ok(text) if !text.is_empty() => text.replace('\n', "\\n"),
            _ => self
                .inner
                .id_to_token(id)
                .unwrap_or_else(|| format!("[{id}?]")),
        }
    }
}

#[cfg(test)]
mod tests;
