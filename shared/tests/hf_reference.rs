//! Our forward pass against Hugging Face transformers' (the reference implementation).
//!
//! `fixtures/gen_hf_reference.py` builds a small random LLaDA-family model (Llama blocks,
//! bidirectional) and a Dream-family one (Qwen2: GQA, q/k/v bias, bidirectional), runs
//! transformers' forward in float64 and commits each checkpoint (the family's real tensor names
//! and config keys) with the input ids and logits. Loading those folders with `checkpoint::load`
//! and running our forward must give the same logits: this checks the architecture itself
//! (RMSNorm, non-interleaved RoPE, SwiGLU, attention, GQA, biases, the head) and the HF loaders'
//! name and config mapping against code we did not write.

#![cfg(feature = "model")]

use std::path::PathBuf;

use ruvdllm::candle_core::{DType, Device, Tensor};
use ruvdllm::model::checkpoint;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_reference")
}

/// Loads the fixture `family` and checks our logits against the reference's: the largest
/// |ours − reference| must be below 1e-4 of the largest |logit| (f32 against float64).
fn check(family: &str, kind: &str) {
    let dir = fixtures().join(family);
    let reference = ruvdllm::candle_core::safetensors::load(
        fixtures().join(format!("{family}_reference.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let ids = reference["input_ids"].to_dtype(DType::U32).unwrap();
    let want = &reference["logits"];

    let loaded = checkpoint::load(&dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(loaded.kind, kind);
    let cfg = &loaded.config;
    assert_eq!(
        want.dims(),
        &[ids.dim(0).unwrap(), ids.dim(1).unwrap(), cfg.vocab_size]
    );

    let batch = loaded.model.plain_batch(&ids).unwrap();
    let got = loaded.model.forward_full(&batch, None).unwrap().logits;
    let max_abs = |t: &Tensor| {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let (err, scale) = (max_abs(&(&got - want).unwrap()), max_abs(want));
    eprintln!("{family}: max |Δ logit| {err:.3e}, max |logit| {scale:.2}");
    assert!(
        scale > 1.0,
        "the fixture's logits are too small to test anything: {scale}"
    );
    assert!(
        err < 1e-4 * scale,
        "{family}: max |Δ logit| {err} (max |logit| {scale})"
    );
}

#[test]
fn llada_logits_match_transformers_bidirectional_llama() {
    check("llada", "hf-llada");
}

#[test]
fn dream_logits_match_transformers_bidirectional_qwen2() {
    check("dream", "hf-dream");
}
