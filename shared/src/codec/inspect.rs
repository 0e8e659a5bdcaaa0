//! Looking inside a payload without decoding it: what a coordinator logs for each submission and
//! what `coordinator codec inspect` prints. Only the header and table of contents are read (after
//! the same verification `decode` does), so inspecting a large payload costs a checksum pass.

use super::decode::{Limits, parse};
use super::error::Error;
use super::mode::Values;
use super::wire::DENSE;

/// One tensor as the payload describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSummary {
    pub name: String,
    pub shape: Vec<u64>,
    pub values: Values,
    /// Top-k sparsified.
    pub sparse: bool,
    pub numel: u64,
    /// Values actually carried (numel when dense).
    pub stored: u64,
    /// Compressed section bytes.
    pub encoded_bytes: u64,
}

impl TensorSummary {
    /// The mode as text, with the realised density for sparse tensors (`int8+topk:0.1000`).
    pub fn mode_label(&self) -> String {
        if self.sparse {
            let density = if self.numel == 0 {
                0.0
            } else {
                self.stored as f64 / self.numel as f64
            };
            format!("{}+topk:{density:.4}", self.values)
        } else {
            self.values.to_string()
        }
    }
}

/// What [`inspect`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub tensors: Vec<TensorSummary>,
    pub total_values: u64,
    /// The whole payload, header and table of contents included.
    pub payload_bytes: u64,
    /// The same values as raw f32.
    pub raw_f32_bytes: u64,
    /// `raw_f32_bytes / payload_bytes`.
    pub ratio: f64,
}

/// Summarises a payload under the default [`Limits`].
pub fn inspect(bytes: &[u8]) -> Result<Summary, Error> {
    inspect_with(bytes, &Limits::default())
}

/// Summarises a payload under `limits`.
pub fn inspect_with(bytes: &[u8], limits: &Limits) -> Result<Summary, Error> {
    let p = parse(bytes, limits)?;
    let tensors: Vec<TensorSummary> = p
        .entries
        .iter()
        .map(|e| TensorSummary {
            name: e.name.clone(),
            shape: e.shape.clone(),
            values: e.values,
            sparse: e.sparsity != DENSE,
            // parse() verified the product fits.
            numel: e.numel().unwrap_or(0),
            stored: e.stored,
            encoded_bytes: e.comp_len,
        })
        .collect();
    let total_values = tensors.iter().map(|t| t.numel).sum::<u64>();
    let raw_f32_bytes = total_values.saturating_mul(4);
    Ok(Summary {
        tensors,
        total_values,
        payload_bytes: p.payload_len,
        raw_f32_bytes,
        ratio: raw_f32_bytes as f64 / p.payload_len.max(1) as f64,
    })
}
