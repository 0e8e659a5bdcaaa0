//! The real [`LocalTrainer`]: TALoRA training of the global adapter's B matrices on the node's
//! own data.
//!
//! One round: rebuild the global TALoRA adapter from the delta the coordinator sent (A comes from
//! the run seed, so every node holds the same A bit for bit) → train a copy with
//! [`ruvdllm::adapter::train::run`] → send `trained − global`. Before and after training the node
//! measures the per-band loss on its small local validation set with the same noise seed, and
//! reports the per-band fall as its band metrics: the coordinator's DAF uses them to weigh the
//! domain band, capped so no node can buy influence with a large claim. (Three passes, one per
//! band; the overall validation loss is their width-weighted mean.)
//!
//! The base model is shared read-only (`Arc<Model>`); training runs on a differentiable clone
//! inside `train::run`, so the base is never modified.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::SeedableRng;
use ruvdllm::adapter::train::{self, BandLosses, TrainOptions, TrainReport};
use ruvdllm::adapter::{Band, Shape, Spec, Talora};
use ruvdllm::candle_core::DType;
use ruvdllm::delta::Delta;
use ruvdllm::eval::heldout_loss_in;
use ruvdllm::model::Model;
use ruvdllm::train::Example;

use super::trainer::{LocalTrainer, LocalUpdate, RoundInfo, TrainError};

/// Rows per forward when measuring validation losses.
const EVAL_BATCH: usize = 16;

/// Why a trainer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error("training needs an f32 model, got {dtype:?}")]
    Dtype { dtype: DType },
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("invalid training option `{field}`: {reason}")]
    Option { field: &'static str, reason: String },
    #[error("adapter spec: {0}")]
    Spec(#[from] ruvdllm::adapter::Error),
}

/// What one round of local training did (kept for reports and tests).
#[derive(Debug, Clone, PartialEq)]
pub struct RoundStats {
    pub round: u64,
    pub report: TrainReport,
    /// Validation losses with the global adapter and with the trained one (same noise).
    pub before: BandLosses,
    pub after: BandLosses,
}

impl RoundStats {
    /// Mean training loss over every band's last steps (what the round table prints).
    pub fn train_loss(&self) -> f64 {
        let (sum, n) = self
            .report
            .bands
            .iter()
            .filter(|b| b.steps > 0)
            .fold((0.0, 0usize), |(s, n), b| (s + b.last_loss, n + 1));
        if n == 0 { 0.0 } else { sum / n as f64 }
    }
}

/// TALoRA trainer of one node.
pub struct TaloraTrainer {
    model: Arc<Model>,
    spec: Spec,
    examples: Vec<Example>,
    validation: Vec<Example>,
    opts: TrainOptions,
    seed: u64,
    last: Option<RoundStats>,
    banks: Option<Arc<crate::serve::LocalBanks>>,
    /// Each band's AdamW moments after the last round (`opts.keep_optimizer_state`; in memory
    /// only: a restarted node starts with fresh moments).
    moments: train::BandMoments,
    /// Local DP applied to every update before it leaves ([`Self::with_privacy`]).
    privacy: Option<super::privacy::Privatizer>,
}

impl std::fmt::Debug for TaloraTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaloraTrainer")
            .field("spec", &self.spec)
            .field("examples", &self.examples.len())
            .field("validation", &self.validation.len())
            .field("opts", &self.opts)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl TaloraTrainer {
    /// A trainer on `model` (f32) with training `examples` and a local `validation` set. `seed`
    /// keys the training noise and data order (mixed with the round) and the validation noise.
    pub fn new(
        model: Arc<Model>,
        spec: Spec,
        examples: Vec<Example>,
        validation: Vec<Example>,
        opts: TrainOptions,
        seed: u64,
    ) -> Result<Self, TrainerError> {
        if model.dtype() != DType::F32 {
            return Err(TrainerError::Dtype {
                dtype: model.dtype(),
            });
        }
        spec.validate()?;
        if examples.is_empty() {
            return Err(TrainerError::Empty {
                what: "the training set",
            });
        }
        if validation.is_empty() {
            return Err(TrainerError::Empty {
                what: "the validation set",
            });
        }
        let option = |field, reason: String| Err(TrainerError::Option { field, reason });
        if opts.steps == 0 {
            return option("steps", "must be at least 1".into());
        }
        if opts.batch_size == 0 {
            return option("batch_size", "must be at least 1".into());
        }
        if opts.seq_len < 2 || opts.seq_len > model.config().max_seq_len {
            return option(
                "seq_len",
                format!(
                    "{} is outside 2..={}",
                    opts.seq_len,
                    model.config().max_seq_len
                ),
            );
        }
        if !(opts.lr.is_finite() && opts.lr > 0.0) {
            return option("lr", format!("{} must be finite and > 0", opts.lr));
        }
        Ok(Self {
            model,
            spec,
            examples,
            validation,
            opts,
            seed,
            last: None,
            banks: None,
            moments: train::BandMoments::default(),
            privacy: None,
        })
    }

    /// Clips and noises every update before it leaves (local DP, `[privacy]`).
    pub fn with_privacy(mut self, dp: super::privacy::LocalDp) -> Self {
        self.privacy = Some(super::privacy::Privatizer::new(dp));
        self
    }

    /// After each round, insert the global and the local adapter into `banks` (DESIGN §5):
    /// the local pattern keyed on the training data, the global one on the validation data.
    pub fn with_banks(mut self, banks: Arc<crate::serve::LocalBanks>) -> Self {
        self.banks = Some(banks);
        self
    }

    fn texts(examples: &[Example]) -> Vec<Vec<u32>> {
        examples
            .iter()
            .map(|e| e.prompt.iter().chain(&e.answer).copied().collect())
            .collect()
    }

    /// The base model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn options(&self) -> &TrainOptions {
        &self.opts
    }

    /// Replaces the training examples (e.g. an attacker flipping its labels).
    pub fn examples_mut(&mut self) -> &mut Vec<Example> {
        &mut self.examples
    }

    /// AdamW steps each band's kept moments have seen (`[coarse, domain, fine]`; empty unless
    /// `keep_optimizer_state` and a round has trained).
    pub fn optimizer_steps(&self) -> Vec<usize> {
        self.moments.steps()
    }

    /// The last round's statistics.
    pub fn last_round(&self) -> Option<&RoundStats> {
        self.last.as_ref()
    }

    /// The global adapter of a round, rebuilt from its B delta.
    pub fn global_adapter(&self, run_seed: u64, global: &Delta) -> Result<Talora, TrainError> {
        let shape = Shape::from(self.model.config());
        Talora::from_delta(self.spec.clone(), run_seed, shape, global)
            .map_err(|e| TrainError(format!("the global adapter does not fit this node: {e}")))
    }

    /// Validation loss inside each band; `all` is their mean weighted by the bands' widths in
    /// `t` (an unbiased estimate of the loss over all of `t` that costs three passes, not four).
    fn validation_losses(&self, adapter: &Talora) -> Result<BandLosses, TrainError> {
        let mut m = (*self.model).clone();
        m.set_adapter(
            adapter
                .to_adapter(&self.model)
                .map_err(|e| TrainError(format!("attaching the adapter: {e}")))?,
        );
        let mut bands = [0.0; 3];
        let mut all = 0.0;
        for band in Band::ALL {
            let range = band.t_range();
            let loss = heldout_loss_in(
                &m,
                &self.validation,
                self.opts.seq_len,
                self.seed ^ 0x5EED_0F7A,
                EVAL_BATCH,
                range,
            )
            .map_err(|e| TrainError(format!("validation loss: {e}")))?;
            bands[band.index()] = loss;
            all += (range.1 - range.0) * loss;
        }
        Ok(BandLosses { all, bands })
    }

    /// Trains one round from `global`; returns the update and this round's statistics.
    pub fn train(
        &mut self,
        ctx: &RoundInfo,
        global: &Delta,
    ) -> Result<(LocalUpdate, RoundStats), TrainError> {
        let start = self.global_adapter(ctx.run_seed, global)?;
        let before = self.validation_losses(&start)?;
        let mut trained = start.clone();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            self.seed ^ ctx.round.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let report = if self.opts.keep_optimizer_state {
            train::run_continuing(
                &self.model,
                &mut trained,
                &self.examples,
                &self.opts,
                &mut rng,
                &mut self.moments,
            )
        } else {
            train::run(
                &self.model,
                &mut trained,
                &self.examples,
                &self.opts,
                &mut rng,
            )
        }
        .map_err(|e| TrainError(format!("TALoRA training: {e}")))?;
        let after = self.validation_losses(&trained)?;
        if let Some(banks) = &self.banks {
            // Local state: a failed insertion is logged, it never costs the round.
            match banks.insert_round(
                &self.model,
                &start,
                &trained,
                &Self::texts(&self.validation),
                &Self::texts(&self.examples),
                ctx.round,
            ) {
                Ok(n) => tracing::info!(round = ctx.round, patterns = n, "banks updated"),
                Err(e) => tracing::warn!(round = ctx.round, error = %e, "bank insertion failed"),
            }
        }
        let mut delta = trained
            .update_from(&start)
            .map_err(|e| TrainError(format!("computing the update: {e}")))?;
        if let Some(p) = &mut self.privacy {
            let (private, info) = p.apply(ctx.round, &delta).map_err(TrainError)?;
            delta = private;
            tracing::info!(
                round = ctx.round,
                norm = info.norm,
                clip = p.config().clip,
                noise_multiplier = p.config().noise_multiplier,
                epsilon = info
                    .epsilon
                    .map_or("none (no noise)".into(), |e| format!("{e:.3}")),
                delta = p.config().delta,
                rounds = p.rounds(),
                "local DP applied"
            );
        }
        let band_metrics: BTreeMap<String, f64> = Band::ALL
            .iter()
            .map(|b| {
                let k = b.index();
                (b.name().to_string(), before.bands[k] - after.bands[k])
            })
            .collect();
        tracing::info!(
            round = ctx.round,
            steps = report.steps,
            validation_before = before.all,
            validation_after = after.all,
            "local TALoRA round trained"
        );
        let stats = RoundStats {
            round: ctx.round,
            report,
            before,
            after,
        };
        self.last = Some(stats.clone());
        Ok((
            LocalUpdate {
                delta,
                samples: stats.report.samples_seen as u64,
                band_metrics,
                train_loss: Some(stats.train_loss()),
            },
            stats,
        ))
    }
}

impl LocalTrainer for TaloraTrainer {
    fn train_round(&mut self, ctx: &RoundInfo, global: &Delta) -> Result<LocalUpdate, TrainError> {
        self.train(ctx, global).map(|(u, _)| u)
    }
}

#[cfg(test)]
mod tests {
    use ruvdllm::adapter::Target;
    use ruvdllm::candle_core::Device;
    use ruvdllm::candle_nn::VarMap;
    use ruvdllm::model::{Config, checkpoint};

    use super::*;

    fn random_model() -> Model {
        let cfg = Config {
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            mlp_hidden: 96,
            ..Config::tiny()
        };
        let vm = VarMap::new();
        let mut m = checkpoint::trainable(&vm, &cfg, &Device::Cpu).unwrap();
        checkpoint::seeded_init(&vm, 5, 0.3).unwrap();
        m.set_differentiable(false);
        m
    }

    /// A pattern a random base cannot know: "k<d>=" → "<d><3d mod 10>!".
    fn examples(range: std::ops::Range<u32>) -> Vec<Example> {
        range
            .map(|d| Example {
                prompt: vec![b'k' as u32, 48 + d % 10, b'=' as u32],
                answer: vec![48 + d % 10, 48 + (d * 3) % 10, b'!' as u32],
            })
            .collect()
    }

    #[test]
    fn a_round_returns_a_finite_update_in_the_global_layout_that_lowers_local_loss() {
        let model = Arc::new(random_model());
        let spec = Spec::new([4, 2, 2], Target::QV.to_vec()).unwrap();
        let opts = TrainOptions {
            steps: 30,
            batch_size: 8,
            seq_len: 12,
            lr: 1e-2,
            warmup: 2,
            ..TrainOptions::default()
        };
        let mut trainer = TaloraTrainer::new(
            model.clone(),
            spec.clone(),
            examples(0..10),
            examples(0..10),
            opts,
            9,
        )
        .unwrap();
        let shape = Shape::from(model.config());
        let global = Talora::new(spec, 21, shape).unwrap().to_delta();
        let ctx = RoundInfo {
            round: 1,
            run_seed: 21,
            global_hash: String::new(),
        };
        let update = trainer.train_round(&ctx, &global).unwrap();
        global.check_same_layout(&update.delta).unwrap();
        assert!(update.delta.all_finite());
        assert!(
            update
                .delta
                .tensors
                .iter()
                .any(|t| t.data.iter().any(|&v| v != 0.0))
        );
        assert_eq!(update.samples, 30 * 8);
        let stats = trainer.last_round().unwrap();
        assert!(
            stats.after.all < stats.before.all,
            "validation loss {} → {}",
            stats.before.all,
            stats.after.all
        );
        for b in Band::ALL {
            let m = update.band_metrics[b.name()];
            let k = b.index();
            assert_eq!(m, stats.before.bands[k] - stats.after.bands[k]);
        }
        assert!(stats.train_loss().is_finite());

        // A second round continues from the global plus this update.
        let mut next = global.clone();
        for (g, d) in next.tensors.iter_mut().zip(&update.delta.tensors) {
            g.data.iter_mut().zip(&d.data).for_each(|(g, d)| *g += d);
        }
        let ctx2 = RoundInfo { round: 2, ..ctx };
        let again = trainer.train_round(&ctx2, &next).unwrap();
        next.check_same_layout(&again.delta).unwrap();
        assert!(
            trainer.optimizer_steps().is_empty(),
            "nothing kept by default"
        );
    }

    #[test]
    fn kept_optimizer_state_carries_into_the_next_round() {
        let model = Arc::new(random_model());
        let spec = Spec::new([4, 2, 2], Target::QV.to_vec()).unwrap();
        let opts = |keep| TrainOptions {
            steps: 6,
            batch_size: 4,
            seq_len: 12,
            lr: 1e-2,
            warmup: 0,
            keep_optimizer_state: keep,
            ..TrainOptions::default()
        };
        let trainer = |keep| {
            TaloraTrainer::new(
                model.clone(),
                spec.clone(),
                examples(0..10),
                examples(0..10),
                opts(keep),
                9,
            )
            .unwrap()
        };
        let global = Talora::new(spec.clone(), 21, Shape::from(model.config()))
            .unwrap()
            .to_delta();
        let ctx = |round| RoundInfo {
            round,
            run_seed: 21,
            global_hash: String::new(),
        };
        let (mut kept, mut fresh) = (trainer(true), trainer(false));
        // Round 1 is the same either way; the kept trainer now holds 2 steps per band.
        let a = kept.train_round(&ctx(1), &global).unwrap();
        let b = fresh.train_round(&ctx(1), &global).unwrap();
        assert_eq!(a.delta, b.delta);
        assert_eq!(kept.optimizer_steps(), vec![2, 2, 2]);
        // Round 2 from the same global: the kept moments change the update.
        let a = kept.train_round(&ctx(2), &global).unwrap();
        let b = fresh.train_round(&ctx(2), &global).unwrap();
        assert_ne!(a.delta, b.delta);
        assert!(a.delta.all_finite());
        assert_eq!(kept.optimizer_steps(), vec![4, 4, 4]);
        assert!(fresh.optimizer_steps().is_empty());
    }

    #[test]
    fn refuses_bad_inputs() {
        let model = Arc::new(random_model());
        let spec = Spec::default();
        let opts = TrainOptions {
            seq_len: 12,
            ..TrainOptions::default()
        };
        let e = TaloraTrainer::new(
            model.clone(),
            spec.clone(),
            vec![],
            examples(0..2),
            opts.clone(),
            0,
        )
        .unwrap_err();
        assert!(matches!(e, TrainerError::Empty { .. }), "{e}");
        let e = TaloraTrainer::new(
            model.clone(),
            spec.clone(),
            examples(0..2),
            examples(0..2),
            TrainOptions {
                lr: f64::NAN,
                ..opts.clone()
            },
            0,
        )
        .unwrap_err();
        assert!(matches!(e, TrainerError::Option { field: "lr", .. }), "{e}");
        // A global adapter of another layout is a training error, not a panic.
        let mut t =
            TaloraTrainer::new(model, spec, examples(0..2), examples(0..2), opts, 0).unwrap();
        let wrong = Delta::new(vec![
            ruvdllm::delta::NamedTensor::new("x", vec![1], vec![0.0]).unwrap(),
        ])
        .unwrap();
        let ctx = RoundInfo {
            round: 1,
            run_seed: 0,
            global_hash: String::new(),
        };
        assert!(t.train_round(&ctx, &wrong).is_err());
    }
}
