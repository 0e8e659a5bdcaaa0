//! Loading the model a command runs on: our checkpoints, HF folders and GGUF files alike; the
//! committed `tiny` base when no `--model` is given.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ruvdllm::candle_core::{DType, Device};
use ruvdllm::model::{DeviceSpec, LoadedModel};
use ruvdllm::tokenizer::{self, Tokenizer};

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
    let loaded = ruvdllm::model::load(&path, DType::F32, &dev)
        .with_context(|| format!("loading model from {} onto {device}", path.display()))?;
    let tok = tokenizer::load(loaded.tokenizer_dir.as_deref()).context("loading the tokenizer")?;
    anyhow::ensure!(
        tok.vocab_size() <= loaded.config.vocab_size,
        "tokenizer has {} ids but the model's vocabulary is {}",
        tok.vocab_size(),
        loaded.config.vocab_size
    );
    Ok((loaded, tok))
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
