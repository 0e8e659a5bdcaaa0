//! The optimiser loop shared by pretraining and adapter training: AdamW (decoupled weight decay),
//! linear warm-up then cosine decay to 10 % of the peak rate, global-norm gradient clipping.

use candle_core::{Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

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

pub struct Trainer {
    vars: Vec<Var>,
    opt: AdamW,
    schedule: Schedule,
    max_grad_norm: Option<f64>,
    step: usize,
}

impl Trainer {
    pub fn new(
        vars: Vec<Var>,
        schedule: Schedule,
        weight_decay: f64,
        max_grad_norm: Option<f64>,
    ) -> Result<Self> {
        let params = ParamsAdamW {
            lr: schedule.lr(0),
            weight_decay,
            ..Default::default()
        };
        let opt = AdamW::new(vars.clone(), params)?;
        Ok(Self {
            vars,
            opt,
            schedule,
            max_grad_norm,
            step: 0,
        })
    }

    pub fn step_count(&self) -> usize {
        self.step
    }

    /// Backpropagates `loss`, clips, and applies one AdamW step. Returns the gradient norm before
    /// clipping. A non-finite loss or gradient is refused (no update), so one bad batch cannot
    /// poison the weights.
    pub fn step(&mut self, loss: &Tensor) -> Result<f64> {
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            candle_core::bail!("non-finite loss {value} at step {}", self.step);
        }
        let mut grads = loss.backward()?;
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
        if let Some(max) = self.max_grad_norm
            && norm > max
        {
            let scale = max / norm;
            for v in &self.vars {
                if let Some(g) = grads.remove(v.as_tensor()) {
                    grads.insert(v.as_tensor(), (g * scale)?);
                }
            }
        }
        self.opt.set_learning_rate(self.schedule.lr(self.step));
        self.opt.step(&grads)?;
        self.step += 1;
        Ok(norm)
    }
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
}
