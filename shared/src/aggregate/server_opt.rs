//! Server-side optimizers: how the coordinator turns a round's aggregate Δ into the next global.
//!
//! The aggregation rules decide *what* the round learned (Δ, the robust aggregate of the nodes'
//! B deltas); the server optimizer decides *how far* the global moves along it, as in FedOpt
//! (Reddi et al., "Adaptive Federated Optimization", ICLR 2021) and FedAvgM (Hsu et al., 2019).
//! The update rules are Flower's strategies of the same names, quirks included, so a run can be
//! compared with a Flower run (`tests/fixtures/server_opt.json`, from
//! `tests/fixtures/gen_server_opt.py`, which calls Flower's own strategies):
//!
//! | name | update (per coordinate; x the global, Δ the aggregate, t the round ≥ 1) | defaults |
//! |---|---|---|
//! | `fedavgm` | m ← μ·m + Δ (m = Δ in the first step); x ← x + η·m | η = 1, μ = 0 |
//! | `fedadam` | m ← β₁m + (1−β₁)Δ; v ← β₂v + (1−β₂)Δ²; x ← x + η·√(1−β₂^(t+1))/(1−β₁^(t+1))·m/(√v + τ) | η = 0.1, β = (0.9, 0.99), τ = 1e-9 |
//! | `fedyogi` | m as Adam; v ← v − (1−β₂)Δ²·sign(v − Δ²); x ← x + η·m/(√v + τ) | η = 0.01, β = (0.9, 0.99), τ = 1e-3 |
//! | `fedadagrad` | v ← v + Δ²; x ← x + η·Δ/(√v + τ) | η = 0.1, τ = 1e-9 |
//!
//! Flower's quirks kept here: FedAdam's bias correction uses the exponent t + 1 (Flower's
//! `server_round + 1.0`), FedYogi and FedAdagrad have none, and m and v start at zero. `fedavgm`
//! with μ = 0 is the plain step x + η·Δ, bit for bit what the coordinator did before server
//! optimizers existed.
//!
//! The moments are kept as f32 tensors in the global's layout ([`ServerState`]), so the
//! coordinator can store them beside the global and a restarted coordinator continues exactly
//! where it stopped. Every step is computed in f64 and rounded once.

use std::fmt;

use crate::delta::{Delta, DeltaError};

/// A server optimizer with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum ServerOptimizer {
    /// FedAvgM: server learning rate and heavy-ball momentum (μ = 0: the plain scaled step).
    #[serde(rename = "fedavgm")]
    FedAvgM { lr: f64, momentum: f64 },
    #[serde(rename = "fedadam")]
    FedAdam {
        eta: f64,
        beta1: f64,
        beta2: f64,
        tau: f64,
    },
    #[serde(rename = "fedyogi")]
    FedYogi {
        eta: f64,
        beta1: f64,
        beta2: f64,
        tau: f64,
    },
    #[serde(rename = "fedadagrad")]
    FedAdagrad { eta: f64, tau: f64 },
}

impl Default for ServerOptimizer {
    fn default() -> Self {
        ServerOptimizer::FedAvgM {
            lr: 1.0,
            momentum: 0.0,
        }
    }
}

/// The optimizer's hyper-parameters as a config or the CLI gives them: the name plus any
/// overrides; [`ServerOptSpec::build`] fills Flower's defaults and checks ranges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerOptSpec {
    pub name: Option<String>,
    /// η (FedAvgM's server learning rate).
    pub lr: Option<f64>,
    pub momentum: Option<f64>,
    pub beta1: Option<f64>,
    pub beta2: Option<f64>,
    pub tau: Option<f64>,
}

/// A bad server-optimizer setting: which key, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ServerOptError {
    pub key: &'static str,
    pub reason: String,
}

fn bad(key: &'static str, reason: impl Into<String>) -> ServerOptError {
    ServerOptError {
        key,
        reason: reason.into(),
    }
}

/// The spellings of [`ServerOptimizer`].
pub const SERVER_OPTIMIZERS: &str = "fedavgm, fedadam, fedyogi, fedadagrad";

impl ServerOptSpec {
    /// The optimizer, with Flower's default for every parameter not given. A parameter the chosen
    /// optimizer does not read is refused rather than ignored.
    pub fn build(&self) -> Result<ServerOptimizer, ServerOptError> {
        let name = self.name.as_deref().unwrap_or("fedavgm");
        let unused = |key: &'static str, v: Option<f64>| match v {
            Some(_) => Err(bad(key, format!("`{name}` has no such parameter"))),
            None => Ok(()),
        };
        let opt = match name {
            "fedavgm" => {
                unused("beta1", self.beta1)?;
                unused("beta2", self.beta2)?;
                unused("tau", self.tau)?;
                ServerOptimizer::FedAvgM {
                    lr: self.lr.unwrap_or(1.0),
                    momentum: self.momentum.unwrap_or(0.0),
                }
            }
            "fedadam" | "fedyogi" => {
                unused("momentum", self.momentum)?;
                let (eta, tau) = if name == "fedadam" {
                    (0.1, 1e-9)
                } else {
                    (0.01, 1e-3)
                };
                let (eta, beta1, beta2, tau) = (
                    self.lr.unwrap_or(eta),
                    self.beta1.unwrap_or(0.9),
                    self.beta2.unwrap_or(0.99),
                    self.tau.unwrap_or(tau),
                );
                if name == "fedadam" {
                    ServerOptimizer::FedAdam {
                        eta,
                        beta1,
                        beta2,
                        tau,
                    }
                } else {
                    ServerOptimizer::FedYogi {
                        eta,
                        beta1,
                        beta2,
                        tau,
                    }
                }
            }
            "fedadagrad" => {
                unused("momentum", self.momentum)?;
                unused("beta1", self.beta1)?;
                unused("beta2", self.beta2)?;
                ServerOptimizer::FedAdagrad {
                    eta: self.lr.unwrap_or(0.1),
                    tau: self.tau.unwrap_or(1e-9),
                }
            }
            other => {
                return Err(bad(
                    "optimizer",
                    format!("unknown server optimizer `{other}` (expected {SERVER_OPTIMIZERS})"),
                ));
            }
        };
        opt.check()?;
        Ok(opt)
    }
}

impl ServerOptimizer {
    /// The optimizer's spelling in configs and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            ServerOptimizer::FedAvgM { .. } => "fedavgm",
            ServerOptimizer::FedAdam { .. } => "fedadam",
            ServerOptimizer::FedYogi { .. } => "fedyogi",
            ServerOptimizer::FedAdagrad { .. } => "fedadagrad",
        }
    }

    /// The step size η (FedAvgM's server learning rate).
    pub fn lr(&self) -> f64 {
        match *self {
            ServerOptimizer::FedAvgM { lr, .. } => lr,
            ServerOptimizer::FedAdam { eta, .. }
            | ServerOptimizer::FedYogi { eta, .. }
            | ServerOptimizer::FedAdagrad { eta, .. } => eta,
        }
    }

    /// Whether steps carry state from one round to the next (anything but momentum-free FedAvgM).
    pub fn is_stateful(&self) -> bool {
        !matches!(self, ServerOptimizer::FedAvgM { momentum, .. } if *momentum == 0.0)
    }

    fn check(&self) -> Result<(), ServerOptError> {
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0 && lr <= 10.0) {
            return Err(bad("lr", format!("must be in (0, 10], got {lr}")));
        }
        let unit = |key: &'static str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(bad(key, format!("must be in [0, 1), got {v}")))
            }
        };
        let tau = |v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(bad("tau", format!("must be finite and positive, got {v}")))
            }
        };
        match *self {
            ServerOptimizer::FedAvgM { momentum, .. } => unit("momentum", momentum),
            ServerOptimizer::FedAdam {
                beta1,
                beta2,
                tau: t,
                ..
            }
            | ServerOptimizer::FedYogi {
                beta1,
                beta2,
                tau: t,
                ..
            } => {
                unit("beta1", beta1)?;
                unit("beta2", beta2)?;
                tau(t)
            }
            ServerOptimizer::FedAdagrad { tau: t, .. } => tau(t),
        }
    }

    /// One server step: the next global from the current one and the round's aggregate Δ, for
    /// round `round` (1-based; FedAdam's bias correction reads it). Updates `state` only when it
    /// returns Ok. A layout mismatch between the global, Δ and the state is an error.
    pub fn step(
        &self,
        round: u64,
        global: &Delta,
        aggregate: &Delta,
        state: &mut ServerState,
    ) -> Result<Delta, DeltaError> {
        self.step_holding(round, global, aggregate, state, &|_| false)
    }

    /// [`Self::step`], except that tensors for which `hold(name)` is true keep their value and
    /// their moments: a band the aggregation held keeps its previous global even under momentum.
    pub fn step_holding(
        &self,
        round: u64,
        global: &Delta,
        aggregate: &Delta,
        state: &mut ServerState,
        hold: &dyn Fn(&str) -> bool,
    ) -> Result<Delta, DeltaError> {
        let delta = global.aligned(aggregate)?;
        let mut out = global.clone();
        if !self.is_stateful() {
            // Plain (scaled) averaging: no moments to read, allocate or keep.
            let lr = self.lr();
            for (x, d) in out.tensors.iter_mut().zip(&delta.tensors) {
                if hold(&x.name) {
                    continue;
                }
                for (x, &d) in x.data.iter_mut().zip(&d.data) {
                    *x = (f64::from(*x) + lr * f64::from(d)) as f32;
                }
            }
            return Ok(out);
        }
        let zeros = || {
            let mut z = global.clone();
            z.tensors.iter_mut().for_each(|t| t.data.fill(0.0));
            z
        };
        let mut m = match &state.m {
            Some(m) => global.aligned(m)?,
            None => zeros(),
        };
        let mut v = match &state.v {
            Some(v) => global.aligned(v)?,
            None => zeros(),
        };
        let t = round.max(1) as f64;
        for (((x, d), m), v) in out
            .tensors
            .iter_mut()
            .zip(&delta.tensors)
            .zip(&mut m.tensors)
            .zip(&mut v.tensors)
        {
            if hold(&x.name) {
                continue;
            }
            let cells = x
                .data
                .iter_mut()
                .zip(&d.data)
                .zip(m.data.iter_mut())
                .zip(v.data.iter_mut());
            match *self {
                ServerOptimizer::FedAvgM { lr, momentum } => {
                    for (((x, &d), m), _) in cells {
                        let mm = momentum * f64::from(*m) + f64::from(d);
                        *m = mm as f32;
                        *x = (f64::from(*x) + lr * mm) as f32;
                    }
                }
                ServerOptimizer::FedAdam {
                    eta,
                    beta1,
                    beta2,
                    tau,
                } => {
                    let eta =
                        eta * (1.0 - beta2.powf(t + 1.0)).sqrt() / (1.0 - beta1.powf(t + 1.0));
                    for (((x, &d), m), v) in cells {
                        let d = f64::from(d);
                        let mm = beta1 * f64::from(*m) + (1.0 - beta1) * d;
                        let vv = beta2 * f64::from(*v) + (1.0 - beta2) * d * d;
                        (*m, *v) = (mm as f32, vv as f32);
                        *x = (f64::from(*x) + eta * mm / (vv.sqrt() + tau)) as f32;
                    }
                }
                ServerOptimizer::FedYogi {
                    eta,
                    beta1,
                    beta2,
                    tau,
                } => {
                    for (((x, &d), m), v) in cells {
                        let d = f64::from(d);
                        let (d2, old_v) = (d * d, f64::from(*v));
                        let mm = beta1 * f64::from(*m) + (1.0 - beta1) * d;
                        // np.sign: 0 at 0.
                        let sign = if old_v > d2 {
                            1.0
                        } else if old_v < d2 {
                            -1.0
                        } else {
                            0.0
                        };
                        let vv = old_v - (1.0 - beta2) * d2 * sign;
                        (*m, *v) = (mm as f32, vv as f32);
                        *x = (f64::from(*x) + eta * mm / (vv.sqrt() + tau)) as f32;
                    }
                }
                ServerOptimizer::FedAdagrad { eta, tau } => {
                    for (((x, &d), _), v) in cells {
                        let d = f64::from(d);
                        let vv = f64::from(*v) + d * d;
                        *v = vv as f32;
                        *x = (f64::from(*x) + eta * d / (vv.sqrt() + tau)) as f32;
                    }
                }
            }
        }
        match self {
            ServerOptimizer::FedAvgM { .. } => state.m = Some(m),
            ServerOptimizer::FedAdagrad { .. } => state.v = Some(v),
            _ => {
                state.m = Some(m);
                state.v = Some(v);
            }
        }
        Ok(out)
    }
}

impl fmt::Display for ServerOptimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ServerOptimizer::FedAvgM { lr, momentum } => {
                write!(f, "fedavgm (lr {lr}, momentum {momentum})")
            }
            ServerOptimizer::FedAdam {
                eta,
                beta1,
                beta2,
                tau,
            } => write!(f, "fedadam (eta {eta}, betas {beta1}/{beta2}, tau {tau:e})"),
            ServerOptimizer::FedYogi {
                eta,
                beta1,
                beta2,
                tau,
            } => write!(f, "fedyogi (eta {eta}, betas {beta1}/{beta2}, tau {tau:e})"),
            ServerOptimizer::FedAdagrad { eta, tau } => {
                write!(f, "fedadagrad (eta {eta}, tau {tau:e})")
            }
        }
    }
}

/// The moments a stateful server optimizer carries between rounds, in the global's layout
/// (`None` until the first step that uses them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerState {
    /// First moment (FedAvgM's momentum vector, Adam's and Yogi's m).
    pub m: Option<Delta>,
    /// Second moment (Adam's, Yogi's and Adagrad's v).
    pub v: Option<Delta>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::NamedTensor;

    fn delta(values: &[f32]) -> Delta {
        Delta::new(vec![
            NamedTensor::new("a", vec![values.len()], values.to_vec()).unwrap(),
        ])
        .unwrap()
    }

    fn spec(name: &str) -> ServerOptSpec {
        ServerOptSpec {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_flowers() {
        assert_eq!(
            spec("fedadam").build().unwrap(),
            ServerOptimizer::FedAdam {
                eta: 0.1,
                beta1: 0.9,
                beta2: 0.99,
                tau: 1e-9
            }
        );
        assert_eq!(
            spec("fedyogi").build().unwrap(),
            ServerOptimizer::FedYogi {
                eta: 0.01,
                beta1: 0.9,
                beta2: 0.99,
                tau: 1e-3
            }
        );
        assert_eq!(
            spec("fedadagrad").build().unwrap(),
            ServerOptimizer::FedAdagrad {
                eta: 0.1,
                tau: 1e-9
            }
        );
        assert_eq!(
            ServerOptSpec::default().build().unwrap(),
            ServerOptimizer::default()
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        let e = spec("fedsgd").build().unwrap_err();
        assert_eq!(e.key, "optimizer");
        assert!(e.reason.contains("fedadam"), "{e}");
        for (s, key) in [
            (
                ServerOptSpec {
                    lr: Some(0.0),
                    ..spec("fedadam")
                },
                "lr",
            ),
            (
                ServerOptSpec {
                    lr: Some(f64::NAN),
                    ..spec("fedavgm")
                },
                "lr",
            ),
            (
                ServerOptSpec {
                    momentum: Some(1.0),
                    ..spec("fedavgm")
                },
                "momentum",
            ),
            (
                ServerOptSpec {
                    beta2: Some(-0.1),
                    ..spec("fedyogi")
                },
                "beta2",
            ),
            (
                ServerOptSpec {
                    tau: Some(0.0),
                    ..spec("fedadagrad")
                },
                "tau",
            ),
            // A parameter the optimizer does not read is refused, not ignored.
            (
                ServerOptSpec {
                    momentum: Some(0.5),
                    ..spec("fedadam")
                },
                "momentum",
            ),
            (
                ServerOptSpec {
                    tau: Some(1e-3),
                    ..spec("fedavgm")
                },
                "tau",
            ),
        ] {
            assert_eq!(s.build().unwrap_err().key, key, "{s:?}");
        }
    }

    #[test]
    fn plain_fedavgm_is_the_scaled_step_and_keeps_no_state() {
        let opt = ServerOptimizer::FedAvgM {
            lr: 1.5,
            momentum: 0.0,
        };
        assert!(!opt.is_stateful());
        let mut state = ServerState::default();
        let out = opt
            .step(1, &delta(&[1.0, -2.0]), &delta(&[0.5, 0.25]), &mut state)
            .unwrap();
        assert_eq!(out, delta(&[1.75, -1.625]));
        assert_eq!(state, ServerState::default());
    }

    #[test]
    fn momentum_accumulates_across_rounds() {
        let opt = ServerOptimizer::FedAvgM {
            lr: 1.0,
            momentum: 0.5,
        };
        let mut state = ServerState::default();
        let g1 = opt
            .step(1, &delta(&[0.0]), &delta(&[1.0]), &mut state)
            .unwrap();
        assert_eq!(g1, delta(&[1.0]));
        let g2 = opt.step(2, &g1, &delta(&[1.0]), &mut state).unwrap();
        // m = 0.5·1 + 1 = 1.5.
        assert_eq!(g2, delta(&[2.5]));
        assert_eq!(state.m, Some(delta(&[1.5])));
    }

    #[test]
    fn adaptive_first_steps_move_every_coordinate_by_about_eta() {
        // From zero moments, m/√v is the sign of Δ whatever its size: the property that makes
        // these optimizers scale-free (and the reason their η is small).
        let d = delta(&[1e-3, -4.0, 0.0]);
        let g = delta(&[0.0, 0.0, 0.0]);
        for (opt, factor) in [
            (
                spec("fedadam").build().unwrap(),
                0.1 * (1.0 - 0.99f64.powi(2)).sqrt() / (1.0 - 0.9f64.powi(2)),
            ),
            (spec("fedadagrad").build().unwrap(), 0.1),
        ] {
            let mut state = ServerState::default();
            let out = opt.step(1, &g, &d, &mut state).unwrap();
            let x = &out.tensors[0].data;
            assert!((f64::from(x[0]) - factor).abs() < 1e-5, "{opt}: {x:?}");
            assert!((f64::from(x[1]) + factor).abs() < 1e-5, "{opt}: {x:?}");
            assert_eq!(x[2], 0.0);
        }
    }

    /// Flower 1.42's strategies (`tests/fixtures/gen_server_opt.py`), four rounds each, defaults
    /// and non-default settings: every global after every round.
    #[test]
    fn matches_flowers_strategies() {
        let fx: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/server_opt.json")).unwrap();
        let cases = fx["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 8);
        let floats = |v: &serde_json::Value| -> Vec<f32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        for c in cases {
            let name = c["optimizer"].as_str().unwrap();
            let p = &c["params"];
            let opt = ServerOptSpec {
                name: Some(name.into()),
                lr: p["lr"].as_f64(),
                momentum: p["momentum"].as_f64(),
                beta1: p["beta_1"].as_f64(),
                beta2: p["beta_2"].as_f64(),
                tau: p["tau"].as_f64(),
            }
            .build()
            .unwrap();
            let shapes: Vec<Vec<usize>> = serde_json::from_value(c["shapes"].clone()).unwrap();
            let tensors = |values: &serde_json::Value| {
                let ts = shapes
                    .iter()
                    .zip(values.as_array().unwrap())
                    .enumerate()
                    .map(|(i, (s, v))| NamedTensor::new(format!("t{i}"), s.clone(), floats(v)))
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                Delta::new(ts).unwrap()
            };
            let mut global = tensors(&c["initial"]);
            let mut state = ServerState::default();
            let rounds = c["deltas"].as_array().unwrap().iter();
            for (r, (d, want)) in rounds.zip(c["globals"].as_array().unwrap()).enumerate() {
                global = opt
                    .step(r as u64 + 1, &global, &tensors(d), &mut state)
                    .unwrap();
                for (t, w) in global.tensors.iter().zip(want.as_array().unwrap()) {
                    for (got, want) in t.data.iter().zip(floats(w)) {
                        let tol = 2e-6 * want.abs().max(1e-2);
                        assert!(
                            (got - want).abs() <= tol,
                            "{opt} round {}: {got} vs Flower {want}",
                            r + 1
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn held_tensors_keep_their_value_and_moments() {
        let two = |a: f32, b: f32| {
            Delta::new(vec![
                NamedTensor::new("talora.coarse.q", vec![1], vec![a]).unwrap(),
                NamedTensor::new("talora.domain.q", vec![1], vec![b]).unwrap(),
            ])
            .unwrap()
        };
        let opt = ServerOptimizer::FedAvgM {
            lr: 1.0,
            momentum: 0.9,
        };
        let mut state = ServerState::default();
        let g1 = opt
            .step(1, &two(0.0, 0.0), &two(1.0, 1.0), &mut state)
            .unwrap();
        let hold = |name: &str| name.starts_with("talora.domain.");
        let g2 = opt
            .step_holding(2, &g1, &two(1.0, 0.0), &mut state, &hold)
            .unwrap();
        // Coarse moves by 0.9·1 + 1; the held domain band stays, momentum and all.
        assert_eq!(g2, two(2.9, 1.0));
        assert_eq!(state.m, Some(two(1.9, 1.0)));
    }

    #[test]
    fn a_layout_mismatch_is_an_error_and_leaves_the_state() {
        let opt = spec("fedadam").build().unwrap();
        let mut state = ServerState::default();
        let g = delta(&[0.0, 0.0]);
        opt.step(1, &g, &delta(&[1.0, 1.0]), &mut state).unwrap();
        let before = state.clone();
        assert!(opt.step(2, &g, &delta(&[1.0]), &mut state).is_err());
        assert_eq!(state, before);
    }
}
