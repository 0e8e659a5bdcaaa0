//! Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism.
//!
//! Per round the mechanism samples each node with probability q and adds Gaussian noise with
//! multiplier z (std z·C for sensitivity C). Its RDP at order α is log(A_α)/(α − 1), with A_α from
//! Mironov, Talwar & Zhang 2019 ("Rényi Differential Privacy of the Sampled Gaussian Mechanism"):
//!
//! * integer α: A_α = Σ_{k=0}^{α} C(α,k) (1−q)^{α−k} q^k exp((k²−k)/(2z²)), summed in log space;
//! * fractional α: the two-sided series of their §3.3 with erfc tails. As in `dp-accounting` 0.6,
//!   the generalised binomial coefficients enter by absolute value, so the sum is an upper bound on
//!   A_α (conservative: it can only raise ε), and the series stops once both terms decrease and
//!   are e⁻³⁰ below the running total. For large q and α close to 1 it converges very slowly; an
//!   order that has not converged after 1000 terms is excluded (its RDP reads as +∞).
//!
//! RDP composes additively over T rounds; ε for a given δ uses the conversion of Canonne, Kamath &
//! Steinke 2020 (Prop. 12): ε = r + log(1 − 1/α) − (log δ + log α)/(α − 1), minimised over the order
//! list (the standard list of Google's `dp-accounting`: 1.1…10.9 in steps of 0.1, 11…63, 128, 256,
//! 512, 1024). [`noise_for_epsilon`] inverts this by bisection on z.

use super::PrivacyError;

/// Number of orders in [`default_orders`].
pub const DEFAULT_ORDERS_LEN: usize = 99 + 53 + 4;

/// The standard order list.
pub fn default_orders() -> Vec<f64> {
    let mut o: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
    o.extend((11..64).map(|x| x as f64));
    o.extend([128.0, 256.0, 512.0, 1024.0]);
    o
}

/// log(e^a + e^b).
fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// log(erfc(x)), accurate in the far tail where erfc underflows.
fn log_erfc(x: f64) -> f64 {
    let r = libm::erfc(x);
    if r > 1e-290 {
        return r.ln();
    }
    // Asymptotic (Laurent) expansion of log erfc at +∞.
    let x2 = x * x;
    -0.5 * std::f64::consts::PI.ln() - x.ln() - x2 - 0.5 / x2 + 0.625 / (x2 * x2)
        - 37.0 / 24.0 / (x2 * x2 * x2)
        + 353.0 / 64.0 / (x2 * x2 * x2 * x2)
}

/// Terms of the fractional-order series tried before an order is excluded.
const MAX_FRAC_TERMS: u64 = 1000;

fn log_a_int(q: f64, z: f64, alpha: u64) -> f64 {
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let mut acc = f64::NEG_INFINITY;
    let mut log_binom = 0.0f64; // log C(α, 0)
    for k in 0..=alpha {
        let kf = k as f64;
        let term = log_binom + kf * lq + (alpha - k) as f64 * l1q + (kf * kf - kf) / (2.0 * z * z);
        acc = log_add(acc, term);
        log_binom += ((alpha - k) as f64).ln() - (kf + 1.0).ln();
    }
    acc
}

fn log_a_frac(q: f64, z: f64, alpha: f64) -> Option<f64> {
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let z0 = z * z * (1.0 / q - 1.0).ln() + 0.5;
    let s2 = std::f64::consts::SQRT_2 * z;
    let (mut a0, mut a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut last0, mut last1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    // log|C(α, i)|, updated by C(α, i+1) = C(α, i)·(α − i)/(i + 1).
    let mut log_coef = 0.0f64;
    for i in 0..MAX_FRAC_TERMS {
        let fi = i as f64;
        let j = alpha - fi;
        let log_t0 = log_coef + fi * lq + j * l1q;
        let log_t1 = log_coef + j * lq + fi * l1q;
        let log_e0 = 0.5f64.ln() + log_erfc((fi - z0) / s2);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / s2);
        let log_s0 = log_t0 + (fi * fi - fi) / (2.0 * z * z) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * z * z) + log_e1;
        a0 = log_add(a0, log_s0);
        a1 = log_add(a1, log_s1);
        let total = log_add(a0, a1);
        if log_s0 < last0 && log_s1 < last1 && log_s0.max(log_s1) < total - 30.0 {
            return Some(total);
        }
        (last0, last1) = (log_s0, log_s1);
        log_coef += ((alpha - fi) / (fi + 1.0)).abs().ln();
    }
    None
}

fn check_q_z(q: f64, z: f64) -> Result<(), PrivacyError> {
    if !(0.0..=1.0).contains(&q) {
        return Err(PrivacyError::InvalidParam {
            param: "q",
            value: q.to_string(),
            reason: "sampling rate must lie in [0, 1]",
        });
    }
    if z.is_nan() || z < 0.0 || z.is_infinite() {
        return Err(PrivacyError::InvalidParam {
            param: "z",
            value: z.to_string(),
            reason: "noise multiplier must be finite and >= 0",
        });
    }
    Ok(())
}

/// RDP of one round of the subsampled Gaussian mechanism at `order` (> 1).
pub fn rdp_one(q: f64, z: f64, order: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if z == 0.0 || order.is_infinite() {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return order / (2.0 * z * z);
    }
    let log_a = if order.fract() == 0.0 && order < 1e9 {
        log_a_int(q, z, order as u64)
    } else {
        match log_a_frac(q, z, order) {
            Some(v) => v,
            None => return f64::INFINITY,
        }
    };
    log_a / (order - 1.0)
}

/// Accumulated RDP over an order list.
#[derive(Debug, Clone, PartialEq)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        Self { orders, rdp }
    }
}

impl RdpAccountant {
    /// An accountant over custom orders (each > 1).
    pub fn with_orders(orders: Vec<f64>) -> Result<Self, PrivacyError> {
        if let Some(bad) = orders.iter().find(|o| o.is_nan() || **o <= 1.0) {
            return Err(PrivacyError::InvalidParam {
                param: "order",
                value: bad.to_string(),
                reason: "RDP orders must be > 1",
            });
        }
        let rdp = vec![0.0; orders.len()];
        Ok(Self { orders, rdp })
    }

    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// Accumulated RDP per order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// Composes `steps` rounds with sampling rate `q` and noise multiplier `z`.
    pub fn compose(&mut self, q: f64, z: f64, steps: u64) -> Result<(), PrivacyError> {
        check_q_z(q, z)?;
        for (r, &o) in self.rdp.iter_mut().zip(&self.orders) {
            *r += steps as f64 * rdp_one(q, z, o);
        }
        Ok(())
    }

    /// (ε, optimal order) for `delta` in (0, 1).
    pub fn epsilon(&self, delta: f64) -> Result<(f64, f64), PrivacyError> {
        if !(delta > 0.0 && delta < 1.0) {
            return Err(PrivacyError::InvalidParam {
                param: "delta",
                value: delta.to_string(),
                reason: "must lie in (0, 1)",
            });
        }
        let mut best = (f64::INFINITY, self.orders.first().copied().unwrap_or(0.0));
        for (&a, &r) in self.orders.iter().zip(&self.rdp) {
            let eps = if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
                0.0
            } else if a > 1.01 {
                r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
            } else {
                f64::INFINITY
            };
            if eps < best.0 {
                best = (eps, a);
            }
        }
        Ok((best.0.max(0.0), best.1))
    }
}

/// ε after `steps` rounds of the (q, z) subsampled Gaussian mechanism, for `delta`.
pub fn epsilon(q: f64, z: f64, steps: u64, delta: f64) -> Result<f64, PrivacyError> {
    let mut acc = RdpAccountant::default();
    acc.compose(q, z, steps)?;
    Ok(acc.epsilon(delta)?.0)
}

/// The smallest noise multiplier z (to relative precision 1e-6) whose ε after `steps` rounds is at
/// most `target_eps`.
pub fn noise_for_epsilon(
    q: f64,
    steps: u64,
    delta: f64,
    target_eps: f64,
) -> Result<f64, PrivacyError> {
    if !(target_eps.is_finite() && target_eps > 0.0) {
        return Err(PrivacyError::InvalidParam {
            param: "target_eps",
            value: target_eps.to_string(),
            reason: "must be finite and > 0",
        });
    }
    const MAX_Z: f64 = 1e6;
    let mut hi = 1.0;
    let mut reached = epsilon(q, hi, steps, delta)?;
    while reached > target_eps {
        hi *= 2.0;
        if hi > MAX_Z {
            return Err(PrivacyError::Unreachable {
                target: target_eps,
                max_z: MAX_Z,
                reached,
            });
        }
        reached = epsilon(q, hi, steps, delta)?;
    }
    let mut lo = 0.0;
    while hi - lo > 1e-6 * hi {
        let mid = 0.5 * (lo + hi);
        if epsilon(q, mid, steps, delta)? <= target_eps {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests;
