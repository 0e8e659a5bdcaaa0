//! A node's own data: what it trains on each round and the small validation set it measures its
//! per-band improvement on.
//!
//! Built-in data comes from the seeded generator: a fine-tuning *shard* (`shard` of `shards`
//! nodes sharing a domain; shards are disjoint, so two nodes of a domain see different facts and
//! federation is what brings each the other's), or any split when `shards` is 1. The validation
//! set is drawn from the same stream after the training samples — fresh draws of the node's own
//! units, never the global held-out split. Corpus files are cut into chunks; the last tenth (at
//! least one chunk, at most `validation`) is kept aside for validation.

use std::path::PathBuf;

use ruvdllm::data::{self, Domain, Generator, Sample, Split};

/// Where a node's samples come from (validated config).
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// A built-in domain and split; for the fine-tuning split, shard `shard` of `shards`.
    Builtin {
        domain: Domain,
        split: Split,
        shard: usize,
        shards: usize,
    },
    /// Text files (one sample per chunk of at most the sequence budget) or JSONL sample files
    /// (`ruvdllm::data::corpus`). Validation comes from `validation` when given (then every
    /// `train` sample trains, up to the cap), else from the tail of `train`.
    Corpus {
        train: Vec<PathBuf>,
        validation: Vec<PathBuf>,
    },
}

/// Training and validation samples of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalData {
    pub train: Vec<Sample>,
    pub validation: Vec<Sample>,
}

/// Why a node's data could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum LocalDataError {
    #[error("built-in data: {0}")]
    Data(#[from] data::Error),
    #[error("shards apply to the fine-tuning split only (split {split}, {shards} shards)")]
    ShardedSplit { split: Split, shards: usize },
    #[error("{what} is empty ({detail})")]
    Empty { what: &'static str, detail: String },
}

/// Draws `n` training and `validation` validation samples from `source`. Corpus chunks are at
/// most `max_len` bytes; `n` caps the corpus training chunks too.
pub fn load(
    source: &DataSource,
    n: usize,
    validation: usize,
    max_len: usize,
) -> Result<LocalData, LocalDataError> {
    if n == 0 || validation == 0 {
        return Err(LocalDataError::Empty {
            what: "the requested sample count",
            detail: format!("{n} training, {validation} validation"),
        });
    }
    let (train, val) = match source {
        DataSource::Builtin {
            domain,
            split,
            shard,
            shards,
        } => {
            let g = Generator::new(data::DEFAULT_SEED);
            let mut all = match split {
                Split::Finetune => g.finetune_shard(*domain, *shard, *shards, n + validation)?,
                other if *shards <= 1 => g.samples(*other, *domain, n + validation),
                other => {
                    return Err(LocalDataError::ShardedSplit {
                        split: *other,
                        shards: *shards,
                    });
                }
            };
            let val = all.split_off(n.min(all.len()));
            (all, val)
        }
        DataSource::Corpus {
            train,
            validation: val_paths,
        } => {
            let mut all = data::corpus::load(train, max_len)?;
            if !val_paths.is_empty() {
                all.truncate(n);
                let mut val = data::corpus::load(val_paths, max_len)?;
                val.truncate(validation);
                (all, val)
            } else {
                if all.len() < 2 {
                    return Err(LocalDataError::Empty {
                        what: "the corpus",
                        detail: format!(
                            "{} sample(s) from {} file(s); need at least 2 (training + validation)",
                            all.len(),
                            train.len()
                        ),
                    });
                }
                let keep = (all.len() / 10).clamp(1, validation);
                let val = all.split_off(all.len() - keep);
                all.truncate(n);
                (all, val)
            }
        }
    };
    if train.is_empty() || val.is_empty() {
        return Err(LocalDataError::Empty {
            what: "the node's data",
            detail: format!("{} training, {} validation samples", train.len(), val.len()),
        });
    }
    Ok(LocalData {
        train,
        validation: val,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_and_validation_is_separate() {
        let src = |shard| DataSource::Builtin {
            domain: Domain::Facts,
            split: Split::Finetune,
            shard,
            shards: 2,
        };
        let a = load(&src(0), 20, 5, 48).unwrap();
        let b = load(&src(1), 20, 5, 48).unwrap();
        assert_eq!((a.train.len(), a.validation.len()), (20, 5));
        assert!(a.train.iter().all(|s| !b.train.contains(s)));
        assert!(matches!(
            load(
                &DataSource::Builtin {
                    domain: Domain::Facts,
                    split: Split::HeldOut,
                    shard: 0,
                    shards: 2
                },
                4,
                2,
                48
            ),
            Err(LocalDataError::ShardedSplit { .. })
        ));
        assert!(matches!(
            load(&src(5), 4, 2, 48),
            Err(LocalDataError::Data(_))
        ));
    }

    #[test]
    fn corpus_keeps_a_validation_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.txt");
        let text: String = (0..30).map(|i| format!("line number {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let corpus = |train: Vec<PathBuf>, validation: Vec<PathBuf>| DataSource::Corpus {
            train,
            validation,
        };
        let d = load(&corpus(vec![p.clone()], vec![]), 100, 4, 16).unwrap();
        assert!(!d.validation.is_empty() && d.validation.len() <= 4);
        assert!(d.train.iter().all(|s| !d.validation.contains(s)));

        // A validation file of its own: every corpus chunk trains, validation capped.
        let v = dir.path().join("val.jsonl");
        std::fs::write(
            &v,
            "{\"prompt\": \"a\", \"answer\": \"1\"}\n{\"prompt\": \"b\", \"answer\": \"2\"}\n{\"text\": \"c\"}\n",
        )
        .unwrap();
        let all = load(&corpus(vec![p.clone()], vec![]), 100, 100, 16).unwrap();
        let d = load(&corpus(vec![p.clone()], vec![v.clone()]), 100, 2, 16).unwrap();
        assert_eq!(d.train.len(), all.train.len() + all.validation.len());
        assert_eq!(d.validation.len(), 2);
        assert_eq!(
            (
                d.validation[1].prompt.as_str(),
                d.validation[1].answer.as_str()
            ),
            ("b", "2")
        );

        std::fs::write(&p, "x\n").unwrap();
        assert!(matches!(
            load(&corpus(vec![p.clone()], vec![]), 10, 2, 16),
            Err(LocalDataError::Empty { .. })
        ));
        // One training sample is enough when validation has its own file.
        assert_eq!(
            load(&corpus(vec![p], vec![v]), 10, 2, 16)
                .unwrap()
                .train
                .len(),
            1
        );
    }
}
