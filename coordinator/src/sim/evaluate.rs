//! Held-out quality of a global adapter, computed exactly the way `node eval` computes it, so
//! `node eval --talora <saved adapter> --n <eval-n> --seq-len <seq-len> --mc <mc> --seed <seed>`
//! prints the loss the round table reported.
//!
//! Per domain (built-in held-out split, `eval_n` samples each): the SFT diffusion loss with a fixed
//! noise seed ([`eval::heldout_loss`], batches of 16), LLaDA's Monte-Carlo NLL bound, and exact
//! match of short generations (blocks of 8, one token per step). The overall loss is the
//! sample-weighted mean of the per-domain losses; the perplexity bound pools NLL and tokens. With
//! corpus data there is no built-in held-out split: the nodes' validation samples are the held-out
//! set, and exact match is measured when every one of them has a prompt (JSONL prompt/completion
//! samples), not on plain text chunks.

use std::sync::Arc;

use ruvdllm::adapter::{Shape, Spec, Talora};
use ruvdllm::data::{self, Domain, Generator, Sample, Split};
use ruvdllm::delta::Delta;
use ruvdllm::eval;
use ruvdllm::model::Model;
use ruvdllm::sampler::Options;
use ruvdllm::tokenizer::Tokenizer;
use ruvdllm::train::{LikelihoodOptions, NllBound};

use super::report::Quality;

/// Rows per forward, as in `node eval`.
const BATCH: usize = 16;

/// Evaluation failures.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("adapter: {0}")]
    Adapter(#[from] ruvdllm::adapter::Error),
    #[error("model: {0}")]
    Candle(#[from] ruvdllm::candle_core::Error),
    #[error("generation: {0}")]
    Sampler(#[from] ruvdllm::sampler::Error),
}

/// The held-out sets and how they are measured.
pub struct Evaluator {
    model: Arc<Model>,
    tok: Arc<dyn Tokenizer>,
    /// Named sets (a domain, or `corpus`) with whether exact match applies.
    sets: Vec<(String, Vec<Sample>, bool)>,
    seq_len: usize,
    mc: usize,
    seed: u64,
    options: Options,
}

impl Evaluator {
    /// Built-in held-out split, `n` samples per domain.
    pub fn builtin(
        model: Arc<Model>,
        tok: Arc<dyn Tokenizer>,
        n: usize,
        seq_len: usize,
        mc: usize,
        seed: u64,
        gen_length: usize,
    ) -> Self {
        let g = Generator::new(data::DEFAULT_SEED);
        let sets = Domain::ALL
            .iter()
            .map(|&d| (d.name().to_string(), g.samples(Split::HeldOut, d, n), true))
            .collect();
        Self::new(model, tok, sets, seq_len, mc, seed, gen_length)
    }

    /// A held-out set of external samples: loss and bound, and exact match when every sample
    /// has a prompt to answer.
    pub fn corpus(
        model: Arc<Model>,
        tok: Arc<dyn Tokenizer>,
        samples: Vec<Sample>,
        seq_len: usize,
        mc: usize,
        seed: u64,
        gen_length: usize,
    ) -> Self {
        let prompted = !samples.is_empty() && samples.iter().all(|s| !s.prompt.is_empty());
        let sets = vec![("corpus".to_string(), samples, prompted)];
        Self::new(model, tok, sets, seq_len, mc, seed, gen_length)
    }

    fn new(
        model: Arc<Model>,
        tok: Arc<dyn Tokenizer>,
        sets: Vec<(String, Vec<Sample>, bool)>,
        seq_len: usize,
        mc: usize,
        seed: u64,
        gen_length: usize,
    ) -> Self {
        let options = Options {
            gen_length,
            block_length: 8.min(gen_length),
            ..Options::default()
        };
        Self {
            model,
            tok,
            sets,
            seq_len,
            mc,
            seed,
            options,
        }
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn tokenizer(&self) -> &Arc<dyn Tokenizer> {
        &self.tok
    }

    /// Number of held-out samples.
    pub fn len(&self) -> usize {
        self.sets.iter().map(|s| s.1.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The base with the adapter whose B is `global` attached (`None`: the base alone).
    pub fn adapted(
        &self,
        spec: &Spec,
        run_seed: u64,
        global: Option<&Delta>,
    ) -> Result<Model, EvalError> {
        let mut m = (*self.model).clone();
        if let Some(g) = global {
            let t = Talora::from_delta(spec.clone(), run_seed, Shape::from(m.config()), g)?;
            m.set_adapter(t.to_adapter(&self.model)?);
        }
        Ok(m)
    }

    /// Loss, perplexity bound and exact match of `model` on the held-out sets.
    pub fn quality(&self, model: &Model) -> Result<Quality, EvalError> {
        let lik = LikelihoodOptions {
            mc_samples: self.mc,
            batch: self.mc.min(16),
            seq_len: self.seq_len,
            seed: self.seed,
        };
        let (mut loss_sum, mut rows) = (0.0, 0usize);
        let mut nll = NllBound::default();
        let (mut correct, mut total) = (0, 0);
        for (_, samples, em) in &self.sets {
            let ex = eval::examples(samples, self.tok.as_ref());
            let loss = eval::heldout_loss(model, &ex, self.seq_len, self.seed, BATCH)?;
            loss_sum += loss * ex.len() as f64;
            rows += ex.len();
            let b = ruvdllm::train::nll_bound(model, &ex, &lik)?;
            nll.nll += b.nll;
            nll.tokens += b.tokens;
            if *em {
                let m = eval::exact_match(
                    model,
                    self.tok.as_ref(),
                    samples,
                    &self.options,
                    BATCH,
                    self.seed,
                    None,
                )?;
                correct += m.correct;
                total += m.total;
            }
        }
        Ok(Quality {
            heldout_loss: loss_sum / rows.max(1) as f64,
            ppl_bound: nll.perplexity(),
            exact_match_correct: correct,
            exact_match_total: total,
        })
    }
}
