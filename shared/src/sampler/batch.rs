//! The batch canvas: left-padded rows `[pad… | prompt | gen_length × MASK]`, the key-padding
//! mask and pad-aware positions.
//!
//! Prompts of different lengths are left-padded to a common length so that every row's
//! generation region starts at the same column (one block range for the whole batch). Pads get
//! key-mask 0 (never attended to) and position 0, and real tokens count positions from 0 at their
//! first real token (`cumsum(mask) − 1`), so a padded row sees exactly what it would see alone.

use candle_core::{Device, Tensor};

use crate::denoiser::Batch;
use crate::tokens::SpecialTokens;

/// Pad-aware RoPE positions: `cumsum(mask) − 1` for real tokens, 0 for pads.
pub fn positions(key_mask: &[u8]) -> Vec<u32> {
    let mut seen = 0u32;
    key_mask
        .iter()
        .map(|&m| {
            if m != 0 {
                seen += 1;
                seen - 1
            } else {
                0
            }
        })
        .collect()
}

/// Every row of the batch on one common canvas.
#[derive(Debug, Clone)]
pub(crate) struct Canvas {
    /// `[B][L]` token ids.
    pub rows: Vec<Vec<u32>>,
    /// Left pads per row.
    pub pads: Vec<usize>,
    /// Padded prompt length: the column where generation starts.
    pub prompt_len: usize,
    pub mask: u32,
}

impl Canvas {
    /// Builds the canvas; `prompts` must be non-empty (checked by the caller).
    pub fn new(prompts: &[&[u32]], gen_length: usize, special: &SpecialTokens) -> Canvas {
        let prompt_len = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut rows = Vec::with_capacity(prompts.len());
        let mut pads = Vec::with_capacity(prompts.len());
        for p in prompts {
            let pad = prompt_len - p.len();
            let mut row = Vec::with_capacity(prompt_len + gen_length);
            row.extend(std::iter::repeat_n(special.pad, pad));
            row.extend_from_slice(p);
            row.extend(std::iter::repeat_n(special.mask, gen_length));
            rows.push(row);
            pads.push(pad);
        }
        Canvas {
            rows,
            pads,
            prompt_len,
            mask: special.mask,
        }
    }

    pub fn len(&self) -> usize {
        self.rows.first().map_or(0, Vec::len)
    }

    /// Row `r` without its left pads: prompt followed by the generation region.
    pub fn unpadded(&self, r: usize) -> &[u32] {
        &self.rows[r][self.pads[r]..]
    }

    /// Row `r`'s generation region.
    pub fn generated(&self, r: usize) -> &[u32] {
        &self.rows[r][self.prompt_len..]
    }

    /// Masked positions of row `r` within `[start, end)`, ascending.
    pub fn masked_in(&self, r: usize, start: usize, end: usize) -> Vec<usize> {
        (start..end)
            .filter(|&p| self.rows[r][p] == self.mask)
            .collect()
    }

    /// The model inputs. With `cfg`, rows `B..2B` are the unconditional copies: the real prompt
    /// tokens replaced by MASK (pads stay pads and stay masked out of attention).
    pub fn batch(&self, device: &Device, cfg: bool) -> candle_core::Result<Batch> {
        let b = self.rows.len();
        let l = self.len();
        let copies = if cfg { 2 } else { 1 };
        let mut ids = Vec::with_capacity(copies * b * l);
        for row in &self.rows {
            ids.extend_from_slice(row);
        }
        if cfg {
            for (row, &pad) in self.rows.iter().zip(&self.pads) {
                ids.extend(row.iter().enumerate().map(|(p, &t)| {
                    if p >= pad && p < self.prompt_len {
                        self.mask
                    } else {
                        t
                    }
                }));
            }
        }
        let any_pad = self.pads.iter().any(|&p| p > 0);
        let mut mask = Vec::with_capacity(copies * b * l);
        for _ in 0..copies {
            for &pad in &self.pads {
                mask.extend((0..l).map(|p| u8::from(p >= pad)));
            }
        }
        let pos: Vec<u32> = mask.chunks(l.max(1)).flat_map(positions).collect();
        let rows = copies * b;
        Ok(Batch {
            ids: Tensor::from_vec(ids, (rows, l), device)?,
            positions: Tensor::from_vec(pos, (rows, l), device)?,
            key_mask: if any_pad {
                Some(Tensor::from_vec(mask, (rows, l), device)?)
            } else {
                None
            },
            t: None,
            position_delta: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: SpecialTokens = SpecialTokens::BYTE;

    #[test]
    fn positions_are_pad_aware() {
        assert_eq!(positions(&[0, 0, 1, 1, 1]), vec![0, 0, 0, 1, 2]);
        assert_eq!(positions(&[1, 1]), vec![0, 1]);
    }

    #[test]
    fn left_padding_and_cfg_rows() {
        let a: &[u32] = &[1, 2, 3];
        let b: &[u32] = &[4];
        let c = Canvas::new(&[a, b], 2, &S);
        assert_eq!(c.prompt_len, 3);
        assert_eq!(c.rows[1], vec![S.pad, S.pad, 4, S.mask, S.mask]);
        assert_eq!(c.unpadded(1), &[4, S.mask, S.mask]);
        assert_eq!(c.generated(0), &[S.mask, S.mask]);
        let batch = c.batch(&Device::Cpu, true).unwrap();
        let ids = batch.ids.to_vec2::<u32>().unwrap();
        assert_eq!(ids.len(), 4);
        assert_eq!(ids[2], vec![S.mask; 5]);
        assert_eq!(ids[3], vec![S.pad, S.pad, S.mask, S.mask, S.mask]);
        let pos = batch.positions.to_vec2::<u32>().unwrap();
        assert_eq!(pos[1], vec![0, 0, 0, 1, 2]);
        assert_eq!(pos[0], vec![0, 1, 2, 3, 4]);
        let km = batch.key_mask.unwrap().to_vec2::<u8>().unwrap();
        assert_eq!(km[3], vec![0, 0, 1, 1, 1]);
        // No pads at all: no key mask.
        let c = Canvas::new(&[a], 2, &S);
        assert!(c.batch(&Device::Cpu, false).unwrap().key_mask.is_none());
    }
}
