//! Criterion bench: every aggregation rule on n = 10 updates at the 7B TALoRA shape.

use criterion::{Criterion, criterion_group, criterion_main};
use ruvdllm::aggregate::{Input, Prefilter, Rule, RuleConfig, aggregate};
use ruvdllm::privacy::normal_stream;

const SHAPE_7B: usize = 32 * 2 * 4096 * (8 + 4 + 2);

fn bench(c: &mut Criterion) {
    let n = 10;
    let rows: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let mut g = normal_stream(7, i as u64);
            (0..SHAPE_7B)
                .map(|_| (1e-3 * g.next_normal()) as f32)
                .collect()
        })
        .collect();
    let ids: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
    let inputs = Input::equal(&ids, &rows);
    let mut group = c.benchmark_group("aggregate_7b_n10");
    group.sample_size(10);
    for rule in Rule::ALL {
        let cfg = RuleConfig::new(rule).with_f(1);
        group.bench_function(rule.name(), |b| {
            b.iter(|| aggregate(&inputs, None, &cfg, &Prefilter::default()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
