//! Packing examples into fixed-length canvases.

use candle_core::{Device, Result, Tensor};

use crate::tokens::SpecialTokens;

/// One tokenized training example. For pretraining `prompt` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub prompt: Vec<u32>,
    pub answer: Vec<u32>,
}

/// A packed batch: `[BOS] prompt answer EOS EOS …` per row, truncated to `seq_len`.
#[derive(Debug, Clone)]
pub struct PackedBatch {
    /// Clean token ids `[B, L]`.
    pub ids: Vec<Vec<u32>>,
    /// Which positions the forward process may mask (`true` = maskable).
    pub maskable: Vec<Vec<bool>>,
    /// Per row, the number of answer positions (answer + EOS padding): SFT's normaliser.
    pub answer_len: Vec<usize>,
}

impl PackedBatch {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn seq_len(&self) -> usize {
        self.ids.first().map_or(0, Vec::len)
    }

    pub fn ids_tensor(&self, device: &Device) -> Result<Tensor> {
        let flat: Vec<u32> = self.ids.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (self.len(), self.seq_len()), device)
    }
}

/// Packs examples into `[B, seq_len]`. `mask_prompt = false` (SFT) keeps prompt tokens clean.
/// EOS padding fills every row to `seq_len` and counts as answer (LLaDA learns to emit it).
pub fn pack(
    examples: &[Example],
    seq_len: usize,
    specials: SpecialTokens,
    mask_prompt: bool,
) -> PackedBatch {
    let mut ids = Vec::with_capacity(examples.len());
    let mut maskable = Vec::with_capacity(examples.len());
    let mut answer_len = Vec::with_capacity(examples.len());
    for ex in examples {
        let mut row = Vec::with_capacity(seq_len);
        let mut m = Vec::with_capacity(seq_len);
        row.push(specials.bos);
        m.push(false);
        for &t in ex.prompt.iter().take(seq_len.saturating_sub(1)) {
            row.push(t);
            m.push(mask_prompt);
        }
        let prompt_end = row.len();
        for &t in &ex.answer {
            if row.len() >= seq_len {
                break;
            }
            row.push(t);
            m.push(true);
        }
        while row.len() < seq_len {
            row.push(specials.eos);
            m.push(true);
        }
        row.truncate(seq_len);
        m.truncate(seq_len);
        answer_len.push(seq_len.saturating_sub(prompt_end).max(1));
        ids.push(row);
        maskable.push(m);
    }
    PackedBatch {
        ids,
        maskable,
        answer_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_with_bos_eos_padding_and_prompt_protection() {
        let s = SpecialTokens::BYTE;
        let ex = vec![Example {
            prompt: vec![1, 2],
            answer: vec![3],
        }];
        let b = pack(&ex, 6, s, false);
        assert_eq!(b.ids[0], vec![s.bos, 1, 2, 3, s.eos, s.eos]);
        assert_eq!(b.maskable[0], vec![false, false, false, true, true, true]);
        assert_eq!(b.answer_len, vec![3]);
        let b = pack(&ex, 6, s, true);
        assert_eq!(b.maskable[0], vec![false, true, true, true, true, true]);
        // Truncation keeps the length.
        let long = vec![Example {
            prompt: vec![],
            answer: (0..20).collect(),
        }];
        let b = pack(&long, 5, s, true);
        assert_eq!(b.ids[0], vec![s.bos, 0, 1, 2, 3]);
    }
}
