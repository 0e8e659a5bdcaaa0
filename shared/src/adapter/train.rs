//! Band-aware training of a TALoRA adapter: only B trains; A and the base stay frozen.
//!
//! Each step trains one band: its rows draw `t` inside the band's range, the SFT objective is
//! evaluated with the whole adapter attached (so the cross-fade near a boundary is the one
//! sampling will see), and the gradient reaches only that band's B — the other bands' B enter
//! the forward as constants. Each band has its own AdamW state and learning-rate schedule over
//! the steps it gets. Which band a step trains is [`BandSchedule`]: round-robin (default), a
//! coarse → domain → fine curriculum, or one band only.
//!
//! A node's round is then `talora.update_from(&global)` — `B_trained − B_global` — which is the
//! whole federated payload.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Var};
use rand::RngCore;

use super::Error;
use super::band::Band;
use super::talora::Talora;
use crate::delta::{Delta, NamedTensor};
use crate::model::Model;
use crate::train::batch::vary_answer_regions;
use crate::train::{
    Example, Moments, NoiseOptions, Objective, Schedule, Trainer, masked_diffusion_loss_with, pack,
};

/// Which band each step trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandSchedule {
    /// coarse, domain, fine, coarse, …
    RoundRobin,
    /// The first third of the steps coarse, then domain, then fine.
    Curriculum,
    /// Every step the same band.
    Only(Band),
}

impl BandSchedule {
    /// The band of step `step` out of `total`.
    pub fn band(self, step: usize, total: usize) -> Band {
        match self {
            BandSchedule::RoundRobin => Band::ALL[step % 3],
            BandSchedule::Curriculum => {
                let third = (step * 3) / total.max(1);
                Band::ALL[third.min(2)]
            }
            BandSchedule::Only(b) => b,
        }
    }
}

impl fmt::Display for BandSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BandSchedule::RoundRobin => f.write_str("round-robin"),
            BandSchedule::Curriculum => f.write_str("curriculum"),
            BandSchedule::Only(b) => write!(f, "{b}"),
        }
    }
}

impl FromStr for BandSchedule {
    type Err = Error;

    /// `round-robin`, `curriculum`, or a band name.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "round-robin" => Ok(BandSchedule::RoundRobin),
            "curriculum" => Ok(BandSchedule::Curriculum),
            other => {
                other
                    .parse::<Band>()
                    .map(BandSchedule::Only)
                    .map_err(|_| Error::UnknownBand {
                        name: other.to_string(),
                    })
            }
        }
    }
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub steps: usize,
    pub batch_size: usize,
    pub seq_len: usize,
    /// Peak learning rate of each band's AdamW.
    pub lr: f64,
    /// Warm-up steps of each band's schedule.
    pub warmup: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub schedule: BandSchedule,
    /// End each row at its prompt plus an answer region of random length instead of EOS to
    /// `seq_len` (see [`crate::train::batch::draw_region`]): the adapter then answers on the
    /// canvas lengths generation uses, not only on `seq_len`-long ones.
    pub vary_canvas: bool,
    /// How rows draw `t` inside the band and how masked tokens are weighted. LLaDA's 1/p weights
    /// (the default) are what the perplexity bound measures, but inside the fine band (t ≤ 0.3,
    /// p down to ε) a row with a tiny `t` carries weights up to 1/ε and dominates a small batch;
    /// `Weighting::Mean` with stratified `t` is the low-variance denoiser signal.
    pub noise: NoiseOptions,
    /// Keep each band's AdamW moments from one round to the next ([`run_continuing`]). Read by
    /// callers that train round after round (a node's trainer); [`run`] itself trains once.
    pub keep_optimizer_state: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            steps: 200,
            batch_size: 8,
            seq_len: 64,
            lr: 3e-3,
            warmup: 5,
            weight_decay: 0.0,
            grad_clip: 1.0,
            schedule: BandSchedule::RoundRobin,
            vary_canvas: true,
            noise: NoiseOptions::default(),
            keep_optimizer_state: false,
        }
    }
}

/// Per-band training statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BandStats {
    pub steps: usize,
    pub samples: usize,
    /// Mean loss over the band's first and last `max(1, steps/5)` steps.
    pub first_loss: f64,
    pub last_loss: f64,
}

/// What [`run`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainReport {
    pub steps: usize,
    pub samples_seen: usize,
    /// `[coarse, domain, fine]`.
    pub bands: [BandStats; 3],
}

/// Trains `talora`'s B on `examples` (SFT: prompts never masked) on top of `model`'s weights;
/// `model` itself is not modified (a differentiable clone runs the steps) and any adapter
/// attached to it is ignored. Needs an f32 model whose shape is the adapter's.
pub fn run(
    model: &Model,
    talora: &mut Talora,
    examples: &[Example],
    opts: &TrainOptions,
    rng: &mut impl RngCore,
) -> Result<TrainReport, Error> {
    run_inner(model, talora, examples, opts, rng, None)
}

/// Each band's AdamW moments after a [`run_continuing`], for the next one (`[coarse, domain,
/// fine]`; empty before the first run).
#[derive(Debug, Clone, Default)]
pub struct BandMoments(Vec<Moments>);

impl BandMoments {
    /// AdamW steps each band's moments have seen (`[coarse, domain, fine]`; empty before the
    /// first run).
    pub fn steps(&self) -> Vec<usize> {
        self.0.iter().map(Moments::steps).collect()
    }
}

/// [`run`] that continues each band's AdamW moments from `moments` (left by the previous call;
/// empty: fresh moments) and leaves this run's there: what a node that keeps its optimiser
/// state across federated rounds calls each round. The learning-rate schedule starts afresh
/// every call; bias correction counts every step the moments have seen.
pub fn run_continuing(
    model: &Model,
    talora: &mut Talora,
    examples: &[Example],
    opts: &TrainOptions,
    rng: &mut impl RngCore,
    moments: &mut BandMoments,
) -> Result<TrainReport, Error> {
    run_inner(model, talora, examples, opts, rng, Some(moments))
}

fn run_inner(
    model: &Model,
    talora: &mut Talora,
    examples: &[Example],
    opts: &TrainOptions,
    rng: &mut impl RngCore,
    moments: Option<&mut BandMoments>,
) -> Result<TrainReport, Error> {
    super::attach::check_shape(model, talora.shape())?;
    let invalid = |field, reason: String| Error::Spec { field, reason };
    if model.dtype() != DType::F32 {
        return Err(invalid(
            "dtype",
            format!("training needs an f32 model, got {:?}", model.dtype()),
        ));
    }
    if examples.is_empty() {
        return Err(invalid("examples", "no training examples".into()));
    }
    if opts.batch_size == 0 || opts.seq_len < 2 {
        return Err(invalid(
            "batch",
            format!(
                "batch {} × seq_len {} is empty",
                opts.batch_size, opts.seq_len
            ),
        ));
    }
    if !(opts.lr.is_finite() && opts.lr > 0.0) {
        return Err(invalid("lr", format!("{} must be finite and > 0", opts.lr)));
    }
    let dev = model.device().clone();
    let vars: Vec<Var> = talora
        .b()
        .tensors
        .iter()
        .map(|t| {
            Ok(Var::from_tensor(&super::attach::tensor(
                t,
                DType::F32,
                &dev,
            )?)?)
        })
        .collect::<Result<_, Error>>()?;
    // Per band: a model view whose adapter takes that band's B from the variables and the other
    // bands' B as detached constants, and that band's optimiser.
    let per_band = talora.b().tensors.len() / 3;
    let steps_of: Vec<usize> = Band::ALL
        .iter()
        .map(|&b| {
            (0..opts.steps)
                .filter(|&s| opts.schedule.band(s, opts.steps) == b)
                .count()
        })
        .collect();
    let mut views = Vec::with_capacity(3);
    let mut trainers = Vec::with_capacity(3);
    for band in Band::ALL {
        let range = band.index() * per_band..(band.index() + 1) * per_band;
        let adapter = talora.adapter_with_b(model, |i| {
            let t = vars[i].as_tensor();
            Ok(if range.contains(&i) {
                t.clone()
            } else {
                t.detach()
            })
        })?;
        let mut view = model.clone();
        view.set_differentiable(true);
        view.set_adapter(adapter);
        views.push(view);
        let schedule = Schedule {
            peak_lr: opts.lr,
            warmup: opts.warmup.min(steps_of[band.index()] / 4),
            total: steps_of[band.index()].max(1),
            floor: 0.1,
        };
        trainers.push(Trainer::new(
            vars[range].to_vec(),
            schedule,
            opts.weight_decay,
            Some(opts.grad_clip),
        )?);
    }

    if let Some(m) = moments.as_deref()
        && !m.0.is_empty()
    {
        if m.0.len() != trainers.len() {
            return Err(invalid(
                "moments",
                format!("{} bands of optimiser moments, expected 3", m.0.len()),
            ));
        }
        for (t, m) in trainers.iter_mut().zip(&m.0) {
            t.continue_from(m.clone())?;
        }
    }
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut cursor = order.len();
    let mut losses: [Vec<f64>; 3] = Default::default();
    let mut report = TrainReport::default();
    for step in 0..opts.steps {
        let band = opts.schedule.band(step, opts.steps);
        let mut chunk = Vec::with_capacity(opts.batch_size);
        while chunk.len() < opts.batch_size {
            if cursor == order.len() {
                shuffle(&mut order, rng);
                cursor = 0;
            }
            chunk.push(examples[order[cursor]].clone());
            cursor += 1;
        }
        let specials = model.config().specials;
        let mut packed = pack(&chunk, opts.seq_len, specials, false);
        if opts.vary_canvas {
            let rows: Vec<Option<&Example>> = chunk.iter().map(Some).collect();
            vary_answer_regions(&mut packed, &rows, specials.pad, rng);
        }
        let k = band.index();
        let loss = masked_diffusion_loss_with(
            &views[k],
            &packed,
            Objective::Sft,
            band.t_range(),
            opts.noise,
            rng,
        )?;
        losses[k].push(loss.to_scalar::<f32>()? as f64);
        trainers[k].step(&loss)?;
        report.bands[k].steps += 1;
        report.bands[k].samples += chunk.len();
        report.samples_seen += chunk.len();
        report.steps += 1;
        tracing::debug!(step, %band, loss = losses[k].last().copied(), "talora step");
    }
    for (stats, l) in report.bands.iter_mut().zip(&losses) {
        if l.is_empty() {
            continue;
        }
        let w = (l.len() / 5).max(1);
        stats.first_loss = l[..w].iter().sum::<f64>() / w as f64;
        stats.last_loss = l[l.len() - w..].iter().sum::<f64>() / w as f64;
    }
    let trained = Delta {
        tensors: talora
            .b()
            .tensors
            .iter()
            .zip(&vars)
            .map(|(t, v)| {
                let data = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                Ok(NamedTensor::new(t.name.clone(), t.shape.clone(), data)?)
            })
            .collect::<Result<_, Error>>()?,
    };
    talora.set_b(&trained)?;
    if let Some(m) = moments {
        m.0 = trainers.iter().map(Trainer::moments).collect();
    }
    Ok(report)
}

/// Fisher–Yates from raw words (stable across `rand` versions).
fn shuffle(v: &mut [usize], rng: &mut impl RngCore) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Held-out SFT loss over all of `t` and inside each band, for a model with its adapter attached
/// (or none: the base). Same `seed` → same noise, so two adapters compare on equal terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandLosses {
    pub all: f64,
    /// `[coarse, domain, fine]`.
    pub bands: [f64; 3],
}

/// Computes [`BandLosses`] (batches of `batch` examples of `seq_len` tokens).
pub fn band_losses(
    model: &Model,
    examples: &[Example],
    seq_len: usize,
    seed: u64,
    batch: usize,
) -> Result<BandLosses, Error> {
    let all = crate::eval::heldout_loss(model, examples, seq_len, seed, batch)?;
    let mut bands = [0.0; 3];
    for band in Band::ALL {
        bands[band.index()] =
            crate::eval::heldout_loss_in(model, examples, seq_len, seed, batch, band.t_range())?;
    }
    Ok(BandLosses { all, bands })
}

#[cfg(test)]
mod tests;
