//! Checkpoints on disk: the project's own (a folder with `config.json` + `model.safetensors`, LLaDA
//! tensor names), HF folders of the LLaDA and Dream families (memory-mapped safetensors, possibly
//! sharded), and — dispatched by extension — llama.cpp GGUF files ([`super::gguf`]).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::Error;
use super::config::{Arch, Config};
use super::transformer::Model;
use super::weights::{Naming, VarBuilderSource};

/// Marker written into our own `config.json` so it is never mistaken for an HF config.
pub const FORMAT: &str = "ruvdllm-checkpoint-v1";

#[derive(Serialize, Deserialize)]
struct OwnConfig {
    format: String,
    config: Config,
}

/// A model ready to run, with where it came from.
pub struct LoadedModel {
    pub model: Model,
    pub config: Config,
    /// The folder holding `tokenizer.json`, if the checkpoint has one.
    pub tokenizer_dir: Option<PathBuf>,
    /// A GGUF file's own vocabulary, rebuilt ([`crate::tokenizer::gguf_vocab`]) when no
    /// `tokenizer.json` sits beside the file: the tokenizer, or why it could not be rebuilt.
    pub embedded_tokenizer: Option<Result<crate::tokenizer::HfTokenizer, String>>,
    /// The checkpoint's chat template (its folder's `chat_template.jinja` or
    /// `tokenizer_config.json`, or a GGUF file's metadata), or why it could not be read; `None`
    /// when it has none (base models).
    pub chat_template: Option<Result<crate::tokenizer::ChatTemplate, String>>,
    /// A description of the source (`ruvdllm`, `hf-llada`, `hf-dream`, `gguf:<type>`).
    pub kind: String,
}

fn ck_err(path: &Path, reason: impl ToString) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// A checkpoint folder resolved on disk: its config, which tensor names it uses, and its files.
pub struct Opened {
    pub config: Config,
    pub naming: Naming,
    /// `ruvdllm`, `hf-llada` or `hf-dream`.
    pub kind: String,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

/// Resolves a safetensors checkpoint (our folder, an HF folder, or a `.safetensors` file inside
/// one) without reading any weights.
pub fn open(path: &Path) -> Result<Opened, Error> {
    let dir = if path.is_file() {
        path.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    } else {
        path.to_path_buf()
    };
    if !dir.is_dir() {
        return Err(ck_err(path, "no such checkpoint folder or file"));
    }
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ck_err(&cfg_path, e))?;
    let (config, naming, kind) = match serde_json::from_str::<OwnConfig>(&text) {
        Ok(own) if own.format == FORMAT => (own.config, Naming::Llada, "ruvdllm".to_string()),
        _ => {
            let cfg = Config::from_hf_json(&text)?;
            match cfg.arch {
                Arch::Llada => (cfg, Naming::Llada, "hf-llada".to_string()),
                Arch::Dream => (cfg, Naming::Dream, "hf-dream".to_string()),
            }
        }
    };
    let files = safetensors_files(&dir)?;
    Ok(Opened {
        config,
        naming,
        kind,
        dir,
        files,
    })
}

/// Loads any supported checkpoint: our folder, an HF folder (LLaDA or Dream), a `.safetensors`
/// file inside one of those folders, or a `.gguf` file (llama.cpp's `llada` / `dream` layout).
pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<LoadedModel, Error> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return super::gguf::load(path, dtype, device);
    }
    let Opened {
        config,
        naming,
        kind,
        dir,
        files,
    } = open(path)?;
    // SAFETY: the files are memory-mapped read-only; they must not be modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
    let src = VarBuilderSource::new(vb, naming);
    let model = Model::load(&src, &config, dtype, device)?;
    let tokenizer_dir = dir.join("tokenizer.json").is_file().then(|| dir.clone());
    Ok(LoadedModel {
        embedded_tokenizer: None,
        chat_template: folder_chat_template(&dir),
        model,
        config,
        tokenizer_dir,
        kind,
    })
}

/// A checkpoint folder's chat template, if it has one.
pub fn folder_chat_template(dir: &Path) -> Option<Result<crate::tokenizer::ChatTemplate, String>> {
    crate::tokenizer::ChatTemplate::from_dir(dir)
        .map_err(|e| e.to_string())
        .transpose()
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ck_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        let pickled = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .any(|p| {
                p.extension()
                    .is_some_and(|e| e == "bin" || e == "pt" || e == "pth")
            });
        return Err(ck_err(
            dir,
            if pickled {
                "no .safetensors files in the checkpoint folder, only PyTorch pickles (.bin/.pt), \
                 which are not read (they can run code): save the model again with \
                 transformers' save_pretrained(..., safe_serialization=True)"
            } else {
                "no .safetensors files in the checkpoint folder"
            },
        ));
    }
    Ok(files)
}

/// A model whose weights live in a `VarMap` (trainable). Missing tensors are initialised.
pub fn trainable(varmap: &VarMap, config: &Config, device: &Device) -> Result<Model, Error> {
    let vb = VarBuilder::from_varmap(varmap, DType::F32, device);
    let src = VarBuilderSource::training(vb, Naming::Llada);
    let mut model = Model::load(&src, config, DType::F32, device)?;
    model.set_differentiable(true);
    Ok(model)
}

/// Writes our checkpoint folder: `config.json` and `model.safetensors` (LLaDA names) in `dtype`.
pub fn save(varmap: &VarMap, config: &Config, dir: &Path, dtype: DType) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| ck_err(dir, e))?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| ck_err(dir, "variable map lock poisoned"))?;
    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(data.len());
    for (name, var) in data.iter() {
        tensors.push((name.clone(), var.as_tensor().to_dtype(dtype)?));
    }
    drop(data);
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let tmp = dir.join(".model.safetensors.tmp");
    candle_core::safetensors::save(&tensors.into_iter().collect(), &tmp)?;
    let f = std::fs::File::open(&tmp).map_err(|e| ck_err(&tmp, e))?;
    f.sync_all().map_err(|e| ck_err(&tmp, e))?;
    std::fs::rename(&tmp, dir.join("model.safetensors")).map_err(|e| ck_err(dir, e))?;
    let own = OwnConfig {
        format: FORMAT.to_string(),
        config: config.clone(),
    };
    let json = serde_json::to_string_pretty(&own).map_err(|e| ck_err(dir, e))?;
    crate::fsutil::write_atomic(&dir.join("config.json"), json.as_bytes())
        .map_err(|e| ck_err(dir, e))?;
    Ok(())
}

/// Loads our checkpoint's weights into `varmap` (to continue training from it).
pub fn load_into_varmap(varmap: &mut VarMap, dir: &Path) -> Result<Config, Error> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ck_err(&cfg_path, e))?;
    let own: OwnConfig = serde_json::from_str(&text).map_err(|e| ck_err(&cfg_path, e))?;
    if own.format != FORMAT {
        return Err(ck_err(&cfg_path, format!("not a {FORMAT} checkpoint")));
    }
    // VarMap::load copies without a dtype conversion; our checkpoints are usually f16 while the
    // trainable variables are f32, so convert each tensor on the way in.
    let path = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Config("variable map lock poisoned".into()))?;
    for (name, var) in data.iter() {
        let t = tensors.get(name).ok_or_else(|| {
            ck_err(
                &path,
                format!("missing tensor `{name}` (shape {:?})", var.dims()),
            )
        })?;
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(own.config)
}

/// Re-initialises every matrix in `varmap` with N(0, std²) drawn from a ChaCha stream keyed by
/// `seed` (variables visited in name order), so a from-scratch run is reproducible: candle's CPU
/// random generator cannot be seeded. Vectors (norm weights, biases) are left as initialised.
pub fn seeded_init(varmap: &VarMap, seed: u64, std: f64) -> Result<(), Error> {
    use rand::{RngCore, SeedableRng};
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Config("variable map lock poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut unit = || ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    for name in names {
        let var = &data[name];
        if var.rank() != 2 {
            continue;
        }
        let n = var.elem_count();
        let mut values = Vec::with_capacity(n);
        while values.len() < n {
            // Box–Muller: two normals from two uniforms in (0, 1).
            let (u1, u2) = (unit(), unit());
            let r = (-2.0 * u1.ln()).sqrt() * std;
            let a = 2.0 * std::f64::consts::PI * u2;
            values.push((r * a.cos()) as f32);
            if values.len() < n {
                values.push((r * a.sin()) as f32);
            }
        }
        let t = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}
