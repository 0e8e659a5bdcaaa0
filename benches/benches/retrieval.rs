//! Bank retrieval at 10K patterns keyed on `tiny` hidden states (HNSW vs brute force, single query
//! and a batch of 10) and composing the top-3 patterns at 10 positions for `small`'s shapes. The
//! 100K table, recall and memory are `retrieval_report`'s.

use criterion::{Criterion, criterion_group, criterion_main};
use ruvdllm::bank::{Band, Pattern};
use ruvdllm_benches::inference::{load_checkpoint, model_path};
use ruvdllm_benches::retrieval::{StackedRows, build_bank, layout_of, model_keys, patterns, texts};

fn bench(c: &mut Criterion) {
    let model = match load_checkpoint(&model_path(None)) {
        Ok(m) => m,
        Err(e) => panic!("retrieval bench needs the tiny checkpoint: {e:#}"),
    };
    let keys = model_keys(&model, &texts(1000, 2000, 0), 10_000, 1).expect("keys");
    let queries = model_keys(&model, &texts(100, 100, 977), 100, 2).expect("query keys");
    let bank = build_bank(&keys, &layout_of(model.config())).expect("bank");
    let mut g = c.benchmark_group("bank_10k");
    let mut i = 0;
    g.bench_function("hnsw_search_top5", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            bank.search(&queries[i], 5, 10_000).expect("search")
        })
    });
    g.bench_function("exact_search_top5", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            bank.search_exact(&queries[i], 5, 10_000).expect("search")
        })
    });
    g.bench_function("hnsw_batch10_top5", |b| {
        b.iter(|| {
            i = (i + 10) % (queries.len() - 10);
            bank.search_batch(&queries[i..i + 10], 5, 10_000)
                .expect("search")
        })
    });
    g.finish();

    let small = layout_of(&ruvdllm::model::Config::small());
    let ps: Vec<Pattern> = patterns(&keys[..30], &small, Band::Domain).expect("patterns");
    // DGR's composition: each position's Σ w_i B_i A_i written into stacked rows, every linear.
    let mut stacked = StackedRows::new(&small, 10, 3);
    c.bench_function("compose_top3_x10_small", |b| {
        b.iter(|| {
            for pos in 0..10 {
                let parts: Vec<(&Pattern, f32)> = (0..3)
                    .map(|j| (&ps[pos * 3 + j], 0.5 - 0.1 * j as f32))
                    .collect();
                stacked.compose(pos, &parts).expect("same layout");
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
