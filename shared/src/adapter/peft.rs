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

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Error;
use super::names::Target;
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
    /// What we write for `targets`.
    pub fn for_targets(targets: &[Target]) -> TargetModules {
        let leaves: Vec<String> = targets
            .iter()
            .map(|t| t.llada_module().to_string())
            .collect();
        if targets.contains(&Target::Down) {
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
}

fn none() -> String {
    "none".into()
}

fn yes() -> bool {
    true
}

impl PeftConfig {
    pub fn new(r: usize, alpha: f64, targets: &[Target], base_model: &str) -> PeftConfig {
        PeftConfig {
            peft_type: "LORA".into(),
            task_type: None,
            r,
            lora_alpha: alpha,
            target_modules: TargetModules::for_targets(targets),
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
        if self.use_rslora {
            return refuse("use_rslora");
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
        let c = PeftConfig::new(8, 16.0, &Target::QV, "tiny");
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
        let all = TargetModules::for_targets(&Target::ALL);
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
}
