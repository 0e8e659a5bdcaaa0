//! Loading the model a command runs on: our checkpoints, HF folders and GGUF files alike; the
//! committed `tiny` base when no `--model` is given.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ruvdllm::candle_core::{DType, Device};
use ruvdllm::model::{DeviceSpec, LoadedModel};
use ruvdllm::tokenizer::{self, ChatTemplate, Tokenizer};

/// The model a command runs on, and the adapters applied to it.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Checkpoint folder, HF folder or .gguf file (default: the committed tiny base).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Compute device: `cpu`, `cuda` (GPU 0) or `cuda:N`; GPUs need a build with
    /// `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// A TALoRA adapter folder (written by `node finetune`) to apply on top of the model.
    #[arg(long)]
    pub talora: Option<PathBuf>,
    /// A PEFT LoRA adapter folder (`adapter_model.safetensors` + `adapter_config.json`, as
    /// `peft` or `node finetune` writes it; LLaDA or Llama/Qwen2 module names) applied to the
    /// model; repeat to stack several (they are merged into the weights).
    #[arg(long)]
    pub lora: Vec<PathBuf>,
}

impl ModelArgs {
    /// The model folder or file.
    pub fn path(&self) -> PathBuf {
        resolve(self.model.as_deref())
    }

    /// Loads the model onto the device with its tokenizer and applies the adapters; returns
    /// their description too (`""` without any).
    pub fn load(&self) -> anyhow::Result<(LoadedModel, Box<dyn Tokenizer>, String)> {
        let (mut loaded, tok) = load_on(self.model.as_deref(), self.device)?;
        let adapters = apply_adapters(&mut loaded.model, &self.lora, self.talora.as_deref())?;
        Ok((loaded, tok, adapters))
    }
}

/// The model folder or file: `--model`, else the committed `tiny` base.
pub fn resolve(model: Option<&Path>) -> PathBuf {
    model
        .map(Path::to_path_buf)
        .unwrap_or_else(ruvdllm::eval::tiny_base_dir)
}

/// [`load_on`] the CPU.
pub fn load(model: Option<&Path>) -> anyhow::Result<(LoadedModel, Box<dyn Tokenizer>)> {
    load_on(model, DeviceSpec::Cpu)
}

/// Loads the model (f32) onto `device` with its tokenizer, checking that the tokenizer's ids fit
/// the model's vocabulary.
pub fn load_on(
    model: Option<&Path>,
    device: DeviceSpec,
) -> anyhow::Result<(LoadedModel, Box<dyn Tokenizer>)> {
    let path = resolve(model);
    let dev: Device = device.open()?;
    let mut loaded = ruvdllm::model::load(&path, DType::F32, &dev)
        .with_context(|| format!("loading model from {} onto {device}", path.display()))?;
    // A GGUF file's own vocabulary, when no tokenizer.json sits beside it.
    let embedded = match loaded.embedded_tokenizer.take() {
        Some(Ok(t)) => Some(Box::new(t) as Box<dyn Tokenizer>),
        Some(Err(e)) => anyhow::bail!("{}: {e}", path.display()),
        None => None,
    };
    // Otherwise, without a `tokenizer.json` the built-in byte tokenizer is used, which only fits
    // models trained on it: running a real vocabulary's model on byte ids would be silent nonsense.
    anyhow::ensure!(
        embedded.is_some()
            || loaded.tokenizer_dir.is_some()
            || loaded.config.specials == ruvdllm::tokens::SpecialTokens::BYTE,
        "{} has a {}-token vocabulary (mask id {}) but no tokenizer.json beside it: put the \
         checkpoint's tokenizer.json (with tokenizer_config.json) in {}; the built-in byte \
         tokenizer only fits byte-vocabulary models",
        path.display(),
        loaded.config.vocab_size,
        loaded.config.specials.mask,
        if path.is_dir() {
            path.display().to_string()
        } else {
            path.parent()
                .map_or_else(|| ".".into(), |p| p.display().to_string())
        }
    );
    let tok = match embedded {
        Some(t) => t,
        None => {
            tokenizer::load(loaded.tokenizer_dir.as_deref()).context("loading the tokenizer")?
        }
    };
    anyhow::ensure!(
        tok.vocab_size() <= loaded.config.vocab_size,
        "tokenizer has {} ids but the model's vocabulary is {}",
        tok.vocab_size(),
        loaded.config.vocab_size
    );
    Ok((loaded, tok))
}

/// The chat template to serve: `file` (`--chat-template`; rendered with the checkpoint's
/// special-token strings) or the checkpoint's own; `Err` says why there is none. Takes the
/// checkpoint's template out of `loaded`.
pub fn chat_template(
    loaded: &mut LoadedModel,
    file: Option<&Path>,
) -> anyhow::Result<Result<ChatTemplate, String>> {
    let own = loaded.chat_template.take();
    let Some(file) = file else {
        return Ok(match own {
            Some(Ok(t)) => Ok(t),
            Some(Err(e)) => Err(format!("the served model's chat template is unusable: {e}")),
            None => Err(crate::serve::NO_CHAT_TEMPLATE.to_string()),
        });
    };
    let source = std::fs::read_to_string(file)
        .with_context(|| format!("reading the chat template {}", file.display()))?;
    let variables = match (&own, &loaded.tokenizer_dir) {
        (Some(Ok(t)), _) => t.variables().clone(),
        (_, Some(dir)) => ruvdllm::tokenizer::chat::folder_variables(dir)?,
        _ => Default::default(),
    };
    let t = ChatTemplate::new(&source, variables)
        .with_context(|| format!("the chat template {}", file.display()))?;
    Ok(Ok(t))
}

/// SHA-256 (hex) identifying a base checkpoint: of the file itself, or, for a folder, over its
/// regular files in name order (each contributes its name, its length and its bytes), so a
/// folder checkpoint (config + weights) hashes the same on every machine. Files are streamed,
/// never read whole.
pub fn checkpoint_hash(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    fn stream(h: &mut Sha256, path: &Path) -> std::io::Result<()> {
        let mut f = std::fs::File::open(path)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            h.update(&buf[..n]);
        }
    }
    let mut h = Sha256::new();
    if path.is_dir() {
        let mut files: Vec<(String, PathBuf, u64)> = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            let meta = e.metadata()?;
            if meta.is_file() {
                files.push((
                    e.file_name().to_string_lossy().into_owned(),
                    e.path(),
                    meta.len(),
                ));
            }
        }
        files.sort();
        for (name, p, len) in files {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update(len.to_le_bytes());
            stream(&mut h, &p)?;
        }
    } else {
        stream(&mut h, path)?;
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The PEFT LoRA adapters of `--lora` (and, when given, the TALoRA adapter of `--talora`) on
/// `model`, as `peft` applies them: each LoRA adds `scale·B·A` to its linears. A lone LoRA is
/// attached as a hook, which works on every weight type (quantized GGUF included); several, or
/// one under a TALoRA adapter (which takes the model's one hook), are merged into the dense
/// weights, as PEFT's `merge_and_unload` does. Returns a description for the output header.
pub fn apply_adapters(
    model: &mut ruvdllm::model::Model,
    loras: &[PathBuf],
    talora: Option<&Path>,
) -> anyhow::Result<String> {
    use ruvdllm::adapter::{Lora, Shape};
    let merge = loras.len() > 1 || talora.is_some();
    let mut described = String::new();
    for dir in loras {
        let (lora, config) = Lora::load_peft(dir, Shape::from(model.config()))
            .with_context(|| format!("loading the PEFT LoRA adapter from {}", dir.display()))?;
        if merge {
            lora.merge_into(model).with_context(|| {
                format!(
                    "merging {} into the base weights (several --lora, or --lora under                      --talora, need a dense checkpoint: safetensors or an F32/F16/BF16 GGUF)",
                    dir.display()
                )
            })?;
        } else {
            let adapter = lora
                .to_adapter(model)
                .with_context(|| format!("{} does not fit this model", dir.display()))?;
            model.set_adapter(adapter);
        }
        described.push_str(&format!(
            " + LoRA {} (r {}, scale {:.4}{}, {})",
            dir.display(),
            lora.r,
            lora.scale(),
            if config.use_rslora { ", rsLoRA" } else { "" },
            lora.targets
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if let Some(dir) = talora {
        attach_talora(model, dir)?;
        described.push_str(&format!(" + TALoRA {}", dir.display()));
    }
    Ok(described)
}

/// Attaches the TALoRA adapter saved in `dir` (see `node finetune`) to `model`.
pub fn attach_talora(model: &mut ruvdllm::model::Model, dir: &Path) -> anyhow::Result<()> {
    let t = ruvdllm::adapter::Talora::load(dir)
        .with_context(|| format!("loading the TALoRA adapter from {}", dir.display()))?;
    let adapter = t
        .to_adapter(model)
        .with_context(|| format!("{} does not fit this model", dir.display()))?;
    model.set_adapter(adapter);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruvdllm::adapter::{Lora, Naming, Shape, Spec, Talora, Target};
    use ruvdllm::candle_core::Tensor;

    fn logits(model: &ruvdllm::model::Model) -> Tensor {
        let ids = Tensor::new(&[[40u32, 41, 42, 43, 44, 45, 46, 47]], model.device()).unwrap();
        let batch = model.plain_batch(&ids).unwrap();
        model.forward_full(&batch, None).unwrap().logits
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// A PEFT folder holding a LoRA on `targets` with a deterministic non-zero B.
    fn lora_dir(
        root: &Path,
        name: &str,
        shape: Shape,
        r: usize,
        targets: Vec<Target>,
        seed: u64,
    ) -> PathBuf {
        let mut lora = Lora::new(r, 2.0 * r as f64, targets, shape, seed).unwrap();
        for (k, t) in lora.b.tensors.iter_mut().enumerate() {
            for (i, v) in t.data.iter_mut().enumerate() {
                *v = (((i * 7 + k * 13 + seed as usize) % 17) as f32 - 8.0) * 0.01;
            }
        }
        let dir = root.join(name);
        lora.save_peft(&dir, "tiny", Naming::Llada).unwrap();
        dir
    }

    #[test]
    fn a_real_vocabulary_without_tokenizer_json_is_refused() {
        use ruvdllm::candle_core::{DType, Device};
        use ruvdllm::candle_nn::VarMap;
        use ruvdllm::model::checkpoint;
        let tmp = tempfile::tempdir().unwrap();
        // A small model with its own (non-byte) vocabulary and specials, as a real checkpoint.
        let mut cfg = ruvdllm::model::Config::tiny();
        cfg.n_layers = 1;
        cfg.vocab_size = 320;
        cfg.specials = ruvdllm::tokens::SpecialTokens {
            mask: 319,
            bos: 316,
            eos: 317,
            pad: 318,
            eot: None,
        };
        let varmap = VarMap::new();
        checkpoint::trainable(&varmap, &cfg, &Device::Cpu).unwrap();
        checkpoint::seeded_init(&varmap, 1, 0.02).unwrap();
        let dir = tmp.path().join("model");
        checkpoint::save(&varmap, &cfg, &dir, DType::F32).unwrap();
        let e = load(Some(&dir)).err().unwrap().to_string();
        assert!(
            e.contains("320-token vocabulary") && e.contains("tokenizer.json"),
            "{e}"
        );
        // The committed byte-vocabulary base needs none.
        assert!(load(None).is_ok());
    }

    #[test]
    fn a_gguf_file_brings_its_own_vocabulary() {
        use ruvdllm::candle_core::quantized::gguf_file::{self, Content};
        use ruvdllm::candle_core::{DType, Device};
        use ruvdllm::candle_nn::{VarBuilder, VarMap};
        use ruvdllm::model::gguf::{self as g, Dtype, Vocab, WriteOptions};
        use ruvdllm::model::weights::VarBuilderSource;
        let tmp = tempfile::tempdir().unwrap();
        // A small Dream-family model over the fixture's 400-token qwen2 vocabulary.
        let mut cfg = ruvdllm::model::Config {
            n_layers: 1,
            vocab_size: 400,
            ..ruvdllm::model::Config::tiny()
        };
        cfg.arch = ruvdllm::model::config::Arch::Dream;
        cfg.qkv_bias = true;
        cfg.shift_logits = true;
        cfg.specials = ruvdllm::tokens::SpecialTokens {
            mask: 1,
            bos: 0,
            eos: 0,
            pad: 0,
            eot: None,
        };
        let varmap = VarMap::new();
        checkpoint_trainable(&varmap, &cfg);
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let src = VarBuilderSource::new(vb, ruvdllm::model::Naming::Llada);
        let bare = tmp.path().join("bare.gguf");
        let opts = WriteOptions {
            vocab: Vocab::None,
            ..WriteOptions::new(Dtype::F32)
        };
        g::write(&src, &cfg, &bare, &opts).unwrap();
        // Add the vocabulary as llama.cpp's converter writes it (the fixture's keys).
        let vocab_file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/tests/fixtures/gguf_vocab/qwen2.gguf");
        let vocab = Content::read(&mut std::fs::File::open(&vocab_file).unwrap()).unwrap();
        let mut f = std::fs::File::open(&bare).unwrap();
        let model = Content::read(&mut f).unwrap();
        let mut kv: Vec<(String, gguf_file::Value)> = model.metadata.clone().into_iter().collect();
        kv.extend(
            vocab
                .metadata
                .iter()
                .filter(|(k, _)| k.starts_with("tokenizer.ggml."))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        // And a chat template, as the converter copies it from tokenizer_config.json.
        let template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{{ eos_token }}";
        kv.push((
            "tokenizer.chat_template".into(),
            gguf_file::Value::String(template.into()),
        ));
        let tensors: Vec<(String, ruvdllm::candle_core::quantized::QTensor)> = model
            .tensor_infos
            .keys()
            .map(|n| (n.clone(), model.tensor(&mut f, n, &Device::Cpu).unwrap()))
            .collect();
        let path = tmp.path().join("model.gguf");
        let mut out = std::fs::File::create(&path).unwrap();
        gguf_file::write(
            &mut out,
            &kv.iter().map(|(k, v)| (k.as_str(), v)).collect::<Vec<_>>(),
            &tensors
                .iter()
                .map(|(n, t)| (n.as_str(), t))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        drop(out);
        // Loaded alone, the file tokenizes with its own vocabulary and chats with its template,
        // whose BOS / EOS strings are the vocabulary's.
        let (mut loaded, tok) = load(Some(&path)).unwrap();
        let chat = chat_template(&mut loaded, None).unwrap().unwrap();
        let token0 = match &vocab.metadata["tokenizer.ggml.tokens"] {
            gguf_file::Value::Array(a) => match &a[0] {
                gguf_file::Value::String(s) => s.clone(),
                _ => unreachable!(),
            },
            _ => unreachable!(),
        };
        let msgs = [serde_json::json!({"role": "user", "content": "hi"})];
        assert_eq!(
            chat.render(&msgs, None, true).unwrap(),
            format!("{token0}[user]hi{token0}")
        );
        // --chat-template replaces it, keeping the special-token strings.
        let file = tmp.path().join("t.jinja");
        std::fs::write(&file, "<{{ bos_token }}>").unwrap();
        let (mut loaded2, _) = load(Some(&path)).unwrap();
        let own = chat_template(&mut loaded2, Some(&file)).unwrap().unwrap();
        assert_eq!(
            own.render(&msgs, None, true).unwrap(),
            format!("<{token0}>")
        );
        let cases: serde_json::Value = serde_json::from_slice(
            &std::fs::read(vocab_file.with_file_name("qwen2_ids.json")).unwrap(),
        )
        .unwrap();
        let text = cases[0]["text"].as_str().unwrap();
        let want: Vec<u32> = cases[0]["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.try_encode(text).unwrap(), want);
        // Without the vocabulary the refusal names the missing tokenizer.json.
        let e = load(Some(&bare)).err().unwrap().to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
        // A base model (the tiny one) has no template: the reason, not an error.
        let (mut tiny, _) = load(None).unwrap();
        let why = chat_template(&mut tiny, None).unwrap().unwrap_err();
        assert!(why.contains("no chat template"), "{why}");
    }

    fn checkpoint_trainable(varmap: &ruvdllm::candle_nn::VarMap, cfg: &ruvdllm::model::Config) {
        use ruvdllm::model::checkpoint;
        checkpoint::trainable(varmap, cfg, &ruvdllm::candle_core::Device::Cpu).unwrap();
        checkpoint::seeded_init(varmap, 2, 0.02).unwrap();
    }

    #[test]
    fn lora_flags_hook_one_adapter_and_merge_several() {
        let tmp = tempfile::tempdir().unwrap();
        let (loaded, _) = load(None).unwrap();
        let shape = Shape::from(&loaded.config);
        let base = logits(&loaded.model);
        let qv = lora_dir(tmp.path(), "qv", shape, 2, Target::QV.to_vec(), 1);
        let o = lora_dir(tmp.path(), "o", shape, 1, vec![Target::O], 2);

        // One LoRA: a hook.
        let mut hooked = load(None).unwrap().0.model;
        let described = apply_adapters(&mut hooked, std::slice::from_ref(&qv), None).unwrap();
        assert!(
            described.contains("LoRA") && described.contains("r 2"),
            "{described}"
        );
        assert!(hooked.adapter().is_some());
        let with_qv = logits(&hooked);
        assert!(
            max_diff(&with_qv, &base) > 1e-3,
            "the adapter must move the logits"
        );

        // The same LoRA under a TALoRA adapter whose B is zero: merged, same logits.
        let zero = tmp.path().join("talora");
        Talora::new(Spec::default(), 3, shape)
            .unwrap()
            .save(&zero, "tiny", Naming::Llada)
            .unwrap();
        let mut merged = load(None).unwrap().0.model;
        apply_adapters(&mut merged, std::slice::from_ref(&qv), Some(&zero)).unwrap();
        assert!(max_diff(&logits(&merged), &with_qv) < 1e-4);

        // Two LoRAs: both merged, in either order, and the second one counts.
        let mut both = load(None).unwrap().0.model;
        apply_adapters(&mut both, &[qv.clone(), o.clone()], None).unwrap();
        assert!(both.adapter().is_none());
        let mut swapped = load(None).unwrap().0.model;
        apply_adapters(&mut swapped, &[o.clone(), qv.clone()], None).unwrap();
        assert!(max_diff(&logits(&both), &logits(&swapped)) < 1e-4);
        assert!(max_diff(&logits(&both), &with_qv) > 1e-3);

        // A missing folder and an adapter for another shape are named errors.
        let mut m = load(None).unwrap().0.model;
        let e = apply_adapters(&mut m, &[tmp.path().join("absent")], None).unwrap_err();
        assert!(
            format!("{e:#}").contains("loading the PEFT LoRA adapter"),
            "{e:#}"
        );
        let other = Shape {
            n_layers: shape.n_layers + 1,
            ..shape
        };
        let wrong = lora_dir(tmp.path(), "wrong", other, 2, Target::QV.to_vec(), 4);
        let e = apply_adapters(&mut m, &[wrong], None).unwrap_err();
        assert!(format!("{e:#}").contains("tensors"), "{e:#}");
    }
}
