//! Quality and cost of DGR on the held-out split (DESIGN §8, "quality" and "DGR overhead"):
//! base / + TALoRA / + TALoRA + DGR on the `tiny` base, same seeds.
//!
//! For every domain a TALoRA adapter is fine-tuned briefly (the library call `node finetune`
//! makes) and inserted into one set of banks (what `node banks insert` does, keys from the
//! domain's fine-tuning texts), so DGR retrieves among the patterns of *all* domains. Then per
//! domain, on held-out samples: the held-out diffusion loss (a training objective on one noise
//! draw; DGR is inference-only: n/a), LLaDA's Monte-Carlo perplexity bound (with DGR: its
//! selection forward and the forward with its deltas on every draw, `sampler::nll_bound_dgr`),
//! exact match and tokens/s of batched generation. The patterns a DGR generation applied are recorded
//! afterwards (`bank::Usage::record`): last use, and the success EMA with the held-out loss
//! improvement the domain's adapter gave (the round signal of DESIGN §5; see `bank::usage`).
//!
//! DGR overhead per real sampler step: the same batch-1 generation (same prompt, seed and
//! options) with and without DGR, alternated `--reps` times; each step is timed between the
//! sampler's step callbacks; the table compares the medians over all steps.
//!
//! With `--global DIR` the "+ TALoRA" rows use that adapter (a simulation's global) for every
//! domain, while the banks keep each domain's own patterns: local retrieval on top of the
//! federated adapter, which is how a node daemon serves.
//!
//! `cargo run -p ruvdllm-benches --bin dgr_report -- --steps 60 --n 64 --eval-n 8 --reps 3`

// Node-side work (retrieval, DGR, generation): the allocator of the `node` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use rand::SeedableRng;
use ruvdllm::adapter::train::{self, TrainOptions};
use ruvdllm::adapter::{Shape, Spec, Talora};
use ruvdllm::bank::{self, Banks, KeyProjection};
use ruvdllm::data::{self, Domain, Generator, Sample, Split};
use ruvdllm::eval;
use ruvdllm::model::Model;
use ruvdllm::sampler::{self, DgrOptions, Options, Output, Request, Retrieval};
use ruvdllm::tokenizer::Tokenizer;
use ruvdllm::train::{LikelihoodOptions, NllBound, nll_bound};
use ruvdllm_benches::inference::percentile;
use ruvdllm_node::banks_cmd;

#[derive(Parser)]
struct Args {
    /// Checkpoint folder (default: the committed tiny base).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Fine-tuning steps per domain adapter.
    #[arg(long, default_value_t = 60)]
    steps: usize,
    /// Peak learning rate of each domain adapter's training (B only).
    #[arg(long, default_value_t = TrainOptions::default().lr)]
    lr: f64,
    /// Fine-tuning samples per domain (also the texts of each pattern key).
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Held-out samples per domain.
    #[arg(long, default_value_t = 8)]
    eval_n: usize,
    /// Generated tokens per answer (blocks of 8, one token per step).
    #[arg(long, default_value_t = 16)]
    gen_length: usize,
    /// Repetitions of the with/without-DGR step timing.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Domains (default: all).
    #[arg(long, value_delimiter = ',')]
    domains: Vec<Domain>,
    /// Monte-Carlo draws per sequence for the perplexity bound.
    #[arg(long, default_value_t = 16)]
    mc: usize,
    /// A TALoRA adapter folder (e.g. a simulation's `adapters/round-004`): the "+ TALoRA" rows
    /// use it for every domain — the federated global a node serves — while the banks still hold
    /// each domain's own fine-tuned patterns, so "+ DGR" measures local retrieval on top of the
    /// global adapter.
    #[arg(long)]
    global: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// One configuration's totals over the domains.
#[derive(Default)]
struct Totals {
    loss: Vec<f64>,
    nll: NllBound,
    em: eval::ExactMatch,
    per_domain: Vec<(Domain, eval::ExactMatch)>,
    tokens: usize,
    secs: f64,
}

impl Totals {
    fn add_nll(&mut self, b: NllBound) {
        self.nll.nll += b.nll;
        self.nll.tokens += b.tokens;
    }

    fn add(&mut self, domain: Domain, em: eval::ExactMatch, tokens: usize, secs: f64) {
        self.em.correct += em.correct;
        self.em.total += em.total;
        self.per_domain.push((domain, em));
        self.tokens += tokens;
        self.secs += secs;
    }
}

fn options(gen_length: usize, dgr: bool) -> Options {
    Options {
        gen_length,
        block_length: 8.min(gen_length),
        steps: Some(gen_length),
        dgr: dgr.then(DgrOptions::default),
        ..Options::default()
    }
}

fn prompts(model: &Model, tok: &dyn Tokenizer, samples: &[Sample]) -> Vec<Vec<u32>> {
    let bos = model.config().specials.bos;
    samples
        .iter()
        .map(|s| std::iter::once(bos).chain(tok.encode(&s.prompt)).collect())
        .collect()
}

/// Generates answers for `samples` in one batch; exact match, generated tokens, seconds and the
/// output (for its DGR usage).
fn generate(
    model: &Model,
    tok: &dyn Tokenizer,
    samples: &[Sample],
    opts: &Options,
    retrieval: Option<Retrieval<'_>>,
    seed: u64,
) -> anyhow::Result<(eval::ExactMatch, usize, f64, Output)> {
    let specials = model.config().specials;
    let request = Request::with_seeds(prompts(model, tok, samples), seed);
    let start = Instant::now();
    let out = sampler::generate_with(
        model,
        model.device(),
        &specials,
        opts,
        &request,
        retrieval,
        |_| ControlFlow::Continue(()),
    )?;
    let secs = start.elapsed().as_secs_f64();
    let em = eval::score_answers(tok, specials.eos, samples, &out);
    let tokens = out.rows.iter().map(|r| r.ids.len()).sum();
    Ok((em, tokens, secs, out))
}

/// Milliseconds of each step of one generation, timed between step callbacks.
fn step_times(
    model: &Model,
    prompt: &[u32],
    opts: &Options,
    retrieval: Option<Retrieval<'_>>,
    seed: u64,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let specials = model.config().specials;
    let request = Request::single(prompt.to_vec(), seed);
    let mut times = Vec::with_capacity(opts.gen_length);
    let mut last = Instant::now();
    let out = sampler::generate_with(
        model,
        model.device(),
        &specials,
        opts,
        &request,
        retrieval,
        |_| {
            let now = Instant::now();
            times.push((now - last).as_secs_f64() * 1e3);
            last = now;
            ControlFlow::Continue(())
        },
    )?;
    Ok((times, out.dgr_applied))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.steps > 0 && args.n > 0 && args.eval_n > 0 && args.reps > 0 && args.gen_length > 0,
        "--steps, --n, --eval-n, --reps and --gen-length must be positive"
    );
    let domains = if args.domains.is_empty() {
        Domain::ALL.to_vec()
    } else {
        args.domains.clone()
    };
    let (loaded, tok) = ruvdllm_node::model_arg::load(args.model.as_deref())?;
    let base = loaded.model;
    let tok = tok.as_ref();
    let g = Generator::new(data::DEFAULT_SEED);
    let projection = KeyProjection::new(bank::DEFAULT_KEY_SEED, base.config().d_model)?;
    let global = match &args.global {
        Some(dir) => {
            let t = Talora::load(dir)
                .with_context(|| format!("loading the TALoRA adapter {}", dir.display()))?;
            let mut m = base.clone();
            m.set_adapter(t.to_adapter(&base)?);
            Some(m)
        }
        None => None,
    };
    let mut banks = Banks::new(bank::Config::default())?;

    // 1. One adapter per domain, all inserted into the same banks.
    let train_start = Instant::now();
    let mut adapted: Vec<Model> = Vec::with_capacity(domains.len());
    for (i, &domain) in domains.iter().enumerate() {
        let samples = g.samples(Split::Finetune, domain, args.n);
        let examples = eval::examples(&samples, tok);
        let mut talora = Talora::new(Spec::default(), args.seed, Shape::from(base.config()))?;
        let opts = TrainOptions {
            steps: args.steps,
            lr: args.lr,
            ..TrainOptions::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed ^ i as u64);
        train::run(&base, &mut talora, &examples, &opts, &mut rng)?;
        let texts = banks_cmd::key_texts(tok, Some(domain), Split::Finetune, args.n);
        banks_cmd::insert_adapters(
            &mut banks,
            &base,
            &projection,
            &talora,
            None,
            &texts,
            64,
            i as u64,
        )?;
        adapted.push(match &global {
            Some(g) => g.clone(),
            None => {
                let mut m = base.clone();
                m.set_adapter(talora.to_adapter(&base)?);
                m
            }
        });
    }
    let train_secs = train_start.elapsed().as_secs_f64();

    // 2. Quality and speed per domain.
    let plain = options(args.gen_length, false);
    let with_dgr = options(args.gen_length, true);
    let (mut t_base, mut t_lora, mut t_dgr) =
        (Totals::default(), Totals::default(), Totals::default());
    let (mut used, mut applied) = (0usize, 0usize);
    let lik = LikelihoodOptions {
        mc_samples: args.mc,
        batch: args.mc.min(16),
        seq_len: 64,
        seed: args.seed,
    };
    let mut bound_stats = sampler::DgrBoundStats::default();
    for (&domain, model) in domains.iter().zip(&adapted) {
        let heldout = g.samples(Split::HeldOut, domain, args.eval_n);
        let ex = eval::examples(&heldout, tok);
        let base_loss = eval::heldout_loss(&base, &ex, 64, args.seed, 16)?;
        let lora_loss = eval::heldout_loss(model, &ex, 64, args.seed, 16)?;
        t_base.loss.push(base_loss);
        t_lora.loss.push(lora_loss);
        t_base.add_nll(nll_bound(&base, &ex, &lik)?);
        t_lora.add_nll(nll_bound(model, &ex, &lik)?);
        let retrieval = Retrieval {
            banks: &banks,
            projection: &projection,
            now: banks.clock(),
        };
        let (b, st) = sampler::nll_bound_dgr(model, &ex, &lik, &DgrOptions::default(), retrieval)?;
        t_dgr.add_nll(b);
        bound_stats.minibatches += st.minibatches;
        bound_stats.with_delta += st.with_delta;
        bound_stats.positions += st.positions;
        let (em, n, s, _) = generate(&base, tok, &heldout, &plain, None, args.seed)?;
        t_base.add(domain, em, n, s);
        let (em, n, s, _) = generate(model, tok, &heldout, &plain, None, args.seed)?;
        t_lora.add(domain, em, n, s);
        let now = banks.clock();
        let retrieval = Retrieval {
            banks: &banks,
            projection: &projection,
            now,
        };
        let (em, n, s, out) =
            generate(model, tok, &heldout, &with_dgr, Some(retrieval), args.seed)?;
        t_dgr.add(domain, em, n, s);
        applied += out.dgr_applied;
        let improvement = ((base_loss - lora_loss) / base_loss.max(1e-9)) as f32;
        used += out
            .dgr_used
            .record(&mut banks, now, Some(improvement))?
            .touched;
    }

    // 3. Step time with and without DGR: the same generation, alternated.
    let (mut plain_ms, mut dgr_ms) = (Vec::new(), Vec::new());
    let mut deltas = 0usize;
    for rep in 0..args.reps {
        for (&domain, model) in domains.iter().zip(&adapted) {
            let sample = g.samples(Split::HeldOut, domain, 1);
            let prompt = &prompts(model, tok, &sample)[0];
            let seed = args.seed + rep as u64;
            plain_ms.extend(step_times(model, prompt, &plain, None, seed)?.0);
            let retrieval = Retrieval {
                banks: &banks,
                projection: &projection,
                now: banks.clock(),
            };
            let (t, d) = step_times(model, prompt, &with_dgr, Some(retrieval), seed)?;
            dgr_ms.extend(t);
            deltas += d;
        }
    }

    let med = |v: &[f64]| percentile(v, 50.0).unwrap_or(f64::NAN);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "tiny base, {} domains × ({} fine-tuning steps at lr {}, {} samples; {} held-out), gen {} tokens \
         in blocks of {} (1 token/step, LLaDA low-confidence), DGR threshold 0.5 / top 3 / ≤ 10 \
         positions; {} patterns in the banks; adapters trained in {train_secs:.1} s",
        domains.len(),
        args.steps,
        args.lr,
        args.n,
        args.eval_n,
        args.gen_length,
        plain.block_length,
        banks.len()
    );
    if let Some(dir) = &args.global {
        println!(
            "+ TALoRA = the global adapter {} for every domain; the banks hold each domain's own \
             fine-tuned patterns",
            dir.display()
        );
    }
    println!();
    println!("| model | held-out loss | perplexity bound | exact match | tok/s |");
    println!("|---|--:|--:|--:|--:|");
    for (name, t, loss) in [
        ("base", &t_base, Some(mean(&t_base.loss))),
        ("+ TALoRA", &t_lora, Some(mean(&t_lora.loss))),
        ("+ TALoRA + DGR", &t_dgr, None),
    ] {
        println!(
            "| {name} | {} | {:.4} | {}/{} ({:.1} %) | {:.1} |",
            loss.map_or("n/a".to_string(), |l| format!("{l:.4}")),
            t.nll.perplexity(),
            t.em.correct,
            t.em.total,
            100.0 * t.em.rate(),
            t.tokens as f64 / t.secs.max(1e-9)
        );
    }
    println!();
    let per = |t: &Totals| {
        t.per_domain
            .iter()
            .map(|(d, e)| format!("{d} {}/{}", e.correct, e.total))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("exact match per domain — base: {}", per(&t_base));
    println!("+ TALoRA: {}", per(&t_lora));
    println!("+ TALoRA + DGR: {}", per(&t_dgr));
    println!(
        "DGR in the perplexity bound: deltas in {} of {} minibatches of draws, {} position deltas \
         ({} Monte-Carlo draws per sequence)",
        bound_stats.with_delta, bound_stats.minibatches, bound_stats.positions, args.mc
    );
    println!(
        "DGR in the quality runs: {applied} position deltas applied; {used} pattern uses recorded \
         (distinct per domain, summed; last use + success EMA)"
    );
    println!();
    let (p, d) = (med(&plain_ms), med(&dgr_ms));
    println!(
        "| per sampler step (batch 1, median of {} steps each) | ms |",
        plain_ms.len()
    );
    println!("|---|--:|");
    println!("| + TALoRA | {p:.2} |");
    println!("| + TALoRA + DGR | {d:.2} |");
    println!(
        "| DGR overhead | {:.2} ({:+.1} %) |",
        d - p,
        100.0 * (d - p) / p.max(1e-9)
    );
    println!(
        "({:.2} DGR deltas applied per step in the timed runs)",
        deltas as f64 / dgr_ms.len().max(1) as f64
    );
    Ok(())
}
