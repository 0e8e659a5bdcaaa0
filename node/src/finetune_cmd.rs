//! `node finetune`: trains a TALoRA adapter (B only, A from the run seed) on one domain of the
//! built-in data on top of a base, reports held-out metrics of the domain before and after, and
//! saves the adapter as three PEFT folders (`coarse/ domain/ fine/`) plus `talora.json`.
//!
//! This is one node's local round without the network: the node daemon calls the same library
//! function (`ruvdllm::adapter::train::run`) and sends `trained.update_from(&global)`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rand::SeedableRng;
use ruvdllm::adapter::train::{self, BandSchedule, TrainOptions};
use ruvdllm::adapter::{Naming, Shape, Spec, Talora, Target};
use ruvdllm::data::{self, Domain, Generator, Split};
use ruvdllm::eval;
use ruvdllm::model::Model;
use ruvdllm::sampler::Options;
use ruvdllm::tokenizer::Tokenizer;
use ruvdllm::train::LikelihoodOptions;

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Base checkpoint folder, HF folder or .gguf file (default: the committed tiny base).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Compute device: `cpu`, `cuda` (GPU 0) or `cuda:N`; GPUs need a build with
    /// `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: ruvdllm::model::DeviceSpec,
    /// Domain of the built-in data to fine-tune on.
    #[arg(long)]
    pub domain: Domain,
    /// Built-in split to train on.
    #[arg(long, default_value = "finetune")]
    pub split: Split,
    /// Training samples drawn from the split.
    #[arg(long, default_value_t = 256)]
    pub n: usize,
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Training rows' canvas: `varied` ends each row at its prompt plus an answer region of
    /// random length (so the adapter answers on generation's prompt + `gen_length` canvases);
    /// `fixed` pads every row with EOS to `--seq-len` (before session 7, and the README's
    /// TALoRA table).
    #[arg(long, value_enum, default_value_t = crate::pretrain_cmd::SftCanvas::Varied)]
    pub sft_canvas: crate::pretrain_cmd::SftCanvas,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Seed of the frozen A matrices (the same for every node of a run).
    #[arg(long, default_value_t = 0)]
    pub run_seed: u64,
    /// Ranks of the coarse, domain and fine bands.
    #[arg(long, default_value = "8,4,2")]
    pub ranks: String,
    /// Adapted linears: `q,v` (default), `all`, or a list of q,k,v,o,gate,up,down.
    #[arg(long, default_value = "q,v")]
    pub targets: String,
    /// Which band each step trains: round-robin, curriculum (coarse → fine), or one band.
    #[arg(long, default_value = "round-robin")]
    pub band_schedule: String,
    /// Output folder of the adapter.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Held-out samples of the domain used for the before/after metrics.
    #[arg(long, default_value_t = 40)]
    pub eval_n: usize,
    /// Monte-Carlo draws per sequence for the perplexity bound.
    #[arg(long, default_value_t = 16)]
    pub mc: usize,
    /// Skip exact match (no generation).
    #[arg(long)]
    pub no_generate: bool,
    /// Token weighting of the loss: `elbo` (LLaDA's 1/p) or `mean` (plain mean cross-entropy over
    /// the masked tokens: low-variance, what memorising a fact table needs in the fine band).
    #[arg(long, default_value = "elbo")]
    pub weighting: ruvdllm::train::Weighting,
    /// Low-discrepancy t across each batch's rows, inside the band.
    #[arg(long)]
    pub stratified_t: bool,
    /// Seed of the training noise and data order, the evaluation noise and the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// One row of the before/after table.
struct Metrics {
    losses: train::BandLosses,
    nll: ruvdllm::train::NllBound,
    em: Option<eval::ExactMatch>,
}

fn measure(
    model: &Model,
    tok: &dyn Tokenizer,
    samples: &[data::Sample],
    args: &FinetuneArgs,
) -> anyhow::Result<Metrics> {
    let ex = eval::examples(samples, tok);
    let seed = args.seed;
    let losses = train::band_losses(model, &ex, args.seq_len, seed, 16)?;
    let lik = LikelihoodOptions {
        mc_samples: args.mc,
        batch: args.mc.clamp(1, 16),
        seq_len: args.seq_len,
        seed,
    };
    let nll = ruvdllm::train::nll_bound(model, &ex, &lik)?;
    let em = if args.no_generate {
        None
    } else {
        // `node eval`'s defaults: a 32-token canvas in blocks of 8, LLaDA low-confidence.
        let options = Options {
            gen_length: 32,
            block_length: 8,
            ..Options::default()
        };
        Some(eval::exact_match(
            model, tok, samples, &options, 16, seed, None,
        )?)
    };
    Ok(Metrics { losses, nll, em })
}

fn row(name: &str, m: &Metrics) -> String {
    let em = m.em.map_or("–".to_string(), |e| {
        format!("{}/{} ({:.1} %)", e.correct, e.total, 100.0 * e.rate())
    });
    let b = m.losses.bands;
    format!(
        "| {name} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.3} | {em} |",
        m.losses.all,
        b[0],
        b[1],
        b[2],
        m.nll.per_token(),
        m.nll.perplexity()
    )
}

pub fn run(args: FinetuneArgs) -> anyhow::Result<()> {
    let (loaded, tok) = crate::model_arg::load_on(args.model.as_deref(), args.device)?;
    let base = loaded.model;
    let arch = base.config().arch;
    let spec = Spec::new(
        Spec::parse_ranks(&args.ranks)?,
        Target::parse_list(&args.targets)?,
    )?;
    let schedule: BandSchedule = args.band_schedule.parse()?;
    anyhow::ensure!(
        args.n > 0 && args.eval_n > 0,
        "--n and --eval-n must be positive"
    );
    let g = Generator::new(data::DEFAULT_SEED);
    let train_samples = g.samples(args.split, args.domain, args.n);
    let heldout = g.samples(Split::HeldOut, args.domain, args.eval_n);
    anyhow::ensure!(
        !train_samples.is_empty(),
        "the split has no samples for this domain"
    );
    let examples = eval::examples(&train_samples, tok.as_ref());

    let global = Talora::new(spec, args.run_seed, Shape::from(base.config()))?;
    let mut talora = global.clone();
    println!(
        "base {} ({}), domain {}, {} training samples from {}, {} held-out samples",
        crate::model_arg::resolve(args.model.as_deref()).display(),
        loaded.kind,
        args.domain,
        train_samples.len(),
        args.split,
        heldout.len()
    );
    let before = measure(&base, tok.as_ref(), &heldout, &args)?;

    let opts = TrainOptions {
        steps: args.steps,
        batch_size: args.batch_size,
        seq_len: args.seq_len,
        lr: args.lr,
        schedule,
        vary_canvas: args.sft_canvas == crate::pretrain_cmd::SftCanvas::Varied,
        noise: ruvdllm::train::NoiseOptions {
            stratified_t: args.stratified_t,
            weighting: args.weighting,
        },
        ..TrainOptions::default()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed ^ 0x007A_105A);
    let start = std::time::Instant::now();
    let report = train::run(&base, &mut talora, &examples, &opts, &mut rng)?;
    let secs = start.elapsed().as_secs_f64();
    for (band, s) in ruvdllm::adapter::Band::ALL.iter().zip(&report.bands) {
        println!(
            "train {band}: {} steps, {} samples, loss {:.4} → {:.4}",
            s.steps, s.samples, s.first_loss, s.last_loss
        );
    }
    println!(
        "{} steps, {} samples seen in {secs:.1} s ({:.2} steps/s)",
        report.steps,
        report.samples_seen,
        report.steps as f64 / secs.max(1e-9)
    );

    let mut adapted = base.clone();
    adapted.set_adapter(talora.to_adapter(&base)?);
    let after = measure(&adapted, tok.as_ref(), &heldout, &args)?;
    println!();
    println!(
        "| held-out {} | loss | coarse | domain | fine | NLL bound / token | perplexity bound | exact match |",
        args.domain
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|");
    println!("{}", row("base", &before));
    println!("{}", row("+ TALoRA", &after));

    let base_name = crate::model_arg::resolve(args.model.as_deref())
        .display()
        .to_string();
    talora
        .save(&args.out, &base_name, Naming::of(arch))
        .with_context(|| format!("saving the adapter to {}", args.out.display()))?;
    println!("saved {}", args.out.display());
    Ok(())
}
