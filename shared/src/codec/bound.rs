//! The promised accuracy of each mode, as functions the tests (and users) can hold the codec to.
//!
//! Per stored value x with decoded x̂:
//!
//! | encoding | bound on \|x − x̂\| |
//! |---|---|
//! | `f32` | 0 (exact) |
//! | `f16` | max(\|x\|·2⁻¹¹, 2⁻²⁵): half a unit in the last place; 2⁻²⁵ covers f16's subnormals below 2⁻¹⁴ ≈ 6.1e-5 |
//! | `bf16` | max(\|x\|·2⁻⁸, 2⁻¹³⁴) |
//! | `int8`, `int8-row` | scale/2 with scale = absmax/127 of the value's block or row, plus absmax·2⁻²² for f32 rounding |
//! | `int4` | scale/2 with scale = absmax/7 of the value's block, plus absmax·2⁻²² |
//!
//! A value dropped by top-k decodes to 0, so its error is exactly |x|, and [`super::ErrorFeedback`]
//! keeps exactly x for the next round. Note the f16 floor: LoRA deltas are often ~1e-4 or smaller,
//! where f16 only keeps absolute precision ~3e-8; bf16 or the scaled encodings keep relative
//! precision there.

use super::encode::row_len;
use super::mode::{Mode, Values};
use super::quant::{Groups, group_absmax};
use super::sparse::select_topk;
use crate::delta::NamedTensor;

/// f32 rounding slack of the scaled encodings, relative to the group's absmax.
const SCALED_SLACK: f32 = 1.0 / (1u32 << 22) as f32;

/// Largest |x − x̂| for a stored value `x` whose scale group (block or row) has largest magnitude
/// `group_absmax` (ignored by the float encodings).
pub fn value_error_bound(values: Values, x: f32, group_absmax: f32) -> f32 {
    let a = x.abs();
    match values {
        Values::F32 => 0.0,
        Values::F16 => (a * 2f32.powi(-11)).max(2f32.powi(-25)),
        Values::Bf16 => (a * 2f32.powi(-8)).max(2f32.powi(-134)),
        Values::Int8Block | Values::Int8Row | Values::Int4Block => {
            let levels = values.int_levels().unwrap_or(127.0);
            group_absmax / levels / 2.0 + group_absmax * SCALED_SLACK
        }
    }
}

/// Per-value bound on |x − x̂| for `tensor` encoded under `mode`: the encoder's own top-k choice and
/// scale groups are reproduced, dropped values get |x|, kept ones [`value_error_bound`].
pub fn tensor_error_bounds(mode: &Mode, tensor: &NamedTensor) -> Vec<f32> {
    let data = &tensor.data;
    let numel = data.len();
    let indices: Option<Vec<usize>> = mode.topk.map(|_| select_topk(data, mode.kept(numel)));
    let stored: Vec<f32> = match &indices {
        None => data.clone(),
        Some(idx) => idx.iter().map(|&i| data[i]).collect(),
    };
    let groups = Groups::new(
        mode.values,
        stored.len(),
        numel,
        row_len(&tensor.shape),
        indices.as_deref(),
    );
    let absmax = group_absmax(&stored, &groups);
    // absmax of the group each stored position belongs to (0 for float encodings, unused there).
    let mut stored_absmax = vec![0f32; stored.len()];
    for (g, w) in groups.offsets.windows(2).enumerate() {
        for slot in &mut stored_absmax[w[0]..w[1]] {
            *slot = absmax[g];
        }
    }
    let kept_bound = |pos: usize, x: f32| value_error_bound(mode.values, x, stored_absmax[pos]);
    match indices {
        None => data
            .iter()
            .enumerate()
            .map(|(p, &x)| kept_bound(p, x))
            .collect(),
        Some(idx) => {
            let mut out: Vec<f32> = data.iter().map(|x| x.abs()).collect();
            for (pos, &i) in idx.iter().enumerate() {
                out[i] = kept_bound(pos, data[i]);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_have_the_documented_values() {
        assert_eq!(value_error_bound(Values::F32, 3.0, 3.0), 0.0);
        assert_eq!(value_error_bound(Values::F16, 1.0, 0.0), 2f32.powi(-11));
        assert_eq!(value_error_bound(Values::F16, 1e-9, 0.0), 2f32.powi(-25));
        assert_eq!(value_error_bound(Values::Bf16, 2.0, 0.0), 2f32.powi(-7));
        let b = value_error_bound(Values::Int8Block, 0.0, 127.0);
        assert!((b - 0.5).abs() < 1e-4);
        let b = value_error_bound(Values::Int4Block, 0.0, 7.0);
        assert!((b - 0.5).abs() < 1e-5);
    }

    #[test]
    fn dropped_values_are_bounded_by_their_magnitude() {
        let t = NamedTensor::new(
            "t",
            vec![2, 4],
            vec![1.0, -8.0, 0.5, 2.0, 0.0, 3.0, -0.25, 4.0],
        )
        .unwrap();
        let mode = Mode::sparse(Values::Int8Row, 0.25).unwrap();
        let b = tensor_error_bounds(&mode, &t);
        // Kept: -8 (row 0) and 4 (row 1); rows have their own absmax.
        assert!((b[1] - 8.0 / 254.0).abs() < 1e-5);
        assert!((b[7] - 4.0 / 254.0).abs() < 1e-5);
        assert_eq!(b[0], 1.0);
        assert_eq!(b[6], 0.25);
    }
}
