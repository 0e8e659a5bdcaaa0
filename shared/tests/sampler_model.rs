//! The sampler on the real LLaDA-architecture model (tiny, randomly initialised): the
//! block-wise caches go through the model's own `forward_cached` / `forward_window`, and with a
//! refresh at every step reproduce the uncached result exactly.
#![cfg(feature = "model")]

use std::ops::ControlFlow;

use candle_core::Device;
use candle_nn::VarMap;
use ruvdllm::model::{Config, Model, checkpoint};
use ruvdllm::sampler::{CacheMode, DreamAlg, Options, Output, Request, Rule, generate};
use ruvdllm::tokens::SpecialTokens;

fn model(shift: bool) -> Model {
    let cfg = Config {
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 2,
        head_dim: 16,
        mlp_hidden: 64,
        max_seq_len: 64,
        shift_logits: shift,
        ..Config::tiny()
    };
    let varmap = VarMap::new();
    let mut m = checkpoint::trainable(&varmap, &cfg, &Device::Cpu).expect("tiny model");
    m.set_differentiable(false);
    m
}

fn run(model: &Model, opts: &Options) -> Output {
    let req = Request::with_seeds(vec![b"ab=".iter().map(|&b| u32::from(b)).collect()], 3);
    generate(
        model,
        &Device::Cpu,
        &SpecialTokens::BYTE,
        opts,
        &req,
        |_| ControlFlow::Continue(()),
    )
    .expect("generation succeeds")
}

#[test]
fn real_model_caches() {
    for shift in [false, true] {
        let m = model(shift);
        let base = Options {
            gen_length: 12,
            block_length: 4,
            steps: Some(12),
            temperature: 0.5,
            early_stop: false,
            rule: if shift {
                Rule::Dream {
                    alg: DreamAlg::MaskgitPlus,
                    alg_temp: 0.0,
                    top_p: None,
                    top_k: None,
                    eps: 1e-3,
                }
            } else {
                Rule::default()
            },
            ..Options::default()
        };
        let plain = run(&m, &base);
        assert_eq!(plain.nfe, 12);
        for cache in [CacheMode::Prefix, CacheMode::Dual] {
            let every = run(
                &m,
                &Options {
                    cache,
                    refresh_every: Some(1),
                    ..base.clone()
                },
            );
            assert_eq!(every.rows, plain.rows, "{cache:?} shift={shift}");
            let per_block = run(
                &m,
                &Options {
                    cache,
                    ..base.clone()
                },
            );
            assert_eq!((per_block.nfe, per_block.window_nfe), (12, 9));
            assert!(!per_block.rows[0].ids.contains(&SpecialTokens::BYTE.mask));
        }
    }
}
