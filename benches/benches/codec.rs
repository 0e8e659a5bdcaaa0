//! Criterion bench of the delta codec on the 7B-shaped TALoRA delta (14.7 MB at f32): encode and
//! decode throughput for the modes a node would pick, counted in raw f32 bytes.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ruvdllm::codec::{self, EncodeOptions, ErrorFeedback, Limits, Mode};
use ruvdllm_benches::talora_7b_delta;

fn codec_7b(c: &mut Criterion) {
    let delta = talora_7b_delta(1, false);
    let mut g = c.benchmark_group("codec_7b");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((delta.numel() * 4) as u64));
    for m in [
        "f32",
        "bf16",
        "int8",
        "int4",
        "int8+topk:0.1",
        "int4+topk:0.01",
    ] {
        let mode: Mode = m.parse().expect("valid mode");
        let opts = EncodeOptions::new(mode);
        g.bench_function(format!("encode/{m}"), |b| {
            b.iter(|| codec::encode(black_box(&delta), &opts).expect("encodes"))
        });
        let bytes = codec::encode(&delta, &opts).expect("encodes");
        g.bench_function(format!("decode/{m}"), |b| {
            b.iter(|| codec::decode(black_box(&bytes), &Limits::default()).expect("decodes"))
        });
    }
    let opts = EncodeOptions::new("int8+topk:0.1".parse().expect("valid mode"));
    g.bench_function("error_feedback/int8+topk:0.1", |b| {
        let mut ef = ErrorFeedback::new();
        b.iter(|| ef.encode(black_box(&delta), &opts).expect("encodes"))
    });
    g.finish();
}

criterion_group!(benches, codec_7b);
criterion_main!(benches);
