//! Adapters: plain LoRA and TALoRA with frozen A — the object the federation exchanges.
//!
//! Why this shape: a node fine-tunes only the B matrices of a low-rank adapter whose A matrices are
//! derived from the run seed ([`frozen_a`]). Every node therefore holds bit-identical A, so any
//! aggregation rule applied to B (mean, trimmed mean, Krum, …) is exact for the weight update
//! `ΔW = scale · B·A`, and one aggregated adapter stays one PEFT adapter. TALoRA keeps three such
//! adapters, one per timestep [`band`] (coarse / domain / fine), cross-faded by the diffusion time
//! of each row.
//!
//! The crate's federation core is built without candle, so everything a coordinator needs lives in
//! the always-built modules:
//!
//! * [`band`] — the three bands and their cross-fade weights;
//! * [`frozen_a`] — the seed-derived A of one tensor (exact byte layout documented there);
//! * [`names`] — PEFT tensor names, [`Spec`], [`Shape`] and the B layout a delta must have;
//! * [`lora`] — a plain LoRA adapter as named f32 tensors, PEFT save/load ([`peft`]);
//! * [`talora`] — the TALoRA adapter: deltas, updates, the three-folder file layout.
//!
//! With feature `model`, [`attach`] turns adapters into the model's low-rank hooks (and merges
//! plain LoRA into dense weights) and [`train`] runs band-aware training of B.

#[cfg(feature = "model")]
pub mod attach;
pub mod band;
pub mod frozen_a;
pub mod lora;
pub mod names;
pub mod peft;
pub mod talora;
#[cfg(feature = "model")]
pub mod train;

pub use band::{Band, band_weights};
pub use lora::Lora;
pub use names::{Naming, Shape, Spec, Target};
pub use talora::Talora;

use crate::delta::DeltaError;

/// Errors of adapters: specs, layouts, files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown band `{name}` (expected coarse, domain or fine)")]
    UnknownBand { name: String },
    #[error("unknown target `{name}` (expected q, k, v, o, gate, up, down or all)")]
    UnknownTarget { name: String },
    #[error("invalid adapter spec: {field}: {reason}")]
    Spec { field: &'static str, reason: String },
    #[error("adapter layout: {0}")]
    Layout(#[from] DeltaError),
    #[error("adapters differ: {what} ({left} vs {right})")]
    Incompatible {
        what: &'static str,
        left: String,
        right: String,
    },
    #[error("tensor `{name}`: A on disk differs from the A derived from run seed {run_seed}")]
    FrozenAMismatch { name: String, run_seed: u64 },
    #[error("tensor `{name}` holds a non-finite value")]
    NonFinite { name: String },
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Io(#[from] crate::delta_io::IoError),
    #[cfg(feature = "model")]
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn file(path: &std::path::Path, reason: impl ToString) -> Self {
        Error::File {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}
