//! Geometric median by smoothed Weiszfeld iterations (RFA, Pillutla et al. 2022).
//!
//! argmin_z Σ‖z − x_i‖ has breakdown point 1/2 and, unlike the coordinate-wise median, is
//! rotation-invariant. Each Weiszfeld step is a weighted mean with w_i = 1/max(ν, ‖z − x_i‖): the
//! smoothing ν keeps the step defined when z lands on an input. We start from the plain mean and
//! stop after the configured number of iterations or when the objective stops improving
//! (relative change < 1e-10), which typically takes 3–8 steps.
//!
//! Each step is one pass over memory: per block of coordinates, the new centre is computed and
//! the rows' squared distances to it are accumulated while the rows are still in cache. The centre
//! itself is never stored in full — only its f32 rounding, which is the output — because the next
//! step rebuilds it from the weights alone.

use super::config::Rule;
use super::error::AggregateError;
use super::kernels;
use super::report::{Mark, RuleOutput};

const REL_TOL: f64 = 1e-10;

/// One Weiszfeld pass: z = Σ w_i·x_i / Σ w_i (f64 per coordinate, written to `out` as f32) and
/// ‖x_i − z‖ for every row, measured against the f64 centre.
fn step(rows: &[&[f32]], w: &[f64], out: &mut [f32]) -> Vec<f64> {
    let total: f64 = w.iter().sum();
    kernels::fold_blocks(out, rows.len(), |lo, o, sums, scratch| {
        let hi = lo + o.len();
        let z = &mut scratch[..o.len()];
        z.fill(0.0);
        for (r, &wi) in rows.iter().zip(w) {
            for (a, &x) in z.iter_mut().zip(&r[lo..hi]) {
                *a += wi * x as f64;
            }
        }
        for (a, o) in z.iter_mut().zip(o.iter_mut()) {
            *a /= total;
            *o = *a as f32;
        }
        for (s, r) in sums.iter_mut().zip(rows) {
            *s += kernels::sq_dist_to(&r[lo..hi], z);
        }
    })
    .into_iter()
    .map(f64::sqrt)
    .collect()
}

pub(crate) fn geomedian(
    rows: &[&[f32]],
    f: usize,
    iters: usize,
    nu: f64,
) -> Result<RuleOutput, AggregateError> {
    let n = rows.len();
    if n < 2 * f + 1 {
        return Err(AggregateError::Condition {
            rule: Rule::GeoMedian,
            n,
            f,
            requirement: format!("n >= 2f+1 = {}", 2 * f + 1),
        });
    }
    if iters == 0 {
        return Err(AggregateError::InvalidParam {
            rule: Rule::GeoMedian,
            param: "geomed_iters",
            value: iters.to_string(),
            reason: "need at least one iteration",
        });
    }
    if !(nu.is_finite() && nu > 0.0) {
        return Err(AggregateError::InvalidParam {
            rule: Rule::GeoMedian,
            param: "geomed_nu",
            value: nu.to_string(),
            reason: "must be finite and > 0",
        });
    }
    let mut z = vec![0f32; rows[0].len()];
    let mut d = step(rows, &vec![1.0; n], &mut z);
    let mut objective: f64 = d.iter().sum();
    let mut w: Vec<f64> = d.iter().map(|di| 1.0 / di.max(nu)).collect();
    for it in 0..iters {
        d = step(rows, &w, &mut z);
        let next: f64 = d.iter().sum();
        w = d.iter().map(|di| 1.0 / di.max(nu)).collect();
        let done = (objective - next).abs() <= REL_TOL * objective.max(f64::MIN_POSITIVE);
        tracing::trace!(step = it, objective = next, "weiszfeld step");
        objective = next;
        if done {
            break;
        }
    }
    // `w` are the weights the next step would use: report the current point's influence shares.
    let total: f64 = w.iter().sum();
    Ok(RuleOutput {
        aggregate: z,
        marks: w.iter().map(|wi| Mark::weighted(wi / total)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geomedian_resists_one_outlier_and_finds_collinear_median() {
        let v: Vec<Vec<f32>> = vec![
            vec![0.0, 0.0],
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![1.0, 1.0],
            vec![1000.0, 1000.0],
        ];
        let rows: Vec<&[f32]> = v.iter().map(|r| r.as_slice()).collect();
        let out = geomedian(&rows, 2, 100, 1e-9).unwrap();
        assert!(out.aggregate.iter().all(|x| (0.0..=1.5).contains(x)));
        // On a line the geometric median is the ordinary median.
        let v: Vec<Vec<f32>> = [0.0f32, 1.0, 2.0, 10.0, 50.0]
            .iter()
            .map(|x| vec![*x])
            .collect();
        let rows: Vec<&[f32]> = v.iter().map(|r| r.as_slice()).collect();
        let out = geomedian(&rows, 1, 500, 1e-9).unwrap();
        assert!((out.aggregate[0] - 2.0).abs() < 1e-2, "{:?}", out.aggregate);
        assert!(geomedian(&rows, 1, 0, 1e-9).is_err());
        assert!(geomedian(&rows, 3, 5, 1e-9).is_err());
    }
}
