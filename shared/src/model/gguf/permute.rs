//! llama.cpp's q/k row permutation for "normal" (interleaved) RoPE, and its inverse.
//!
//! HF checkpoints of the LLaDA family rotate the two *halves* of each head (`rotate_half`, the
//! NeoX layout). llama.cpp runs the `llada` architecture with `LLAMA_ROPE_TYPE_NORM`, which rotates
//! *adjacent pairs*, so `conversion/llada.py` reorders the rows of `q_proj`/`k_proj` (and their
//! biases) with `reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2)`: inside head `h` with
//! `d = rows / n_head` rows and half `m = d / 2`, GGUF row `h·d + 2j + i` is HF row `h·d + i·m + j`.
//!
//! Whole rows move and nothing else changes, so the permutation can be applied to the raw bytes of
//! any row-major tensor — f32, f16 and every ggml block format alike, because a ggml block never
//! spans two rows. Undoing it on a quantized tensor is therefore exact: no dequantize/requantize.

use std::borrow::Cow;

/// Why a permutation could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{rows} rows cannot be split into {n_head} heads of an even number of rows")]
    Heads { rows: usize, n_head: usize },
    #[error("{bytes} bytes are not {rows} rows of {row_bytes} bytes")]
    Bytes {
        bytes: usize,
        rows: usize,
        row_bytes: usize,
    },
}

/// Which way rows move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// HF (half-split) order → llama.cpp (interleaved) order: what the converter does.
    ToGguf,
    /// llama.cpp order → HF order: what a loader must do.
    FromGguf,
}

/// `dst_row → src_row` for `rows` rows split into `n_head` heads.
pub fn row_map(rows: usize, n_head: usize, dir: Direction) -> Result<Vec<usize>, Error> {
    if n_head == 0 || !rows.is_multiple_of(n_head) || !(rows / n_head).is_multiple_of(2) {
        return Err(Error::Heads { rows, n_head });
    }
    let d = rows / n_head;
    let m = d / 2;
    let mut map = vec![0usize; rows];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..m {
                let hf = h * d + i * m + j;
                let gguf = h * d + 2 * j + i;
                match dir {
                    Direction::ToGguf => map[gguf] = hf,
                    Direction::FromGguf => map[hf] = gguf,
                }
            }
        }
    }
    Ok(map)
}

/// Reorders the rows of a row-major tensor given as raw bytes (`rows` rows of `row_bytes` each).
pub fn permute_rows<'a>(
    raw: &'a [u8],
    rows: usize,
    row_bytes: usize,
    n_head: usize,
    dir: Direction,
) -> Result<Cow<'a, [u8]>, Error> {
    if rows.checked_mul(row_bytes) != Some(raw.len()) {
        return Err(Error::Bytes {
            bytes: raw.len(),
            rows,
            row_bytes,
        });
    }
    let map = row_map(rows, n_head, dir)?;
    let mut out = Vec::with_capacity(raw.len());
    for &src in &map {
        out.extend_from_slice(&raw[src * row_bytes..(src + 1) * row_bytes]);
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_converter_formula_on_a_small_head() {
        // One head of 8 rows: HF rows [a0 a1 a2 a3 | b0 b1 b2 b3] → GGUF [a0 b0 a1 b1 a2 b2 a3 b3].
        let map = row_map(8, 1, Direction::ToGguf).unwrap();
        assert_eq!(map, vec![0, 4, 1, 5, 2, 6, 3, 7]);
        // Two heads of 4 rows each permute independently.
        let map = row_map(8, 2, Direction::ToGguf).unwrap();
        assert_eq!(map, vec![0, 2, 1, 3, 4, 6, 5, 7]);
    }

    #[test]
    fn round_trips_and_is_not_the_identity() {
        let rows = 24;
        let row_bytes = 3;
        let raw: Vec<u8> = (0..(rows * row_bytes) as u8).collect();
        // Heads of two rows are the identity (one pair); every larger head moves rows.
        let single = permute_rows(&raw, rows, row_bytes, rows / 2, Direction::ToGguf).unwrap();
        assert_eq!(&*single, &raw[..]);
        for n_head in [1, 2, 3, 4, 6] {
            let g = permute_rows(&raw, rows, row_bytes, n_head, Direction::ToGguf).unwrap();
            assert_ne!(&*g, &raw[..], "n_head {n_head}");
            let back = permute_rows(&g, rows, row_bytes, n_head, Direction::FromGguf).unwrap();
            assert_eq!(&*back, &raw[..], "n_head {n_head}");
        }
    }

    /// The point of the permutation: llama.cpp's "normal" RoPE (adjacent pairs, candle's
    /// `rope_i`) on the permuted features equals HF's half-split RoPE on the original ones.
    #[test]
    fn interleaved_rope_on_permuted_features_equals_half_rope() -> candle_core::Result<()> {
        use candle_core::{Device, Tensor};
        let (dev, l, d) = (Device::Cpu, 5, 8);
        let x: Vec<f32> = (0..l * d)
            .map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.5)
            .collect();
        let x = Tensor::from_vec(x, (1, 1, l, d), &dev)?;
        let inv: Vec<f32> = (0..d / 2)
            .map(|j| 1.0 / 10_000f32.powf(2.0 * j as f32 / d as f32))
            .collect();
        let pos = Tensor::arange(0f32, l as f32, &dev)?.reshape((l, 1))?;
        let angles = pos.broadcast_mul(&Tensor::new(inv, &dev)?.reshape((1, d / 2))?)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let idx = |dir| -> candle_core::Result<Tensor> {
            let m: Vec<u32> = row_map(d, 1, dir)
                .unwrap()
                .into_iter()
                .map(|i| i as u32)
                .collect();
            Tensor::new(m, &dev)
        };
        let hf = candle_nn::rotary_emb::rope(&x, &cos, &sin)?;
        let xg = x.index_select(&idx(Direction::ToGguf)?, 3)?;
        let gg = candle_nn::rotary_emb::rope_i(&xg, &cos, &sin)?;
        let back = gg.index_select(&idx(Direction::FromGguf)?, 3)?;
        let diff = (back - hf)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        Ok(())
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(
            row_map(6, 4, Direction::ToGguf),
            Err(Error::Heads { rows: 6, n_head: 4 })
        );
        assert_eq!(
            row_map(6, 2, Direction::ToGguf),
            Err(Error::Heads { rows: 6, n_head: 2 })
        );
        assert!(row_map(4, 0, Direction::FromGguf).is_err());
        let raw = [0u8; 10];
        assert!(matches!(
            permute_rows(&raw, 4, 3, 1, Direction::ToGguf),
            Err(Error::Bytes { .. })
        ));
    }
}
