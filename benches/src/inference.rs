//! Inference workloads shared by the `inference` criterion bench and the `inference_report` binary:
//! which model to run, the prompts, the FLOP count of a forward, the machine's matmul rate and the
//! process's peak memory.
//!
//! Both measure the same thing on purpose: the `tiny` checkpoint (our folder format, path from the
//! command line, `RUVDLLM_MODEL`, or the committed `shared/assets/tiny`), `small` with seeded
//! random weights (its speed does not depend on what the weights are), held-out prompts from the
//! built-in data, and the seed's 8-step setting of a 128-token prompt and 256 generated tokens.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use ruvdllm::candle_core::{DType, Device, Tensor};
use ruvdllm::candle_nn::VarMap;
use ruvdllm::data::{DEFAULT_SEED, Domain, Generator, Split};
use ruvdllm::model::{Config, Model, checkpoint};
use ruvdllm::tokenizer::{ByteTokenizer, Tokenizer};
use ruvdllm::train::Example;

/// Where the committed `tiny` checkpoint lives when neither an argument nor `RUVDLLM_MODEL` names
/// one.
pub const DEFAULT_TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/assets/tiny");

/// The environment variable naming the `tiny` checkpoint folder.
pub const MODEL_ENV: &str = "RUVDLLM_MODEL";

/// The seed's prompt length for the latency table.
pub const PROMPT_LEN: usize = 128;
/// The seed's generation length.
pub const GEN_LEN: usize = 256;
/// The seed's step count for the latency table.
pub const FAST_STEPS: usize = 8;
/// Seed of `small`'s random weights.
pub const SMALL_SEED: u64 = 7;
/// Standard deviation of `small`'s random weights (the usual transformer initialisation).
pub const SMALL_INIT_STD: f64 = 0.02;

/// The checkpoint path: `arg` if given, else `$RUVDLLM_MODEL`, else [`DEFAULT_TINY`].
pub fn model_path(arg: Option<&Path>) -> PathBuf {
    if let Some(p) = arg {
        return p.to_path_buf();
    }
    match std::env::var_os(MODEL_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_TINY),
    }
}

/// Loads our checkpoint folder in f32 on the CPU, with a message that says how to point at one
/// when the folder is missing.
pub fn load_checkpoint(path: &Path) -> anyhow::Result<Model> {
    if !path.join("config.json").is_file() {
        bail!(
            "no checkpoint at {} (expected config.json + model.safetensors); pass its folder \
             or set {MODEL_ENV}",
            path.display()
        );
    }
    let loaded = checkpoint::load(path, DType::F32, &Device::Cpu)
        .with_context(|| format!("loading checkpoint {}", path.display()))?;
    Ok(loaded.model)
}

/// A model of `config` with weights drawn from N(0, std²) by [`checkpoint::seeded_init`].
pub fn seeded_model(config: &Config, seed: u64, std: f64) -> anyhow::Result<Model> {
    let varmap = VarMap::new();
    let mut model = checkpoint::trainable(&varmap, config, &Device::Cpu)?;
    checkpoint::seeded_init(&varmap, seed, std)?;
    model.set_differentiable(false);
    Ok(model)
}

/// `n` held-out samples, the domains taken in turn so every domain is represented.
pub fn heldout_samples(n: usize) -> Vec<ruvdllm::data::Sample> {
    let data = Generator::new(DEFAULT_SEED);
    let per = n.div_ceil(Domain::ALL.len());
    let by_domain: Vec<Vec<_>> = Domain::ALL
        .iter()
        .map(|&d| data.samples(Split::HeldOut, d, per))
        .collect();
    (0..per)
        .flat_map(|i| by_domain.iter().map(move |v| v[i].clone()))
        .take(n)
        .collect()
}

/// `BOS prompt` of `n` held-out queries: what the sampler is asked to complete.
pub fn heldout_prompts(n: usize) -> Vec<Vec<u32>> {
    let bos = ByteTokenizer.specials().bos;
    heldout_samples(n)
        .iter()
        .map(|s| {
            std::iter::once(bos)
                .chain(ByteTokenizer.encode(&s.prompt))
                .collect()
        })
        .collect()
}

/// `n` held-out samples as likelihood examples (prompt kept clean, answer + EOS padding scored).
pub fn heldout_examples(n: usize) -> Vec<Example> {
    heldout_samples(n)
        .iter()
        .map(|s| Example {
            prompt: ByteTokenizer.encode(&s.prompt),
            answer: ByteTokenizer.encode(&s.answer),
        })
        .collect()
}

/// A prompt of exactly `len` tokens (`len ≥ 1`): BOS, then the tail of a run of pretraining samples
/// ending in a held-out query, so that the model is asked to answer the query. `index` varies it.
pub fn long_prompt(len: usize, index: usize) -> Vec<u32> {
    let data = Generator::new(DEFAULT_SEED);
    let query = &heldout_samples(index + 1)[index];
    let want = len.saturating_sub(1);
    let mut text = query.prompt.clone();
    for s in data.pretrain_stream().skip(index * 64) {
        if text.len() >= want {
            break;
        }
        text = format!("{} {text}", s.text());
    }
    let ids = ByteTokenizer.encode(&text);
    let tail = &ids[ids.len().saturating_sub(want)..];
    std::iter::once(ByteTokenizer.specials().bos)
        .chain(tail.iter().copied())
        .collect()
}

/// Fraction of positions where `a` and `b` hold the same token, over all rows (rows compared up to
/// the shorter length; a length difference counts as disagreement).
pub fn agreement(a: &[Vec<u32>], b: &[Vec<u32>]) -> f64 {
    let mut same = 0usize;
    let mut total = 0usize;
    for (x, y) in a.iter().zip(b) {
        same += x.iter().zip(y).filter(|(p, q)| p == q).count();
        total += x.len().max(y.len());
    }
    if total == 0 {
        1.0
    } else {
        same as f64 / total as f64
    }
}

/// The `p`-th percentile (0–100) of `values` by the nearest-rank method; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Every linear of one forward as `(out, in, count)`: q, k, v, o, gate, up, down per layer and the
/// LM head once.
pub fn linear_shapes(cfg: &Config) -> Vec<(usize, usize, usize)> {
    let d = cfg.d_model;
    let q = cfg.n_heads * cfg.head_dim;
    let kv = cfg.n_kv_heads * cfg.head_dim;
    let l = cfg.n_layers;
    let mut shapes = vec![
        (q, d, l),
        (kv, d, 2 * l),
        (d, q, l),
        (cfg.mlp_hidden, d, 2 * l),
        (d, cfg.mlp_hidden, l),
        (cfg.vocab_size, d, 1),
    ];
    // Merge equal shapes (e.g. q and k under MHA) so each is timed once.
    shapes.sort_unstable();
    let mut merged: Vec<(usize, usize, usize)> = Vec::with_capacity(shapes.len());
    for (o, i, c) in shapes {
        match merged.last_mut() {
            Some(last) if last.0 == o && last.1 == i => last.2 += c,
            _ => merged.push((o, i, c)),
        }
    }
    merged
}

/// Weights in the linears (the embedding lookup and the norms do no multiply-adds).
pub fn linear_params(cfg: &Config) -> usize {
    linear_shapes(cfg).iter().map(|&(o, i, c)| o * i * c).sum()
}

/// Floating-point operations of one full forward over `batch` canvases of `seq` tokens:
/// `2 · linear params · tokens` plus attention's `QKᵀ` and `PV` (`2 · 2 · L² · q_dim` per layer and
/// row). Norms, RoPE, softmax and SiLU are left out (a few percent at these sizes).
pub fn forward_flops(cfg: &Config, batch: usize, seq: usize) -> f64 {
    let tokens = (batch * seq) as f64;
    let q_dim = (cfg.n_heads * cfg.head_dim) as f64;
    let attn = 4.0 * (seq * seq) as f64 * q_dim * cfg.n_layers as f64 * batch as f64;
    2.0 * linear_params(cfg) as f64 * tokens + attn
}

/// The machine's f32 matmul rate (GFLOP/s) at the model's linear shapes for `tokens` rows: each
/// shape's `x[tokens, in] · W[out, in]ᵀ` is timed the way [`Model`] runs it (best of `reps`), and
/// the rate is the total FLOPs of one forward's linears over their total best time.
pub fn matmul_gflops(cfg: &Config, tokens: usize, reps: usize) -> anyhow::Result<f64> {
    let dev = Device::Cpu;
    let mut flops = 0.0;
    let mut secs = 0.0;
    for (out, inp, count) in linear_shapes(cfg) {
        let x = Tensor::randn(0f32, 1.0, (tokens, inp), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (out, inp), &dev)?;
        // Warm-up: first-touch allocation and thread-pool start are not the matmul's cost.
        std::hint::black_box(x.matmul(&w.t()?)?);
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            let y = x.matmul(&w.t()?)?;
            std::hint::black_box(&y);
            best = best.min(t.elapsed().as_secs_f64());
        }
        flops += 2.0 * (tokens * inp * out * count) as f64;
        secs += best * count as f64;
    }
    Ok(flops / secs / 1e9)
}

/// The process's peak resident set size in KiB (`VmHWM` of `/proc/self/status`); `None` where
/// there is no procfs.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets the peak RSS to the current RSS (`echo 5 > /proc/self/clear_refs`), so that one model's
/// peak is not another's; `false` where the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(5.0));
        assert_eq!(percentile(&v, 90.0), Some(9.0));
        assert_eq!(percentile(&v, 99.0), Some(10.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn agreement_counts_equal_positions() {
        let a = vec![vec![1, 2, 3, 4], vec![5, 6]];
        let b = vec![vec![1, 0, 3, 4], vec![5, 6, 7]];
        // 3 of 4, then 2 of 3 (the missing position disagrees).
        assert!((agreement(&a, &b) - 5.0 / 7.0).abs() < 1e-12);
        assert_eq!(agreement(&a, &a), 1.0);
    }

    #[test]
    fn linear_params_match_the_config_count() {
        for cfg in [Config::tiny(), Config::small()] {
            // n_params = linears + embedding + norms (no qkv bias in these presets).
            let rest = cfg.vocab_size * cfg.d_model + (2 * cfg.n_layers + 1) * cfg.d_model;
            assert_eq!(linear_params(&cfg) + rest, cfg.n_params());
        }
        let tiny = Config::tiny();
        // q/k/v/o share [256, 256] under MHA: one entry with 4 per layer.
        assert!(linear_shapes(&tiny).contains(&(256, 256, 16)));
        let f = forward_flops(&tiny, 1, 10);
        assert_eq!(
            f,
            2.0 * linear_params(&tiny) as f64 * 10.0 + 4.0 * 100.0 * 256.0 * 4.0
        );
    }

    #[test]
    fn prompts_have_the_requested_shape() {
        let bos = ByteTokenizer.specials().bos;
        for i in 0..3 {
            let p = long_prompt(PROMPT_LEN, i);
            assert_eq!(p.len(), PROMPT_LEN);
            assert_eq!(p[0], bos);
            assert!(p[1..].iter().all(|&t| t < 256));
        }
        assert_ne!(long_prompt(PROMPT_LEN, 0), long_prompt(PROMPT_LEN, 1));
        let q = heldout_prompts(7);
        assert_eq!(q.len(), 7);
        assert!(q.iter().all(|p| p[0] == bos && p.len() > 1));
        assert_eq!(heldout_examples(7).len(), 7);
    }

    #[test]
    fn model_path_prefers_the_argument() {
        let p = Path::new("/some/where");
        assert_eq!(model_path(Some(p)), p);
        assert!(DEFAULT_TINY.ends_with("shared/assets/tiny"));
    }

    #[test]
    fn missing_checkpoint_is_a_clear_error() {
        let dir = std::env::temp_dir().join("ruvdllm-bench-no-such-checkpoint");
        let err = load_checkpoint(&dir).err().expect("missing folder fails");
        assert!(err.to_string().contains(MODEL_ENV), "{err}");
    }

    #[test]
    fn peak_rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_kib().is_some_and(|k| k > 0));
        }
    }
}
