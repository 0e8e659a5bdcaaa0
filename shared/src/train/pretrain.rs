//! The pretraining loop behind `node pretrain`: a model from scratch (seeded init) or resumed from
//! our checkpoint, trained on a stream of examples with LLaDA's objective, checkpointed as it goes.
//!
//! Half of every batch is packed pretraining-style (any token but BOS may be masked) and half
//! SFT-style (the prompt stays clean), so the base learns both unconditional text and the
//! prompt→answer conditionals that generation and the held-out metrics use.

use std::path::PathBuf;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::batch::{Example, PackedBatch, pack};
use super::objective::{Objective, masked_diffusion_loss};
use super::trainer::{Schedule, Trainer};
use crate::model::{Config, Error, checkpoint};

#[derive(Debug, Clone)]
pub struct PretrainOptions {
    pub config: Config,
    pub steps: usize,
    pub batch_size: usize,
    pub seq_len: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub seed: u64,
    /// Checkpoint every this many steps (0 = only at the end).
    pub save_every: usize,
    pub out: PathBuf,
    /// Dtype of the saved weights.
    pub save_dtype: DType,
    /// Continue from the checkpoint already in `out`.
    pub resume: bool,
}

/// What the loop reports after each step.
pub struct StepReport {
    pub step: usize,
    pub loss: f32,
    pub grad_norm: f64,
    pub lr: f64,
}

/// Packs half the rows pretraining-style and half SFT-style.
pub fn mixed_batch(examples: &[Example], seq_len: usize, config: &Config) -> PackedBatch {
    let mut all = pack(examples, seq_len, config.specials, true);
    let sft = pack(examples, seq_len, config.specials, false);
    for r in (1..examples.len()).step_by(2) {
        all.maskable[r] = sft.maskable[r].clone();
        all.answer_len[r] = sft.answer_len[r];
    }
    all
}

/// Runs the loop. `next_batch(step)` supplies the examples of each step. Returns the trained
/// variables; the final checkpoint is in `opts.out`.
pub fn pretrain(
    opts: &PretrainOptions,
    mut next_batch: impl FnMut(usize) -> Vec<Example>,
    mut on_step: impl FnMut(&StepReport),
) -> Result<VarMap, Error> {
    let device = Device::Cpu;
    let mut varmap = VarMap::new();
    let model = checkpoint::trainable(&varmap, &opts.config, &device)?;
    let mut start = 0;
    if opts.resume && opts.out.join("config.json").is_file() {
        let cfg = checkpoint::load_into_varmap(&mut varmap, &opts.out)?;
        if cfg != opts.config {
            return Err(Error::Config(format!(
                "{} holds a checkpoint of a different config; refusing to resume",
                opts.out.display()
            )));
        }
        start = read_step(&opts.out);
    } else {
        checkpoint::seeded_init(&varmap, opts.seed, 0.02)?;
    }
    let schedule = Schedule {
        peak_lr: opts.lr,
        warmup: opts.warmup,
        total: opts.steps,
        floor: 0.1,
    };
    let mut trainer = Trainer::new(
        varmap.all_vars(),
        schedule,
        opts.weight_decay,
        Some(opts.grad_clip),
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x9E37_79B9_7F4A_7C15);
    for step in 0..opts.steps {
        let examples = next_batch(step);
        let batch = mixed_batch(&examples, opts.seq_len, &opts.config);
        if step < start {
            // Replays the noise stream (cheap, no forward) so a resumed run sees the same masks.
            let mask = opts.config.specials.mask;
            super::objective::noise(&batch, mask, Objective::Pretrain, (0.0, 1.0), &mut rng);
            continue;
        }
        let loss =
            masked_diffusion_loss(&model, &batch, Objective::Pretrain, (0.0, 1.0), &mut rng)?;
        let value = loss.to_scalar::<f32>()?;
        let lr = schedule.lr(step);
        let grad_norm = trainer.step(&loss)?;
        on_step(&StepReport {
            step,
            loss: value,
            grad_norm,
            lr,
        });
        let done = step + 1 == opts.steps;
        if done || (opts.save_every > 0 && (step + 1) % opts.save_every == 0) {
            checkpoint::save(&varmap, &opts.config, &opts.out, opts.save_dtype)?;
            crate::fsutil::write_atomic(&opts.out.join("step"), (step + 1).to_string().as_bytes())
                .map_err(|e| Error::Checkpoint {
                    path: opts.out.display().to_string(),
                    reason: e.to_string(),
                })?;
        }
    }
    Ok(varmap)
}

fn read_step(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("step"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
