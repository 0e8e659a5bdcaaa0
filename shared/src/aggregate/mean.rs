//! Weighted means: FedAvg (weights = sample counts) and the quality-weighted mean DAF uses for the
//! domain band (weights = held-out improvements).
//!
//! Both cap the raw weights first: a node that reports 10⁹ samples or a huge improvement would
//! otherwise own the aggregate. The cap is either absolute or a multiple of the median positive
//! weight (the default, 2×). Zero weights are legal (the input is reported as rejected for zero
//! weight); negative or non-finite weights, or a zero total, are refused.

use super::config::{Rule, WeightCap};
use super::error::AggregateError;
use super::kernels;
use super::report::{Mark, RejectReason, RuleOutput, Status};

/// Median of the positive entries (mean of the middle two for an even count); None if none.
pub(crate) fn median_positive(weights: &[f64]) -> Option<f64> {
    let mut pos: Vec<f64> = weights.iter().copied().filter(|w| *w > 0.0).collect();
    if pos.is_empty() {
        return None;
    }
    pos.sort_by(f64::total_cmp);
    let k = pos.len();
    Some(if k % 2 == 1 {
        pos[k / 2]
    } else {
        0.5 * (pos[k / 2 - 1] + pos[k / 2])
    })
}

/// Applies the cap; returns the capped weights and which ones were lowered.
pub(crate) fn cap_weights(
    rule: Rule,
    raw: &[f64],
    cap: WeightCap,
) -> Result<(Vec<f64>, Vec<bool>), AggregateError> {
    if raw.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(AggregateError::BadWeights { rule });
    }
    let limit = match cap {
        WeightCap::None => f64::INFINITY,
        WeightCap::Absolute(c) | WeightCap::MedianMultiple(c) if !(c.is_finite() && c > 0.0) => {
            return Err(AggregateError::InvalidParam {
                rule,
                param: "weight_cap",
                value: c.to_string(),
                reason: "must be finite and > 0",
            });
        }
        WeightCap::Absolute(c) => c,
        WeightCap::MedianMultiple(c) => median_positive(raw).map_or(f64::INFINITY, |m| c * m),
    };
    let capped: Vec<bool> = raw.iter().map(|w| *w > limit).collect();
    let w = raw.iter().map(|w| w.min(limit)).collect();
    Ok((w, capped))
}

/// Σ w_i x_i / Σ w_i with capped weights, reporting each input's share.
pub(crate) fn weighted(
    rule: Rule,
    rows: &[&[f32]],
    raw_weights: &[f64],
    cap: WeightCap,
) -> Result<RuleOutput, AggregateError> {
    let (w, capped) = cap_weights(rule, raw_weights, cap)?;
    let total: f64 = w.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(AggregateError::BadWeights { rule });
    }
    let aggregate = kernels::weighted_mean(rows, &w);
    let marks = w
        .iter()
        .zip(&capped)
        .map(|(&wi, &c)| Mark {
            status: if wi == 0.0 {
                Status::Rejected(RejectReason::ZeroWeight)
            } else if c {
                Status::DownWeighted
            } else {
                Status::Used
            },
            score: None,
            weight: Some(wi / total),
        })
        .collect();
    Ok(RuleOutput { aggregate, marks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fedavg_weights_by_samples_and_caps() {
        let a = [0.0f32, 0.0];
        let b = [1.0f32, 2.0];
        let c = [2.0f32, 4.0];
        let rows: Vec<&[f32]> = vec![&a, &b, &c];
        let out = weighted(Rule::FedAvg, &rows, &[1.0, 1.0, 2.0], WeightCap::None).unwrap();
        assert_eq!(out.aggregate, vec![1.25, 2.5]);
        // Node c claims 1000 samples; the 2x-median cap holds it to 2.
        let out = weighted(
            Rule::FedAvg,
            &rows,
            &[1.0, 1.0, 1000.0],
            WeightCap::MedianMultiple(2.0),
        )
        .unwrap();
        assert_eq!(out.aggregate, vec![1.25, 2.5]);
        assert_eq!(out.marks[2].status, Status::DownWeighted);
        assert_eq!(out.marks[2].weight, Some(0.5));
        let out = weighted(Rule::FedAvg, &rows, &[0.0, 1.0, 1.0], WeightCap::None).unwrap();
        assert_eq!(
            out.marks[0].status,
            Status::Rejected(RejectReason::ZeroWeight)
        );
        assert!(weighted(Rule::FedAvg, &rows, &[0.0; 3], WeightCap::None).is_err());
        assert!(weighted(Rule::FedAvg, &rows, &[-1.0, 1.0, 1.0], WeightCap::None).is_err());
        assert!(
            weighted(
                Rule::FedAvg,
                &rows,
                &[1.0; 3],
                WeightCap::Absolute(f64::NAN)
            )
            .is_err()
        );
    }

    #[test]
    fn median_of_positive_weights() {
        assert_eq!(median_positive(&[0.0, 3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median_positive(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median_positive(&[0.0, 0.0]), None);
    }
}
