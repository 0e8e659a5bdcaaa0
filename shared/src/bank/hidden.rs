//! Model-derived hidden states for keys: what the recall test and the retrieval benchmarks index,
//! so their numbers hold for the key distribution DGR actually sees rather than for uniform noise.
//!
//! Texts are packed end to end into canvases of `seq_len` tokens (`[BOS] text [EOS] text …`, so a
//! forward yields many positions), then a seeded fraction of the positions is replaced by `[MASK]`
//! — the state of a canvas in the middle of denoising — and one forward returns every position's
//! final hidden state.

use candle_core::{DType, Result, Tensor};
use rand::{Rng, SeedableRng};

use crate::model::Model;

/// Packs token sequences into `rows` canvases of exactly `seq_len` tokens (cycling through
/// `texts`), each starting with BOS and with EOS between texts.
pub fn pack_canvases(
    texts: &[Vec<u32>],
    rows: usize,
    seq_len: usize,
    bos: u32,
    eos: u32,
) -> Vec<Vec<u32>> {
    let mut out = Vec::with_capacity(rows);
    if texts.is_empty() || seq_len == 0 {
        return out;
    }
    let mut next = texts.iter().cycle();
    for _ in 0..rows {
        let mut row = vec![bos];
        while row.len() < seq_len {
            // `cycle` over a non-empty slice never ends.
            let Some(t) = next.next() else { break };
            row.extend_from_slice(t);
            row.push(eos);
        }
        row.truncate(seq_len);
        out.push(row);
    }
    out
}

/// Masks each non-BOS position with probability `mask_fraction` (seeded) and returns the final
/// hidden states of every position, row-major `[rows · seq_len, d_model]`.
pub fn hidden_states(
    model: &Model,
    canvases: &[Vec<u32>],
    mask_fraction: f64,
    seed: u64,
) -> Result<Vec<f32>> {
    let Some(first) = canvases.first() else {
        return Ok(Vec::new());
    };
    let l = first.len();
    if canvases.iter().any(|c| c.len() != l) {
        candle_core::bail!("canvases must have equal lengths");
    }
    let mask = model.config().specials.mask;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<u32> = canvases
        .iter()
        .flat_map(|c| {
            c.iter()
                .enumerate()
                .map(|(i, t)| (i, *t))
                .collect::<Vec<_>>()
        })
        .map(|(i, t)| {
            if i > 0 && rng.random_bool(mask_fraction.clamp(0.0, 1.0)) {
                mask
            } else {
                t
            }
        })
        .collect();
    let ids = Tensor::from_vec(ids, (canvases.len(), l), model.device())?;
    let batch = model.plain_batch(&ids)?;
    let fwd = model.forward_full(&batch, None)?;
    fwd.hidden
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

/// The key of a data set (DESIGN §5): texts packed into `rows` canvases of `seq_len`, half the
/// positions masked (a canvas mid-denoising, seeded), the mean final hidden state over every
/// position, projected. Forwards run in chunks of 8 canvases so memory stays bounded.
pub fn data_key(
    model: &Model,
    projection: &super::KeyProjection,
    texts: &[Vec<u32>],
    rows: usize,
    seq_len: usize,
    seed: u64,
) -> std::result::Result<Vec<f32>, super::Error> {
    let sp = model.config().specials;
    let canvases = pack_canvases(texts, rows, seq_len, sp.bos, sp.eos);
    if canvases.is_empty() {
        return Err(super::Error::Empty {
            what: "texts for a data key",
        });
    }
    let d = model.config().d_model;
    let mut sum = vec![0.0f64; d];
    let mut n = 0usize;
    for (i, chunk) in canvases.chunks(8).enumerate() {
        let h = hidden_states(model, chunk, 0.5, seed.wrapping_add(i as u64)).map_err(|e| {
            super::Error::Dgr {
                reason: format!("forward for a data key: {e}"),
            }
        })?;
        for row in h.chunks_exact(d) {
            sum.iter_mut()
                .zip(row)
                .for_each(|(s, x)| *s += f64::from(*x));
            n += 1;
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / n.max(1) as f64) as f32).collect();
    projection.project(&mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canvases_have_the_requested_shape() {
        let texts = vec![vec![1u32, 2, 3], vec![4u32]];
        let c = pack_canvases(&texts, 3, 8, 100, 101);
        assert_eq!(c.len(), 3);
        assert!(c.iter().all(|r| r.len() == 8 && r[0] == 100));
        assert_eq!(c[0], vec![100, 1, 2, 3, 101, 4, 101, 1]);
        assert!(pack_canvases(&[], 3, 8, 0, 1).is_empty());
    }
}
