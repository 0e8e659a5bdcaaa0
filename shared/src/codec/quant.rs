//! Value planes: how a run of stored f32 values becomes bytes, and back.
//!
//! The scaled integer encodings share one idea (absmax scaling, as in NVFLARE's blockwise int8 and
//! bitsandbytes): each *group* of values gets `scale = absmax / L` (L = 127 for int8, 7 for int4),
//! values are rounded to the nearest of `q·scale`, |q| ≤ L, so the error is at most `scale / 2`.
//! Every grouping the codec uses — blocks of 64 stored values, or rows of the original tensor
//! (whose stored values are contiguous because top-k indices are kept sorted) — is a sequence of
//! consecutive runs of the stored values, so a grouping is just its run offsets.

use super::error::Error;
use super::mode::{BLOCK, Values};

/// Run offsets of each scale group over the stored values: group `g` covers
/// `offsets[g]..offsets[g + 1]`. Empty for the float encodings, which have no scales.
#[derive(Debug, Clone, PartialEq)]
pub struct Groups {
    pub offsets: Vec<usize>,
}

impl Groups {
    pub fn count(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    fn range(&self, g: usize) -> Option<(usize, usize)> {
        Some((*self.offsets.get(g)?, *self.offsets.get(g + 1)?))
    }

    /// Groups for `values` over `stored` values; `row_len` is the innermost dimension and
    /// `indices` the sorted top-k indices (`None` when dense). Row grouping needs `numel`.
    pub fn new(
        values: Values,
        stored: usize,
        numel: usize,
        row_len: usize,
        indices: Option<&[usize]>,
    ) -> Self {
        let fixed = |len: usize, count: usize| Groups {
            offsets: (0..=count).map(|g| (g * len).min(stored)).collect(),
        };
        match values {
            Values::F32 | Values::F16 | Values::Bf16 => Groups {
                offsets: Vec::new(),
            },
            Values::Int8Block | Values::Int4Block => fixed(BLOCK, stored.div_ceil(BLOCK)),
            Values::Int8Row => {
                let rows = numel.checked_div(row_len).unwrap_or(0);
                match indices {
                    None => fixed(row_len, rows),
                    Some(idx) => {
                        let mut offsets = Vec::with_capacity(rows + 1);
                        offsets.push(0);
                        let mut pos = 0;
                        for r in 0..rows {
                            let end = (r + 1) * row_len;
                            while idx.get(pos).is_some_and(|&i| i < end) {
                                pos += 1;
                            }
                            offsets.push(pos);
                        }
                        Groups { offsets }
                    }
                }
            }
        }
    }
}

/// Number of scale groups the decoder will expect, computed from header fields alone (no indices):
/// blocks depend on the stored count, rows on the shape.
pub fn scale_count(values: Values, stored: u64, numel: u64, row_len: u64) -> u64 {
    match values {
        Values::F32 | Values::F16 | Values::Bf16 => 0,
        Values::Int8Block | Values::Int4Block => stored.div_ceil(BLOCK as u64),
        Values::Int8Row => numel.checked_div(row_len).unwrap_or(0),
    }
}

/// Bytes of the value plane for `stored` values, `None` on overflow.
pub fn plane_len(values: Values, stored: u64) -> Option<u64> {
    match values {
        Values::F32 => stored.checked_mul(4),
        Values::F16 | Values::Bf16 => stored.checked_mul(2),
        Values::Int8Block | Values::Int8Row => Some(stored),
        Values::Int4Block => Some(stored.div_ceil(2)),
    }
}

/// Largest |x| per group.
pub fn group_absmax(stored: &[f32], groups: &Groups) -> Vec<f32> {
    (0..groups.count())
        .map(|g| {
            groups
                .range(g)
                .and_then(|(a, b)| stored.get(a..b))
                .map_or(0.0, |s| s.iter().fold(0.0f32, |m, v| m.max(v.abs())))
        })
        .collect()
}

fn quantize(x: f32, scale: f32, levels: f32) -> i8 {
    if scale > 0.0 {
        (x / scale).round().clamp(-levels, levels) as i8
    } else {
        0
    }
}

/// Encodes stored (finite) values: returns the scales and the value plane. Fails only when a value
/// is outside the encoding's range (f16 above 65504, bf16 rounding to infinity).
pub fn encode_plane(
    values: Values,
    stored: &[f32],
    groups: &Groups,
    tensor: &str,
) -> Result<(Vec<f32>, Vec<u8>), Error> {
    let out_of_range = |i: usize, v: f32| Error::OutOfRange {
        tensor: tensor.to_string(),
        index: i as u64,
        value: v,
        mode: values.name(),
    };
    match values {
        Values::F32 => Ok((
            Vec::new(),
            stored.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )),
        Values::F16 => {
            let mut plane = Vec::with_capacity(stored.len() * 2);
            for (i, &v) in stored.iter().enumerate() {
                let h = half::f16::from_f32(v);
                if h.is_infinite() {
                    return Err(out_of_range(i, v));
                }
                plane.extend_from_slice(&h.to_le_bytes());
            }
            Ok((Vec::new(), plane))
        }
        Values::Bf16 => {
            let mut plane = Vec::with_capacity(stored.len() * 2);
            for (i, &v) in stored.iter().enumerate() {
                let h = half::bf16::from_f32(v);
                if h.is_infinite() {
                    return Err(out_of_range(i, v));
                }
                plane.extend_from_slice(&h.to_le_bytes());
            }
            Ok((Vec::new(), plane))
        }
        Values::Int8Block | Values::Int8Row | Values::Int4Block => {
            let levels = values.int_levels().unwrap_or(127.0);
            let scales: Vec<f32> = group_absmax(stored, groups)
                .into_iter()
                .map(|m| m / levels)
                .collect();
            let mut q = vec![0i8; stored.len()];
            for (g, &scale) in scales.iter().enumerate() {
                if let Some((a, b)) = groups.range(g)
                    && let (Some(src), Some(dst)) = (stored.get(a..b), q.get_mut(a..b))
                {
                    for (d, &x) in dst.iter_mut().zip(src) {
                        *d = quantize(x, scale, levels);
                    }
                }
            }
            let plane = if values == Values::Int4Block {
                q.chunks(2)
                    .map(|p| {
                        let lo = (p[0] + 8) as u8;
                        let hi = p.get(1).map_or(8, |&h| (h + 8) as u8);
                        lo | (hi << 4)
                    })
                    .collect()
            } else {
                q.iter().map(|&v| v as u8).collect()
            };
            Ok((scales, plane))
        }
    }
}

/// Decodes `n` values from a plane (already un-shuffled) into `out`. The caller has checked the
/// plane and scale lengths against the header; any remaining inconsistency is an error, not a
/// panic.
pub fn decode_plane(
    values: Values,
    scales: &[f32],
    plane: &[u8],
    groups: &Groups,
    out: &mut [f32],
    tensor: &str,
) -> Result<(), Error> {
    let n = out.len();
    let short = |actual: usize| Error::SizeMismatch {
        tensor: tensor.to_string(),
        what: "value plane",
        declared: plane_len(values, n as u64).unwrap_or(u64::MAX),
        actual: actual as u64,
    };
    match values {
        Values::F32 => {
            let src = plane.get(..n * 4).ok_or_else(|| short(plane.len()))?;
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Values::F16 | Values::Bf16 => {
            let src = plane.get(..n * 2).ok_or_else(|| short(plane.len()))?;
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                let b = [c[0], c[1]];
                *o = if values == Values::F16 {
                    half::f16::from_le_bytes(b).to_f32()
                } else {
                    half::bf16::from_le_bytes(b).to_f32()
                };
            }
        }
        Values::Int8Block | Values::Int8Row | Values::Int4Block => {
            let int4 = values == Values::Int4Block;
            let need = if int4 { n.div_ceil(2) } else { n };
            let src = plane.get(..need).ok_or_else(|| short(plane.len()))?;
            if groups.count() != scales.len() || groups.offsets.last().copied().unwrap_or(0) != n {
                return Err(Error::InvalidHeader {
                    tensor: tensor.to_string(),
                    reason: "scale groups do not cover the stored values",
                });
            }
            for (g, &scale) in scales.iter().enumerate() {
                let (a, b) = groups.range(g).unwrap_or((0, 0));
                for i in a..b {
                    let q = if int4 {
                        let byte = src.get(i / 2).copied().unwrap_or(0x88);
                        let nib = if i % 2 == 0 { byte & 0x0f } else { byte >> 4 };
                        i16::from(nib) - 8
                    } else {
                        i16::from(src.get(i).copied().unwrap_or(0) as i8)
                    };
                    if let Some(o) = out.get_mut(i) {
                        *o = f32::from(q) * scale;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(values: Values, data: &[f32], row_len: usize) -> Vec<f32> {
        let g = Groups::new(values, data.len(), data.len(), row_len, None);
        let (scales, plane) = encode_plane(values, data, &g, "t").unwrap();
        assert_eq!(
            scales.len() as u64,
            scale_count(values, data.len() as u64, data.len() as u64, row_len as u64)
        );
        assert_eq!(
            plane.len() as u64,
            plane_len(values, data.len() as u64).unwrap()
        );
        let mut out = vec![f32::NAN; data.len()];
        decode_plane(values, &scales, &plane, &g, &mut out, "t").unwrap();
        out
    }

    #[test]
    fn int_encodings_hit_extremes_exactly_and_zero_blocks_stay_zero() {
        let mut data: Vec<f32> = (0..130).map(|i| (i as f32 - 65.0) / 10.0).collect();
        data.extend([0.0; 64]);
        for v in [Values::Int8Block, Values::Int4Block, Values::Int8Row] {
            let out = round_trip(v, &data, 97);
            // absmax of each group maps to ±L exactly, so the extreme value is reproduced.
            assert_eq!(out[0], data[0], "{v}");
            assert!(out[130..].iter().all(|&x| x == 0.0), "{v}");
        }
        let out = round_trip(Values::F32, &data, 1);
        assert_eq!(out, data);
    }

    #[test]
    fn half_range_is_checked() {
        let g = Groups::new(Values::F16, 1, 1, 1, None);
        assert!(matches!(
            encode_plane(Values::F16, &[70000.0], &g, "t"),
            Err(Error::OutOfRange { mode: "f16", .. })
        ));
        let g = Groups::new(Values::Bf16, 1, 1, 1, None);
        assert!(encode_plane(Values::Bf16, &[70000.0], &g, "t").is_ok());
        assert!(encode_plane(Values::Bf16, &[f32::MAX], &g, "t").is_err());
    }

    #[test]
    fn sparse_row_groups_follow_indices() {
        // numel 12 in rows of 4: indices 1, 2 in row 0, none in row 1, 9 in row 2.
        let g = Groups::new(Values::Int8Row, 3, 12, 4, Some(&[1, 2, 9]));
        assert_eq!(g.offsets, vec![0, 2, 2, 3]);
        let g = Groups::new(Values::Int8Block, 130, 130, 1, None);
        assert_eq!(g.offsets, vec![0, 64, 128, 130]);
    }
}
