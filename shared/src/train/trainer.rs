//! The optimiser loop shared by pretraining and adapter training: AdamW (decoupled weight decay),
//! linear warm-up then cosine decay to 10 % of the peak rate, global-norm gradient clipping.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Result, Tensor, Var};

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub peak_lr: f64,
    pub warmup: usize,
    pub total: usize,
    /// Final rate as a fraction of the peak.
    pub floor: f64,
}

impl Schedule {
    pub fn lr(&self, step: usize) -> f64 {
        if self.warmup > 0 && step < self.warmup {
            return self.peak_lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup.min(step)) as f64 / span as f64).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak_lr * (self.floor + (1.0 - self.floor) * cos)
    }
}

/// AdamW's hyper-parameters besides the rate (the schedule's) and the decay (the trainer's).
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

/// The optimiser state file's `format` metadata value.
pub const STATE_FORMAT: &str = "ruvdllm-optimizer-v1";

/// AdamW (decoupled weight decay, bias-corrected moments; the update candle-nn's `AdamW` makes)
/// with its state in the open, so a checkpoint can carry it: a resumed run continues exactly where
/// an uninterrupted one would be, instead of restarting with zero moments and a fresh warm-up.
pub struct Trainer {
    vars: Vec<Var>,
    /// Per variable: first and second moment.
    moments: Vec<(Tensor, Tensor)>,
    schedule: Schedule,
    weight_decay: f64,
    max_grad_norm: Option<f64>,
    step: usize,
    /// AdamW steps taken before this trainer's first (by the trainers whose [`Moments`] it
    /// continues): bias correction counts them, the schedule does not.
    earlier_steps: usize,
}

/// AdamW's moments and step count, carried from one trainer to the next (a node that keeps its
/// optimiser state across federated rounds): the next trainer starts with these moments and
/// bias-corrects as if its steps followed on, while its learning-rate schedule starts afresh.
#[derive(Debug, Clone)]
pub struct Moments {
    /// Per variable: first and second moment.
    moments: Vec<(Tensor, Tensor)>,
    steps: usize,
}

impl Moments {
    /// AdamW steps these moments have seen.
    pub fn steps(&self) -> usize {
        self.steps
    }
}

impl Trainer {
    pub fn new(
        vars: Vec<Var>,
        schedule: Schedule,
        weight_decay: f64,
        max_grad_norm: Option<f64>,
    ) -> Result<Self> {
        let moments = vars
            .iter()
            .map(|v| Ok((v.zeros_like()?, v.zeros_like()?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            moments,
            schedule,
            weight_decay,
            max_grad_norm,
            step: 0,
            earlier_steps: 0,
        })
    }

    /// The moments to continue from in a later trainer of the same variables' shapes.
    pub fn moments(&self) -> Moments {
        Moments {
            moments: self.moments.clone(),
            steps: self.earlier_steps + self.step,
        }
    }

    /// Continues from `m` (see [`Moments`]). Every moment must have its variable's shape; an
    /// error names the first that does not (nothing is changed then).
    pub fn continue_from(&mut self, m: Moments) -> Result<()> {
        if m.moments.len() != self.vars.len() {
            candle_core::bail!(
                "optimiser moments for {} variables, this trainer has {}",
                m.moments.len(),
                self.vars.len()
            );
        }
        for (i, (var, (first, second))) in self.vars.iter().zip(&m.moments).enumerate() {
            if first.dims() != var.dims() || second.dims() != var.dims() {
                candle_core::bail!(
                    "optimiser moments of variable {i} have shape {:?}, the variable {:?}",
                    first.dims(),
                    var.dims()
                );
            }
        }
        self.moments = m.moments;
        self.earlier_steps = m.steps;
        Ok(())
    }

    /// Optimiser steps taken (restored by [`Trainer::load_state`]); the schedule reads it.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// Continues the schedule at `step` with the current (zero) moments: a resume without a saved
    /// optimiser state still gets the learning rate an uninterrupted run would have.
    pub fn resume_at(&mut self, step: usize) {
        self.step = step;
    }

    /// Backpropagates `loss`, clips, and applies one AdamW step. Returns the gradient norm before
    /// clipping. A non-finite loss or gradient is refused (no update), so one bad batch cannot
    /// poison the weights.
    pub fn step(&mut self, loss: &Tensor) -> Result<f64> {
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            candle_core::bail!("non-finite loss {value} at step {}", self.step);
        }
        let grads = loss.backward()?;
        let mut sq = 0f64;
        for v in &self.vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let norm = sq.sqrt();
        if !norm.is_finite() {
            candle_core::bail!("non-finite gradient norm at step {}", self.step);
        }
        let clip = match self.max_grad_norm {
            Some(max) if norm > max => max / norm,
            _ => 1.0,
        };
        let lr = self.schedule.lr(self.step);
        self.step += 1;
        let t = (self.earlier_steps + self.step).min(i32::MAX as usize) as i32;
        let (scale_m, scale_v) = (1.0 / (1.0 - BETA1.powi(t)), 1.0 / (1.0 - BETA2.powi(t)));
        for (var, (m, v)) in self.vars.iter().zip(self.moments.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = if clip < 1.0 { (g * clip)? } else { g.clone() };
            let next_m = ((&*m * BETA1)? + (&g * (1.0 - BETA1))?)?;
            let next_v = ((&*v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let decayed = (var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            let update = ((m_hat / (v_hat.sqrt()? + ADAM_EPS)?)? * lr)?;
            var.set(&(decayed - update)?)?;
            *m = next_m;
            *v = next_v;
        }
        Ok(norm)
    }

    /// Writes the optimiser state — step count, both moments of every variable under `m.<name>` /
    /// `v.<name>` (`names[i]` naming `vars[i]`), and the variable's current value in f32 under
    /// `w.<name>` (the master weights a lower-precision checkpoint rounds) — atomically, so the
    /// file alone is one consistent instant of the run.
    pub fn save_state(&self, names: &[String], path: &Path) -> Result<()> {
        if names.len() != self.vars.len() {
            candle_core::bail!(
                "{} names for {} optimiser variables",
                names.len(),
                self.vars.len()
            );
        }
        let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(3 * names.len());
        for (name, (var, (m, v))) in names.iter().zip(self.vars.iter().zip(&self.moments)) {
            tensors.push((format!("m.{name}"), m.clone()));
            tensors.push((format!("v.{name}"), v.clone()));
            tensors.push((format!("w.{name}"), var.as_tensor().to_dtype(DType::F32)?));
        }
        let metadata: HashMap<String, String> = [
            ("format".to_string(), STATE_FORMAT.to_string()),
            ("step".to_string(), self.step.to_string()),
        ]
        .into();
        let bytes =
            safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
                .map_err(|e| {
                    candle_core::Error::Msg(format!("serialising optimiser state: {e}"))
                })?;
        crate::fsutil::write_atomic(path, &bytes)
            .map_err(|e| candle_core::Error::Msg(format!("writing {}: {e}", path.display())))
    }

    /// Restores what [`Trainer::save_state`] wrote: the step count, every variable's moments and,
    /// when the file holds them (a state written without them keeps the current values), its f32
    /// master weights. Every tensor must be there with the
    /// variable's shape; an error names the first that is not (nothing is changed then).
    pub fn load_state(&mut self, names: &[String], path: &Path) -> Result<StateInfo> {
        let err = |reason: String| candle_core::Error::Msg(format!("{}: {reason}", path.display()));
        if names.len() != self.vars.len() {
            return Err(err(format!(
                "{} names for {} optimiser variables",
                names.len(),
                self.vars.len()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(STATE_FORMAT) {
            return Err(err(format!(
                "not an optimiser state file (format metadata is not `{STATE_FORMAT}`)"
            )));
        }
        let step: usize = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err("missing or malformed `step` metadata".into()))?;
        let device = self
            .vars
            .first()
            .map_or(candle_core::Device::Cpu, |v| v.device().clone());
        let tensors = candle_core::safetensors::load_buffer(&bytes, &device)?;
        let has_master = names
            .first()
            .is_some_and(|n| tensors.contains_key(&format!("w.{n}")));
        let take = |key: String, var: &Var| -> Result<Tensor> {
            let t = tensors.get(&key).ok_or_else(|| {
                err(format!(
                    "missing tensor `{key}` (expected shape {:?})",
                    var.dims()
                ))
            })?;
            if t.dims() != var.dims() {
                return Err(err(format!(
                    "tensor `{key}` has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            if t.dtype() != DType::F32 {
                return Err(err(format!(
                    "tensor `{key}` is {:?}, expected F32",
                    t.dtype()
                )));
            }
            t.to_dtype(var.dtype())
        };
        let mut restored = Vec::with_capacity(self.vars.len());
        for (name, var) in names.iter().zip(&self.vars) {
            let m = take(format!("m.{name}"), var)?;
            let v = take(format!("v.{name}"), var)?;
            let w = if has_master {
                Some(take(format!("w.{name}"), var)?)
            } else {
                None
            };
            restored.push((m, v, w));
        }
        for ((var, moments), (m, v, w)) in self.vars.iter().zip(&mut self.moments).zip(restored) {
            *moments = (m, v);
            if let Some(w) = w {
                var.set(&w)?;
            }
        }
        self.step = step;
        Ok(StateInfo {
            step,
            master_weights: has_master,
        })
    }
}

/// What [`Trainer::load_state`] restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateInfo {
    /// The step count the state was saved at.
    pub step: usize,
    /// Whether the f32 master weights were in the file (and replaced the variables' values).
    pub master_weights: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn schedule_warms_up_then_decays_to_floor() {
        let s = Schedule {
            peak_lr: 1.0,
            warmup: 10,
            total: 110,
            floor: 0.1,
        };
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.55).abs() < 1e-9);
        assert!((s.lr(110) - 0.1).abs() < 1e-12);
        assert!((s.lr(500) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn minimises_a_quadratic_and_clips() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::zeros(4, DType::F32, &dev)?;
        let target = Tensor::new(&[1f32, -2.0, 3.0, 0.5], &dev)?;
        let sched = Schedule {
            peak_lr: 0.1,
            warmup: 0,
            total: 500,
            floor: 1.0,
        };
        let mut tr = Trainer::new(vec![w.clone()], sched, 0.0, Some(1.0))?;
        let mut first = None;
        for _ in 0..400 {
            let loss = (w.as_tensor() - &target)?.sqr()?.sum_all()?;
            let n = tr.step(&loss)?;
            first.get_or_insert(n);
        }
        let err = (w.as_tensor() - &target)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(err < 0.05, "max error {err}");
        assert!(
            first.unwrap() > 1.0,
            "initial gradient norm should exceed the clip"
        );
        let nan = Tensor::new(f32::NAN, &dev)?;
        assert!(tr.step(&nan).is_err());
        Ok(())
    }

    #[test]
    fn continued_moments_equal_an_uninterrupted_run() -> Result<()> {
        // At a constant rate, 3 steps of one trainer = 2 steps, then a new trainer that continues
        // from the first one's moments for 1 step; a fresh second trainer is different.
        let dev = Device::Cpu;
        let init = Tensor::new(&[0.3f32, -1.2, 2.0], &dev)?;
        let target = Tensor::new(&[1f32, -2.0, 3.0], &dev)?;
        let sched = Schedule {
            peak_lr: 0.05,
            warmup: 0,
            total: 10,
            floor: 1.0,
        };
        let steps = |tr: &mut Trainer, w: &Var, n: usize| -> Result<()> {
            for _ in 0..n {
                tr.step(&(w.as_tensor() - &target)?.sqr()?.sum_all()?)?;
            }
            Ok(())
        };
        let whole = Var::from_tensor(&init)?;
        steps(
            &mut Trainer::new(vec![whole.clone()], sched, 0.1, None)?,
            &whole,
            3,
        )?;

        let split = Var::from_tensor(&init)?;
        let mut first = Trainer::new(vec![split.clone()], sched, 0.1, None)?;
        steps(&mut first, &split, 2)?;
        let moments = first.moments();
        assert_eq!(moments.steps(), 2);
        let fresh = Var::from_tensor(split.as_tensor())?;
        let mut second = Trainer::new(vec![split.clone()], sched, 0.1, None)?;
        second.continue_from(moments.clone())?;
        steps(&mut second, &split, 1)?;
        assert_eq!(second.moments().steps(), 3);
        assert_eq!(
            split.as_tensor().to_vec1::<f32>()?,
            whole.as_tensor().to_vec1::<f32>()?
        );
        steps(
            &mut Trainer::new(vec![fresh.clone()], sched, 0.1, None)?,
            &fresh,
            1,
        )?;
        assert_ne!(
            fresh.as_tensor().to_vec1::<f32>()?,
            whole.as_tensor().to_vec1::<f32>()?
        );
        // Moments of another shape are refused, and nothing changes.
        let other = Var::zeros(2, DType::F32, &dev)?;
        let mut tr = Trainer::new(vec![other], sched, 0.1, None)?;
        let e = tr.continue_from(moments).unwrap_err().to_string();
        assert!(e.contains("shape"), "{e}");
        assert_eq!(tr.moments().steps(), 0);
        Ok(())
    }

    #[test]
    fn adamw_matches_candle_nn() -> Result<()> {
        use candle_nn::Optimizer;
        let dev = Device::Cpu;
        let init = Tensor::new(&[[0.3f32, -1.2], [2.0, 0.7]], &dev)?;
        let target = Tensor::new(&[[1f32, -2.0], [3.0, 0.5]], &dev)?;
        let ours = Var::from_tensor(&init)?;
        let theirs = Var::from_tensor(&init)?;
        let sched = Schedule {
            peak_lr: 0.05,
            warmup: 0,
            total: 10,
            floor: 1.0,
        };
        let mut tr = Trainer::new(vec![ours.clone()], sched, 0.1, None)?;
        let params = candle_nn::ParamsAdamW {
            lr: 0.05,
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut reference = candle_nn::AdamW::new(vec![theirs.clone()], params)?;
        for _ in 0..10 {
            let loss = (ours.as_tensor() - &target)?.sqr()?.sum_all()?;
            tr.step(&loss)?;
            let loss = (theirs.as_tensor() - &target)?.sqr()?.sum_all()?;
            reference.backward_step(&loss)?;
        }
        let diff = (ours.as_tensor() - theirs.as_tensor())?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "max difference {diff}");
        let moved = (ours.as_tensor() - &init)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(moved > 0.1, "the optimiser did not move ({moved})");
        Ok(())
    }

    #[test]
    fn state_round_trips_and_bad_files_are_refused() -> Result<()> {
        let dev = Device::Cpu;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("opt.safetensors");
        let sched = Schedule {
            peak_lr: 0.1,
            warmup: 0,
            total: 10,
            floor: 1.0,
        };
        let names = vec!["a".to_string(), "b".to_string()];
        let a = Var::new(&[1f32, 2.0], &dev)?;
        let b = Var::new(&[[0.5f32]], &dev)?;
        let mut tr = Trainer::new(vec![a.clone(), b.clone()], sched, 0.0, None)?;
        for _ in 0..3 {
            let loss = (a.as_tensor().sqr()?.sum_all()? + b.as_tensor().sqr()?.sum_all()?)?;
            tr.step(&loss)?;
        }
        tr.save_state(&names, &path)?;

        let a2 = Var::new(&[0f32, 0.0], &dev)?;
        let b2 = Var::new(&[[0f32]], &dev)?;
        let mut back = Trainer::new(vec![a2.clone(), b2.clone()], sched, 0.0, None)?;
        let info = back.load_state(&names, &path)?;
        assert_eq!(
            info,
            StateInfo {
                step: 3,
                master_weights: true
            }
        );
        assert_eq!(back.step_count(), 3);
        assert_eq!(
            a2.as_tensor().to_vec1::<f32>()?,
            a.as_tensor().to_vec1::<f32>()?
        );
        // One more step each: identical moments give identical updates.
        for (t, x, y) in [(&mut tr, &a, &b), (&mut back, &a2, &b2)] {
            let loss = (x.as_tensor().sqr()?.sum_all()? + y.as_tensor().sqr()?.sum_all()?)?;
            t.step(&loss)?;
        }
        assert_eq!(
            a2.as_tensor().to_vec1::<f32>()?,
            a.as_tensor().to_vec1::<f32>()?
        );

        // A variable the file lacks, a wrong shape, a foreign file: refused, naming the problem,
        // and the trainer keeps its state.
        let c = Var::new(&[0f32, 0.0, 0.0], &dev)?;
        let mut other = Trainer::new(vec![a2.clone(), c], sched, 0.0, None)?;
        let err = other
            .load_state(&["a".into(), "c".into()], &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing tensor `m.c`") && err.contains("[3]"),
            "{err}"
        );
        let err = other
            .load_state(&["a".into(), "a".into()], &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("shape [2], expected [3]"), "{err}");
        assert_eq!(other.step_count(), 0);
        let foreign = tmp.path().join("weights.safetensors");
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("m.a".to_string(), a.as_tensor().clone())]),
            &foreign,
        )?;
        let err = back.load_state(&names, &foreign).unwrap_err().to_string();
        assert!(err.contains("not an optimiser state file"), "{err}");
        let err = back.load_state(&names[..1], &path).unwrap_err().to_string();
        assert!(err.contains("1 names for 2"), "{err}");
        Ok(())
    }
}
