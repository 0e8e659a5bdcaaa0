//! `node eval`: held-out diffusion loss, LLaDA's Monte-Carlo perplexity bound and exact-match
//! accuracy, per domain of a built-in split (or on corpus files: loss and bound only).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ruvdllm::data::{self, Domain, Generator, Split};
use ruvdllm::eval;
use ruvdllm::train::LikelihoodOptions;

use crate::sampler_args::SamplerArgs;

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub base: crate::model_arg::ModelArgs,
    /// Built-in split: pretrain, finetune or heldout.
    #[arg(long, default_value = "heldout")]
    pub split: Split,
    /// Only this domain (default: all).
    #[arg(long)]
    pub domain: Option<Domain>,
    /// Samples per domain.
    #[arg(long, default_value_t = 40)]
    pub n: usize,
    /// Evaluate on text files instead (loss and bound; no exact match).
    #[arg(long, num_args = 1..)]
    pub corpus: Vec<PathBuf>,
    /// Monte-Carlo draws per sequence for the perplexity bound.
    #[arg(long, default_value_t = 16)]
    pub mc: usize,
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Skip generation (loss and bound only).
    #[arg(long)]
    pub no_generate: bool,
    /// Print the first K generated answers of each domain beside their references (stderr).
    #[arg(long, default_value_t = 0)]
    pub show: usize,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// With `--dgr --banks DIR`: the perplexity bound is DGR's (`sampler::nll_bound_dgr`: on
    /// every Monte-Carlo draw, the selection forward and the forward with the retrieved deltas)
    /// and exact match generates with DGR. The banks are only read.
    #[command(flatten)]
    pub dgr: crate::generate_cmd::DgrArgs,
}

pub fn run(mut args: EvalArgs) -> anyhow::Result<()> {
    let (loaded, tok, adapters) = args.base.load()?;
    let model = &loaded.model;
    // Answers are short: default to a 32-token canvas in blocks of 8 unless told otherwise.
    if args.sampler.gen_length == 64 && args.sampler.block_length == 32 {
        args.sampler.gen_length = 32;
        args.sampler.block_length = 8;
    }
    let mut options = args.sampler.options()?;
    let dgr = args.dgr.load(loaded.config.d_model)?;
    if let Some((o, banks, _)) = &dgr {
        options.dgr = Some(o.clone());
        eprintln!("DGR over {} patterns", banks.len());
    }
    let retrieval = || {
        dgr.as_ref()
            .map(|(_, banks, projection)| ruvdllm::sampler::Retrieval {
                banks,
                projection,
                now: banks.clock(),
            })
    };
    let lik = LikelihoodOptions {
        mc_samples: args.mc,
        batch: args.mc.min(16),
        seq_len: args.seq_len,
        seed: args.sampler.seed,
    };
    let sets: Vec<(String, Vec<data::Sample>)> = if !args.corpus.is_empty() {
        let samples = data::corpus::load(&args.corpus, args.seq_len.saturating_sub(2))
            .context("reading --corpus files")?;
        vec![(
            "corpus".to_string(),
            samples.into_iter().take(args.n.max(1) * 5).collect(),
        )]
    } else {
        let g = Generator::new(data::DEFAULT_SEED);
        let domains: Vec<Domain> = args.domain.map_or(Domain::ALL.to_vec(), |d| vec![d]);
        domains
            .into_iter()
            .map(|d| (d.name().to_string(), g.samples(args.split, d, args.n)))
            .collect()
    };
    println!(
        "model {} ({}{}{}), split {}",
        args.base.path().display(),
        loaded.kind,
        adapters,
        args.dgr
            .banks
            .as_ref()
            .filter(|_| args.dgr.dgr)
            .map_or(String::new(), |d| format!(" + DGR {}", d.display())),
        if args.corpus.is_empty() {
            args.split.name()
        } else {
            "corpus"
        }
    );
    println!("| domain | samples | loss | NLL bound / token | perplexity bound | exact match |");
    println!("|---|--:|--:|--:|--:|--:|");
    let mut all_nll = ruvdllm::train::NllBound::default();
    let (mut correct, mut total, mut loss_sum, mut rows) = (0, 0, 0.0, 0);
    for (name, samples) in &sets {
        let ex = eval::examples(samples, tok.as_ref());
        let loss = eval::heldout_loss(model, &ex, args.seq_len, args.sampler.seed, 16)?;
        let nll = match (&dgr, retrieval()) {
            (Some((o, _, _)), Some(r)) => {
                let (nll, stats) = ruvdllm::sampler::nll_bound_dgr(model, &ex, &lik, o, r)?;
                eprintln!(
                    "{name}: DGR applied {} position deltas in {} of {} minibatches of draws",
                    stats.positions, stats.with_delta, stats.minibatches
                );
                nll
            }
            _ => ruvdllm::train::nll_bound(model, &ex, &lik)?,
        };
        all_nll.nll += nll.nll;
        all_nll.tokens += nll.tokens;
        loss_sum += loss * ex.len() as f64;
        rows += ex.len();
        let em = if args.no_generate || !args.corpus.is_empty() {
            "–".to_string()
        } else {
            let answers = eval::generate_answers(
                model,
                tok.as_ref(),
                samples,
                &options,
                16,
                args.sampler.seed,
                retrieval(),
            )?;
            for a in answers.iter().take(args.show) {
                eprintln!(
                    "{name}: {} {:?} → {:?} (reference {:?})",
                    if a.correct { "✓" } else { "✗" },
                    a.prompt,
                    a.generated,
                    a.reference
                );
            }
            let m = eval::tally(&answers);
            correct += m.correct;
            total += m.total;
            format!("{}/{} ({:.1} %)", m.correct, m.total, 100.0 * m.rate())
        };
        println!(
            "| {name} | {} | {loss:.4} | {:.4} | {:.3} | {em} |",
            ex.len(),
            nll.per_token(),
            nll.perplexity()
        );
    }
    let em = if total == 0 {
        "–".to_string()
    } else {
        format!(
            "{correct}/{total} ({:.1} %)",
            100.0 * correct as f64 / total as f64
        )
    };
    println!(
        "| **all** | {rows} | {:.4} | {:.4} | {:.3} | {em} |",
        loss_sum / rows.max(1) as f64,
        all_nll.per_token(),
        all_nll.perplexity()
    );
    Ok(())
}
