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
    /// Per position, whether it is part of its row's canvas (`false` = PAD after a shortened
    /// row: no key attends to it and the loss never sees it). `None`: every position is real.
    pub key_mask: Option<Vec<Vec<bool>>>,
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

    /// The key mask as the model's `[B, L]` `u8` tensor (1 = real), if any row is shortened.
    pub fn key_mask_tensor(&self, device: &Device) -> Result<Option<Tensor>> {
        let Some(mask) = &self.key_mask else {
            return Ok(None);
        };
        let flat: Vec<u8> = mask.iter().flatten().map(|&m| u8::from(m)).collect();
        Tensor::from_vec(flat, (self.len(), self.seq_len()), device).map(Some)
    }

    /// Shortens row `r` to its first `len` positions: the rest become `pad`, outside the canvas
    /// (never attended to, never masked or scored), and the row's answer region shrinks with it.
    /// The canvas the model sees is then `len` long, as if the row had been packed alone at that
    /// length (positions are unchanged; RoPE only sees differences).
    pub fn shorten_row(&mut self, r: usize, len: usize, pad: u32) {
        let l = self.seq_len();
        let len = len.clamp(1, l);
        if len == l {
            return;
        }
        let rows = self.len();
        let mask = self
            .key_mask
            .get_or_insert_with(|| vec![vec![true; l]; rows]);
        self.ids[r][len..].fill(pad);
        self.maskable[r][len..].fill(false);
        mask[r][len..].fill(false);
        self.answer_len[r] = self.answer_len[r].saturating_sub(l - len).max(1);
    }
}

/// The length of an SFT row's answer region (answer + EOS padding) drawn uniformly from
/// `[answer + 1, max_region]`: generation's canvas is the prompt plus `gen_length` masks, and a
/// model trained on one canvas length learns where answers end from the distance to the canvas
/// end — it then answers only at that length (a tiny base that memorised its facts on 44-token
/// rows misspelt them on the 41-token canvas of `gen_length` 16). Varied regions teach every
/// length up to `max_region`.
pub fn draw_region(answer: usize, max_region: usize, rng: &mut impl rand::RngCore) -> usize {
    let lo = (answer + 1).min(max_region.max(1));
    let hi = max_region.max(lo);
    lo + (rng.next_u64() % (hi - lo + 1) as u64) as usize
}

/// Shortens every SFT row — `rows[r]` is row `r`'s example, `None` for a row that is not SFT-style
/// — to `[BOS] prompt` plus an answer region drawn by [`draw_region`] (at most what the row holds).
/// Rows whose answer does not fit are left alone.
pub fn vary_answer_regions(
    batch: &mut PackedBatch,
    rows: &[Option<&Example>],
    pad: u32,
    rng: &mut impl rand::RngCore,
) {
    let l = batch.seq_len();
    for (r, ex) in rows.iter().enumerate().take(batch.len()) {
        let Some(ex) = ex else {
            continue;
        };
        let start = 1 + ex.prompt.len();
        if start + ex.answer.len() >= l {
            continue;
        }
        let region = draw_region(ex.answer.len(), l - start, rng);
        batch.shorten_row(r, start + region, pad);
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
        key_mask: None,
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

    #[test]
    fn varied_regions_shorten_sft_rows_with_pad_outside_the_canvas() {
        use rand::SeedableRng;
        let s = SpecialTokens::BYTE;
        let ex = vec![
            Example {
                prompt: vec![1, 2],
                answer: vec![3, 4],
            },
            Example {
                prompt: vec![5],
                answer: vec![6],
            },
            // Does not fit: left alone.
            Example {
                prompt: vec![7; 8],
                answer: vec![8; 4],
            },
        ];
        let mut b = pack(&ex, 10, s, false);
        b.shorten_row(0, 6, s.pad);
        assert_eq!(
            b.ids[0],
            vec![s.bos, 1, 2, 3, 4, s.eos, s.pad, s.pad, s.pad, s.pad]
        );
        assert_eq!(
            b.maskable[0],
            [
                false, false, false, true, true, true, false, false, false, false
            ]
        );
        assert_eq!(b.answer_len[0], 3);
        let mask = b.key_mask.as_ref().unwrap();
        assert_eq!(mask[0].iter().filter(|&&m| m).count(), 6);
        assert!(mask[1].iter().all(|&m| m), "other rows keep their canvas");

        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..400 {
            let r = draw_region(2, 7, &mut rng);
            assert!((3..=7).contains(&r), "{r}");
            seen.insert(r);
        }
        assert_eq!(seen.len(), 5, "every length in range is drawn: {seen:?}");
        assert_eq!(draw_region(9, 4, &mut rng), 4, "never past the row");

        let mut lens = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let mut b = pack(&ex, 10, s, false);
            let rows = [Some(&ex[0]), None, Some(&ex[2])];
            vary_answer_regions(&mut b, &rows, s.pad, &mut rng);
            let mask = b
                .key_mask
                .clone()
                .unwrap_or_else(|| vec![vec![true; 10]; 3]);
            let len0 = mask[0].iter().filter(|&&m| m).count();
            // [BOS] + 2 prompt + at least answer + one EOS.
            assert!((6..=10).contains(&len0));
            assert_eq!(&b.ids[0][..5], &[s.bos, 1, 2, 3, 4]);
            assert_eq!(b.ids[0][len0 - 1], s.eos, "the region ends in EOS");
            lens.insert(len0);
            assert!(mask[1].iter().all(|&m| m), "row 1 is not an SFT row here");
            assert!(mask[2].iter().all(|&m| m), "row 2 does not fit");
        }
        assert!(lens.len() > 2, "{lens:?}");
    }

    #[test]
    fn a_shortened_row_scores_like_the_short_row_alone() -> Result<()> {
        use crate::model::{Config, checkpoint};
        use crate::train::objective::logits_for;
        let cfg = Config {
            d_model: 16,
            n_layers: 2,
            n_heads: 2,
            n_kv_heads: 2,
            head_dim: 8,
            mlp_hidden: 32,
            ..Config::tiny()
        };
        let vm = candle_nn::VarMap::new();
        let model = checkpoint::trainable(&vm, &cfg, &Device::Cpu)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        checkpoint::seeded_init(&vm, 7, 0.3).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let s = cfg.specials;
        let ex = vec![Example {
            prompt: vec![10, 11, 12],
            answer: vec![13, 14],
        }];
        let mut long = pack(&ex, 12, s, false);
        long.shorten_row(0, 8, s.pad);
        let short = pack(&ex, 8, s, false);
        let mut fb = model.plain_batch(&long.ids_tensor(&Device::Cpu)?)?;
        fb.key_mask = long.key_mask_tensor(&Device::Cpu)?;
        let a = model.forward_full(&fb, None)?.logits.narrow(1, 0, 8)?;
        let b = logits_for(&model, &short.ids, None)?;
        let diff = (a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max difference {diff}");
        // Without the key mask the PAD tail changes the result: the mask is what makes it equal.
        let unmasked = model.plain_batch(&long.ids_tensor(&Device::Cpu)?)?;
        let c = model
            .forward_full(&unmasked, None)?
            .logits
            .narrow(1, 0, 8)?;
        let diff = (c - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff > 1e-3, "PAD keys had no effect ({diff})");
        Ok(())
    }
}
