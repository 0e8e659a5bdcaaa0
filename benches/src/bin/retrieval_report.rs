//! Pattern-bank retrieval at 10K and 100K patterns with keys from the `tiny` model's hidden states
//! (DESIGN §8, "TALoRA retrieval"), brute force beside HNSW; composing the top-3 patterns at 10
//! positions for `small`'s shapes; DGR's per-step cost beside one `tiny` forward.
//!
//! `cargo run --release -p ruvdllm-benches --bin retrieval_report [-- --sizes 10000,100000]`

// Node-side work (retrieval, DGR, generation): the allocator of the `node` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use ruvdllm::bank::dgr::{self, Dgr, RowObservation};
use ruvdllm::bank::{Band, KeyProjection, Method, Pattern};
use ruvdllm::candle_core::{DType, Device, Tensor};
use ruvdllm_benches::inference::{load_checkpoint, model_path, percentile};
use ruvdllm_benches::retrieval::{
    KEY_SEED, StackedRows, build_bank, layout_of, model_keys, patterns, recall_at, rss_kib, texts,
};

#[derive(Parser)]
struct Args {
    /// Bank sizes.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    sizes: Vec<usize>,
    /// Query keys (taken from other canvases than the stored ones).
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Checkpoint folder (default: RUVDLLM_MODEL or the committed tiny base).
    #[arg(long)]
    model: Option<PathBuf>,
}

fn us(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e6
}

fn pcts(v: &[f64]) -> (f64, f64) {
    (
        percentile(v, 50.0).unwrap_or(f64::NAN),
        percentile(v, 99.0).unwrap_or(f64::NAN),
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = model_path(args.model.as_deref());
    let model = load_checkpoint(&path)?;
    let cfg = model.config().clone();
    let max = args.sizes.iter().copied().max().unwrap_or(0);
    let t0 = Instant::now();
    let stored = model_keys(&model, &texts(2000, 20_000, 0), max, 1)?;
    let queries = model_keys(&model, &texts(400, 400, 977), args.queries, 1_000_003)?;
    println!(
        "keys: {} stored + {} query keys from tiny hidden states (held-out + pretraining text, 50% masked), {:.1} s",
        stored.len(),
        queries.len(),
        t0.elapsed().as_secs_f64()
    );
    let layout = layout_of(&cfg);
    println!(
        "patterns: rank-2 q/v adapters for tiny's shapes ({} layers), int8 + one f32 scale per rank component; {} threads",
        cfg.n_layers,
        rayon::current_num_threads()
    );
    println!();
    println!(
        "| patterns | method | build s | single p50 µs | single p99 µs | batch-10 p50 µs | batch-10 p99 µs | recall@5 keys | top-5 by score = exact | memory MiB (index + patterns) | RSS Δ MiB |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut note = String::new();
    for &n in &args.sizes {
        let keys = &stored[..n.min(stored.len())];
        let rss0 = rss_kib();
        let t = Instant::now();
        let bank = build_bank(keys, &layout)?;
        let build = t.elapsed().as_secs_f64();
        let rss1 = rss_kib();
        let now = n as u64;
        let k = 5;
        let mut single = Vec::new();
        let mut exact_single = Vec::new();
        for q in &queries {
            single.push(us(|| {
                std::hint::black_box(bank.search(q, k, now).ok());
            }));
            exact_single.push(us(|| {
                std::hint::black_box(bank.search_exact(q, k, now).ok());
            }));
        }
        let mut batch = Vec::new();
        let mut exact_batch = Vec::new();
        for chunk in queries.chunks_exact(10) {
            let chunk = chunk.to_vec();
            batch.push(us(|| {
                std::hint::black_box(bank.search_batch(&chunk, k, now).ok());
            }));
            exact_batch.push(us(|| {
                let r: Vec<_> = chunk
                    .par_iter()
                    .map(|q| bank.search_exact(q, k, now).ok())
                    .collect();
                std::hint::black_box(r);
            }));
        }
        let recall = recall_at(&bank, &queries, 5)?;
        let mut agree = 0usize;
        for q in &queries {
            let a = bank.search(q, k, now)?;
            let b = bank.search_exact(q, k, now)?;
            agree += a.iter().filter(|s| b.iter().any(|e| e.id == s.id)).count();
        }
        let agree = agree as f64 / (queries.len() * k) as f64;
        let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
        let mem = format!(
            "{:.1} ({:.1} + {:.1})",
            mib(bank.index_bytes() + bank.pattern_bytes()),
            mib(bank.index_bytes()),
            mib(bank.pattern_bytes())
        );
        let rss = match (rss0, rss1) {
            (Some(a), Some(b)) => format!("{:.1}", (b.saturating_sub(a)) as f64 / 1024.0),
            _ => "n/a".into(),
        };
        let (s50, s99) = pcts(&single);
        let (b50, b99) = pcts(&batch);
        println!(
            "| {n} | HNSW (M=16, ef_c=200, ef=50) + re-rank of 32 | {build:.2} | {s50:.1} | {s99:.1} | {b50:.1} | {b99:.1} | {recall:.4} | {agree:.4} | {mem} | {rss} |"
        );
        let (e50, e99) = pcts(&exact_single);
        let (eb50, eb99) = pcts(&exact_batch);
        println!(
            "| {n} | brute force (exact scan) | – | {e50:.1} | {e99:.1} | {eb50:.1} | {eb99:.1} | 1 | 1 | – | – |"
        );
        if let Some(p) = bank.patterns().first() {
            note = format!(
                "one pattern: {} B adapter (int8 + scales; {} B at f32), {} B with key and metadata",
                p.adapter_bytes(),
                4 * layout.values(2),
                p.bytes()
            );
        }
        drop(bank);
    }

    println!("\n{note}");

    // Composition at small's shapes: top-3 patterns at 10 positions.
    let small = ruvdllm::model::Config::small();
    let small_layout = layout_of(&small);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let key_pool: Vec<Vec<f32>> = (0..30)
        .map(|_| (0..64).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect();
    let ps: Vec<Pattern> = patterns(&key_pool, &small_layout, Band::Domain)?;
    let xs: Vec<Vec<f32>> = (0..10)
        .map(|_| {
            (0..small.d_model)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect()
        })
        .collect();
    // What DGR does per step: write each position's Σ w_i B_i A_i into the stacked rows the
    // model's position hook takes (A rows [6, in], w·Bᵀ rows [6, out], per layer and q|v) …
    let mut stacked = StackedRows::new(&small_layout, 10, 3);
    let mut compose_t = Vec::new();
    let mut apply_t = Vec::new();
    for _ in 0..200 {
        compose_t.push(us(|| {
            for pos in 0..10 {
                let scores: Vec<f32> = (0..3).map(|j| 0.5 - 0.1 * j as f32).collect();
                let w = ruvdllm::bank::compose::weights(Method::default(), &scores)
                    .expect("finite scores");
                let parts: Vec<(&Pattern, f32)> =
                    (0..3).map(|j| (&ps[pos * 3 + j], w[j])).collect();
                stacked.compose(pos, &parts).expect("same layout");
            }
        }));
        // … and apply them: B·(A·x) at each position, every layer, q and v.
        apply_t.push(us(|| {
            for (pos, x) in xs.iter().enumerate() {
                std::hint::black_box(stacked.apply(pos, x));
            }
        }));
    }
    let (c50, c99) = pcts(&compose_t);
    let (a50, a99) = pcts(&apply_t);
    println!();
    println!(
        "compose top-3 at 10 positions, small ({} layers, q/v {}×{}), into the stacked rows DGR hands the model: \
         p50 {c50:.0} µs, p99 {c99:.0} µs; applying the 10 rank-6 deltas (B·(A·x), every layer, q and v): \
         p50 {a50:.0} µs, p99 {a99:.0} µs; both: p50 {:.0} µs",
        small.n_layers,
        small.d_model,
        small.d_model,
        c50 + a50
    );

    // DGR's per-step cost beside one tiny forward (prompt 128 + 256 masked).
    let n_dgr = args.sizes[0].min(stored.len());
    let bank = build_bank(&stored[..n_dgr], &layout)?;
    let sp = cfg.specials;
    let mut canvas: Vec<u32> = texts(10, 10, 3).concat().into_iter().take(128).collect();
    canvas.resize(128 + 256, sp.mask);
    let ids = Tensor::from_vec(canvas.clone(), (1, canvas.len()), &Device::Cpu)?;
    let batch = model.plain_batch(&ids)?;
    let mut fwd_t = Vec::new();
    let mut fwd = None;
    for _ in 0..5 {
        fwd_t.push(us(|| fwd = model.forward_full(&batch, None).ok()));
    }
    let fwd = fwd.ok_or_else(|| anyhow::anyhow!("forward failed"))?;
    let positions: Vec<usize> = (128..384).collect();
    let logits = fwd
        .logits
        .narrow(1, 128, 256)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let hidden = fwd
        .hidden
        .narrow(1, 128, 256)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let proj = KeyProjection::new(KEY_SEED, cfg.d_model)?;
    let mut d = Dgr::new(dgr::Config::default(), proj)?;
    let mut dgr_t = Vec::new();
    let mut selected = 0;
    for step in 0..50u64 {
        let row = RowObservation {
            row: 0,
            positions: &positions,
            logits: &logits,
            vocab: cfg.vocab_size,
            hidden: &hidden,
            // the domain band, where the bank's patterns live
            t: 0.5,
        };
        dgr_t.push(us(|| {
            selected = d
                .observe(step, &[row], &bank, n_dgr as u64)
                .map(|p| p.entries.len())
                .unwrap_or(0);
        }));
    }
    let (f50, _) = pcts(&fwd_t);
    let (g50, g99) = pcts(&dgr_t);
    println!(
        "DGR after one step (256 masked positions, V={}, {} positions retrieved from {} patterns, top-3 composed): \
         p50 {g50:.0} µs, p99 {g99:.0} µs = {:.2}% of one tiny forward over 384 tokens (p50 {:.1} ms); \
         applying the deltas in the forward is the adapter hook's and not included",
        cfg.vocab_size,
        selected,
        n_dgr,
        100.0 * g50 / f50,
        f50 / 1000.0
    );
    Ok(())
}
