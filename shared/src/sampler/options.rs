//! Per-request sampling options, their defaults and their validation.
//!
//! Everything a caller can choose lives in one serde-serializable [`Options`] so that a request
//! file or an RPC can carry it; [`Options::plan`] checks it once up front and turns it into a
//! [`Plan`] with no `Option` left, so the loop itself never meets a bad value.

use serde::{Deserialize, Serialize};

use super::Error;
use super::schedule::Alpha;

/// The most generated tokens per row a request may ask for (bounds every allocation).
pub const MAX_GEN_LENGTH: usize = 1 << 16;
/// The most denoising steps a request may ask for.
pub const MAX_STEPS: usize = 1 << 20;

/// How LLaDA picks which predictions to keep at a step (`remasking` in `generate.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Remasking {
    /// Keep the predictions with the highest softmax probability of the chosen token.
    #[default]
    #[serde(alias = "low-confidence")]
    LowConfidence,
    /// Keep uniformly random predictions.
    Random,
}

/// Dream's unmasking algorithms (`alg` in Dream's `_sample`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DreamAlg {
    /// Each masked position is revealed with probability `1 - s/t`.
    Origin,
    /// Top-k by the probability of the sampled token.
    MaskgitPlus,
    /// Top-k by the margin between the two most likely tokens.
    TopkMargin,
    /// Top-k by negative entropy of the predictive distribution.
    #[default]
    Entropy,
}

/// The unmasking rule: which family's loop decides what to commit at each step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// LLaDA's `generate()`: a fixed number of tokens per step, chosen by confidence or at random.
    Llada {
        #[serde(default)]
        remasking: Remasking,
    },
    /// Dream's `_sample`: eps timesteps, `int(#masked * (1 - s/t))` tokens per step. Dream's
    /// reference has no blocks; set `block_length = gen_length` to match it (with blocks, each
    /// block runs its own `linspace(1, eps, steps_per_block + 1)`).
    Dream {
        #[serde(default)]
        alg: DreamAlg,
        /// `> 0`: positions are drawn by `multinomial(softmax(confidence / alg_temp))`.
        #[serde(default)]
        alg_temp: f64,
        /// Nucleus filter on the token distribution (`None` or `1.0`: off).
        #[serde(default)]
        top_p: Option<f64>,
        /// Keep only the `top_k` most likely tokens (`None`: off).
        #[serde(default)]
        top_k: Option<usize>,
        /// The last timestep (`linspace(1, eps, steps + 1)`).
        #[serde(default = "default_eps")]
        eps: f64,
    },
    /// MDLM: each masked token is unmasked with probability `(ᾱ_s − ᾱ_t) / (1 − ᾱ_t)`.
    Mdlm {
        #[serde(default)]
        schedule: Alpha,
    },
}

fn default_eps() -> f64 {
    1e-3
}

impl Default for Rule {
    fn default() -> Self {
        Rule::Llada {
            remasking: Remasking::LowConfidence,
        }
    }
}

impl Rule {
    /// A short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::Llada {
                remasking: Remasking::LowConfidence,
            } => "llada/low_confidence",
            Rule::Llada {
                remasking: Remasking::Random,
            } => "llada/random",
            Rule::Dream {
                alg: DreamAlg::Origin,
                ..
            } => "dream/origin",
            Rule::Dream {
                alg: DreamAlg::MaskgitPlus,
                ..
            } => "dream/maskgit_plus",
            Rule::Dream {
                alg: DreamAlg::TopkMargin,
                ..
            } => "dream/topk_margin",
            Rule::Dream {
                alg: DreamAlg::Entropy,
                ..
            } => "dream/entropy",
            Rule::Mdlm { .. } => "mdlm",
        }
    }

    /// Whether the rule ranks positions by a model-derived confidence (threshold decoding and
    /// "EOS last" need one).
    fn has_confidence(&self) -> bool {
        !matches!(
            self,
            Rule::Llada {
                remasking: Remasking::Random
            } | Rule::Dream {
                alg: DreamAlg::Origin,
                ..
            } | Rule::Mdlm { .. }
        )
    }

    /// Whether the confidence is a probability-like value in `[0, 1]`.
    fn confidence_is_probability(&self) -> bool {
        !matches!(
            self,
            Rule::Dream {
                alg: DreamAlg::Entropy,
                ..
            }
        )
    }
}

/// Fast-dLLM's block-wise approximate KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Every step runs a full forward over the canvas.
    #[default]
    None,
    /// Keys/values of `[0, block_start)` are cached; steps recompute `[block_start, canvas_end)`.
    Prefix,
    /// Keys/values of everything but the current block are cached; steps recompute the block.
    Dual,
}

/// Everything a caller can choose for one generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Tokens generated per row.
    pub gen_length: usize,
    /// Semi-autoregressive block size; `== gen_length` is pure diffusion.
    pub block_length: usize,
    /// Denoising steps over the whole generation (split evenly over blocks). `None`: `gen_length`
    /// (one token per step) for LLaDA and Dream, 8 per block for MDLM. Ignored by threshold
    /// decoding, whose per-block loop runs until the block is full.
    pub steps: Option<usize>,
    /// Sampling temperature; `0` is greedy (argmax).
    pub temperature: f64,
    /// Classifier-free guidance scale `s` in `u + (s + 1)(c − u)`; `0` is off.
    pub cfg_scale: f64,
    pub rule: Rule,
    /// Never sample EOS (`logits[EOS] = -inf`).
    pub logits_eos_inf: bool,
    /// Commit positions whose prediction is EOS or EoT only after every other one.
    pub confidence_eos_eot_inf: bool,
    /// Fast-dLLM confidence threshold τ: commit every masked position of the block whose
    /// confidence is at least τ, and always the most confident one.
    pub threshold: Option<f64>,
    pub cache: CacheMode,
    /// Refresh the cache every N steps of a block instead of once per block (needs a cache).
    pub refresh_every: Option<usize>,
    /// Finish a row as soon as it holds an EOS with nothing masked before it.
    pub early_stop: bool,
    /// Shift logits right by one (Dream-style); `None`: ask the model.
    pub shift_logits: Option<bool>,
    /// Denoising-guided retrieval from the node's pattern banks (needs a
    /// [`super::Retrieval`] passed to [`super::generate_with`]); `None`: off.
    pub dgr: Option<super::dgr::DgrOptions>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            gen_length: 128,
            block_length: 32,
            steps: None,
            temperature: 0.0,
            cfg_scale: 0.0,
            rule: Rule::default(),
            logits_eos_inf: false,
            confidence_eos_eot_inf: false,
            threshold: None,
            cache: CacheMode::None,
            refresh_every: None,
            early_stop: true,
            shift_logits: None,
            dgr: None,
        }
    }
}

/// Validated options with every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub num_blocks: usize,
    pub steps_per_block: usize,
    pub threshold: Option<f64>,
    /// Refresh period in steps within a block; `usize::MAX` means once per block.
    pub refresh_every: usize,
}

fn invalid(option: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidOption {
        option,
        reason: reason.into(),
    }
}

fn check_finite_nonneg(option: &'static str, v: f64) -> Result<(), Error> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(invalid(option, format!("{v} is not a finite value >= 0")))
    }
}

impl Options {
    /// Checks every field and resolves the defaults.
    pub(crate) fn plan(&self) -> Result<Plan, Error> {
        if let Some(d) = &self.dgr {
            d.validate()?;
        }
        if self.gen_length == 0 || self.gen_length > MAX_GEN_LENGTH {
            return Err(invalid(
                "gen_length",
                format!("{} is not in 1..={MAX_GEN_LENGTH}", self.gen_length),
            ));
        }
        if self.block_length == 0 || !self.gen_length.is_multiple_of(self.block_length) {
            return Err(Error::BlockLength {
                gen_length: self.gen_length,
                block_length: self.block_length,
            });
        }
        let num_blocks = self.gen_length / self.block_length;
        let steps = self.steps.unwrap_or(match self.rule {
            Rule::Mdlm { .. } => 8 * num_blocks,
            _ => self.gen_length,
        });
        if steps > MAX_STEPS {
            return Err(Error::TooLarge {
                what: "steps",
                got: steps,
                max: MAX_STEPS,
            });
        }
        if steps == 0 || !steps.is_multiple_of(num_blocks) {
            return Err(Error::Steps { steps, num_blocks });
        }
        check_finite_nonneg("temperature", self.temperature)?;
        check_finite_nonneg("cfg_scale", self.cfg_scale)?;
        let rule = self.rule.name();
        if let Rule::Dream {
            alg_temp,
            top_p,
            top_k,
            eps,
            ..
        } = self.rule
        {
            check_finite_nonneg("alg_temp", alg_temp)?;
            if let Some(p) = top_p
                && !(p > 0.0 && p <= 1.0)
            {
                return Err(invalid("top_p", format!("{p} is not in (0, 1]")));
            }
            if top_k == Some(0) {
                return Err(invalid("top_k", "must be at least 1"));
            }
            if !(eps > 0.0 && eps < 1.0) {
                return Err(invalid("eps", format!("{eps} is not in (0, 1)")));
            }
        }
        if let Some(tau) = self.threshold {
            if !self.rule.has_confidence() {
                return Err(Error::Inapplicable {
                    option: "threshold",
                    rule,
                });
            }
            let ok = tau.is_finite()
                && (!self.rule.confidence_is_probability() || (0.0..=1.0).contains(&tau));
            if !ok {
                return Err(invalid(
                    "threshold",
                    format!("{tau} is not a confidence of rule {rule}"),
                ));
            }
        }
        if self.confidence_eos_eot_inf && !self.rule.has_confidence() {
            return Err(Error::Inapplicable {
                option: "confidence_eos_eot_inf",
                rule,
            });
        }
        let refresh_every = match (self.refresh_every, self.cache) {
            (None, _) => usize::MAX,
            (Some(_), CacheMode::None) => {
                return Err(invalid("refresh_every", "needs cache = prefix or dual"));
            }
            (Some(0), _) => return Err(invalid("refresh_every", "must be at least 1")),
            (Some(n), _) => n,
        };
        Ok(Plan {
            num_blocks,
            steps_per_block: steps / num_blocks,
            threshold: self.threshold,
            refresh_every,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_plan() {
        let p = Options::default().plan().unwrap();
        assert_eq!(p.num_blocks, 4);
        assert_eq!(p.steps_per_block, 32);
        assert_eq!(p.refresh_every, usize::MAX);
    }

    #[test]
    fn mdlm_defaults_to_eight_steps_per_block() {
        let o = Options {
            gen_length: 16,
            block_length: 16,
            rule: Rule::Mdlm {
                schedule: Alpha::Cosine,
            },
            ..Options::default()
        };
        assert_eq!(o.plan().unwrap().steps_per_block, 8);
    }

    #[test]
    fn invalid_options_are_typed_errors() {
        let base = Options::default();
        let bad = |o: Options| o.plan().unwrap_err();
        assert!(matches!(
            bad(Options {
                block_length: 30,
                ..base.clone()
            }),
            Error::BlockLength {
                gen_length: 128,
                block_length: 30
            }
        ));
        assert!(matches!(
            bad(Options {
                block_length: 0,
                ..base.clone()
            }),
            Error::BlockLength { .. }
        ));
        assert!(matches!(
            bad(Options {
                steps: Some(6),
                ..base.clone()
            }),
            Error::Steps {
                steps: 6,
                num_blocks: 4
            }
        ));
        assert!(matches!(
            bad(Options {
                gen_length: 0,
                ..base.clone()
            }),
            Error::InvalidOption {
                option: "gen_length",
                ..
            }
        ));
        assert!(matches!(
            bad(Options {
                temperature: f64::NAN,
                ..base.clone()
            }),
            Error::InvalidOption {
                option: "temperature",
                ..
            }
        ));
        assert!(matches!(
            bad(Options {
                threshold: Some(1.5),
                ..base.clone()
            }),
            Error::InvalidOption {
                option: "threshold",
                ..
            }
        ));
        assert!(matches!(
            bad(Options {
                threshold: Some(0.9),
                rule: Rule::Llada {
                    remasking: Remasking::Random
                },
                ..base.clone()
            }),
            Error::Inapplicable {
                option: "threshold",
                ..
            }
        ));
        assert!(matches!(
            bad(Options {
                refresh_every: Some(2),
                ..base.clone()
            }),
            Error::InvalidOption {
                option: "refresh_every",
                ..
            }
        ));
        assert!(matches!(
            bad(Options {
                rule: Rule::Dream {
                    alg: DreamAlg::Entropy,
                    alg_temp: 0.0,
                    top_p: Some(0.0),
                    top_k: None,
                    eps: 1e-3
                },
                ..base.clone()
            }),
            Error::InvalidOption {
                option: "top_p",
                ..
            }
        ));
        assert!(matches!(
            bad(Options {
                steps: Some(MAX_STEPS + 4),
                ..base
            }),
            Error::TooLarge { what: "steps", .. }
        ));
    }

    #[test]
    fn serde_round_trip_and_defaults() {
        let o: Options = serde_json::from_str(
            r#"{"gen_length": 64, "rule": {"kind": "dream", "alg": "topk_margin", "top_p": 0.95}}"#,
        )
        .unwrap();
        assert_eq!(o.block_length, 32);
        assert_eq!(
            o.rule,
            Rule::Dream {
                alg: DreamAlg::TopkMargin,
                alg_temp: 0.0,
                top_p: Some(0.95),
                top_k: None,
                eps: 1e-3
            }
        );
        let back: Options = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back, o);
        let r: Rule =
            serde_json::from_str(r#"{"kind": "llada", "remasking": "low-confidence"}"#).unwrap();
        assert_eq!(r, Rule::default());
        assert!(serde_json::from_str::<Options>(r#"{"gen_lenght": 3}"#).is_err());
    }
}
