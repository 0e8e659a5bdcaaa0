//! Centered clipping (Karimireddy, He & Jaggi 2021).
//!
//! v ← v + (1/n) Σ (x_i − v)·min(1, τ/‖x_i − v‖), repeated L times, starting from the previous
//! round's aggregate (zero when there is none). An outlier can move the centre by at most τ/n per
//! iteration however large it is, which is what makes the rule robust while still using every
//! input. The rule is stateful across rounds only through the `previous` vector the caller passes.
//!
//! Each iteration is one pass over memory: per block of coordinates the centre is moved and the
//! rows' squared distances to the moved centre (which the next iteration clips by) are accumulated
//! while the rows are still in cache.

use super::config::Rule;
use super::error::AggregateError;
use super::kernels;
use super::report::{Mark, RuleOutput, Status};

pub(crate) fn centered_clip(
    rows: &[&[f32]],
    previous: Option<&[f32]>,
    f: usize,
    tau: f64,
    iters: usize,
) -> Result<RuleOutput, AggregateError> {
    let n = rows.len();
    if n < 2 * f + 1 {
        return Err(AggregateError::Condition {
            rule: Rule::CenteredClip,
            n,
            f,
            requirement: format!("n >= 2f+1 = {}", 2 * f + 1),
        });
    }
    if !(tau.is_finite() && tau > 0.0) {
        return Err(AggregateError::InvalidParam {
            rule: Rule::CenteredClip,
            param: "cc_tau",
            value: tau.to_string(),
            reason: "must be finite and > 0",
        });
    }
    if iters == 0 {
        return Err(AggregateError::InvalidParam {
            rule: Rule::CenteredClip,
            param: "cc_iters",
            value: iters.to_string(),
            reason: "need at least one iteration",
        });
    }
    let d = rows[0].len();
    let mut v: Vec<f64> = match previous {
        Some(p) => p.iter().map(|x| *x as f64).collect(),
        None => vec![0.0; d],
    };
    let sq_dists = |v: &mut [f64]| {
        kernels::fold_blocks(v, n, |lo, vb, sums, _| {
            for (s, r) in sums.iter_mut().zip(rows) {
                *s += kernels::sq_dist_to(&r[lo..lo + vb.len()], vb);
            }
        })
    };
    let mut dist: Vec<f64> = sq_dists(&mut v).into_iter().map(f64::sqrt).collect();
    let mut clip = vec![1.0; n];
    for it in 0..iters {
        clip = dist
            .iter()
            .map(|di| if *di > tau { tau / di } else { 1.0 })
            .collect();
        let keep = 1.0 - clip.iter().sum::<f64>() / n as f64;
        let measure = it + 1 < iters;
        let sq = kernels::fold_blocks(&mut v, n, |lo, vb, sums, scratch| {
            let hi = lo + vb.len();
            let acc = &mut scratch[..vb.len()];
            for (a, x) in acc.iter_mut().zip(vb.iter()) {
                *a = x * keep;
            }
            for (r, &c) in rows.iter().zip(&clip) {
                let s = c / n as f64;
                for (a, &x) in acc.iter_mut().zip(&r[lo..hi]) {
                    *a += s * x as f64;
                }
            }
            vb.copy_from_slice(acc);
            if measure {
                for (s, r) in sums.iter_mut().zip(rows) {
                    *s += kernels::sq_dist_to(&r[lo..hi], vb);
                }
            }
        });
        dist = sq.into_iter().map(f64::sqrt).collect();
    }
    let marks = clip
        .iter()
        .map(|&c| Mark {
            status: if c < 1.0 {
                Status::DownWeighted
            } else {
                Status::Used
            },
            score: None,
            weight: Some(c),
        })
        .collect();
    Ok(RuleOutput {
        aggregate: kernels::to_f32(&v),
        marks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_outlier_influence_to_tau_over_n() {
        let v: Vec<Vec<f32>> = vec![
            vec![1.0, 0.0],
            vec![1.0, 0.0],
            vec![1.0, 0.0],
            vec![1e6, 0.0],
        ];
        let rows: Vec<&[f32]> = v.iter().map(|r| r.as_slice()).collect();
        let prev = [1.0f32, 0.0];
        let out = centered_clip(&rows, Some(&prev), 1, 2.0, 1).unwrap();
        // Honest inputs sit on the centre; the outlier moves it by exactly tau/n = 0.5.
        assert!((out.aggregate[0] - 1.5).abs() < 1e-6);
        assert_eq!(out.marks[3].status, Status::DownWeighted);
        assert_eq!(out.marks[0].status, Status::Used);
        // Without outliers and a large tau it is the mean after one step from any start.
        let out = centered_clip(&rows[..3], None, 1, 1e9, 1).unwrap();
        assert!((out.aggregate[0] - 1.0).abs() < 1e-6);
        assert!(centered_clip(&rows, None, 1, -1.0, 1).is_err());
        assert!(centered_clip(&rows, None, 1, 1.0, 0).is_err());
        assert!(centered_clip(&rows[..2], None, 1, 1.0, 1).is_err());
    }
}
