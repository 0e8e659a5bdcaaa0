//! RuvDLLM core library.
//!
//! Two halves, split by a cargo feature so that a coordinator can be built without candle:
//!
//! * always built — the federation core: the built-in seeded data generator, the byte tokenizer,
//!   the delta codec, adapter specs and files (TALoRA with frozen A), robust aggregation,
//!   differential privacy and attacks;
//! * feature `model` (default) — the masked-diffusion language model on candle: model, checkpoints,
//!   HF tokenizers, sampler, training.

#[cfg(feature = "model")]
pub use candle_core;
#[cfg(feature = "model")]
pub use candle_nn;

pub mod adapter;
pub mod aggregate;
pub mod attack;
pub mod bank;
pub mod codec;
pub mod data;
pub mod delta;
pub mod delta_io;
#[cfg(feature = "model")]
pub mod denoiser;
#[cfg(feature = "model")]
pub mod eval;
pub mod fsutil;
#[cfg(feature = "model")]
pub mod model;
pub mod privacy;
#[cfg(feature = "model")]
pub mod sampler;
pub mod tokenizer;
pub mod tokens;
#[cfg(feature = "model")]
pub mod train;
