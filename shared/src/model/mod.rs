//! The masked-diffusion language model (LLaDA architecture) and its checkpoints.
//!
//! * [`config`] — presets and HF `config.json` parsing (LLaDA and Dream families);
//! * [`weights`] — tensor roles, each family's names, weight sources;
//! * [`layers`] / [`transformer`] — the forward pass (bidirectional, key-padding mask only,
//!   optional block-wise KV cache);
//! * [`lora`] — low-rank hooks on the linears (LoRA / TALoRA adapters, per-position deltas);
//! * [`checkpoint`] — loading the project's own checkpoints and HF folders, saving ours;
//! * [`gguf`] — llama.cpp GGUF files of the `llada` and `dream` architectures (read and write).

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod gguf;
pub mod layers;
pub mod lora;
pub mod transformer;
pub mod weights;

pub use checkpoint::{LoadedModel, load};
pub use config::{Arch, Config};
pub use device::DeviceSpec;
pub use transformer::{Forward, KvCache, Model};
pub use weights::{LayerRole, Naming, Role, Weight, WeightSource};

/// Errors from building or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid model config: {0}")]
    Config(String),
    /// A `--device` value that cannot be parsed or opened.
    #[error("{0}")]
    Device(String),
    #[error("tensor `{name}` is missing (expected shape {expected:?})")]
    MissingTensor { name: String, expected: Vec<usize> },
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("tensor `{name}` (expected shape {expected:?}) could not be loaded: {reason}")]
    Load {
        name: String,
        expected: Vec<usize>,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error(transparent)]
    Gguf(#[from] gguf::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
