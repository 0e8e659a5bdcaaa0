//! The pretraining loop behind `node pretrain`: a model from scratch (seeded init) or resumed from
//! our checkpoint, trained on a stream of examples with LLaDA's objective, checkpointed as it goes.
//!
//! Half of every batch is packed pretraining-style (any token but BOS may be masked) and half
//! SFT-style (the prompt stays clean), so the base learns both unconditional text and the
//! prompt→answer conditionals that generation and the held-out metrics use. With `pack > 1` each
//! pretraining-style row holds up to `pack` samples separated by EOS (LLaDA packs its pretraining
//! text the same way), so rows carry text instead of mostly EOS padding.

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
    /// Samples per pretraining-style row (1 = one sample padded with EOS).
    pub pack: usize,
    /// Stop after this many steps (the schedule still spans `steps`); `None` = run to `steps`.
    pub until: Option<usize>,
}

impl PretrainOptions {
    /// Examples `next_batch` must supply per step: one per SFT row, `pack` per pretraining row.
    pub fn examples_per_step(&self) -> usize {
        let pretrain_rows = self.batch_size.div_ceil(2);
        pretrain_rows * self.pack.max(1) + (self.batch_size - pretrain_rows)
    }
}

/// What the loop reports after each step.
pub struct StepReport {
    pub step: usize,
    pub loss: f32,
    pub grad_norm: f64,
    pub lr: f64,
}

/// Packs half the rows pretraining-style and half SFT-style. With `pack > 1`, the even
/// (pretraining-style) rows each take `pack` consecutive examples joined by EOS; `examples` must
/// then hold [`PretrainOptions::examples_per_step`] of them.
pub fn mixed_batch(
    examples: &[Example],
    seq_len: usize,
    config: &Config,
    pack_per_row: usize,
) -> PackedBatch {
    if pack_per_row > 1 {
        return packed_batch(examples, seq_len, config, pack_per_row);
    }
    let mut all = pack(examples, seq_len, config.specials, true);
    let sft = pack(examples, seq_len, config.specials, false);
    for r in (1..examples.len()).step_by(2) {
        all.maskable[r] = sft.maskable[r].clone();
        all.answer_len[r] = sft.answer_len[r];
    }
    all
}

fn packed_batch(examples: &[Example], seq_len: usize, config: &Config, k: usize) -> PackedBatch {
    let eos = config.specials.eos;
    let mut rows = Vec::new();
    let mut is_sft = Vec::new();
    let mut rest = examples;
    let mut r = 0usize;
    while !rest.is_empty() {
        if r.is_multiple_of(2) {
            let take = k.min(rest.len());
            let mut answer = Vec::with_capacity(seq_len);
            for ex in &rest[..take] {
                answer.extend_from_slice(&ex.prompt);
                answer.extend_from_slice(&ex.answer);
                answer.push(eos);
            }
            // The last EOS is implied by the padding that `pack` adds.
            answer.pop();
            rows.push(Example {
                prompt: Vec::new(),
                answer,
            });
            is_sft.push(false);
            rest = &rest[take..];
        } else {
            rows.push(rest[0].clone());
            is_sft.push(true);
            rest = &rest[1..];
        }
        r += 1;
    }
    let mut all = pack(&rows, seq_len, config.specials, true);
    let sft = pack(&rows, seq_len, config.specials, false);
    for (r, &s) in is_sft.iter().enumerate() {
        if s {
            all.maskable[r] = sft.maskable[r].clone();
            all.answer_len[r] = sft.answer_len[r];
        }
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
    let end = opts.until.unwrap_or(opts.steps).min(opts.steps);
    for step in 0..end {
        let examples = next_batch(step);
        let batch = mixed_batch(&examples, opts.seq_len, &opts.config, opts.pack);
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
        let done = step + 1 == end;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_rows_join_samples_with_eos_and_keep_sft_rows() {
        let cfg = Config::preset("tiny").unwrap();
        let s = cfg.specials;
        let ex = |p: &[u32], a: &[u32]| Example {
            prompt: p.to_vec(),
            answer: a.to_vec(),
        };
        let examples = vec![
            ex(&[1], &[2]),
            ex(&[3], &[4]),
            ex(&[5], &[6]),
            ex(&[7], &[8]),
        ];
        let opts = PretrainOptions {
            config: cfg.clone(),
            steps: 1,
            batch_size: 2,
            seq_len: 10,
            lr: 1e-3,
            warmup: 0,
            weight_decay: 0.0,
            grad_clip: 1.0,
            seed: 0,
            save_every: 0,
            out: PathBuf::new(),
            save_dtype: DType::F32,
            resume: false,
            pack: 3,
            until: None,
        };
        assert_eq!(opts.examples_per_step(), 4);
        let b = mixed_batch(&examples, 10, &cfg, 3);
        assert_eq!(b.len(), 2);
        assert_eq!(b.ids[0], vec![s.bos, 1, 2, s.eos, 3, 4, s.eos, 5, 6, s.eos]);
        assert!(b.maskable[0][1..].iter().all(|&m| m));
        assert_eq!(b.ids[1][..3], [s.bos, 7, 8]);
        assert_eq!(b.maskable[1][..3], [false, false, true]);
        // pack = 1 is the one-sample-per-row layout.
        let one = mixed_batch(&examples[..2], 10, &cfg, 1);
        assert_eq!(one.ids[0][..4], [s.bos, 1, 2, s.eos]);
    }
}
