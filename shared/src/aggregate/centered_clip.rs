//! Centered clipping (Karimireddy, He & Jaggi 2021).
//!
//! v ← v + (1/n) Σ (x_i − v)·min(1, τ/‖x_i − v‖), repeated L times, starting from the previous
//! round's aggregate (zero when there is none). An outlier can move the centre by at most τ/n per
//! iteration however large it is, which is what makes the rule robust while still using every
//! input. The rule is stateful across rounds only through the `previous` vector the caller passes.

use rayon::prelude::*;

use super::config::Rule;
use super::error::AggregateError;
use super::kernels::{self, BLOCK};
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
    let mut clip = vec![1.0; n];
    for _ in 0..iters {
        let dist = kernels::dists_to(rows, &v);
        clip = dist
            .iter()
            .map(|di| if *di > tau { tau / di } else { 1.0 })
            .collect();
        let keep = 1.0 - clip.iter().sum::<f64>() / n as f64;
        v.par_chunks_mut(BLOCK).enumerate().for_each(|(b, vb)| {
            let lo = b * BLOCK;
            let mut acc: Vec<f64> = vb.iter().map(|x| x * keep).collect();
            for (r, &c) in rows.iter().zip(&clip) {
                let s = c / n as f64;
                for (a, &x) in acc.iter_mut().zip(&r[lo..lo + vb.len()]) {
                    *a += s * x as f64;
                }
            }
            vb.copy_from_slice(&acc);
        });
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
