//! HF-named safetensors checkpoints (LLaDA's names, Dream's names) and the project's own format
//! hold the same random weights; `checkpoint::load` must give the same logits for all of them, and
//! for the GGUF conversion of each.

#![cfg(feature = "model")]

mod common;

use common::*;
use ruvdllm::candle_core::{DType, Device};
use ruvdllm::model::config::Config;
use ruvdllm::model::gguf::{self, Dtype};
use ruvdllm::model::{Naming, checkpoint};

fn llada_json(cfg: &Config) -> String {
    let s = cfg.specials;
    format!(
        r#"{{"model_type":"llada","d_model":{},"n_heads":{},"n_kv_heads":{},"n_layers":{},
        "mlp_hidden_size":{},"vocab_size":{},"embedding_size":{},"max_sequence_length":{},
        "rope_theta":{:?},"rms_norm_eps":{:e},"include_qkv_bias":false,"mask_token_id":{},
        "bos_token_id":{},"eos_token_id":{},"pad_token_id":{}}}"#,
        cfg.d_model,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.n_layers,
        cfg.mlp_hidden,
        cfg.vocab_size,
        cfg.vocab_size,
        cfg.max_seq_len,
        cfg.rope_theta,
        cfg.rms_norm_eps,
        s.mask,
        s.bos,
        s.eos,
        s.pad
    )
}

fn dream_json(cfg: &Config) -> String {
    let s = cfg.specials;
    format!(
        r#"{{"model_type":"Dream","hidden_size":{},"num_attention_heads":{},
        "num_key_value_heads":{},"num_hidden_layers":{},"intermediate_size":{},"vocab_size":{},
        "max_position_embeddings":{},"rope_theta":{:?},"rms_norm_eps":{:e},"mask_token_id":{},
        "bos_token_id":{},"eos_token_id":{},"pad_token_id":{}}}"#,
        cfg.d_model,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.n_layers,
        cfg.mlp_hidden,
        cfg.vocab_size,
        cfg.max_seq_len,
        cfg.rope_theta,
        cfg.rms_norm_eps,
        s.mask,
        s.bos,
        s.eos,
        s.pad
    )
}

/// Loads `own` and `hf`, checks kinds and configs, and returns the logits' relative difference.
fn compare(cfg: &Config, hf_naming: Naming, json: &str, hf_kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let map = weights(cfg, Naming::Llada, 21);
    let own = dir.path().join("own");
    save_own(cfg, &map, &own);
    let hf = dir.path().join("hf");
    save_hf(json, &rename(cfg, &map, Naming::Llada, hf_naming), &hf);

    let a = checkpoint::load(&own, DType::F32, &Device::Cpu).unwrap();
    let b = checkpoint::load(&hf.join("model.safetensors"), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(a.kind, "ruvdllm");
    assert_eq!(b.kind, hf_kind);
    assert_eq!(&a.config, cfg);
    assert_eq!(&b.config, cfg);
    let la = logits(&a.model, cfg);
    let lb = logits(&b.model, cfg);
    let err = rel_rms(&lb, &la);
    assert!(err < 1e-6, "{hf_kind} vs ours: {err}");

    // The GGUF conversion of the HF folder matches too (F32: exact up to rounding).
    let out = dir.path().join("hf.gguf");
    gguf::convert(&hf, &out, Dtype::F32).unwrap();
    let c = checkpoint::load(&out, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(&c.config, cfg);
    let err = rel_rms(&logits(&c.model, cfg), &la);
    assert!(err < 1e-5, "gguf of {hf_kind} vs ours: {err}");
}

#[test]
fn hf_llada_folder_matches_our_checkpoint() {
    compare(
        &llada_cfg(),
        Naming::Llada,
        &llada_json(&llada_cfg()),
        "hf-llada",
    );
}

#[test]
fn hf_dream_folder_matches_our_checkpoint() {
    compare(
        &dream_cfg(),
        Naming::Dream,
        &dream_json(&dream_cfg()),
        "hf-dream",
    );
}

#[test]
fn missing_hf_tensor_is_named_with_its_shape() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dream_cfg();
    let mut map = rename(
        &cfg,
        &weights(&cfg, Naming::Llada, 2),
        Naming::Llada,
        Naming::Dream,
    );
    map.remove("model.layers.1.self_attn.k_proj.bias");
    save_hf(&dream_json(&cfg), &map, dir.path());
    let e = match checkpoint::load(dir.path(), DType::F32, &Device::Cpu) {
        Ok(_) => panic!("loaded without a tensor"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("model.layers.1.self_attn.k_proj.bias") && e.contains("[128]"),
        "{e}"
    );
}
