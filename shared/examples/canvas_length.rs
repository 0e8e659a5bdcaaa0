//! Does a model answer on canvases of a length it was not trained on?
//!
//! Trains the `tiny` preset from scratch on the first `--facts` samples of one domain's
//! pretraining split (SFT rows only: the prompt is never masked), twice — once with every row
//! padded with EOS to `--seq-len` (`fixed`), once with each row's answer region of random length
//! (`varied`, `pretrain --sft-canvas varied`) — and prints the exact match of each on those same
//! samples with the simulation's generation settings (`gen_length` 16, blocks of 8), plus a few
//! generations. Memorising a handful of samples is easy; the point is whether the answer survives
//! a canvas (prompt + 16) shorter than the training rows.
//!
//! ```sh
//! cargo run --release -p ruvdllm --example canvas_length -- --domain facts --facts 8 --steps 200
//! ```

use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{DType, Device};
use clap::Parser;
use ruvdllm::data::{DEFAULT_SEED, Domain, Generator, Split};
use ruvdllm::model::{Config, checkpoint};
use ruvdllm::sampler::{Options, Request};
use ruvdllm::tokenizer::{ByteTokenizer, Tokenizer};
use ruvdllm::train::{NoiseOptions, PretrainOptions, Weighting, pretrain};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "facts")]
    domain: Domain,
    /// Samples trained on (the first of the domain's pretraining split).
    #[arg(long, default_value_t = 8)]
    facts: usize,
    #[arg(long, default_value_t = 200)]
    steps: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Training row length.
    #[arg(long, default_value_t = 44)]
    seq_len: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    #[arg(long, default_value_t = 16)]
    gen_length: usize,
    #[arg(long, default_value_t = 8)]
    block_length: usize,
    /// Where the two models are written (`<out>/fixed`, `<out>/varied`).
    #[arg(long, default_value = "target/canvas_length")]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let data = Generator::new(DEFAULT_SEED);
    let tok = ByteTokenizer;
    let samples: Vec<_> = data
        .all(Split::Pretrain, args.domain)
        .into_iter()
        .take(args.facts)
        .collect();
    if samples.is_empty() {
        return Err("no samples".into());
    }
    let pool = ruvdllm::eval::examples(&samples, &tok);
    let gen_opts = Options {
        gen_length: args.gen_length,
        block_length: args.block_length,
        ..Default::default()
    };
    println!(
        "| SFT canvas | steps | last loss (EMA) | exact match at gen_length {} |",
        args.gen_length
    );
    println!("|---|--:|--:|--:|");
    let mut shown = Vec::new();
    for varied in [false, true] {
        let name = if varied { "varied" } else { "fixed" };
        let out = args.out.join(name);
        let opts = PretrainOptions {
            steps: args.steps,
            batch_size: args.batch_size,
            seq_len: args.seq_len,
            lr: args.lr,
            warmup: 50.min(args.steps / 4),
            seed: 1,
            noise: NoiseOptions {
                stratified_t: true,
                weighting: Weighting::Mean,
            },
            sft_share: 1.0,
            vary_sft_canvas: varied,
            ..PretrainOptions::new(Config::tiny(), out.clone())
        };
        let per = opts.examples_per_step();
        let mut cursor = 0usize;
        let mut ema: Option<f32> = None;
        pretrain(
            &opts,
            |_| {
                let batch = (0..per).map(|k| pool[(cursor + k) % pool.len()].clone());
                let batch: Vec<_> = batch.collect();
                cursor += per;
                batch
            },
            |r| ema = Some(ema.map_or(r.loss, |e| 0.95 * e + 0.05 * r.loss)),
        )?;
        let lm = checkpoint::load(&out, DType::F32, &Device::Cpu)?;
        let em = ruvdllm::eval::exact_match(&lm.model, &tok, &samples, &gen_opts, 16, 0, None)?;
        println!(
            "| {name} | {} | {:.4} | {}/{} |",
            args.steps,
            ema.unwrap_or(f32::NAN),
            em.correct,
            em.total
        );
        let specials = lm.config.specials;
        let prompts = samples
            .iter()
            .take(4)
            .map(|s| {
                std::iter::once(specials.bos)
                    .chain(tok.encode(&s.prompt))
                    .collect()
            })
            .collect();
        let generated = ruvdllm::sampler::generate(
            &lm.model,
            &Device::Cpu,
            &specials,
            &gen_opts,
            &Request::with_seeds(prompts, 0),
            |_| std::ops::ControlFlow::Continue(()),
        )?;
        for (s, row) in samples.iter().zip(&generated.rows) {
            let end = row.ids.iter().position(|&t| t == specials.eos);
            let text = tok.decode(&row.ids[..end.unwrap_or(row.ids.len())]);
            shown.push(format!(
                "{name}: {:?} → {text:?} (want {:?})",
                s.prompt, s.answer
            ));
        }
    }
    println!();
    for line in shown {
        println!("{line}");
    }
    Ok(())
}
