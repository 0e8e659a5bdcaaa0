//! Small random checkpoints shared by the loader tests: LLaDA-shaped (MHA, no bias) and
//! Dream-shaped (GQA, qkv bias), d_model 256 so every ggml block size divides every row.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ruvdllm::candle_core::{DType, Device, Tensor, Var};
use ruvdllm::candle_nn::{VarBuilder, VarMap};
use ruvdllm::model::config::{Arch, Config};
use ruvdllm::model::weights::VarBuilderSource;
use ruvdllm::model::{LayerRole, Model, Naming, Role, checkpoint};
use ruvdllm::tokens::SpecialTokens;

pub fn llada_cfg() -> Config {
    Config {
        arch: Arch::Llada,
        vocab_size: SpecialTokens::BYTE_VOCAB,
        d_model: 256,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 4,
        head_dim: 64,
        mlp_hidden: 512,
        max_seq_len: 64,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        qkv_bias: false,
        shift_logits: false,
        specials: SpecialTokens::BYTE,
        tie_embeddings: false,
    }
}

pub fn dream_cfg() -> Config {
    Config {
        arch: Arch::Dream,
        n_kv_heads: 2,
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-6,
        qkv_bias: true,
        shift_logits: true,
        ..llada_cfg()
    }
}

/// Every role of the model with its shape.
pub fn roles(cfg: &Config) -> Vec<(Role, Vec<usize>)> {
    let d = cfg.d_model;
    let q = cfg.n_heads * cfg.head_dim;
    let kv = cfg.n_kv_heads * cfg.head_dim;
    let mut out = vec![
        (Role::Embed, vec![cfg.vocab_size, d]),
        (Role::FinalNorm, vec![d]),
        (Role::Head, vec![cfg.vocab_size, d]),
    ];
    for i in 0..cfg.n_layers {
        let l = |r| Role::Layer(i, r);
        out.extend([
            (l(LayerRole::AttnNorm), vec![d]),
            (l(LayerRole::Q), vec![q, d]),
            (l(LayerRole::K), vec![kv, d]),
            (l(LayerRole::V), vec![kv, d]),
            (l(LayerRole::O), vec![d, q]),
            (l(LayerRole::FfnNorm), vec![d]),
            (l(LayerRole::Gate), vec![cfg.mlp_hidden, d]),
            (l(LayerRole::Up), vec![cfg.mlp_hidden, d]),
            (l(LayerRole::Down), vec![d, cfg.mlp_hidden]),
        ]);
        if cfg.qkv_bias {
            out.extend([
                (l(LayerRole::QBias), vec![q]),
                (l(LayerRole::KBias), vec![kv]),
                (l(LayerRole::VBias), vec![kv]),
            ]);
        }
    }
    out
}

/// Seeded random weights under `naming`'s tensor names. Uniform values with the scale of a
/// trained model: unit-ish embeddings, `1/sqrt(fan_in)` matrices, norms near 1, small biases.
pub fn weights(cfg: &Config, naming: Naming, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut map = HashMap::new();
    for (role, shape) in roles(cfg) {
        let n: usize = shape.iter().product();
        let (center, half) = match role {
            Role::Embed => (0.0, 1.7),
            Role::FinalNorm
            | Role::Layer(_, LayerRole::AttnNorm)
            | Role::Layer(_, LayerRole::FfnNorm) => (1.0, 0.2),
            Role::Layer(_, LayerRole::QBias | LayerRole::KBias | LayerRole::VBias) => (0.0, 0.3),
            _ => (0.0, 1.7 / (shape[1] as f32).sqrt()),
        };
        let data: Vec<f32> = (0..n)
            .map(|_| center + rng.random_range(-half..half))
            .collect();
        let t = Tensor::from_vec(data, shape, &Device::Cpu).unwrap();
        map.insert(naming.name(role), t);
    }
    map
}

/// The same tensors under another family's names.
pub fn rename(
    cfg: &Config,
    map: &HashMap<String, Tensor>,
    from: Naming,
    to: Naming,
) -> HashMap<String, Tensor> {
    roles(cfg)
        .into_iter()
        .map(|(r, _)| (to.name(r), map[&from.name(r)].clone()))
        .collect()
}

/// The f32 reference model built straight from the tensors.
pub fn model_from(cfg: &Config, map: &HashMap<String, Tensor>, naming: Naming) -> Model {
    let vb = VarBuilder::from_tensors(map.clone(), DType::F32, &Device::Cpu);
    let src = VarBuilderSource::new(vb, naming);
    Model::load(&src, cfg, DType::F32, &Device::Cpu).unwrap()
}

/// A fixed small input: two rows of 12 ids spread over the vocabulary, masks included.
pub fn ids(cfg: &Config) -> Tensor {
    let v = cfg.vocab_size as u32;
    let m = cfg.specials.mask;
    let rows: Vec<u32> = (0..24u32)
        .map(|i| if i % 5 == 3 { m } else { (i * 37 + 11) % v })
        .collect();
    Tensor::from_vec(rows, (2, 12), &Device::Cpu).unwrap()
}

pub fn logits(model: &Model, cfg: &Config) -> Tensor {
    let batch = model.plain_batch(&ids(cfg)).unwrap();
    model.forward_full(&batch, None).unwrap().logits
}

/// `‖a − b‖ / ‖b‖` over all elements.
pub fn rel_rms(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let base = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    (diff / base).sqrt()
}

/// Writes our own checkpoint folder (LLaDA names + our config) holding `map`.
pub fn save_own(cfg: &Config, map: &HashMap<String, Tensor>, dir: &Path) {
    let vm = VarMap::new();
    {
        let mut data = vm.data().lock().unwrap();
        for (k, t) in map {
            data.insert(k.clone(), Var::from_tensor(t).unwrap());
        }
    }
    checkpoint::save(&vm, cfg, dir, DType::F32).unwrap();
}

/// Writes an HF-style folder: `config.json` text and `model.safetensors` with `map`.
pub fn save_hf(config_json: &str, map: &HashMap<String, Tensor>, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config_json).unwrap();
    ruvdllm::candle_core::safetensors::save(map, dir.join("model.safetensors")).unwrap();
}
