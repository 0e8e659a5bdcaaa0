//! Error feedback: what a lossy round did not send is sent later.
//!
//! A node keeps one [`ErrorFeedback`] across rounds. Each round it adds the stored residual to the
//! fresh delta, encodes the sum, decodes its own payload exactly as the coordinator will, and keeps
//! `(delta + residual) − decoded` as the new residual. That one subtraction covers both what top-k
//! dropped and the quantization error of what it kept, so over rounds the coordinator receives the
//! node's full update mass, only late (Stich et al. 2018; Karimireddy et al. 2019).

use super::decode::{Limits, decode};
use super::encode::{EncodeOptions, encode};
use super::error::Error;
use crate::delta::Delta;

/// The residual a node carries between rounds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorFeedback {
    residual: Option<Delta>,
}

impl ErrorFeedback {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes from a residual saved earlier (e.g. with `delta_io::save` at F32).
    pub fn with_residual(residual: Delta) -> Self {
        Self {
            residual: Some(residual),
        }
    }

    /// The mass not yet delivered, `None` before the first round.
    pub fn residual(&self) -> Option<&Delta> {
        self.residual.as_ref()
    }

    pub fn into_residual(self) -> Option<Delta> {
        self.residual
    }

    /// Forgets the residual (e.g. when the adapter layout changes).
    pub fn reset(&mut self) {
        self.residual = None;
    }

    /// Encodes `delta` plus the residual and updates the residual. The residual must have the
    /// delta's layout (any tensor order); on any error the state is left unchanged.
    pub fn encode(&mut self, delta: &Delta, opts: &EncodeOptions) -> Result<Vec<u8>, Error> {
        let compensated = match &self.residual {
            None => delta.clone(),
            Some(r) => {
                let r = delta.aligned(r)?;
                let mut sum = delta.clone();
                for (t, rt) in sum.tensors.iter_mut().zip(&r.tensors) {
                    for (v, e) in t.data.iter_mut().zip(&rt.data) {
                        *v += e;
                    }
                }
                sum
            }
        };
        let payload = encode(&compensated, opts)?;
        let decoded = decode(&payload, &Limits::fitting(&compensated, payload.len()))?;
        let mut residual = compensated;
        for (t, dt) in residual.tensors.iter_mut().zip(&decoded.tensors) {
            for (v, d) in t.data.iter_mut().zip(&dt.data) {
                *v -= d;
            }
        }
        self.residual = Some(residual);
        Ok(payload)
    }
}
