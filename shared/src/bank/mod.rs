//! Pattern banks: local, retrievable rank-2 adapters, DGR's position selection and the plan it
//! hands to the model (DESIGN §5).
//!
//! A node keeps one [`Bank`] per TALoRA band ([`Banks`]). Each pattern ([`Pattern`]) is a rank-2
//! q/v adapter stored 8-bit with a 64-d key ([`KeyProjection`] of final hidden states), a success
//! EMA and a last-use time. Banks retrieve by HNSW ([`index`]) and re-rank by
//! `0.5·similarity + 0.3·success + 0.2·recency` ([`score`]); the best patterns are composed into
//! one exact low-rank delta ([`compose()`]); [`dgr`] decides per denoising step which positions get
//! one, a step late so it never costs an extra forward.
//!
//! Everything here is plain f32 data and needs no candle, so it builds with the federation core;
//! the model's adapter hooks consume [`dgr::Plan`] and produce [`Adapter`]s from their tensors.

pub mod banks;
pub mod compose;
pub mod config;
pub mod dgr;
pub mod error;
mod graph;
#[cfg(feature = "model")]
pub mod hidden;
pub mod index;
pub mod key;
pub mod matrix;
pub mod pattern;
pub mod persist;
pub mod quant;
pub mod round;
pub mod score;
pub mod store;
pub mod talora;
pub mod truncate;
pub mod uncertainty;
pub mod usage;

#[cfg(test)]
mod tests;

pub use crate::aggregate::daf::Band;
pub use banks::{Banks, band_of};
pub use compose::{Method, compose, compose_scored};
pub use config::{Config, HnswConfig, ScoreWeights};
pub use dgr::{Dgr, Plan};
pub use error::{Error, Result};
pub use index::Hit;
pub use key::{DEFAULT_KEY_SEED, KEY_DIM, KeyProjection};
pub use matrix::{Adapter, LayerFactors, Layout, LowRank, Matrix, Target};
pub use pattern::Pattern;
pub use round::{RoundKeys, insert_round};
pub use score::Scored;
pub use store::Bank;
pub use talora::{band_adapter, band_adapters};
pub use truncate::{PATTERN_RANK, truncate_rank2};
pub use uncertainty::{Measure, Selected};
pub use usage::{Recorded, Usage};
