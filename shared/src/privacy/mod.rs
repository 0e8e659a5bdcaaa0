//! Differential privacy for the federation: DP-FedAvg clipping and Gaussian noise, and an RDP
//! accountant for the subsampled Gaussian mechanism (DESIGN §6, REFERENCE-federation §5.2).
//!
//! Clipping bounds each node's influence (sensitivity C); noise with std z·C on the *sum* of the m
//! clipped updates (z·C/m on the mean) makes one round (z, q)-subsampled-Gaussian, and the
//! accountant composes rounds into an (ε, δ) guarantee. All noise is drawn from a seeded ChaCha20
//! stream through our own Box–Muller transform, so a run is reproducible across `rand` versions.

mod noise;
mod rdp;

pub use noise::{
    DpConfig, DpMean, NoiseMode, NormalStream, add_gaussian, check_params, clip_l2, dp_mean,
    noise_std, normal_stream,
};
pub use rdp::{
    DEFAULT_ORDERS_LEN, RdpAccountant, default_orders, epsilon, noise_for_epsilon, rdp_one,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrivacyError {
    #[error("invalid {param} = {value}: {reason}")]
    InvalidParam {
        param: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("no updates to aggregate")]
    NoUpdates,
    #[error("update {index} has {got} values, expected {expected}")]
    LengthMismatch {
        index: usize,
        expected: usize,
        got: usize,
    },
    #[error("update {index} has non-finite values")]
    NonFinite { index: usize },
    #[error("no noise multiplier up to {max_z} reaches epsilon {target} (got {reached})")]
    Unreachable {
        target: f64,
        max_z: f64,
        reached: f64,
    },
}
