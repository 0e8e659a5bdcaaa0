//! The built-in seeded data: the embedded default corpus of every command.
//!
//! A tiny byte-level masked-diffusion model needs data that is short, learnable and checkable, and
//! the federation story needs knowledge that provably lives on only some nodes. So the generator
//! builds two disjoint *worlds* from one seed — a pretraining world (large fact tables, small
//! numbers) and a fine-tuning world (small fact tables about entities the base never saw, larger
//! numbers) — across five identifiable domains, and derives three splits from them:
//!
//! * [`Split::Pretrain`]: the pretraining world, all domains (teaches formats and recall);
//! * [`Split::Finetune`]: the fine-tuning world, sharded so the two nodes of a domain see
//!   different halves of its knowledge;
//! * [`Split::HeldOut`]: queries over the fine-tuning world — the facts of all shards together,
//!   and a reserved slice of computed problems nobody trains on.
//!
//! Everything derives from ChaCha streams through raw words (see `stream`), so the same seed gives
//! the same samples on every platform and crate version; a golden test pins them. Every sample
//! (prompt + answer) fits in [`MAX_SAMPLE_BYTES`], so a 64-token canvas holds it with BOS/EOS.
//!
//! ```
//! use ruvdllm::data::{DEFAULT_SEED, Domain, Generator, Split};
//!
//! let data = Generator::new(DEFAULT_SEED);
//! let base: Vec<_> = data.pretrain_mixed(1_000); // all domains, interleaved
//! // Two nodes fine-tune on the facts domain, each on its own half of the new facts …
//! let node_a = data.finetune_shard(Domain::Facts, 0, 2, 256)?;
//! let node_b = data.finetune_shard(Domain::Facts, 1, 2, 256)?;
//! // … and both are evaluated on queries over the union.
//! for query in data.all(Split::HeldOut, Domain::Facts) {
//!     assert_eq!(Domain::detect(&query.text()), Some(Domain::Facts));
//!     assert!(node_a.iter().chain(&node_b).any(|s| s == &query));
//! }
//! # assert_eq!(base.len(), 1_000);
//! # Ok::<(), ruvdllm::data::Error>(())
//! ```

mod arithmetic;
mod calendar;
mod code;
pub mod corpus;
mod facts;
mod generator;
mod names;
pub mod partition;
mod sampling;
mod sentences;
mod stream;
mod table;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use generator::Generator;
pub use sampling::{Mixed, Samples};

/// The seed every command uses unless told otherwise.
pub const DEFAULT_SEED: u64 = 0x5EED_D11A;

/// Upper bound on `prompt.len() + answer.len()` (bytes) of every generated sample.
pub const MAX_SAMPLE_BYTES: usize = 48;

/// Errors of the data generator and the corpus loader.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unknown domain `{name}` (expected one of: arithmetic, facts, calendar, sentences, code)"
    )]
    UnknownDomain { name: String },
    #[error("unknown split `{name}` (expected one of: pretrain, finetune, heldout)")]
    UnknownSplit { name: String },
    #[error("{domain}: shard {shard} is not in 0..{n_shards}")]
    InvalidShard {
        domain: Domain,
        shard: usize,
        n_shards: usize,
    },
    #[error("{domain}: cannot split into {n_shards} shards, at most {max} (one group per shard)")]
    TooManyShards {
        domain: Domain,
        n_shards: usize,
        max: usize,
    },
    #[error("corpus chunk length must be at least {min} bytes, got {max_len}")]
    InvalidMaxLen { max_len: usize, min: usize },
    #[error("reading corpus file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    BadSample {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("corpus file {path} is {bytes} bytes, above the {limit}-byte limit")]
    FileTooLarge {
        path: PathBuf,
        bytes: u64,
        limit: u64,
    },
}

/// A built-in data domain. Each has its own prompt format, recognisable by [`Domain::detect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// `37+48=` → `85`
    Arithmetic,
    /// `The capital of Varonia is` → ` Teskel.`
    Facts,
    /// `March 27 + 9 days is` → ` April 5.`
    Calendar,
    /// `I saw one fox and three` → ` foxes.`
    Sentences,
    /// `a=3;b=a+4;b=` → `7`
    Code,
}

impl Domain {
    /// Every domain, in a fixed order (the interleaving order of mixed pretraining data).
    pub const ALL: [Domain; 5] = [
        Domain::Arithmetic,
        Domain::Facts,
        Domain::Calendar,
        Domain::Sentences,
        Domain::Code,
    ];

    /// Stable lower-case name (CLI, configs, reports).
    pub fn name(self) -> &'static str {
        match self {
            Domain::Arithmetic => "arithmetic",
            Domain::Facts => "facts",
            Domain::Calendar => "calendar",
            Domain::Sentences => "sentences",
            Domain::Code => "code",
        }
    }

    /// Position in [`Domain::ALL`].
    pub fn index(self) -> usize {
        match self {
            Domain::Arithmetic => 0,
            Domain::Facts => 1,
            Domain::Calendar => 2,
            Domain::Sentences => 3,
            Domain::Code => 4,
        }
    }

    /// The domain whose format `text` (a prompt followed by its answer) has, if any.
    pub fn detect(text: &str) -> Option<Domain> {
        if code::matches(text) {
            Some(Domain::Code)
        } else if arithmetic::matches(text) {
            Some(Domain::Arithmetic)
        } else if calendar::matches(text) {
            Some(Domain::Calendar)
        } else if facts::matches(text) {
            Some(Domain::Facts)
        } else if sentences::matches(text) {
            Some(Domain::Sentences)
        } else {
            None
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Domain {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Domain::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| Error::UnknownDomain {
                name: s.to_string(),
            })
    }
}

/// Which split of the built-in data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Pretrain,
    Finetune,
    HeldOut,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Pretrain, Split::Finetune, Split::HeldOut];

    /// Stable lower-case name: `pretrain`, `finetune`, `heldout`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Pretrain => "pretrain",
            Split::Finetune => "finetune",
            Split::HeldOut => "heldout",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Split::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| Error::UnknownSplit {
                name: s.to_string(),
            })
    }
}

/// One training or evaluation example: the model sees `prompt`, and should produce `answer`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sample {
    /// The built-in domain, `None` for external text (see [`corpus`]).
    pub domain: Option<Domain>,
    pub prompt: String,
    pub answer: String,
}

impl Sample {
    /// The full text, prompt then answer (what pretraining sees).
    pub fn text(&self) -> String {
        format!("{}{}", self.prompt, self.answer)
    }

    /// Exact match: whether `generated` equals the answer, both trimmed of surrounding whitespace.
    pub fn is_correct(&self, generated: &str) -> bool {
        generated.trim() == self.answer.trim()
    }
}

#[cfg(test)]
mod tests;
