//! Codec report: bytes, ratio, throughput and error of every mode on the 7B-shaped TALoRA delta,
//! for Gaussian and heavy-tailed (Student-t, 3 df) values, as a markdown table.
//!
//! `cargo run --release -p ruvdllm-benches --bin codec_report [-- --reps 5 --seed 1]`

use std::time::{Duration, Instant};

use clap::Parser;
use ruvdllm::codec::{self, EncodeOptions, Limits, Mode, Shuffle};
use ruvdllm::delta::Delta;
use ruvdllm_benches::talora_7b_delta;

#[derive(Parser)]
struct Args {
    /// Timed repetitions per mode (the fastest is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const MODES: [&str; 16] = [
    "f32",
    "f16",
    "bf16",
    "int8",
    "int8-row",
    "int4",
    "topk:0.1",
    "topk:0.01",
    "bf16+topk:0.1",
    "f16+topk:0.01",
    "int8+topk:0.1",
    "int8+topk:0.01",
    "int4+topk:0.1",
    "int4+topk:0.01",
    "int8-row+topk:0.1",
    "bf16+topk:0.01",
];

fn fastest<T>(reps: usize, mut f: impl FnMut() -> T) -> (T, Duration) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        out = Some(v);
    }
    (out.expect("at least one repetition"), best)
}

fn row(label: &str, delta: &Delta, opts: &EncodeOptions, reps: usize) -> anyhow::Result<String> {
    let raw = (delta.numel() * 4) as f64;
    let (bytes, enc) = fastest(reps, || codec::encode(delta, opts));
    let bytes = bytes?;
    let (back, dec) = fastest(reps, || codec::decode(&bytes, &Limits::default()));
    let back = back?;
    let (mut max_err, mut err2) = (0f32, 0f64);
    for (x, y) in delta.flatten().iter().zip(back.flatten()) {
        let e = (x - y).abs();
        max_err = max_err.max(e);
        err2 += f64::from(e).powi(2);
    }
    let mbps = |d: Duration| raw / 1e6 / d.as_secs_f64();
    Ok(format!(
        "| {label} | {:.2} | {:.2}x | {:.0} | {:.0} | {:.2e} | {:.4} |",
        bytes.len() as f64 / 1e6,
        raw / bytes.len() as f64,
        mbps(enc),
        mbps(dec),
        max_err,
        err2.sqrt() / delta.l2_norm(),
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for (dist, heavy) in [
        ("Gaussian N(0, 1e-3²)", false),
        ("Student-t(3) × 1e-3", true),
    ] {
        let delta = talora_7b_delta(args.seed, heavy);
        let max_abs = delta.flatten().iter().fold(0f32, |m, v| m.max(v.abs()));
        println!(
            "\n### {dist}: {} tensors, {} values, {:.2} MB at f32, max |x| = {max_abs:.2e}\n",
            delta.tensors.len(),
            delta.numel(),
            (delta.numel() * 4) as f64 / 1e6
        );
        println!("| mode | MB | ratio | encode MB/s | decode MB/s | max abs err | rel L2 err |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let plain = EncodeOptions {
            shuffle: Shuffle::Never,
            ..EncodeOptions::default()
        };
        println!("{}", row("f32 (no shuffle)", &delta, &plain, args.reps)?);
        for m in MODES {
            let mode: Mode = m.parse()?;
            println!("{}", row(m, &delta, &EncodeOptions::new(mode), args.reps)?);
        }
    }
    println!(
        "\nMB/s counts the raw f32 size (14.68 MB) over the fastest of {} runs, single thread; \
         zstd level 3; errors are before error feedback (top-k error = dropped mass, kept in the \
         node's residual).",
        args.reps
    );
    Ok(())
}
