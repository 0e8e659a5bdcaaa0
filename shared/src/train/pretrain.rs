//! The pretraining loop behind `node pretrain`: a model from scratch (seeded init) or resumed from
//! our checkpoint, trained on a stream of examples with LLaDA's objective, checkpointed as it goes.
//!
//! Part of every batch is packed pretraining-style (any token but BOS may be masked) and the rest
//! SFT-style (the prompt stays clean; half the rows by default, see
//! [`PretrainOptions::sft_share`]), so the base learns both unconditional text and the
//! prompt→answer conditionals that generation and the held-out metrics use. With `pack > 1` each
//! pretraining-style row holds up to `pack` samples separated by EOS (LLaDA packs its pretraining
//! text the same way), so rows carry text instead of mostly EOS padding.

use std::path::PathBuf;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::batch::{Example, PackedBatch, pack, vary_answer_regions};
use super::objective::{NoiseOptions, Objective, masked_diffusion_loss_with, noise_with};
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
    /// Vary the row length per step: each step's rows are `L` tokens with `L` drawn uniformly
    /// from `[max(min_seq_len, longest sample + BOS + EOS), seq_len]` (its own seeded stream, so a
    /// resumed run draws the same lengths). Short canvases cost less and teach the model the
    /// canvas lengths generation uses (a prompt plus `gen_length`), which a fixed `seq_len`
    /// never shows it. `None` = every row is `seq_len`.
    pub min_seq_len: Option<usize>,
    /// The `t` sampler and token weighting (default: LLaDA's, uniform `t` and 1/p).
    pub noise: NoiseOptions,
    /// Fraction of each batch's rows that are SFT-style (prompt never masked), spread evenly
    /// through the batch (see [`is_sft_row`]); 0.5 alternates pretraining and SFT rows.
    pub sft_share: f64,
    /// Shorten each SFT row to its prompt plus an answer region of random length (see
    /// [`super::batch::draw_region`]) instead of filling it with EOS to the row length, so the
    /// model sees the canvas lengths generation uses. `false`: every row is the step's length
    /// (how the committed `tiny` base was trained).
    pub vary_sft_canvas: bool,
    /// Where the model trains (`Device::Cpu` by default; a CUDA device in a `cuda` build).
    /// Checkpoints and the optimiser state are written the same from either.
    pub device: Device,
}

impl PretrainOptions {
    /// Options with `node pretrain`'s defaults (2,000 steps, batch 32 × 64, lr 5e-4 with 100
    /// warm-up steps, weight decay 0.01, clipping 1.0, seed 0, half the rows SFT on varied
    /// canvases, LLaDA's noise), saving f32 weights only at the end; set the rest with struct
    /// update syntax.
    pub fn new(config: Config, out: impl Into<PathBuf>) -> Self {
        Self {
            config,
            steps: 2000,
            batch_size: 32,
            seq_len: 64,
            lr: 5e-4,
            warmup: 100,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: 0,
            save_every: 0,
            out: out.into(),
            save_dtype: DType::F32,
            resume: false,
            pack: 1,
            until: None,
            min_seq_len: None,
            noise: NoiseOptions::default(),
            sft_share: 0.5,
            vary_sft_canvas: true,
            device: Device::Cpu,
        }
    }

    /// Examples `next_batch` must supply per step: one per SFT row, `pack` per pretraining row.
    pub fn examples_per_step(&self) -> usize {
        let sft_rows = sft_rows(self.batch_size, self.sft_share);
        (self.batch_size - sft_rows) * self.pack.max(1) + sft_rows
    }
}

/// Whether row `r` of a batch is SFT-style when a fraction `share` (clamped to [0, 1]) of the
/// rows are: the rows where `⌊(r+1)·share⌋` steps up, so SFT rows are spread evenly and
/// `share = 0.5` gives the odd rows.
pub fn is_sft_row(r: usize, share: f64) -> bool {
    let share = if share.is_nan() {
        0.0
    } else {
        share.clamp(0.0, 1.0)
    };
    ((r + 1) as f64 * share).floor() > (r as f64 * share).floor()
}

/// How many of `batch_size` rows are SFT-style under [`is_sft_row`].
pub fn sft_rows(batch_size: usize, share: f64) -> usize {
    (0..batch_size).filter(|&r| is_sft_row(r, share)).count()
}

/// What the loop reports after each step.
pub struct StepReport {
    pub step: usize,
    pub loss: f32,
    pub grad_norm: f64,
    pub lr: f64,
}

/// Packs the rows [`is_sft_row`] picks (a fraction `sft_share`) SFT-style and the others
/// pretraining-style. With `pack > 1`, each pretraining-style row takes `pack` consecutive
/// examples joined by EOS; `examples` must then hold [`PretrainOptions::examples_per_step`] of
/// them.
pub fn mixed_batch(
    examples: &[Example],
    seq_len: usize,
    config: &Config,
    pack_per_row: usize,
    sft_share: f64,
) -> PackedBatch {
    if pack_per_row > 1 {
        return packed_batch(examples, seq_len, config, pack_per_row, sft_share);
    }
    let mut all = pack(examples, seq_len, config.specials, true);
    let sft = pack(examples, seq_len, config.specials, false);
    for r in (0..examples.len()).filter(|&r| is_sft_row(r, sft_share)) {
        all.maskable[r] = sft.maskable[r].clone();
        all.answer_len[r] = sft.answer_len[r];
    }
    all
}

fn packed_batch(
    examples: &[Example],
    seq_len: usize,
    config: &Config,
    k: usize,
    sft_share: f64,
) -> PackedBatch {
    let eos = config.specials.eos;
    let mut rows = Vec::new();
    let mut is_sft = Vec::new();
    for (group, sft) in row_groups(examples, k, sft_share) {
        if sft {
            rows.push(group[0].clone());
        } else {
            let mut answer = Vec::with_capacity(seq_len);
            for ex in group {
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
        }
        is_sft.push(sft);
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

/// Splits a step's examples into rows: an SFT-style row ([`is_sft_row`]) takes one example, a
/// pretraining-style row up to `k` consecutive ones. Returns each row's examples and whether it
/// is SFT-style.
fn row_groups(examples: &[Example], k: usize, sft_share: f64) -> Vec<(&[Example], bool)> {
    let mut rows = Vec::new();
    let mut rest = examples;
    let mut r = 0usize;
    while !rest.is_empty() {
        let sft = is_sft_row(r, sft_share);
        let take = if sft { 1 } else { k.max(1).min(rest.len()) };
        rows.push((&rest[..take], sft));
        rest = &rest[take..];
        r += 1;
    }
    rows
}

/// Runs the loop. `next_batch(step)` supplies the examples of each step. Returns the trained
/// variables; the final checkpoint is in `opts.out`.
pub fn pretrain(
    opts: &PretrainOptions,
    mut next_batch: impl FnMut(usize) -> Vec<Example>,
    mut on_step: impl FnMut(&StepReport),
) -> Result<VarMap, Error> {
    let device = opts.device.clone();
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
    let (names, vars) = named_vars(&varmap)?;
    let mut trainer = Trainer::new(vars, schedule, opts.weight_decay, Some(opts.grad_clip))?;
    let state_path = opts.out.join(OPTIMIZER_FILE);
    if start > 0 {
        if state_path.is_file() {
            let info = trainer
                .load_state(&names, &state_path)
                .map_err(|e| Error::Checkpoint {
                    path: state_path.display().to_string(),
                    reason: e.to_string(),
                })?;
            if info.step != start {
                // The state holds weights, moments and step of one instant (it is written whole,
                // atomically, before the `step` file), so it wins over a `step` file that an
                // interrupted save left behind.
                tracing::warn!(
                    "{}: the optimiser state is at step {} but the `step` file says {start}; \
                     resuming at step {} from the state",
                    opts.out.display(),
                    info.step,
                    info.step
                );
                start = info.step;
            }
        } else {
            tracing::warn!(
                "{} has no {OPTIMIZER_FILE}: resuming at step {start} with zero AdamW moments \
                 and the {:?} weights of the checkpoint",
                opts.out.display(),
                opts.save_dtype
            );
            trainer.resume_at(start);
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut len_rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5EC1_E0A7_D1CE_0001);
    let mut region_rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x0A25_3E61_0B5E_0002);
    let end = opts.until.unwrap_or(opts.steps).min(opts.steps);
    for step in 0..end {
        let examples = next_batch(step);
        let seq_len = match opts.min_seq_len {
            None => opts.seq_len,
            Some(min) => step_seq_len(&examples, opts, min, &mut len_rng),
        };
        let mut batch = mixed_batch(&examples, seq_len, &opts.config, opts.pack, opts.sft_share);
        if opts.vary_sft_canvas {
            let rows: Vec<Option<&Example>> =
                row_groups(&examples, opts.pack.max(1), opts.sft_share)
                    .into_iter()
                    .map(|(group, sft)| sft.then(|| &group[0]))
                    .collect();
            vary_answer_regions(&mut batch, &rows, opts.config.specials.pad, &mut region_rng);
        }
        if step < start {
            // Replays the noise stream (cheap, no forward) so a resumed run sees the same masks.
            let mask = opts.config.specials.mask;
            noise_with(
                &batch,
                mask,
                Objective::Pretrain,
                (0.0, 1.0),
                opts.noise,
                &mut rng,
            );
            continue;
        }
        let loss = masked_diffusion_loss_with(
            &model,
            &batch,
            Objective::Pretrain,
            (0.0, 1.0),
            opts.noise,
            &mut rng,
        )?;
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
            trainer
                .save_state(&names, &state_path)
                .map_err(|e| Error::Checkpoint {
                    path: state_path.display().to_string(),
                    reason: e.to_string(),
                })?;
            crate::fsutil::write_atomic(&opts.out.join("step"), (step + 1).to_string().as_bytes())
                .map_err(|e| Error::Checkpoint {
                    path: opts.out.display().to_string(),
                    reason: e.to_string(),
                })?;
        }
    }
    Ok(varmap)
}

/// The optimiser state beside a pretraining checkpoint (see [`Trainer::save_state`]): AdamW's
/// moments, the step count and the f32 master weights, all of one instant, so `--resume`
/// continues the run exactly even when the weights on disk are f16 or a save was interrupted.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The trainable variables sorted by name (the names the optimiser state is saved under).
fn named_vars(varmap: &VarMap) -> Result<(Vec<String>, Vec<candle_core::Var>), Error> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Config("variable map lock poisoned".into()))?;
    let mut pairs: Vec<(String, candle_core::Var)> =
        data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(pairs.into_iter().unzip())
}

/// The row length of one step under [`PretrainOptions::min_seq_len`].
fn step_seq_len(
    examples: &[Example],
    opts: &PretrainOptions,
    min: usize,
    rng: &mut impl rand::RngCore,
) -> usize {
    // A packed row holds its samples joined by EOS; an SFT row holds one.
    let longest = row_groups(examples, opts.pack.max(1), opts.sft_share)
        .into_iter()
        .map(|(group, _)| {
            group
                .iter()
                .map(|e| e.prompt.len() + e.answer.len() + 1)
                .sum::<usize>()
        })
        .max();
    let lo = (longest.unwrap_or(0) + 1).max(min).min(opts.seq_len);
    let span = (opts.seq_len - lo + 1) as u64;
    lo + (rng.next_u64() % span) as usize
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

    fn test_options(
        cfg: &Config,
        batch_size: usize,
        seq_len: usize,
        pack: usize,
        min_seq_len: Option<usize>,
    ) -> PretrainOptions {
        PretrainOptions {
            steps: 1,
            batch_size,
            seq_len,
            lr: 1e-3,
            warmup: 0,
            weight_decay: 0.0,
            vary_sft_canvas: false,
            pack,
            min_seq_len,
            ..PretrainOptions::new(cfg.clone(), PathBuf::new())
        }
    }

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
        let opts = test_options(&cfg, 2, 10, 3, None);
        assert_eq!(opts.examples_per_step(), 4);
        let b = mixed_batch(&examples, 10, &cfg, 3, 0.5);
        assert_eq!(b.len(), 2);
        assert_eq!(b.ids[0], vec![s.bos, 1, 2, s.eos, 3, 4, s.eos, 5, 6, s.eos]);
        assert!(b.maskable[0][1..].iter().all(|&m| m));
        assert_eq!(b.ids[1][..3], [s.bos, 7, 8]);
        assert_eq!(b.maskable[1][..3], [false, false, true]);
        // pack = 1 is the one-sample-per-row layout.
        let one = mixed_batch(&examples[..2], 10, &cfg, 1, 0.5);
        assert_eq!(one.ids[0][..4], [s.bos, 1, 2, s.eos]);
    }

    #[test]
    fn varied_row_lengths_fit_every_sample_and_span_the_range() {
        let cfg = Config::preset("tiny").unwrap();
        let ex = |n: usize| Example {
            prompt: vec![1; n],
            answer: vec![2; 3],
        };
        let mut opts = test_options(&cfg, 4, 40, 1, Some(8));
        let examples = vec![ex(2), ex(20), ex(5), ex(1)];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let lens: Vec<usize> = (0..400)
            .map(|_| step_seq_len(&examples, &opts, 8, &mut rng))
            .collect();
        // BOS + 20 + 3 + EOS = 25 is the shortest row that holds the longest sample with its EOS.
        assert_eq!(*lens.iter().min().unwrap(), 25);
        assert_eq!(*lens.iter().max().unwrap(), 40);
        let b = mixed_batch(&examples, lens[0], &cfg, 1, 0.5);
        assert!(b.ids.iter().all(|r| r.last() == Some(&cfg.specials.eos)));
        // Packed rows: three samples of 1+3+1 tokens each in the first row.
        opts.pack = 3;
        let packed = vec![ex(1), ex(1), ex(1), ex(1)];
        let l = step_seq_len(&packed, &opts, 8, &mut rng);
        assert!((16..=40).contains(&l), "{l}");
        // A minimum above the longest sample is the floor; a minimum above seq_len is clamped.
        opts.pack = 1;
        assert!((0..50).all(|_| step_seq_len(&examples, &opts, 33, &mut rng) >= 33));
        assert_eq!(step_seq_len(&examples, &opts, 99, &mut rng), 40);
    }

    #[test]
    fn sft_share_spreads_sft_rows_evenly_and_counts_examples() {
        // 0.5 is the historical layout: odd rows SFT.
        let half: Vec<bool> = (0..6).map(|r| is_sft_row(r, 0.5)).collect();
        assert_eq!(half, [false, true, false, true, false, true]);
        let three_q: Vec<bool> = (0..8).map(|r| is_sft_row(r, 0.75)).collect();
        assert_eq!(three_q, [false, true, true, true, false, true, true, true]);
        assert_eq!(sft_rows(16, 0.0), 0);
        assert_eq!(sft_rows(16, 1.0), 16);
        assert_eq!(sft_rows(16, 0.75), 12);
        assert_eq!(sft_rows(5, 0.5), 2);
        assert_eq!(sft_rows(4, f64::NAN), 0);
        assert_eq!(sft_rows(4, 7.0), 4);

        let cfg = Config::preset("tiny").unwrap();
        let s = cfg.specials;
        let ex = |p: u32| Example {
            prompt: vec![p],
            answer: vec![p + 100],
        };
        let mut opts = test_options(&cfg, 4, 12, 2, None);
        opts.sft_share = 0.75;
        // One packed row of 2 examples + 3 SFT rows.
        assert_eq!(opts.examples_per_step(), 5);
        let examples: Vec<Example> = (1..=5).map(ex).collect();
        let b = mixed_batch(&examples, 12, &cfg, 2, 0.75);
        assert_eq!(b.len(), 4);
        assert_eq!(b.ids[0][..6], [s.bos, 1, 101, s.eos, 2, 102]);
        for (r, first) in [(1usize, 3u32), (2, 4), (3, 5)] {
            assert_eq!(b.ids[r][..3], [s.bos, first, first + 100]);
            assert_eq!(b.maskable[r][..3], [false, false, true], "row {r}");
        }
        // Unpacked: every row SFT at share 1.
        let all_sft = mixed_batch(&examples[..3], 12, &cfg, 1, 1.0);
        assert!(all_sft.maskable.iter().all(|m| !m[1]));
        let none = mixed_batch(&examples[..3], 12, &cfg, 1, 0.0);
        assert!(none.maskable.iter().all(|m| m[1]));
    }

    fn micro_config() -> Config {
        Config {
            d_model: 16,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 2,
            head_dim: 8,
            mlp_hidden: 32,
            ..Config::tiny()
        }
    }

    fn run(opts: &PretrainOptions) -> Result<(), Error> {
        let per = opts.examples_per_step();
        pretrain(
            opts,
            |step| {
                (0..per)
                    .map(|i| Example {
                        prompt: vec![40 + (step % 7) as u32, 50 + i as u32 % 5],
                        answer: vec![60 + i as u32 % 3, 70],
                    })
                    .collect()
            },
            |_| {},
        )
        .map(|_| ())
    }

    fn master_weights(dir: &std::path::Path) -> Vec<(String, Vec<f32>)> {
        let t = candle_core::safetensors::load(dir.join(OPTIMIZER_FILE), &Device::Cpu).unwrap();
        let mut w: Vec<_> = t
            .into_iter()
            .filter(|(n, _)| n.starts_with("w."))
            .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
        w.sort_by(|a, b| a.0.cmp(&b.0));
        w
    }

    #[test]
    fn resume_with_optimiser_state_equals_the_uninterrupted_run() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = test_options(&micro_config(), 4, 12, 1, None);
        opts.steps = 6;
        opts.warmup = 2;
        opts.lr = 1e-2;
        opts.weight_decay = 0.01;
        opts.save_every = 3;
        // The varied SFT canvases draw from their own stream, which the resume must replay.
        opts.vary_sft_canvas = true;
        // f16 on disk: only the f32 master weights in the optimiser file make the resume exact.
        opts.save_dtype = DType::F16;
        let straight = PathBuf::from(tmp.path()).join("straight");
        opts.out = straight.clone();
        run(&opts).unwrap();

        let resumed = PathBuf::from(tmp.path()).join("resumed");
        let mut first = opts.clone();
        first.out = resumed.clone();
        first.until = Some(3);
        run(&first).unwrap();
        assert_eq!(read_step(&resumed), 3);
        let at3 = master_weights(&resumed);
        let mut second = first.clone();
        second.until = None;
        second.resume = true;
        run(&second).unwrap();
        let (a, b) = (master_weights(&straight), master_weights(&resumed));
        assert!(!a.is_empty());
        assert_eq!(a, b, "resumed run differs from the uninterrupted one");
        assert_ne!(at3, b, "the resumed steps changed nothing");

        // Without the state (an older checkpoint), the resume still runs: zero moments, f16
        // weights, the schedule at step 3 — a different result, so the state file is what makes
        // the run exact.
        let bare = PathBuf::from(tmp.path()).join("bare");
        let mut third = first.clone();
        third.out = bare.clone();
        run(&third).unwrap();
        std::fs::remove_file(bare.join(OPTIMIZER_FILE)).unwrap();
        third.until = None;
        third.resume = true;
        run(&third).unwrap();
        assert_eq!(read_step(&bare), 6);
        assert_ne!(master_weights(&bare), a);
    }

    #[test]
    fn resume_trusts_the_optimiser_state_over_a_stale_step_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = test_options(&micro_config(), 2, 12, 1, None);
        opts.steps = 4;
        opts.save_every = 2;
        opts.lr = 1e-2;
        opts.out = tmp.path().join("straight");
        run(&opts).unwrap();
        let straight = master_weights(&opts.out);

        // A save interrupted between the state file and the `step` file: the state says step 2,
        // the stale `step` file 1. The state wins, and the run ends where the straight one did.
        opts.out = tmp.path().join("interrupted");
        opts.until = Some(2);
        run(&opts).unwrap();
        std::fs::write(opts.out.join("step"), "1").unwrap();
        opts.until = None;
        opts.resume = true;
        run(&opts).unwrap();
        assert_eq!(read_step(&opts.out), 4);
        assert_eq!(master_weights(&opts.out), straight);
    }
}
