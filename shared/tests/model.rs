//! Forward-pass properties of the LLaDA transformer on small random models.
#![cfg(feature = "model")]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use ruvdllm::denoiser::{Batch, Denoiser};
use ruvdllm::model::{Config, Model, checkpoint};
use ruvdllm::train::{
    Example, LikelihoodOptions, Objective, Schedule, Trainer, masked_diffusion_loss, nll_bound,
    pack,
};

fn small_cfg(n_kv_heads: usize, qkv_bias: bool) -> Config {
    Config {
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads,
        head_dim: 16,
        mlp_hidden: 128,
        qkv_bias,
        ..Config::tiny()
    }
}

fn random_model(cfg: &Config, seed: u64) -> (VarMap, Model) {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let mut m = checkpoint::trainable(&vm, cfg, &dev).unwrap();
    // Larger random weights than the N(0, 0.02) init so logits actually depend on context.
    checkpoint::seeded_init(&vm, seed, 0.4).unwrap();
    m.set_differentiable(false);
    (vm, m)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn attention_is_bidirectional() {
    let (_vm, m) = random_model(&small_cfg(4, false), 1);
    let dev = Device::Cpu;
    let a = Tensor::new(&[[257u32, 10, 20, 30, 40, 256]], &dev).unwrap();
    let b = Tensor::new(&[[257u32, 10, 20, 30, 40, 99]], &dev).unwrap();
    let la = m.forward(&m.plain_batch(&a).unwrap()).unwrap();
    let lb = m.forward(&m.plain_batch(&b).unwrap()).unwrap();
    // Changing the last token changes the logits of the first position: no causal mask.
    let first = |t: &Tensor| t.narrow(1, 0, 1).unwrap();
    assert!(max_diff(&first(&la), &first(&lb)) > 1e-4);
}

#[test]
fn left_padding_with_key_mask_and_positions_matches_unpadded() {
    for (kv, bias) in [(4, false), (2, true)] {
        let (_vm, m) = random_model(&small_cfg(kv, bias), 2);
        let dev = Device::Cpu;
        let pad = m.config().specials.pad;
        let row = [257u32, 5, 6, 7, 256, 256];
        let alone = m
            .forward(&m.plain_batch(&Tensor::new(&[row], &dev).unwrap()).unwrap())
            .unwrap();
        let ids = Tensor::new(&[[pad, pad, 257, 5, 6, 7, 256, 256]], &dev).unwrap();
        let positions = Tensor::new(&[[0u32, 0, 0, 1, 2, 3, 4, 5]], &dev).unwrap();
        let key_mask = Some(Tensor::new(&[[0u8, 0, 1, 1, 1, 1, 1, 1]], &dev).unwrap());
        let padded = m
            .forward(&Batch {
                ids,
                positions,
                key_mask,
                t: None,
                position_delta: None,
            })
            .unwrap();
        let d = max_diff(&alone, &padded.narrow(1, 2, 6).unwrap());
        assert!(d < 1e-3, "kv={kv} bias={bias}: padded row differs by {d}");
    }
}

#[test]
fn window_forward_with_fresh_cache_equals_full_forward() {
    let (_vm, m) = random_model(&small_cfg(2, true), 3);
    let dev = Device::Cpu;
    let ids = Tensor::new(
        &[
            [257u32, 1, 2, 3, 256, 256, 256, 256],
            [257, 9, 8, 256, 7, 256, 256, 256],
        ],
        &dev,
    )
    .unwrap();
    let batch = m.plain_batch(&ids).unwrap();
    let (full, mut cache) = m.forward_cached(&batch).unwrap();
    for (start, len) in [(4, 4), (2, 3), (0, 8)] {
        let w = Denoiser::forward_window(&m, &batch, start, len, &mut cache).unwrap();
        let d = max_diff(&w, &full.narrow(1, start, len).unwrap());
        assert!(d < 1e-3, "window [{start},{}) differs by {d}", start + len);
    }
    // A stale cache (keys/values from a different canvas) gives different logits: the cache is used.
    let other = Tensor::new(
        &[
            [257u32, 50, 60, 70, 256, 256, 256, 256],
            [257, 1, 1, 256, 1, 256, 256, 256],
        ],
        &dev,
    )
    .unwrap();
    let (_, mut stale) = m.forward_cached(&m.plain_batch(&other).unwrap()).unwrap();
    let w = Denoiser::forward_window(&m, &batch, 4, 4, &mut stale).unwrap();
    assert!(max_diff(&w, &full.narrow(1, 4, 4).unwrap()) > 1e-4);
    assert!(Denoiser::forward_window(&m, &batch, 6, 4, &mut cache).is_err());
}

#[test]
fn checkpoint_roundtrip_gives_identical_logits() {
    let cfg = small_cfg(2, true);
    let (vm, m) = random_model(&cfg, 4);
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(&vm, &cfg, dir.path(), DType::F32).unwrap();
    let loaded = ruvdllm::model::load(dir.path(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(loaded.config, cfg);
    assert_eq!(loaded.kind, "ruvdllm");
    let ids = Tensor::new(&[[257u32, 1, 2, 3, 256, 256]], &Device::Cpu).unwrap();
    let a = m.forward(&m.plain_batch(&ids).unwrap()).unwrap();
    let b = loaded
        .model
        .forward(&loaded.model.plain_batch(&ids).unwrap())
        .unwrap();
    assert_eq!(max_diff(&a, &b), 0.0);
    // A checkpoint missing a tensor names it and its expected shape.
    let mut tensors =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    tensors.remove("model.transformer.blocks.1.up_proj.weight");
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    let err = ruvdllm::model::load(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.transformer.blocks.1.up_proj.weight") && err.contains("[128, 64]"),
        "{err}"
    );
}

#[test]
fn training_reduces_the_diffusion_loss_and_the_bound() {
    let cfg = small_cfg(4, false);
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let model = checkpoint::trainable(&vm, &cfg, &dev).unwrap();
    checkpoint::seeded_init(&vm, 5, 0.02).unwrap();
    // A tiny deterministic language: "ab" repeated, prompts "x" → answer "ab".
    let examples: Vec<Example> = (0..16)
        .map(|_| Example {
            prompt: b"x".iter().map(|&b| b as u32).collect(),
            answer: b"abab".iter().map(|&b| b as u32).collect(),
        })
        .collect();
    let specials = cfg.specials;
    let batch = pack(&examples, 12, specials, false);
    let opts = LikelihoodOptions {
        mc_samples: 8,
        batch: 8,
        seq_len: 12,
        seed: 1,
    };
    let before = nll_bound(&model, &examples[..2], &opts).unwrap();
    let sched = Schedule {
        peak_lr: 3e-3,
        warmup: 5,
        total: 60,
        floor: 0.1,
    };
    let mut tr = Trainer::new(vm.all_vars(), sched, 0.0, Some(1.0)).unwrap();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(9);
    for _ in 0..60 {
        let loss =
            masked_diffusion_loss(&model, &batch, Objective::Sft, (0.0, 1.0), &mut rng).unwrap();
        tr.step(&loss).unwrap();
    }
    let after = nll_bound(&model, &examples[..2], &opts).unwrap();
    assert!(
        after.per_token() < 0.5 * before.per_token(),
        "bound {} → {}",
        before.per_token(),
        after.per_token()
    );
    assert!(after.perplexity() < before.perplexity());
}
