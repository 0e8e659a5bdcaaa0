//! Inference report: the seed's three inference tables for `tiny` (the checkpoint) and `small`
//! (seeded random weights), printed as markdown.
//!
//! 1. Latency of the seed's 8-step generation (prompt 128, output 256, one block): p50/p90/p99
//!    at batch 1, tokens/s at batch 1 and 8, peak RSS (`VmHWM`, reset per model where allowed).
//! 2. LLaDA's quality setting (steps = gen_length, block 32) against Fast-dLLM's threshold
//!    decoding with and without the block-wise caches, on held-out prompts at batch 1: tokens/s,
//!    token agreement with the baseline, and the held-out perplexity bound. The bound is a property
//!    of the model (threshold and caches change generation, not the forward the bound uses), so it
//!    is computed once per model and shown on each row.
//! 3. Forward GFLOP/s against the machine's f32 matmul GFLOP/s at the model's linear shapes.
//!
//! Every generation is greedy LLaDA low-confidence with early stop off, so every method does the
//! whole canvas and tokens/s compares equal work.
//!
//! `cargo run --release -p ruvdllm-benches --bin inference_report -- [--quick] [--model DIR]`

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use ruvdllm::candle_core::{Device, Tensor};
use ruvdllm::model::{Config, Model};
use ruvdllm::sampler::{self, CacheMode, Options, Request};
use ruvdllm::train::{LikelihoodOptions, NllBound, nll_bound};
use ruvdllm_benches::inference::{
    self as inf, FAST_STEPS, GEN_LEN, MODEL_ENV, PROMPT_LEN, SMALL_INIT_STD, SMALL_SEED,
};

#[derive(Parser)]
struct Args {
    /// The `tiny` checkpoint folder (default: `shared/assets/tiny`).
    #[arg(long, env = MODEL_ENV)]
    model: Option<PathBuf>,
    /// Which models to report (`tiny`, `small`).
    #[arg(long, value_delimiter = ',', default_value = "tiny,small")]
    models: Vec<String>,
    /// Short runs: fewer repetitions, prompts and likelihood draws.
    #[arg(long)]
    quick: bool,
    /// 8-step generations timed at batch 1 (default 20, quick 5).
    #[arg(long)]
    reps: Option<usize>,
    /// 8-step generations timed at batch 8 (default 3, quick 1).
    #[arg(long)]
    batch_reps: Option<usize>,
    /// Held-out prompts for the quality table on `tiny` (default 8, quick 3).
    #[arg(long)]
    prompts: Option<usize>,
    /// Held-out prompts for the quality table on `small` (default 2, quick 1).
    #[arg(long)]
    small_prompts: Option<usize>,
    /// Fast-dLLM confidence threshold τ.
    #[arg(long, default_value_t = 0.9)]
    threshold: f64,
    /// Block length of the quality setting.
    #[arg(long, default_value_t = 32)]
    block: usize,
    /// Held-out examples in the perplexity bound (default 40, quick 10).
    #[arg(long)]
    bound_examples: Option<usize>,
    /// Monte-Carlo draws per example in the bound (default 32, quick 16).
    #[arg(long)]
    mc_samples: Option<usize>,
    /// Sequence lengths of the GFLOP/s table.
    #[arg(long, value_delimiter = ',', default_value = "128,256,512")]
    seqs: Vec<usize>,
}

impl Args {
    fn pick(&self, v: Option<usize>, full: usize, quick: usize) -> usize {
        v.unwrap_or(if self.quick { quick } else { full }).max(1)
    }
}

struct LatencyRow {
    p50: f64,
    p90: f64,
    p99: f64,
    tps_b1: f64,
    tps_b8: f64,
    peak_rss_mib: Option<f64>,
    /// The high-water mark was reset before this model ran (otherwise it is the process's).
    rss_reset: bool,
}

struct QualityRow {
    method: &'static str,
    nfe_per_prompt: f64,
    tps: f64,
    agreement: f64,
}

struct FlopsRow {
    seq: usize,
    ms: f64,
    forward_gflops: f64,
    matmul_gflops: f64,
}

struct Report {
    name: String,
    params: usize,
    latency: LatencyRow,
    quality: Vec<QualityRow>,
    bound: NllBound,
    flops: Vec<FlopsRow>,
}

/// Runs one request to completion; returns the wall time and the generated ids per row.
fn generate(model: &Model, opts: &Options, prompts: &[Vec<u32>]) -> anyhow::Result<(f64, Output)> {
    let req = Request::with_seeds(prompts.to_vec(), 0);
    let specials = model.config().specials;
    let t = Instant::now();
    let out = sampler::generate(model, &Device::Cpu, &specials, opts, &req, |_| {
        ControlFlow::Continue(())
    })?;
    Ok((t.elapsed().as_secs_f64(), Output::from(out)))
}

struct Output {
    ids: Vec<Vec<u32>>,
    nfe: usize,
}

impl From<sampler::Output> for Output {
    fn from(o: sampler::Output) -> Self {
        Output {
            nfe: o.nfe,
            ids: o.rows.into_iter().map(|r| r.ids).collect(),
        }
    }
}

fn latency(model: &Model, args: &Args) -> anyhow::Result<LatencyRow> {
    let opts = Options {
        gen_length: GEN_LEN,
        block_length: GEN_LEN,
        steps: Some(FAST_STEPS),
        early_stop: false,
        ..Options::default()
    };
    let reset = inf::reset_peak_rss();
    let reps = args.pick(args.reps, 20, 5);
    let prompt = vec![inf::long_prompt(PROMPT_LEN, 0)];
    generate(model, &opts, &prompt)?; // warm-up
    let mut times = Vec::with_capacity(reps);
    for i in 0..reps {
        let (s, _) = generate(model, &opts, &prompt)?;
        eprintln!("  8-step b=1 run {}/{reps}: {:.0} ms", i + 1, s * 1e3);
        times.push(s);
    }
    let batch: Vec<Vec<u32>> = (0..8).map(|i| inf::long_prompt(PROMPT_LEN, i)).collect();
    let breps = args.pick(args.batch_reps, 3, 1);
    let mut btime = 0.0;
    for i in 0..breps {
        let (s, _) = generate(model, &opts, &batch)?;
        eprintln!("  8-step b=8 run {}/{breps}: {:.0} ms", i + 1, s * 1e3);
        btime += s;
    }
    let pct = |p| inf::percentile(&times, p).unwrap_or(f64::NAN) * 1e3;
    let total: f64 = times.iter().sum();
    Ok(LatencyRow {
        p50: pct(50.0),
        p90: pct(90.0),
        p99: pct(99.0),
        tps_b1: (reps * GEN_LEN) as f64 / total,
        tps_b8: (breps * 8 * GEN_LEN) as f64 / btime,
        peak_rss_mib: inf::peak_rss_kib().map(|k| k as f64 / 1024.0),
        rss_reset: reset,
    })
}

fn quality(model: &Model, args: &Args, n_prompts: usize) -> anyhow::Result<Vec<QualityRow>> {
    let prompts = inf::heldout_prompts(n_prompts);
    let base = Options {
        gen_length: GEN_LEN,
        block_length: args.block,
        steps: Some(GEN_LEN),
        early_stop: false,
        ..Options::default()
    };
    let fast = Options {
        threshold: Some(args.threshold),
        ..base.clone()
    };
    let methods: [(&'static str, Options); 4] = [
        ("baseline", base.clone()),
        ("threshold", fast.clone()),
        (
            "threshold + prefix cache",
            Options {
                cache: CacheMode::Prefix,
                ..fast.clone()
            },
        ),
        (
            "threshold + dual cache",
            Options {
                cache: CacheMode::Dual,
                ..fast
            },
        ),
    ];
    let mut reference: Option<Vec<Vec<u32>>> = None;
    let mut rows = Vec::new();
    for (method, opts) in methods {
        let mut secs = 0.0;
        let mut nfe = 0usize;
        let mut ids = Vec::with_capacity(prompts.len());
        for p in &prompts {
            let (s, out) = generate(model, &opts, std::slice::from_ref(p))?;
            secs += s;
            nfe += out.nfe;
            ids.extend(out.ids);
        }
        eprintln!("  {method}: {secs:.1} s over {} prompts", prompts.len());
        let agreement = reference.as_ref().map_or(1.0, |r| inf::agreement(r, &ids));
        reference.get_or_insert(ids);
        rows.push(QualityRow {
            method,
            nfe_per_prompt: nfe as f64 / prompts.len() as f64,
            tps: (prompts.len() * GEN_LEN) as f64 / secs,
            agreement,
        });
    }
    Ok(rows)
}

fn flops(model: &Model, args: &Args) -> anyhow::Result<Vec<FlopsRow>> {
    let cfg = model.config();
    let reps = if args.quick { 3 } else { 7 };
    let mut rows = Vec::new();
    for &seq in &args.seqs {
        if seq == 0 || seq > cfg.max_seq_len {
            eprintln!("  skipping seq {seq}: outside 1..={}", cfg.max_seq_len);
            continue;
        }
        let ids: Vec<u32> = (0..seq as u32).map(|i| i % 256).collect();
        let batch = model.plain_batch(&Tensor::from_vec(ids, (1, seq), &Device::Cpu)?)?;
        model.forward_full(&batch, None)?; // warm-up
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t = Instant::now();
            std::hint::black_box(model.forward_full(&batch, None)?);
            times.push(t.elapsed().as_secs_f64());
        }
        let s = inf::percentile(&times, 50.0).unwrap_or(f64::NAN);
        let matmul = inf::matmul_gflops(cfg, seq, reps)?;
        eprintln!("  seq {seq}: forward {:.1} ms", s * 1e3);
        rows.push(FlopsRow {
            seq,
            ms: s * 1e3,
            forward_gflops: inf::forward_flops(cfg, 1, seq) / s / 1e9,
            matmul_gflops: matmul,
        });
    }
    Ok(rows)
}

fn load(name: &str, args: &Args) -> anyhow::Result<Model> {
    match name {
        "tiny" => inf::load_checkpoint(&inf::model_path(args.model.as_deref())),
        "small" => inf::seeded_model(&Config::small(), SMALL_SEED, SMALL_INIT_STD),
        other => anyhow::bail!("unknown model `{other}` (expected tiny or small)"),
    }
}

fn run(name: &str, args: &Args) -> anyhow::Result<Report> {
    eprintln!("{name}: loading");
    let model = load(name, args)?;
    let params = model.config().n_params();
    eprintln!("{name}: 8-step latency");
    let latency = latency(&model, args)?;
    eprintln!("{name}: quality setting");
    let n_prompts = if name == "small" {
        args.pick(args.small_prompts, 2, 1)
    } else {
        args.pick(args.prompts, 8, 3)
    };
    let quality = quality(&model, args, n_prompts)?;
    eprintln!("{name}: held-out bound");
    let lopts = LikelihoodOptions {
        mc_samples: args.pick(args.mc_samples, 32, 16),
        batch: 16,
        seq_len: 64,
        seed: 0,
    };
    let examples = inf::heldout_examples(args.pick(args.bound_examples, 40, 10));
    let bound = nll_bound(&model, &examples, &lopts).context("perplexity bound")?;
    eprintln!("{name}: forward GFLOP/s");
    let flops = flops(&model, args)?;
    Ok(Report {
        name: name.to_string(),
        params,
        latency,
        quality,
        bound,
        flops,
    })
}

fn print_tables(reports: &[Report], args: &Args) {
    println!("### 8-step generation (prompt {PROMPT_LEN}, output {GEN_LEN}, one block, greedy)\n");
    println!(
        "| model | params | p50 ms | p90 ms | p99 ms | tok/s b=1 | tok/s b=8 | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        let l = &r.latency;
        let rss = l
            .peak_rss_mib
            .map_or("n/a".to_string(), |m| format!("{m:.0}"));
        println!(
            "| {} | {:.1} M | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {rss} |",
            r.name,
            r.params as f64 / 1e6,
            l.p50,
            l.p90,
            l.p99,
            l.tps_b1,
            l.tps_b8
        );
    }
    println!(
        "\n### steps = gen_length = {GEN_LEN}, block {}, τ = {} (batch 1, held-out prompts)\n",
        args.block, args.threshold
    );
    println!(
        "| model | method | NFE/prompt | tok/s | speed-up | agreement | bound nats/tok | ppl bound |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        let base_tps = r.quality.first().map_or(f64::NAN, |q| q.tps);
        for q in &r.quality {
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.2}× | {:.1} % | {:.4} | {:.3} |",
                r.name,
                q.method,
                q.nfe_per_prompt,
                q.tps,
                q.tps / base_tps,
                100.0 * q.agreement,
                r.bound.per_token(),
                r.bound.perplexity()
            );
        }
    }
    println!("\n### forward GFLOP/s vs measured f32 matmul GFLOP/s (batch 1)\n");
    println!("| model | seq | forward ms | forward GFLOP/s | matmul GFLOP/s | ratio |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in reports {
        for f in &r.flops {
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} % |",
                r.name,
                f.seq,
                f.ms,
                f.forward_gflops,
                f.matmul_gflops,
                100.0 * f.forward_gflops / f.matmul_gflops
            );
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = ruvdllm::candle_core::utils::get_num_threads();
    let mut reports = Vec::new();
    for name in &args.models {
        reports.push(run(name, &args)?);
    }
    println!(
        "CPU f32, {threads} threads{}; tiny = {}; small = seeded random weights (seed \
         {SMALL_SEED}, std {SMALL_INIT_STD})\n",
        if args.quick { ", --quick" } else { "" },
        inf::model_path(args.model.as_deref()).display()
    );
    print_tables(&reports, &args);
    if reports.iter().any(|r| !r.latency.rss_reset) {
        println!("\npeak RSS is the whole process's: /proc/self/clear_refs could not reset VmHWM");
    }
    Ok(())
}
