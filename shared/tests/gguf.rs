//! GGUF round trips: random LLaDA- and Dream-shaped checkpoints written in every output type the
//! way llama.cpp's converter lays them out, loaded back through `checkpoint::load`, and compared
//! with the f32 model's logits. Plus the permutation, the error paths and `convert`.

#![cfg(feature = "model")]

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use common::*;
use ruvdllm::candle_core::quantized::gguf_file::{self, Content, Value};
use ruvdllm::candle_core::quantized::{GgmlDType, QTensor};
use ruvdllm::candle_core::{DType, Device, Tensor};
use ruvdllm::candle_nn::VarBuilder;
use ruvdllm::model::config::Config;
use ruvdllm::model::gguf::{self, Dtype, WriteOptions, permute};
use ruvdllm::model::weights::VarBuilderSource;
use ruvdllm::model::{Error, LayerRole, Naming, Role, checkpoint};

fn write_gguf(cfg: &Config, map: &HashMap<String, Tensor>, path: &Path, opts: &WriteOptions) {
    let vb = VarBuilder::from_tensors(map.clone(), DType::F32, &Device::Cpu);
    let src = VarBuilderSource::new(vb, Naming::Llada);
    gguf::write(&src, cfg, path, opts).unwrap();
}

/// Relative RMS error of the logits for one (arch, dtype), asserting the loaded config too.
fn round_trip_error(cfg: &Config, dtype: Dtype, dir: &Path) -> f32 {
    let map = weights(cfg, Naming::Llada, 7);
    let reference = logits(&model_from(cfg, &map, Naming::Llada), cfg);
    let path = dir.join(format!("{:?}-{dtype}.gguf", cfg.arch));
    write_gguf(cfg, &map, &path, &WriteOptions::new(dtype));
    let loaded = checkpoint::load(&path, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(&loaded.config, cfg, "{dtype}");
    let got = logits(&loaded.model, cfg);
    let err = rel_rms(&got, &reference);
    let bytes = std::fs::metadata(&path).unwrap().len();
    eprintln!(
        "{:?} {dtype}: relative RMS logit error {err:.3e} ({}, {bytes} bytes)",
        cfg.arch, loaded.kind
    );
    err
}

// Measured on CPU with this suite's seeds (llada / dream): F32 0 / 0, F16 4.7e-4 / 4.7e-4,
// BF16 3.8e-3 / 3.8e-3, Q8_0 1.33e-2 / 1.39e-2 (candle's CPU kernels also quantize the
// activations to Q8), Q4_0 0.147 / 0.147, Q4_K 0.133 / 0.133. Bounds sit a little above.
const BOUNDS: [(Dtype, f32); 6] = [
    (Dtype::F32, 1e-5),
    (Dtype::F16, 1e-3),
    (Dtype::Bf16, 6e-3),
    (Dtype::Q8_0, 2e-2),
    (Dtype::Q4_0, 0.2),
    (Dtype::Q4K, 0.18),
];

#[test]
fn llada_round_trips_in_every_type() {
    let dir = tempfile::tempdir().unwrap();
    for (dtype, bound) in BOUNDS {
        let err = round_trip_error(&llada_cfg(), dtype, dir.path());
        assert!(err <= bound, "llada {dtype}: {err} > {bound}");
    }
}

#[test]
fn dream_round_trips_in_every_type() {
    let dir = tempfile::tempdir().unwrap();
    for (dtype, bound) in BOUNDS {
        let err = round_trip_error(&dream_cfg(), dtype, dir.path());
        assert!(err <= bound, "dream {dtype}: {err} > {bound}");
    }
}

fn stored(path: &Path, name: &str) -> QTensor {
    let mut f = File::open(path).unwrap();
    let c = Content::read(&mut f).unwrap();
    c.tensor(&mut f, name, &Device::Cpu).unwrap()
}

#[test]
fn llada_q_and_k_are_stored_permuted_and_dream_is_not() {
    let dir = tempfile::tempdir().unwrap();
    for cfg in [llada_cfg(), dream_cfg()] {
        let map = weights(&cfg, Naming::Llada, 3);
        let path = dir.path().join("m.gguf");
        write_gguf(&cfg, &map, &path, &WriteOptions::new(Dtype::F32));
        for (role, heads) in [
            (LayerRole::Q, cfg.n_heads),
            (LayerRole::K, cfg.n_kv_heads),
            (LayerRole::QBias, cfg.n_heads),
            (LayerRole::V, cfg.n_kv_heads),
        ] {
            let r = Role::Layer(1, role);
            let Some(orig) = map.get(&Naming::Llada.name(r)) else {
                continue;
            };
            let got = stored(&path, &Naming::Gguf.name(r))
                .dequantize(&Device::Cpu)
                .unwrap();
            let permuted = cfg.arch == ruvdllm::model::Arch::Llada
                && matches!(role, LayerRole::Q | LayerRole::K | LayerRole::QBias);
            let want = if permuted {
                let map = permute::row_map(orig.dim(0).unwrap(), heads, permute::Direction::ToGguf)
                    .unwrap();
                let idx: Vec<u32> = map.into_iter().map(|i| i as u32).collect();
                orig.index_select(&Tensor::new(idx, &Device::Cpu).unwrap(), 0)
                    .unwrap()
            } else {
                orig.clone()
            };
            let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(
                diff.to_scalar::<f32>().unwrap(),
                0.0,
                "{:?} {role:?}",
                cfg.arch
            );
        }
    }
}

#[test]
fn unpermuting_quantized_rows_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = llada_cfg();
    let map = weights(&cfg, Naming::Llada, 5);
    let path = dir.path().join("q4k.gguf");
    write_gguf(&cfg, &map, &path, &WriteOptions::new(Dtype::Q4K));
    let role = Role::Layer(0, LayerRole::K);
    let raw = stored(&path, &Naming::Gguf.name(role));
    assert_eq!(raw.dtype(), GgmlDType::Q4K);
    let (src, _) = gguf::open(&path, &Device::Cpu).unwrap();
    use ruvdllm::model::WeightSource;
    let kv = cfg.n_kv_heads * cfg.head_dim;
    let w = src.matrix(role, kv, cfg.d_model).unwrap();
    assert!(matches!(w, ruvdllm::model::Weight::Quant(ref q) if q.dtype() == GgmlDType::Q4K));
    let loaded = w.to_dense(DType::F32).unwrap();
    // Dequantizing the stored rows and moving them must give exactly the loaded tensor.
    let map = permute::row_map(kv, cfg.n_kv_heads, permute::Direction::FromGguf).unwrap();
    let idx: Vec<u32> = map.into_iter().map(|i| i as u32).collect();
    let want = raw
        .dequantize(&Device::Cpu)
        .unwrap()
        .index_select(&Tensor::new(idx, &Device::Cpu).unwrap(), 0)
        .unwrap();
    let diff = (loaded - want).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn a_file_without_the_permutation_gives_different_logits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = llada_cfg();
    let map = weights(&cfg, Naming::Llada, 9);
    let reference = logits(&model_from(&cfg, &map, Naming::Llada), &cfg);
    let path = dir.path().join("hf-order.gguf");
    let opts = WriteOptions {
        permute_qk: false,
        ..WriteOptions::new(Dtype::F32)
    };
    write_gguf(&cfg, &map, &path, &opts);
    let loaded = checkpoint::load(&path, DType::F32, &Device::Cpu).unwrap();
    let err = rel_rms(&logits(&loaded.model, &cfg), &reference);
    eprintln!("unpermuted file: relative RMS logit error {err:.3e}");
    assert!(
        err > 0.05,
        "un-permuting a file in HF order should change the logits ({err})"
    );
}

/// Copies a GGUF file, letting the test edit its metadata and tensors.
fn rewrite(
    from: &Path,
    to: &Path,
    edit_meta: impl FnOnce(&mut HashMap<String, Value>),
    edit_tensors: impl FnOnce(&mut Vec<(String, QTensor)>),
) {
    let mut f = File::open(from).unwrap();
    let c = Content::read(&mut f).unwrap();
    let mut tensors: Vec<(String, QTensor)> = c
        .tensor_infos
        .keys()
        .map(|n| (n.clone(), c.tensor(&mut f, n, &Device::Cpu).unwrap()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut meta = c.metadata;
    edit_meta(&mut meta);
    edit_tensors(&mut tensors);
    let kv: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = File::create(to).unwrap();
    gguf_file::write(&mut out, &kv, &ts).unwrap();
}

fn load_err(path: &Path) -> Error {
    match checkpoint::load(path, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

#[test]
fn bad_files_give_typed_errors_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = llada_cfg();
    let good = dir.path().join("good.gguf");
    write_gguf(
        &cfg,
        &weights(&cfg, Naming::Llada, 1),
        &good,
        &WriteOptions::new(Dtype::Q8_0),
    );
    let bad = dir.path().join("bad.gguf");

    rewrite(
        &good,
        &bad,
        |_| {},
        |t| t.retain(|(n, _)| n != "blk.1.ffn_up.weight"),
    );
    let e = load_err(&bad);
    assert!(
        matches!(e, Error::MissingTensor { ref name, ref expected }
        if name == "blk.1.ffn_up.weight" && expected == &[512, 256]),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("blk.1.ffn_up.weight") && msg.contains("[512, 256]"),
        "{msg}"
    );

    rewrite(
        &good,
        &bad,
        |_| {},
        |t| {
            for (n, q) in t.iter_mut() {
                if n == "blk.0.attn_v.weight" {
                    let wrong = Tensor::zeros((128, 256), DType::F32, &Device::Cpu).unwrap();
                    *q = QTensor::quantize(&wrong, GgmlDType::Q8_0).unwrap();
                }
            }
        },
    );
    let e = load_err(&bad);
    assert!(
        matches!(e, Error::TensorShape { ref name, ref expected, ref got }
        if name == "blk.0.attn_v.weight" && expected == &[256, 256] && got == &[128, 256]),
        "{e}"
    );

    rewrite(
        &good,
        &bad,
        |m| {
            m.insert("general.architecture".into(), Value::String("llama".into()));
        },
        |_| {},
    );
    let e = load_err(&bad);
    assert!(
        matches!(e, Error::Gguf(gguf::Error::UnknownArch { ref arch }) if arch == "llama"),
        "{e}"
    );

    rewrite(
        &good,
        &bad,
        |m| {
            m.remove("llada.attention.layer_norm_rms_epsilon");
        },
        |_| {},
    );
    let e = load_err(&bad);
    assert!(
        e.to_string()
            .contains("llada.attention.layer_norm_rms_epsilon"),
        "{e}"
    );

    // A block count the tensor table cannot hold is refused before anything is sized by it.
    rewrite(
        &good,
        &bad,
        |m| {
            m.insert("llada.block_count".into(), Value::U64(1 << 40));
        },
        |_| {},
    );
    let e = load_err(&bad);
    assert!(
        matches!(e, Error::Gguf(gguf::Error::Invalid { ref key, .. }) if key == "llada.block_count"),
        "{e}"
    );

    // Not a GGUF file at all, and a truncated one.
    std::fs::write(&bad, b"definitely not gguf").unwrap();
    assert!(matches!(
        load_err(&bad),
        Error::Gguf(gguf::Error::File { .. })
    ));
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&bad);
    assert!(matches!(e, Error::Load { .. }), "{e}");
}

#[test]
fn convert_writes_a_loadable_file_with_the_byte_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = llada_cfg();
    let map = weights(&cfg, Naming::Llada, 11);
    let reference = logits(&model_from(&cfg, &map, Naming::Llada), &cfg);
    let ck = dir.path().join("ck");
    save_own(&cfg, &map, &ck);
    let out = dir.path().join("tiny-q8_0.gguf");
    gguf::convert(&ck, &out, "q8_0".parse().unwrap()).unwrap();

    let mut f = File::open(&out).unwrap();
    let c = Content::read(&mut f).unwrap();
    let md = &c.metadata;
    assert_eq!(md["general.architecture"].to_string().unwrap(), "llada");
    assert!(!md["llada.attention.causal"].to_bool().unwrap());
    assert!(!md["diffusion.shift_logits"].to_bool().unwrap());
    assert_eq!(md["tokenizer.ggml.mask_token_id"].to_u32().unwrap(), 256);
    let toks = md["tokenizer.ggml.tokens"].to_vec().unwrap();
    assert_eq!(toks.len(), 260);
    assert_eq!(toks[0x41].to_string().unwrap(), "<0x41>");
    assert_eq!(toks[256].to_string().unwrap(), "<|mdm_mask|>");
    assert_eq!(c.tensor_infos["output.weight"].ggml_dtype, GgmlDType::Q8_0);
    assert_eq!(
        c.tensor_infos["output_norm.weight"].ggml_dtype,
        GgmlDType::F32
    );

    let loaded = checkpoint::load(&out, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(loaded.kind, "gguf:q8_0");
    assert_eq!(loaded.config, cfg);
    assert!(rel_rms(&logits(&loaded.model, &cfg), &reference) < 2e-2);
    assert!("q3_k".parse::<Dtype>().is_err());
}
