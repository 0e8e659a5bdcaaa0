//! Test models implementing [`Denoiser`] without weights, public so that integration tests and
//! benches elsewhere can reuse them.
//!
//! * [`ScriptedModel`]: logits from a closure of (row ids, position), recording every call; for
//!   exact step accounting.
//! * [`ToyModel`]: a deterministic "toy attention" whose logits at a position depend on that
//!   position's token and RoPE position and on a summary of every *attended* (key-mask 1) token
//!   and position of its row, through one or two "layers". Left pads change nothing if and only
//!   if the sampler's key mask and positions are right, which gives batch/padding tests teeth.
//!   Its cache stores per-position "keys" of each layer; with two layers the cached keys of the
//!   other positions go stale as the canvas fills in, just like a real bidirectional model's.

use std::cell::RefCell;

use candle_core::{Result, Tensor};

use crate::denoiser::{Batch, Denoiser};

/// Which trait method a recorded call went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Full,
    Cached,
    Window { start: usize, len: usize },
}

/// One recorded forward: its kind and the canvas ids it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub kind: CallKind,
    pub ids: Vec<Vec<u32>>,
}

/// A batch read back to the host: ids, positions, key mask (all `[B][L]`).
type HostBatch = (Vec<Vec<u32>>, Vec<Vec<u32>>, Vec<Vec<u8>>);

fn read_batch(batch: &Batch) -> Result<HostBatch> {
    let ids = batch.ids.to_vec2::<u32>()?;
    let pos = batch.positions.to_vec2::<u32>()?;
    let mask = match &batch.key_mask {
        Some(m) => m.to_vec2::<u8>()?,
        None => ids.iter().map(|r| vec![1u8; r.len()]).collect(),
    };
    Ok((ids, pos, mask))
}

fn to_logits(rows: Vec<Vec<Vec<f32>>>, vocab: usize) -> Result<Tensor> {
    let b = rows.len();
    let l = rows.first().map_or(0, Vec::len);
    let flat: Vec<f32> = rows.into_iter().flatten().flatten().collect();
    Tensor::from_vec(flat, (b, l, vocab), &candle_core::Device::Cpu)
}

/// Logits from a closure `f(row_ids, position) -> [vocab]`.
pub struct ScriptedModel<F> {
    pub vocab: usize,
    pub shift: bool,
    f: F,
    /// Every forward, in order.
    pub calls: RefCell<Vec<Call>>,
}

impl<F: Fn(&[u32], usize) -> Vec<f32>> ScriptedModel<F> {
    pub fn new(vocab: usize, f: F) -> Self {
        ScriptedModel {
            vocab,
            shift: false,
            f,
            calls: RefCell::new(Vec::new()),
        }
    }

    fn rows(&self, batch: &Batch, kind: CallKind, start: usize, len: usize) -> Result<Tensor> {
        let ids = batch.ids.to_vec2::<u32>()?;
        let out = ids
            .iter()
            .map(|row| (start..start + len).map(|p| (self.f)(row, p)).collect())
            .collect();
        self.calls.borrow_mut().push(Call { kind, ids });
        to_logits(out, self.vocab)
    }
}

impl<F: Fn(&[u32], usize) -> Vec<f32>> Denoiser for ScriptedModel<F> {
    type Cache = ();

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn shift_logits(&self) -> bool {
        self.shift
    }

    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let l = batch.ids.dim(1)?;
        self.rows(batch, CallKind::Full, 0, l)
    }

    fn forward_cached(&self, batch: &Batch) -> Result<(Tensor, ())> {
        let l = batch.ids.dim(1)?;
        Ok((self.rows(batch, CallKind::Cached, 0, l)?, ()))
    }

    fn forward_window(
        &self,
        batch: &Batch,
        start: usize,
        len: usize,
        _cache: &mut (),
    ) -> Result<Tensor> {
        self.rows(batch, CallKind::Window { start, len }, start, len)
    }
}

/// SplitMix64 finaliser of a combination of two words.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b.rotate_left(29))
        .wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The toy model's per-position layer "keys" `[B][L]`.
#[derive(Debug, Clone)]
pub struct ToyCache {
    k1: Vec<Vec<u64>>,
    k2: Vec<Vec<u64>>,
}

/// A deterministic toy attention model (see the module docs).
pub struct ToyModel {
    pub vocab: usize,
    /// 1: the cache is exact while the tokens outside the window do not change; 2: approximate.
    pub layers: usize,
    pub shift: bool,
    /// Logit scale; larger gives more peaked distributions.
    pub sharpness: f32,
    pub calls: RefCell<Vec<CallKind>>,
}

impl ToyModel {
    pub fn new(vocab: usize, layers: usize) -> Self {
        ToyModel {
            vocab,
            layers,
            shift: false,
            sharpness: 8.0,
            calls: RefCell::new(Vec::new()),
        }
    }

    fn logits_of(&self, h: u64) -> Vec<f32> {
        (0..self.vocab as u64)
            .map(|v| {
                let u = (mix(h, v) >> 11) as f32 / (1u64 << 53) as f32;
                self.sharpness * u * u * u
            })
            .collect()
    }

    fn summary(keys: &[u64], mask: &[u8]) -> u64 {
        keys.iter()
            .zip(mask)
            .filter(|&(_, &m)| m != 0)
            .fold(0u64, |acc, (&k, _)| acc.wrapping_add(k))
    }

    /// Recomputes positions `[start, end)` of one row, reading the other keys from `k1`/`k2`
    /// and writing the fresh ones back; returns the window's logits.
    #[allow(clippy::too_many_arguments)]
    fn row_window(
        &self,
        ids: &[u32],
        pos: &[u32],
        mask: &[u8],
        k1: &mut [u64],
        k2: &mut [u64],
        start: usize,
        end: usize,
    ) -> Vec<Vec<f32>> {
        for j in start..end {
            k1[j] = mix(u64::from(ids[j]), u64::from(pos[j]));
        }
        let c1 = Self::summary(k1, mask);
        let h1: Vec<u64> = (start..end).map(|j| mix(k1[j], c1)).collect();
        if self.layers < 2 {
            return h1.iter().map(|&h| self.logits_of(h)).collect();
        }
        for (j, &h) in (start..end).zip(&h1) {
            k2[j] = mix(h, 0x51);
        }
        let c2 = Self::summary(k2, mask);
        h1.iter().map(|&h| self.logits_of(mix(h, c2))).collect()
    }

    fn full(&self, batch: &Batch) -> Result<(Tensor, ToyCache)> {
        let (ids, pos, mask) = read_batch(batch)?;
        let l = ids.first().map_or(0, Vec::len);
        let mut cache = ToyCache {
            k1: vec![vec![0; l]; ids.len()],
            k2: vec![vec![0; l]; ids.len()],
        };
        let mut out = Vec::with_capacity(ids.len());
        for r in 0..ids.len() {
            out.push(self.row_window(
                &ids[r],
                &pos[r],
                &mask[r],
                &mut cache.k1[r],
                &mut cache.k2[r],
                0,
                l,
            ));
        }
        Ok((to_logits(out, self.vocab)?, cache))
    }
}

impl Denoiser for ToyModel {
    type Cache = ToyCache;

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn shift_logits(&self) -> bool {
        self.shift
    }

    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        self.calls.borrow_mut().push(CallKind::Full);
        Ok(self.full(batch)?.0)
    }

    fn forward_cached(&self, batch: &Batch) -> Result<(Tensor, ToyCache)> {
        self.calls.borrow_mut().push(CallKind::Cached);
        self.full(batch)
    }

    fn forward_window(
        &self,
        batch: &Batch,
        start: usize,
        len: usize,
        cache: &mut ToyCache,
    ) -> Result<Tensor> {
        self.calls
            .borrow_mut()
            .push(CallKind::Window { start, len });
        let (ids, pos, mask) = read_batch(batch)?;
        if cache.k1.len() != ids.len() || ids.iter().any(|r| r.len() < start + len) {
            candle_core::bail!("toy cache does not match the batch");
        }
        let mut out = Vec::with_capacity(ids.len());
        for r in 0..ids.len() {
            out.push(self.row_window(
                &ids[r],
                &pos[r],
                &mask[r],
                &mut cache.k1[r],
                &mut cache.k2[r],
                start,
                start + len,
            ));
        }
        to_logits(out, self.vocab)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn batch(ids: Vec<u32>, mask: Option<Vec<u8>>) -> Batch {
        let l = ids.len();
        let m = mask.clone().unwrap_or(vec![1; l]);
        let pos = crate::sampler::positions(&m);
        Batch {
            ids: Tensor::from_vec(ids, (1, l), &Device::Cpu).unwrap(),
            positions: Tensor::from_vec(pos, (1, l), &Device::Cpu).unwrap(),
            key_mask: mask.map(|m| Tensor::from_vec(m, (1, l), &Device::Cpu).unwrap()),
            t: None,
            position_delta: None,
        }
    }

    #[test]
    fn toy_model_ignores_pads_and_window_matches_when_fresh() {
        let m = ToyModel::new(11, 2);
        let alone = m.forward(&batch(vec![1, 2, 3], None)).unwrap();
        let padded = m
            .forward(&batch(vec![9, 9, 1, 2, 3], Some(vec![0, 0, 1, 1, 1])))
            .unwrap();
        let a = alone.to_vec3::<f32>().unwrap();
        let p = padded.to_vec3::<f32>().unwrap();
        assert_eq!(a[0][..], p[0][2..]);
        // Changing a token changes other positions' logits (it is attention-like).
        let other = m.forward(&batch(vec![1, 2, 4], None)).unwrap();
        assert_ne!(other.to_vec3::<f32>().unwrap()[0][0], a[0][0]);
        // A window over an unchanged canvas equals the full forward.
        let b = batch(vec![1, 2, 3], None);
        let (_, mut cache) = m.forward_cached(&b).unwrap();
        let w = m.forward_window(&b, 1, 2, &mut cache).unwrap();
        assert_eq!(w.to_vec3::<f32>().unwrap()[0][..], a[0][1..]);
    }
}
