//! LoRA adapters written by the `peft` library against ours.
//!
//! `fixtures/gen_peft_reference.py` puts each `hf_reference/` checkpoint into transformers,
//! wraps it with `peft.get_peft_model` (LLaDA: r 4, q and v; Dream: r 3, rsLoRA, every linear),
//! draws random A and B, runs the adapted forward in float64 and commits the adapter exactly as
//! `save_pretrained` wrote it (the LLaDA one with LLaDA's module paths) with the logits. Loading
//! those folders with `Lora::load_peft` and running our forward — with the adapter as a hook, and
//! merged into the weights — must give the same logits; saving them again must write the tensor
//! names `peft` wrote, so what we write loads where `peft`'s own files do.
//!
//! With `RUVDLLM_PEFT_OUT=DIR` the test also leaves our re-saved folders in `DIR/<family>` for
//! the script's `--verify` mode, which loads them with `peft.PeftModel.from_pretrained`.

#![cfg(feature = "model")]

use std::collections::BTreeSet;
use std::path::PathBuf;

use ruvdllm::adapter::{Lora, Naming, Shape, Target};
use ruvdllm::candle_core::{DType, Device, Tensor};
use ruvdllm::model::checkpoint;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The adapter shape of the `hf_reference/<family>` checkpoint (its config only; no weights read).
fn shape_of(family: &str) -> Shape {
    Shape::from(
        &checkpoint::open(&fixtures().join("hf_reference").join(family))
            .unwrap()
            .config,
    )
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn tensor_names(dir: &std::path::Path) -> BTreeSet<String> {
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.names().into_iter().map(str::to_string).collect()
}

/// Loads `family`'s checkpoint and `peft`'s adapter, and checks the adapted logits (hooked and
/// merged) against `peft`'s: max |ours − reference| below 1e-4 of max |logit| (f32 against
/// float64). Returns the adapter.
fn check(
    family: &str,
    naming: Naming,
    r: usize,
    scale: f64,
    targets: &[Target],
) -> (Lora, PathBuf) {
    let adapter_dir = fixtures().join("peft_reference").join(family);
    let reference = ruvdllm::candle_core::safetensors::load(
        fixtures().join(format!("peft_reference/{family}_logits.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let ids = reference["input_ids"].to_dtype(DType::U32).unwrap();
    let want = &reference["logits"];
    let base_want = &ruvdllm::candle_core::safetensors::load(
        fixtures().join(format!("hf_reference/{family}_reference.safetensors")),
        &Device::Cpu,
    )
    .unwrap()["logits"];

    let mut loaded = checkpoint::load(
        &fixtures().join("hf_reference").join(family),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(Naming::of(loaded.config.arch), naming);
    let shape = Shape::from(&loaded.config);
    let (lora, config) = Lora::load_peft(&adapter_dir, shape).unwrap();
    assert_eq!(lora.r, r);
    assert!(
        (lora.scale() - scale).abs() < 1e-12,
        "{family}: scale {} (PEFT's {scale})",
        lora.scale()
    );
    assert_eq!(lora.targets, targets);
    assert_eq!(config.peft_type, "LORA");

    let scale_of_logits = max_abs(want);
    let forward = |model: &ruvdllm::model::Model| {
        let batch = model.plain_batch(&ids).unwrap();
        model.forward_full(&batch, None).unwrap().logits
    };
    // The adapter must matter: the adapted reference is far from the base one.
    assert!(max_abs(&(want - base_want).unwrap()) > 0.1 * scale_of_logits.min(1.0));

    loaded
        .model
        .set_adapter(lora.to_adapter(&loaded.model).unwrap());
    let hooked = forward(&loaded.model);
    let err = max_abs(&(&hooked - want).unwrap());
    eprintln!("{family} hooked: max |Δ logit| {err:.3e}, max |logit| {scale_of_logits:.2}");
    assert!(
        err < 1e-4 * scale_of_logits,
        "{family} hooked: max |Δ logit| {err}"
    );

    loaded.model.clear_adapter();
    lora.merge_into(&mut loaded.model).unwrap();
    let merged = forward(&loaded.model);
    let err = max_abs(&(&merged - want).unwrap());
    eprintln!("{family} merged: max |Δ logit| {err:.3e}");
    assert!(
        err < 1e-4 * scale_of_logits,
        "{family} merged: max |Δ logit| {err}"
    );
    (lora, adapter_dir)
}

/// Saving `lora` again writes the tensor names `peft` wrote; `RUVDLLM_PEFT_OUT` keeps the
/// folder. Returns the folder (and the temporary directory holding it, if any).
fn resave(
    family: &str,
    lora: &Lora,
    naming: Naming,
    peft_dir: &std::path::Path,
) -> (PathBuf, Option<tempfile::TempDir>) {
    let (out, tmp) = match std::env::var_os("RUVDLLM_PEFT_OUT") {
        Some(d) => (PathBuf::from(d).join(family), None),
        None => {
            let tmp = tempfile::tempdir().unwrap();
            (tmp.path().join(family), Some(tmp))
        }
    };
    lora.save_peft(&out, "hf_reference", naming).unwrap();
    assert_eq!(
        tensor_names(&out),
        tensor_names(peft_dir),
        "{family}: our tensor names differ from peft's"
    );
    // And it reads back as the same adapter.
    let (back, _) = Lora::load_peft(&out, lora.shape).unwrap();
    assert_eq!(&back, lora);
    (out, tmp)
}

#[test]
fn llada_adapter_written_by_peft_gives_peft_logits() {
    // r 4, lora_alpha 8: scale 2.
    let (lora, dir) = check("llada", Naming::Llada, 4, 2.0, &[Target::Q, Target::V]);
    resave("llada", &lora, Naming::Llada, &dir);
}

#[test]
fn dream_rslora_all_linear_adapter_written_by_peft_gives_peft_logits() {
    // r 3, lora_alpha 5, use_rslora: scale 5/√3.
    let (lora, dir) = check("dream", Naming::Llama, 3, 5.0 / 3f64.sqrt(), &Target::ALL);
    let (out, _tmp) = resave("dream", &lora, Naming::Llama, &dir);
    // `target_modules`: the leaves of the modules peft listed (it lists full paths for
    // "all-linear"), as a plain list.
    let ours: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("adapter_config.json")).unwrap()).unwrap();
    let theirs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap()).unwrap();
    let leaves = |v: &serde_json::Value| -> BTreeSet<String> {
        v["target_modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().rsplit('.').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(leaves(&ours), leaves(&theirs));
    // rsLoRA is written as the equivalent plain alpha (alpha·√r), which peft reads as the same
    // scale.
    assert_eq!(ours["use_rslora"], false);
    let alpha = ours["lora_alpha"].as_f64().unwrap();
    assert!((alpha / 3.0 - 5.0 / 3f64.sqrt()).abs() < 1e-12);
}

#[test]
fn an_adapter_for_another_model_or_with_mixed_names_is_refused() {
    let dream = fixtures().join("peft_reference/dream");
    let llada = shape_of("llada");
    // The Dream adapter's k/v are GQA-sized (kv_dim 32): they do not fit LLaDA's k/v (64).
    let e = Lora::load_peft(&dream, llada).unwrap_err();
    assert!(e.to_string().contains("k_proj"), "{e}");

    // One tensor renamed to the other naming: refused, naming both.
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(dream.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    tensors.sort();
    tensors[0].0 = tensors[0].0.replace(
        "model.layers.0.mlp.down_proj",
        "model.transformer.blocks.0.ff_out",
    );
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &tmp.path().join("adapter_model.safetensors"))
        .unwrap();
    std::fs::copy(
        dream.join("adapter_config.json"),
        tmp.path().join("adapter_config.json"),
    )
    .unwrap();
    let dream_shape = shape_of("dream");
    let e = Lora::load_peft(tmp.path(), dream_shape)
        .unwrap_err()
        .to_string();
    assert!(e.contains("llada") && e.contains("llama"), "{e}");
}

#[test]
fn pickled_weights_are_refused_with_the_way_out() {
    let tmp = tempfile::tempdir().unwrap();
    // An adapter saved by an old peft (or with safe_serialization=False).
    let adapter = tmp.path().join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    std::fs::copy(
        fixtures().join("peft_reference/llada/adapter_config.json"),
        adapter.join("adapter_config.json"),
    )
    .unwrap();
    std::fs::write(adapter.join("adapter_model.bin"), b"PK\x03\x04").unwrap();
    let shape = shape_of("llada");
    let e = Lora::load_peft(&adapter, shape).unwrap_err().to_string();
    assert!(
        e.contains("pickle") && e.contains("safe_serialization"),
        "{e}"
    );
    // A checkpoint folder with only pytorch_model.bin.
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(
        fixtures().join("hf_reference/llada/config.json"),
        model.join("config.json"),
    )
    .unwrap();
    std::fs::write(model.join("pytorch_model.bin"), b"PK\x03\x04").unwrap();
    let e = checkpoint::load(&model, DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("pickle") && e.contains("safe_serialization"),
        "{e}"
    );
}
