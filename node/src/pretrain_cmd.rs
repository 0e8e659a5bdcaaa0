//! `node pretrain`: trains a preset on the built-in pretraining split or on corpus files, with a
//! progress bar and periodic checkpoints. The committed `tiny` base is this command's output.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ruvdllm::candle_core::DType;
use ruvdllm::data::{self, Generator};
use ruvdllm::model::Config;
use ruvdllm::tokenizer::{ByteTokenizer, Tokenizer};
use ruvdllm::train::{Example, PretrainOptions, pretrain};

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Model preset (`tiny`, `small`, …).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Output checkpoint folder.
    #[arg(long, short)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Peak learning rate (AdamW, after the warm-up; cosine decay to 10 %). Keep it low: at
    /// 3e-3 `tiny` sits on a plateau for thousands of steps before it learns to copy from the
    /// prompt, at 5e-4 it copies after a few hundred (`cargo run --release -p ruvdllm --example
    /// copy_task -- --lr 3e-3`, and the same with `--lr 5e-4`).
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Seed of the weight init, the masking noise and the built-in data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 250)]
    pub save_every: usize,
    /// Weights dtype on disk (`f16` or `f32`).
    #[arg(long, default_value = "f16")]
    pub dtype: String,
    /// Train on these text files instead of the built-in pretraining split.
    #[arg(long, num_args = 1..)]
    pub corpus: Vec<PathBuf>,
    /// SFT rows' canvas: `varied` ends each row at its prompt plus an answer region of random
    /// length (answer + EOS padding, up to the row length), so the model learns to answer on the
    /// canvas lengths generation uses (prompt + `gen_length`); `fixed` pads every row with EOS to
    /// the row length, as the committed base was trained — such a model answers well only when
    /// the generation canvas has that length.
    #[arg(long, value_enum, default_value_t = SftCanvas::Varied)]
    pub sft_canvas: SftCanvas,
    /// Continue from the checkpoint in `--out`. Every checkpoint carries `optimizer.safetensors`
    /// (AdamW's moments, the step and f32 master weights, written before the `step` file), so the
    /// resumed run is the uninterrupted one; a checkpoint without it resumes with zero moments.
    #[arg(long)]
    pub resume: bool,
    /// Samples packed per pretraining-style row, joined by EOS (1 = one sample + EOS padding).
    /// Packing puts more text in each row, but the SFT held-out loss counts the EOS padding after
    /// an answer, which packed rows stop teaching: continuing the committed base for 900 steps
    /// with `--pack 4` raised its held-out loss from 0.68 to 2.74 (`node eval --n 10`).
    #[arg(long, default_value_t = 1)]
    pub pack: usize,
    /// Stop after this step (the learning-rate schedule still spans `--steps`).
    #[arg(long)]
    pub until: Option<usize>,
    /// Vary the row length per step, uniformly between this (or the longest sample of the step
    /// with BOS and EOS, if longer) and `--seq-len`: cheaper steps, and the model sees the short
    /// canvases that generation uses. Default: every row is `--seq-len` tokens.
    #[arg(long)]
    pub min_seq_len: Option<usize>,
    /// Low-discrepancy t across each batch's rows (MDLM's sampler; same objective, less variance).
    #[arg(long)]
    pub stratified_t: bool,
    /// Token weighting of the loss: `elbo` (LLaDA's 1/p) or `mean` (plain mean cross-entropy over
    /// the masked tokens; lower variance, not a likelihood bound).
    #[arg(long, default_value = "elbo")]
    pub weighting: ruvdllm::train::Weighting,
    /// Fraction of each batch's rows that are SFT-style (prompt never masked, loss on the answer
    /// and its EOS padding only), spread evenly through the batch; the rest are pretraining-style.
    #[arg(long, default_value_t = 0.5)]
    pub sft_share: f64,
    /// Compute device: `cpu`, `cuda` (GPU 0) or `cuda:N`; GPUs need a build with
    /// `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: ruvdllm::model::DeviceSpec,
}

pub fn run(args: PretrainArgs) -> anyhow::Result<()> {
    let config = Config::preset(&args.preset)?;
    let save_dtype = match args.dtype.as_str() {
        "f16" => DType::F16,
        "f32" => DType::F32,
        other => anyhow::bail!("--dtype must be f16 or f32, not `{other}`"),
    };
    if args.batch_size == 0 || args.seq_len < 8 || args.steps == 0 || args.pack == 0 {
        anyhow::bail!("--steps, --batch-size and --pack must be positive and --seq-len at least 8");
    }
    if !(0.0..=1.0).contains(&args.sft_share) {
        anyhow::bail!("--sft-share must be in [0, 1], got {}", args.sft_share);
    }
    let tok = ByteTokenizer;
    let to_example = |s: &data::Sample| Example {
        prompt: tok.encode(&s.prompt),
        answer: tok.encode(&s.answer),
    };
    let generator = Generator::new(data::DEFAULT_SEED ^ args.seed);
    let corpus: Vec<Example> = if args.corpus.is_empty() {
        Vec::new()
    } else {
        let samples = data::corpus::load(&args.corpus, args.seq_len.saturating_sub(2))
            .with_context(|| "reading --corpus files")?;
        anyhow::ensure!(!samples.is_empty(), "the corpus files hold no text");
        samples.iter().map(to_example).collect()
    };
    let mut stream = generator.pretrain_stream();
    let bs = args.batch_size;
    let per_step = {
        let sft_rows = ruvdllm::train::sft_rows(bs, args.sft_share);
        (bs - sft_rows) * args.pack + sft_rows
    };
    let mut corpus_pos = 0usize;
    let next_batch = |_step: usize| -> Vec<Example> {
        if corpus.is_empty() {
            stream
                .by_ref()
                .take(per_step)
                .map(|s| to_example(&s))
                .collect()
        } else {
            (0..per_step)
                .map(|_| {
                    let e = corpus[corpus_pos % corpus.len()].clone();
                    corpus_pos += 1;
                    e
                })
                .collect()
        }
    };
    let opts = PretrainOptions {
        config: config.clone(),
        steps: args.steps,
        batch_size: bs,
        seq_len: args.seq_len,
        lr: args.lr,
        warmup: args.warmup,
        weight_decay: args.weight_decay,
        grad_clip: args.grad_clip,
        seed: args.seed,
        save_every: args.save_every,
        out: args.out.clone(),
        save_dtype,
        resume: args.resume,
        pack: args.pack,
        until: args.until,
        min_seq_len: args.min_seq_len,
        noise: ruvdllm::train::NoiseOptions {
            stratified_t: args.stratified_t,
            weighting: args.weighting,
        },
        sft_share: args.sft_share,
        vary_sft_canvas: args.sft_canvas == SftCanvas::Varied,
        device: args.device.open()?,
    };
    debug_assert_eq!(opts.examples_per_step(), per_step);
    eprintln!(
        "pretraining `{}` ({:.2} M params) on {} for {} steps of {}×{} tokens → {}",
        args.preset,
        config.n_params() as f64 / 1e6,
        args.device,
        args.steps,
        bs,
        args.seq_len,
        args.out.display()
    );
    if args.resume && args.out.join("config.json").is_file() {
        let step = std::fs::read_to_string(args.out.join("step")).unwrap_or_default();
        let step = step.trim().parse::<usize>().unwrap_or(0);
        let state = args.out.join(ruvdllm::train::OPTIMIZER_FILE);
        if step == 0 {
            eprintln!(
                "a fresh schedule from the weights in {}",
                args.out.display()
            );
        } else {
            eprintln!(
                "resuming at step {step} ({})",
                if state.is_file() {
                    "with the saved optimiser state"
                } else {
                    "no optimiser state: zero AdamW moments"
                }
            );
        }
    }
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut ema: Option<f32> = None;
    pretrain(&opts, next_batch, |r| {
        let e = ema.map_or(r.loss, |e| 0.98 * e + 0.02 * r.loss);
        ema = Some(e);
        bar.set_position(r.step as u64 + 1);
        bar.set_message(format!(
            "loss {e:.4} lr {:.2e} |g| {:.2}",
            r.lr, r.grad_norm
        ));
        if (r.step + 1) % 100 == 0 {
            let line = format!("step {:>6}  loss(ema) {e:.4}  lr {:.2e}", r.step + 1, r.lr);
            // A hidden bar (stderr not a terminal: a log file, nohup) prints nothing, so the
            // periodic line goes to stderr directly there.
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
    })?;
    bar.finish();
    eprintln!("saved {}", args.out.display());
    Ok(())
}

/// `--sft-canvas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SftCanvas {
    Varied,
    Fixed,
}
