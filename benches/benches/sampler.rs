//! Sampler overhead per generation at LLaDA-8B's vocabulary (126,464), with a "model" that
//! returns precomputed logits, so the time measured is the sampler's own: pulling the block's
//! logits to the host, f64 guidance/filtering, Gumbel-max or softmax per masked position, and
//! selection. Compare with the model's own forward time to see what the sampler adds.

use std::ops::ControlFlow;

use candle_core::{Device, Result, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use ruvdllm::denoiser::{Batch, Denoiser};
use ruvdllm::sampler::{DreamAlg, Options, Request, Rule};
use ruvdllm::tokens::SpecialTokens;
use ruvdllm::{candle_core, sampler};

const VOCAB: usize = 126_464;
const PROMPT: usize = 16;
const GEN: usize = 32;

/// Fixed pseudo-random logits `[1, PROMPT + GEN, VOCAB]`.
struct Fixed(Tensor);

impl Denoiser for Fixed {
    type Cache = ();
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn shift_logits(&self) -> bool {
        false
    }
    fn forward(&self, b: &Batch) -> Result<Tensor> {
        let rows = b.ids.dim(0)?;
        self.0.broadcast_as((rows, PROMPT + GEN, VOCAB))
    }
    fn forward_cached(&self, b: &Batch) -> Result<(Tensor, ())> {
        Ok((self.forward(b)?, ()))
    }
    fn forward_window(&self, b: &Batch, start: usize, len: usize, _: &mut ()) -> Result<Tensor> {
        self.forward(b)?.narrow(1, start, len)
    }
}

fn bench(c: &mut Criterion) {
    let l = PROMPT + GEN;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<f32> = (0..l * VOCAB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 * 12.0
        })
        .collect();
    let model = Fixed(Tensor::from_vec(data, (1, l, VOCAB), &Device::Cpu).expect("logits"));
    let special = SpecialTokens::LLADA;
    let req = Request::single((0..PROMPT as u32).collect(), 0);
    let base = Options {
        gen_length: GEN,
        block_length: GEN,
        steps: Some(GEN),
        early_stop: false,
        ..Options::default()
    };
    let dream = Rule::Dream {
        alg: DreamAlg::Entropy,
        alg_temp: 0.0,
        top_p: Some(0.95),
        top_k: None,
        eps: 1e-3,
    };
    let cases = [
        ("llada_greedy", base.clone()),
        (
            "llada_t1_gumbel",
            Options {
                temperature: 1.0,
                ..base.clone()
            },
        ),
        (
            "llada_cfg",
            Options {
                cfg_scale: 1.0,
                ..base.clone()
            },
        ),
        (
            "dream_entropy_top_p",
            Options {
                temperature: 0.2,
                rule: dream,
                ..base
            },
        ),
    ];
    let mut g = c.benchmark_group(format!("sampler_v{VOCAB}_gen{GEN}"));
    g.sample_size(10);
    for (name, opts) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                sampler::generate(&model, &Device::Cpu, &special, &opts, &req, |_| {
                    ControlFlow::Continue(())
                })
                .expect("generate")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
