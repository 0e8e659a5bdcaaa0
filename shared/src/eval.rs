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

/// One generated answer beside its reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub prompt: String,
    pub reference: String,
    /// The decoded text up to the first EOS.
    pub generated: String,
    pub correct: bool,
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
    tally(&decode_answers(tok, eos, samples, out))
}

/// Decodes each generated row up to its first `eos` and pairs it with its sample's reference.
pub fn decode_answers(
    tok: &dyn Tokenizer,
    eos: u32,
    samples: &[Sample],
    out: &sampler::Output,
) -> Vec<Answer> {
    samples
        .iter()
        .zip(&out.rows)
        .map(|(s, row)| {
            let end = row
                .ids
                .iter()
                .position(|&t| t == eos)
                .unwrap_or(row.ids.len());
            let generated = tok.decode(&row.ids[..end]);
            Answer {
                prompt: s.prompt.clone(),
                reference: s.answer.clone(),
                correct: s.is_correct(&generated),
                generated,
            }
        })
        .collect()
}

/// Counts the correct answers.
pub fn tally(answers: &[Answer]) -> ExactMatch {
    ExactMatch {
        correct: answers.iter().filter(|a| a.correct).count(),
        total: answers.len(),
    }
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
    generate_answers(model, tok, samples, options, batch, seed, retrieval).map(|a| tally(&a))
}

/// [`exact_match`] with every generated answer: one [`Answer`] per sample, in order.
pub fn generate_answers(
    model: &Model,
    tok: &dyn Tokenizer,
    samples: &[Sample],
    options: &Options,
    batch: usize,
    seed: u64,
    retrieval: Option<sampler::Retrieval<'_>>,
) -> std::result::Result<Vec<Answer>, sampler::Error> {
    let specials = model.config().specials;
    let mut answers = Vec::with_capacity(samples.len());
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
        answers.extend(decode_answers(tok, specials.eos, chunk, &out));
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::ByteTokenizer;

    fn row(ids: Vec<u32>) -> sampler::RowOutput {
        sampler::RowOutput {
            ids,
            stopped_at_eos: false,
            steps: 0,
            nfe: 0,
        }
    }

    #[test]
    fn answers_end_at_the_first_eos_and_are_scored_trimmed() {
        let tok = ByteTokenizer;
        let eos = 258;
        let sample = |p: &str, a: &str| Sample {
            domain: None,
            prompt: p.into(),
            answer: a.into(),
        };
        let samples = [sample("1+1=", "2"), sample("The capital of X is", " Y.")];
        let mut a: Vec<u32> = "2".bytes().map(u32::from).collect();
        a.extend([eos, u32::from(b'9'), eos]);
        // Text after the first EOS is ignored; a missing EOS keeps the whole row.
        let b: Vec<u32> = " Z.".bytes().map(u32::from).collect();
        let out = sampler::Output {
            rows: vec![row(a), row(b)],
            steps: 0,
            nfe: 0,
            window_nfe: 0,
            cancelled: false,
            dgr_applied: 0,
            dgr_used: Default::default(),
        };
        let answers = decode_answers(&tok, eos, &samples, &out);
        assert_eq!(answers[0].generated, "2");
        assert!(answers[0].correct);
        assert_eq!(answers[1].generated, " Z.");
        assert_eq!(answers[1].reference, " Y.");
        assert!(!answers[1].correct);
        assert_eq!(
            tally(&answers),
            ExactMatch {
                correct: 1,
                total: 2
            }
        );
        assert_eq!(score_answers(&tok, eos, &samples, &out), tally(&answers));
    }
}
