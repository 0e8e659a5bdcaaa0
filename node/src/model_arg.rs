//! Loading the model a command runs on: our checkpoints, HF folders and GGUF files alike; the
//! committed `tiny` base when no `--model` is given.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ruvdllm::candle_core::{DType, Device};
use ruvdllm::model::LoadedModel;
use ruvdllm::tokenizer::{self, Tokenizer};

/// The model folder or file: `--model`, else the committed `tiny` base.
pub fn resolve(model: Option<&Path>) -> PathBuf {
    model
        .map(Path::to_path_buf)
        .unwrap_or_else(ruvdllm::eval::tiny_base_dir)
}

pub fn load(model: Option<&Path>) -> anyhow::Result<(LoadedModel, Box<dyn Tokenizer>)> {
    let path = resolve(model);
    let loaded = ruvdllm::model::load(&path, DType::F32, &Device::Cpu)
        .with_context(|| format!("loading model from {}", path.display()))?;
    let tok = tokenizer::load(loaded.tokenizer_dir.as_deref()).context("loading the tokenizer")?;
    anyhow::ensure!(
        tok.vocab_size() <= loaded.config.vocab_size,
        "tokenizer has {} ids but the model's vocabulary is {}",
        tok.vocab_size(),
        loaded.config.vocab_size
    );
    Ok((loaded, tok))
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
