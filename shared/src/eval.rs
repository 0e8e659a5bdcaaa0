//! Held-out metrics shared by `node eval`, adapters and the simulation: the diffusion loss on a
//! fixed noise draw, LLaDA's perplexity bound, and exact match of generated answers.

use std::path::PathBuf;

use candle_core::Result;
use rand::SeedableRng;

use crate::data::Sample;
use crate::model::Model;
use crate::sampler::{self, Options, Request};
use crate::tokenizer::Tokenizer;
use crate::train::{Example, LikelihoodOptions, Objective, masked_diffusion_loss, nll_bound, pack};

/// Where the committed `tiny` base lives in a source checkout.
pub fn tiny_base_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/tiny"))
}

/// Tokenizes samples into training/eval examples.
pub fn examples(samples: &[Sample], tok: &dyn Tokenizer) -> Vec<Example> {
    samples
        .iter()
        .map(|s| Example {
            prompt: tok.encode(&s.prompt),
            answer: tok.encode(&s.answer),
        })
        .collect()
}

/// The SFT diffusion loss averaged over `examples` with a fixed seed (so two models, or two
/// rounds, are compared on the same noise).
pub fn heldout_loss(
    model: &Model,
    examples: &[Example],
    seq_len: usize,
    seed: u64,
    batch: usize,
) -> Result<f64> {
    heldout_loss_in(model, examples, seq_len, seed, batch, (0.0, 1.0))
}

/// [`heldout_loss`] with `t` drawn inside `t_range` only (a TALoRA band's range gives the
/// band's held-out loss).
pub fn heldout_loss_in(
    model: &Model,
    examples: &[Example],
    seq_len: usize,
    seed: u64,
    batch: usize,
    t_range: (f64, f64),
) -> Result<f64> {
    if examples.is_empty() {
        return Ok(0.0);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut total = 0.0;
    let mut rows = 0usize;
    for chunk in examples.chunks(batch.max(1)) {
        let packed = pack(chunk, seq_len, model.config().specials, false);
        let loss = masked_diffusion_loss(model, &packed, Objective::Sft, t_range, &mut rng)?;
        total += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        rows += chunk.len();
    }
    Ok(total / rows as f64)
}

/// Perplexity bound (per token over the answer region).
pub fn perplexity_bound(
    model: &Model,
    examples: &[Example],
    opts: &LikelihoodOptions,
) -> Result<f64> {
    Ok(nll_bound(model, examples, opts)?.perplexity())
}

/// Exact-match result: how many generated answers equal the reference (trimmed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExactMatch {
    pub correct: usize,
    pub total: usize,
}

impl ExactMatch {
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// Compares each generated row (decoded up to its first `eos`) with its sample's reference answer.
pub fn score_answers(
    tok: &dyn Tokenizer,
    eos: u32,
    samples: &[Sample],
    out: &sampler::Output,
) -> ExactMatch {
    let mut m = ExactMatch::default();
    for (s, row) in samples.iter().zip(&out.rows) {
        let end = row
            .ids
            .iter()
            .position(|&t| t == eos)
            .unwrap_or(row.ids.len());
        m.total += 1;
        if s.is_correct(&tok.decode(&row.ids[..end])) {
            m.correct += 1;
        }
    }
    m
}

/// Generates an answer for each sample's prompt (`[BOS] prompt`, batched) and compares it with
/// the reference answer; the answer is the decoded text up to the first EOS. `retrieval`: the
/// pattern banks DGR retrieves from when `options.dgr` is set.
pub fn exact_match(
    model: &Model,
    tok: &dyn Tokenizer,
    samples: &[Sample],
    options: &Options,
    batch: usize,
    seed: u64,
    retrieval: Option<sampler::Retrieval<'_>>,
) -> std::result::Result<ExactMatch, sampler::Error> {
    let specials = model.config().specials;
    let mut result = ExactMatch::default();
    for chunk in samples.chunks(batch.max(1)) {
        let prompts: Vec<Vec<u32>> = chunk
            .iter()
            .map(|s| {
                std::iter::once(specials.bos)
                    .chain(tok.encode(&s.prompt))
                    .collect()
            })
            .collect();
        let out = sampler::generate_with(
            model,
            model.device(),
            &specials,
            options,
            &Request::with_seeds(prompts, seed),
            retrieval,
            |_| std::ops::ControlFlow::Continue(()),
        )?;
        let m = score_answers(tok, specials.eos, chunk, &out);
        result.correct += m.correct;
        result.total += m.total;
    }
    Ok(result)
}
