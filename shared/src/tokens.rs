//! Special token ids a masked-diffusion model and its sampler agree on.

use serde::{Deserialize, Serialize};

/// The ids of the special tokens. LLaDA uses `eos == pad`; the built-in byte vocabulary keeps them
/// apart so that left padding (never attended to) cannot be confused with generated EOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokens {
    /// The `[MASK]` token that marks positions still to be denoised.
    pub mask: u32,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    /// End-of-turn token for chat models (LLaDA's `<|eot_id|>`), if the vocabulary has one.
    pub eot: Option<u32>,
}

impl SpecialTokens {
    /// Where a generated answer ends: the first EOS or end-of-turn id in `ids` (`ids.len()` when
    /// there is none).
    pub fn answer_end(&self, ids: &[u32]) -> usize {
        ids.iter()
            .position(|&t| t == self.eos || Some(t) == self.eot)
            .unwrap_or(ids.len())
    }

    /// The built-in byte-level vocabulary: ids 0..=255 are bytes, then mask, bos, eos, pad.
    pub const BYTE: SpecialTokens = SpecialTokens {
        mask: 256,
        bos: 257,
        eos: 258,
        pad: 259,
        eot: None,
    };
    /// Vocabulary size of the built-in byte-level tokenizer.
    pub const BYTE_VOCAB: usize = 260;
    /// LLaDA-8B's ids (`<|mdm_mask|>`, BOS, `<|endoftext|>` = EOS = pad, `<|eot_id|>`).
    pub const LLADA: SpecialTokens = SpecialTokens {
        mask: 126336,
        bos: 126080,
        eos: 126081,
        pad: 126081,
        eot: Some(126348),
    };
    /// Dream-7B's ids (Qwen2 vocabulary; `<|endoftext|>` = EOS = pad, `<|im_end|>` as end of turn).
    pub const DREAM: SpecialTokens = SpecialTokens {
        mask: 151666,
        bos: 151665,
        eos: 151643,
        pad: 151643,
        eot: Some(151645),
    };
}
