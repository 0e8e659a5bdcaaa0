//! PEFT's on-disk layout for one LoRA adapter: a folder with `adapter_model.safetensors` (PEFT
//! tensor names, see [`super::names`]) and `adapter_config.json`.
//!
//! We write what `peft.PeftModel.from_pretrained` needs (`peft_type: "LORA"`, `r`, `lora_alpha`,
//! `target_modules`, `base_model_name_or_path`, …) and store tensors as F32 so frozen A survives
//! bit-exactly. `target_modules` is a list of LLaDA leaf names, except when `ff_out` (the MLP's
//! down projection) is targeted: LLaDA's LM head is also called `ff_out`, so then a regex that
//! matches only the blocks' modules is written (PEFT full-matches string `target_modules`).
//! Reading accepts both forms and any extra fields PEFT writes; features we do not implement
//! (DoRA, rsLoRA, fan-in-fan-out, trained biases) are refused rather than silently ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Error;
use super::names::{Naming, Target};
use crate::delta::Delta;
use crate::delta_io::{self, StoreDtype};

pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
pub const CONFIG_FILE: &str = "adapter_config.json";
/// Largest `adapter_config.json` read (it is a few hundred bytes).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// `target_modules` as PEFT accepts it: a list of module-name suffixes or one full-match regex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Regex(String),
}

impl TargetModules {
    /// What we write for `targets` of a model whose checkpoints use `naming`.
    pub fn for_targets(targets: &[Target], naming: Naming) -> TargetModules {
        let leaves: Vec<String> = targets
            .iter()
            .map(|t| naming.leaf(*t).to_string())
            .collect();
        // Only LLaDA has a leaf name (`ff_out`) that also names a module outside the blocks.
        if naming == Naming::Llada && targets.contains(&Target::Down) {
            TargetModules::Regex(format!(
                r"model\.transformer\.blocks\.\d+\.({})",
                leaves.join("|")
            ))
        } else {
            TargetModules::List(leaves)
        }
    }
}

/// The fields of `adapter_config.json` we write and check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    pub target_modules: TargetModules,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default = "none")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default = "yes")]
    pub inference_mode: bool,
    #[serde(default = "yes")]
    pub init_lora_weights: bool,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    /// Every other field PEFT writes, kept as read: most are training-time options (`eva_config`,
    /// `loftq_config`, `megatron_config`, …); those in [`SEMANTIC_FIELDS`] change what the
    /// tensors mean, and a config that sets one is refused.
    #[serde(flatten, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// PEFT fields (up to peft 0.21) that change the adapted forward when set, with what they do.
pub const SEMANTIC_FIELDS: [(&str, &str); 13] = [
    ("rank_pattern", "per-module ranks"),
    ("alpha_pattern", "per-module alphas"),
    ("layers_to_transform", "a subset of layers"),
    ("layer_replication", "replicated layers"),
    ("trainable_token_indices", "trained embedding rows"),
    ("target_parameters", "adapted parameters instead of modules"),
    ("lora_bias", "a trained bias on B"),
    ("use_qalora", "quantization-aware pooling"),
    ("use_bdlora", "block-diagonal factors"),
    (
        "alora_invocation_tokens",
        "activated only after invocation tokens",
    ),
    ("arrow_config", "routing between adapters"),
    ("kasa_config", "singular-value adaptation"),
    ("monteclora_config", "Monte-Carlo factors"),
];

/// Whether an optional PEFT field holds something (not absent, `null`, `false`, `{}`, `[]`).
fn is_set(v: Option<&serde_json::Value>) -> bool {
    use serde_json::Value;
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

fn none() -> String {
    "none".into()
}

fn yes() -> bool {
    true
}

impl PeftConfig {
    pub fn new(
        r: usize,
        alpha: f64,
        targets: &[Target],
        naming: Naming,
        base_model: &str,
    ) -> PeftConfig {
        PeftConfig {
            peft_type: "LORA".into(),
            task_type: None,
            r,
            lora_alpha: alpha,
            target_modules: TargetModules::for_targets(targets, naming),
            lora_dropout: 0.0,
            bias: "none".into(),
            fan_in_fan_out: false,
            base_model_name_or_path: Some(base_model.to_string()),
            revision: None,
            inference_mode: true,
            init_lora_weights: true,
            modules_to_save: None,
            use_rslora: false,
            use_dora: false,
            extra: BTreeMap::new(),
        }
    }

    /// The factor on `B·A`: `lora_alpha / r`, or `lora_alpha / √r` with `use_rslora` (rank-
    /// stabilised LoRA, as PEFT computes it).
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Refuses configs whose semantics we do not implement.
    pub fn check_supported(&self, path: &Path) -> Result<(), Error> {
        let refuse = |what: &str| {
            Err(Error::file(
                path,
                format!("unsupported PEFT config: {what}"),
            ))
        };
        if self.peft_type != "LORA" {
            return refuse(&format!("peft_type {}", self.peft_type));
        }
        if self.use_dora {
            return refuse("use_dora");
        }
        for (key, what) in SEMANTIC_FIELDS {
            if is_set(self.extra.get(key)) {
                return refuse(&format!("{key} ({what})"));
            }
        }
        if self.fan_in_fan_out {
            return refuse("fan_in_fan_out");
        }
        if self.bias != "none" {
            return refuse(&format!("bias {}", self.bias));
        }
        if self.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return refuse("modules_to_save");
        }
        if !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
            return refuse(&format!("lora_alpha {}", self.lora_alpha));
        }
        Ok(())
    }

    /// JSON with `lora_alpha` written as an integer when it is one (PEFT's type is `int`).
    fn to_json(&self) -> Result<String, serde_json::Error> {
        let mut v = serde_json::to_value(self)?;
        if self.lora_alpha.fract() == 0.0 && self.lora_alpha.abs() < 1e15 {
            v["lora_alpha"] = serde_json::Value::from(self.lora_alpha as i64);
        }
        serde_json::to_string_pretty(&v)
    }
}

/// Writes one PEFT folder: `tensors` (PEFT names, F32) and `config`.
pub fn save(dir: &Path, tensors: &Delta, config: &PeftConfig) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    delta_io::save(tensors, &dir.join(WEIGHTS_FILE), StoreDtype::F32, &meta)?;
    let json = config.to_json().map_err(|e| Error::file(dir, e))?;
    crate::fsutil::write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())
        .map_err(|e| Error::file(dir, e))?;
    Ok(())
}

/// Reads one PEFT folder. `max_weight_bytes(&config)` bounds the weights file read into memory
/// (the caller knows the layout a config implies).
pub fn load(
    dir: &Path,
    max_weight_bytes: impl FnOnce(&PeftConfig) -> u64,
) -> Result<(Delta, PeftConfig), Error> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = read_bounded(&cfg_path, MAX_CONFIG_BYTES)?;
    let config: PeftConfig =
        serde_json::from_slice(&text).map_err(|e| Error::file(&cfg_path, e))?;
    config.check_supported(&cfg_path)?;
    if config.r == 0 || config.r > super::names::MAX_RANK {
        return Err(Error::file(
            &cfg_path,
            format!("r = {} not in 1..={}", config.r, super::names::MAX_RANK),
        ));
    }
    let max_weight_bytes = max_weight_bytes(&config);
    let w_path = dir.join(WEIGHTS_FILE);
    if !w_path.exists() && dir.join("adapter_model.bin").exists() {
        return Err(Error::file(
            dir,
            "holds adapter_model.bin (a PyTorch pickle, not read: it can run code); save the \
             adapter again with peft's save_pretrained(..., safe_serialization=True)",
        ));
    }
    let len = std::fs::metadata(&w_path)
        .map_err(|e| Error::file(&w_path, e))?
        .len();
    if len > max_weight_bytes {
        return Err(Error::file(
            &w_path,
            format!("{len} bytes, more than the {max_weight_bytes} the adapter layout allows"),
        ));
    }
    let (delta, _) = delta_io::load(&w_path)?;
    Ok((delta, config))
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::file(path, e))?
        .len();
    if len > max {
        return Err(Error::file(path, format!("{len} bytes, limit {max}")));
    }
    std::fs::read(path).map_err(|e| Error::file(path, e))
}

/// Bytes a safetensors file of `numel` f32 values in `tensors` tensors may take: the data plus a
/// generous header allowance.
pub fn max_file_bytes(numel: usize, tensors: usize) -> u64 {
    (numel as u64) * 4 + (tensors as u64) * 512 + 64 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fields_and_target_modules() {
        let c = PeftConfig::new(8, 16.0, &Target::QV, Naming::Llada, "tiny");
        let json: serde_json::Value = serde_json::from_str(&c.to_json().unwrap()).unwrap();
        assert_eq!(json["peft_type"], "LORA");
        assert_eq!(json["r"], 8);
        assert_eq!(json["lora_alpha"], 16);
        assert!(json["lora_alpha"].is_i64());
        assert_eq!(
            json["target_modules"],
            serde_json::json!(["q_proj", "v_proj"])
        );
        assert_eq!(json["base_model_name_or_path"], "tiny");
        assert_eq!(json["bias"], "none");
        assert_eq!(json["fan_in_fan_out"], false);
        let back: PeftConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        // All linears: a regex that cannot match the LM head `model.transformer.ff_out`.
        let all = TargetModules::for_targets(&Target::ALL, Naming::Llada);
        let TargetModules::Regex(re) = all else {
            panic!("expected a regex")
        };
        assert!(re.starts_with(r"model\.transformer\.blocks\.\d+\.("));
        assert!(re.contains("ff_out") && re.contains("attn_out"));
        // PEFT's own extra fields are accepted; unsupported features are refused.
        let extra = r#"{"peft_type":"LORA","r":4,"lora_alpha":4,"target_modules":"x",
            "layers_pattern":null,"use_dora":true}"#;
        let c: PeftConfig = serde_json::from_str(extra).unwrap();
        assert!(c.check_supported(Path::new("x")).is_err());
    }

    #[test]
    fn llama_naming_lists_leaf_names_and_no_regex() {
        // Llama / Qwen2 name the MLP's down projection `down_proj` and the head `lm_head`, so a
        // plain list of leaves is exact.
        let all = TargetModules::for_targets(&Target::ALL, Naming::Llama);
        assert_eq!(
            all,
            TargetModules::List(
                [
                    "q_proj",
                    "k_proj",
                    "v_proj",
                    "o_proj",
                    "gate_proj",
                    "up_proj",
                    "down_proj"
                ]
                .map(String::from)
                .to_vec()
            )
        );
    }

    #[test]
    fn newer_peft_fields_are_accepted_empty_and_refused_when_set() {
        // What peft 0.17 writes by default: empty patterns, nulls, false.
        let base = serde_json::json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
            "target_modules": ["q_proj"], "rank_pattern": {}, "alpha_pattern": {},
            "layers_to_transform": null, "layer_replication": null, "lora_bias": false,
            "trainable_token_indices": null, "target_parameters": null, "use_qalora": false,
            "use_rslora": true, "exclude_modules": null, "eva_config": null});
        let c: PeftConfig = serde_json::from_value(base.clone()).unwrap();
        c.check_supported(Path::new("x")).unwrap();
        // rsLoRA is supported: alpha / √r.
        assert_eq!(c.scale(), 8.0 / 2.0);
        for (key, value) in [
            ("rank_pattern", serde_json::json!({"q_proj": 2})),
            ("alpha_pattern", serde_json::json!({"q_proj": 2})),
            ("layers_to_transform", serde_json::json!([0])),
            ("layer_replication", serde_json::json!([[0, 1]])),
            ("lora_bias", serde_json::json!(true)),
            ("trainable_token_indices", serde_json::json!([1, 2])),
            ("target_parameters", serde_json::json!(["mlp.experts"])),
            ("use_qalora", serde_json::json!(true)),
            ("use_bdlora", serde_json::json!({"block_size": 2})),
            ("alora_invocation_tokens", serde_json::json!([5, 6])),
            ("arrow_config", serde_json::json!({"top_k": 3})),
        ] {
            let mut v = base.clone();
            v[key] = value;
            let c: PeftConfig = serde_json::from_value(v).unwrap();
            let e = c.check_supported(Path::new("x")).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }
}
