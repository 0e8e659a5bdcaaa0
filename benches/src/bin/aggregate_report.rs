//! Aggregation time per rule at the 7B TALoRA shape (3,670,016 f32 values per update).
//!
//! Honest updates are i.i.d. Gaussian (std 1e-3, each node on its own seeded stream); f = n/10.
//! For each n the report prints the best of `--reps` runs per rule, in seconds.
//!
//! `cargo run --release -p ruvdllm-benches --bin aggregate_report -- --n 10,30,100`

use std::time::Instant;

use clap::Parser;
use rayon::prelude::*;
use ruvdllm::aggregate::{Input, Prefilter, Rule, RuleConfig, aggregate};
use ruvdllm::privacy::normal_stream;

/// 32 layers × {q, v} × B [4096 × r] for r = 8 + 4 + 2.
const SHAPE_7B: usize = 32 * 2 * 4096 * (8 + 4 + 2);

#[derive(Parser)]
struct Args {
    /// Comma-separated node counts.
    #[arg(long, value_delimiter = ',', default_value = "10,30,100")]
    n: Vec<usize>,
    /// Runs per rule (the best is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Values per update.
    #[arg(long, default_value_t = SHAPE_7B)]
    dim: usize,
}

fn updates(n: usize, d: usize) -> Vec<Vec<f32>> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut g = normal_stream(2024, i as u64);
            (0..d).map(|_| (1e-3 * g.next_normal()) as f32).collect()
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "aggregation time per rule, d = {} f32 values, f = n/10, best of {} (seconds)",
        args.dim, args.reps
    );
    print!("{:<15}", "rule");
    for n in &args.n {
        print!("{:>12}", format!("n = {n}"));
    }
    println!();
    let data: Vec<Vec<Vec<f32>>> = args.n.iter().map(|&n| updates(n, args.dim)).collect();
    let previous = vec![0f32; args.dim];
    for rule in Rule::ALL {
        print!("{:<15}", rule.name());
        for (rows, &n) in data.iter().zip(&args.n) {
            let ids: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let inputs: Vec<Input<'_>> = rows
                .iter()
                .zip(&ids)
                .map(|(r, id)| Input {
                    node_id: id,
                    values: r,
                    weight: 100.0,
                })
                .collect();
            let mut cfg = RuleConfig::new(rule).with_f(n / 10);
            cfg.params.cc_tau = 0.1;
            let mut best = f64::INFINITY;
            for _ in 0..args.reps.max(1) {
                let t = Instant::now();
                let out = aggregate(&inputs, Some(&previous), &cfg, &Prefilter::default())?;
                best = best.min(t.elapsed().as_secs_f64());
                std::hint::black_box(out);
            }
            print!("{best:>12.4}");
        }
        println!();
    }
    Ok(())
}
