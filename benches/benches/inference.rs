//! The `tiny` checkpoint on the CPU: one full forward over the seed's canvas (prompt 128 + 256
//! masked positions) and one 8-step generation of 256 tokens from a 128-token prompt.
//!
//! The checkpoint comes from `RUVDLLM_MODEL` or the committed `shared/assets/tiny`; without one
//! the bench stops with a message saying so. The tables with percentiles, batch 8, the quality
//! setting and GFLOP/s are `inference_report`'s.

use std::ops::ControlFlow;

use criterion::{Criterion, criterion_group, criterion_main};
use ruvdllm::candle_core::{Device, Tensor};
use ruvdllm::sampler::{self, Options, Request};
use ruvdllm_benches::inference::{
    FAST_STEPS, GEN_LEN, PROMPT_LEN, load_checkpoint, long_prompt, model_path,
};

fn bench(c: &mut Criterion) {
    let path = model_path(None);
    let model = match load_checkpoint(&path) {
        Ok(m) => m,
        Err(e) => panic!("inference bench needs the tiny checkpoint: {e:#}"),
    };
    let specials = model.config().specials;
    let prompt = long_prompt(PROMPT_LEN, 0);
    let mut canvas = prompt.clone();
    canvas.resize(PROMPT_LEN + GEN_LEN, specials.mask);
    let ids =
        Tensor::from_vec(canvas, (1, PROMPT_LEN + GEN_LEN), &Device::Cpu).expect("canvas tensor");
    let batch = model.plain_batch(&ids).expect("plain batch");
    let opts = Options {
        gen_length: GEN_LEN,
        block_length: GEN_LEN,
        steps: Some(FAST_STEPS),
        early_stop: false,
        ..Options::default()
    };
    let req = Request::single(prompt, 0);

    let mut g = c.benchmark_group("tiny");
    g.sample_size(10);
    g.bench_function(format!("forward_b1_l{}", PROMPT_LEN + GEN_LEN), |b| {
        b.iter(|| model.forward_full(&batch, None).expect("forward"))
    });
    g.bench_function(
        format!("generate_{FAST_STEPS}step_p{PROMPT_LEN}_g{GEN_LEN}"),
        |b| {
            b.iter(|| {
                sampler::generate(&model, &Device::Cpu, &specials, &opts, &req, |_| {
                    ControlFlow::Continue(())
                })
                .expect("generate")
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
