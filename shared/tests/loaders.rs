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

/// A config.json with extra keys spliced in before the closing brace.
fn with_keys(json: &str, extra: &str) -> String {
    let end = json.rfind('}').unwrap();
    format!("{},{extra}}}", &json[..end])
}

#[test]
fn tied_embeddings_use_the_embedding_as_the_head_in_hf_and_gguf() {
    for (cfg, naming, json, key) in [
        (
            llada_cfg(),
            Naming::Llada,
            llada_json(&llada_cfg()),
            r#""weight_tying":true"#,
        ),
        (
            dream_cfg(),
            Naming::Dream,
            dream_json(&dream_cfg()),
            r#""tie_word_embeddings":true"#,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut map = rename(
            &cfg,
            &weights(&cfg, Naming::Llada, 5),
            Naming::Llada,
            naming,
        );
        // The untied reference: a head tensor equal to the embedding.
        let embed = map[&naming.name(ruvdllm::model::Role::Embed)].clone();
        map.insert(naming.name(ruvdllm::model::Role::Head), embed);
        let want = logits(&model_from(&cfg, &map, naming), &cfg);
        // The tied checkpoint has no head tensor at all.
        map.remove(&naming.name(ruvdllm::model::Role::Head));
        let hf = dir.path().join("hf");
        save_hf(&with_keys(&json, key), &map, &hf);
        let loaded = checkpoint::load(&hf, DType::F32, &Device::Cpu).unwrap();
        assert!(loaded.config.tie_embeddings, "{key}");
        let err = rel_rms(&logits(&loaded.model, &cfg), &want);
        assert!(err < 1e-6, "{key}: {err}");
        // Without the flag, the missing head is a named error.
        let untied = dir.path().join("untied");
        save_hf(&json, &map, &untied);
        let e = checkpoint::load(&untied, DType::F32, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(&naming.name(ruvdllm::model::Role::Head)), "{e}");
        // llama.cpp's layout for a tied model: no `output.weight`; it loads tied.
        let out = dir.path().join("tied.gguf");
        gguf::convert(&hf, &out, Dtype::F32).unwrap();
        let c = checkpoint::load(&out, DType::F32, &Device::Cpu).unwrap();
        assert!(c.config.tie_embeddings);
        let err = rel_rms(&logits(&c.model, &cfg), &want);
        assert!(err < 1e-5, "gguf {key}: {err}");
    }
}

#[test]
fn hf_options_that_change_the_forward_are_refused_by_name() {
    let llada = llada_json(&llada_cfg());
    let dream = dream_json(&dream_cfg());
    // What LLaDA-8B's own config.json sets: accepted.
    let real = with_keys(
        &llada,
        r#""activation_type":"silu","alibi":false,"block_type":"llama","layer_norm_type":"rms",
        "layer_norm_with_affine":true,"rope":true,"scale_logits":false,"input_emb_norm":false,
        "attention_layer_norm":false,"clip_qkv":null,"include_bias":false,"weight_tying":false,
        "multi_query_attention":null,"bias_for_layer_norm":false,"rope_full_precision":true"#,
    );
    assert_eq!(Config::from_hf_json(&real).unwrap(), llada_cfg());
    // And Dream's.
    let real = with_keys(
        &dream,
        r#""hidden_act":"silu","use_sliding_window":false,"sliding_window":null,
        "rope_scaling":null,"tie_word_embeddings":false"#,
    );
    assert_eq!(Config::from_hf_json(&real).unwrap(), dream_cfg());
    // Multi-query attention: one KV head.
    let mqa = Config::from_hf_json(&with_keys(&llada, r#""multi_query_attention":true"#)).unwrap();
    assert_eq!(mqa.n_kv_heads, 1);
    for (json, key) in [
        (&llada, r#""alibi":true"#),
        (&llada, r#""rope":false"#),
        (&llada, r#""layer_norm_type":"default""#),
        (&llada, r#""layer_norm_with_affine":false"#),
        (&llada, r#""activation_type":"gelu""#),
        (&llada, r#""block_type":"sequential""#),
        (&llada, r#""scale_logits":true"#),
        (&llada, r#""input_emb_norm":true"#),
        (&llada, r#""attention_layer_norm":true"#),
        (&llada, r#""clip_qkv":8.0"#),
        (&llada, r#""include_bias":true"#),
        (&llada, r#""num_experts":64"#),
        (&dream, r#""hidden_act":"gelu""#),
        (&dream, r#""use_sliding_window":true"#),
        (
            &dream,
            r#""rope_scaling":{"rope_type":"yarn","factor":4.0}"#,
        ),
        (&dream, r#""num_experts":8"#),
    ] {
        let e = Config::from_hf_json(&with_keys(json, key))
            .unwrap_err()
            .to_string();
        let name = key.split('"').nth(1).unwrap();
        assert!(
            e.contains(name) && e.contains("not supported"),
            "{key}: {e}"
        );
    }
    // A family we do not implement is named, not run as Dream.
    let llama = dream.replace(r#""model_type":"Dream""#, r#""model_type":"llama""#);
    let e = Config::from_hf_json(&llama).unwrap_err().to_string();
    assert!(e.contains("`llama`"), "{e}");
    let moe = llada.replace(r#""model_type":"llada""#, r#""model_type":"lladamoe""#);
    assert!(Config::from_hf_json(&moe).is_err());
}
