//! Sampler flags shared by `node generate` and `node eval` (one `clap::Args` struct flattened into
//! both), turned into a validated [`ruvdllm::sampler::Options`].

use clap::{Args, ValueEnum};
use ruvdllm::sampler::{Alpha, CacheMode, DreamAlg, Options, Remasking, Rule};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RuleArg {
    /// LLaDA: fixed tokens per step by confidence (or at random with --remasking random).
    Llada,
    /// Dream: eps timesteps, unmasking by --alg.
    Dream,
    /// MDLM: probabilistic unmasking under a linear or cosine schedule.
    Mdlm,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CacheArg {
    None,
    Prefix,
    Dual,
}

#[derive(Args, Debug, Clone)]
pub struct SamplerArgs {
    /// Tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub gen_length: usize,
    /// Semi-autoregressive block length (= gen-length for pure diffusion).
    #[arg(long, default_value_t = 32)]
    pub block_length: usize,
    /// Denoising steps (default: gen-length, one token per step).
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, value_enum, default_value = "llada")]
    pub rule: RuleArg,
    /// LLaDA remasking: low-confidence or random.
    #[arg(long, default_value = "low-confidence", value_parser = ["low-confidence", "random"])]
    pub remasking: String,
    /// Dream unmasking algorithm.
    #[arg(long, default_value = "entropy", value_parser = ["origin", "maskgit_plus", "topk_margin", "entropy"])]
    pub alg: String,
    /// MDLM schedule.
    #[arg(long, default_value = "linear", value_parser = ["linear", "cosine"])]
    pub schedule: String,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Classifier-free guidance scale (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub cfg: f64,
    /// Fast-dLLM confidence threshold τ: unmask everything ≥ τ (at least one token per step).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Fast-dLLM block-wise KV cache.
    #[arg(long, value_enum, default_value = "none")]
    pub cache: CacheArg,
    /// Refresh the cache every N steps (default: once per block).
    #[arg(long)]
    pub cache_refresh: Option<usize>,
    /// Never sample EOS (LLaDA's logits_eos_inf).
    #[arg(long)]
    pub no_eos: bool,
    /// Commit EOS/EoT last (LLaDA's confidence_eos_eot_inf, intended semantics).
    #[arg(long)]
    pub eos_last: bool,
    /// Keep denoising after EOS is committed (disables the early stop).
    #[arg(long)]
    pub no_early_stop: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplerArgs {
    pub fn options(&self) -> anyhow::Result<Options> {
        let rule = match self.rule {
            RuleArg::Llada => Rule::Llada {
                remasking: if self.remasking == "random" {
                    Remasking::Random
                } else {
                    Remasking::LowConfidence
                },
            },
            RuleArg::Dream => Rule::Dream {
                alg: match self.alg.as_str() {
                    "origin" => DreamAlg::Origin,
                    "maskgit_plus" => DreamAlg::MaskgitPlus,
                    "topk_margin" => DreamAlg::TopkMargin,
                    _ => DreamAlg::Entropy,
                },
                alg_temp: 0.0,
                top_p: self.top_p,
                top_k: self.top_k,
                eps: 1e-3,
            },
            RuleArg::Mdlm => Rule::Mdlm {
                schedule: if self.schedule == "cosine" {
                    Alpha::Cosine
                } else {
                    Alpha::Linear
                },
            },
        };
        Ok(Options {
            gen_length: self.gen_length,
            block_length: self.block_length,
            steps: self.steps,
            temperature: self.temperature,
            cfg_scale: self.cfg,
            rule,
            logits_eos_inf: self.no_eos,
            confidence_eos_eot_inf: self.eos_last,
            threshold: self.threshold,
            cache: match self.cache {
                CacheArg::None => CacheMode::None,
                CacheArg::Prefix => CacheMode::Prefix,
                CacheArg::Dual => CacheMode::Dual,
            },
            refresh_every: self.cache_refresh,
            early_stop: !self.no_early_stop,
            shift_logits: None,
            dgr: None,
        })
    }
}
