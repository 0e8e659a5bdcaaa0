//! The Krum family: Krum, Multi-Krum (Blanchard et al. 2017) and Bulyan (El Mhamdi et al. 2018).
//!
//! Conventions (REFERENCE-federation §1.6, matching Flower's legacy `aggregate_krum` /
//! `aggregate_bulyan`):
//! * distances are **squared** L2 over the whole flattened vector, computed once for all pairs;
//! * score_i = sum of the c = n−f−2 smallest distances from i to the *other* inputs (self is
//!   excluded by index, never by assuming it sorts first);
//! * ties go to the lower index; Multi-Krum takes a plain (unweighted) mean of the m best;
//! * Bulyan runs Krum θ = n−2f times on the shrinking remaining set, recomputing
//!   c = max(1, |R|−f−2) each time (Flower's floor), then per coordinate averages the β = n−4f
//!   selected values closest to the coordinate median (ties to the lower value). One deliberate
//!   difference from Flower: a tie inside the recursion goes to the lower *full-set* score before
//!   the lower index. Such ties are structural once c = 1 (two mutual nearest neighbours score the
//!   same), and index order there would make Bulyan depend on the order the inputs arrived in.
//!
//! Conditions are enforced (Flower's legacy Krum does not check n ≥ 2f+3): a rule that cannot give
//! its guarantee refuses instead of silently computing something else.

use super::config::Rule;
use super::coordinate;
use super::error::AggregateError;
use super::kernels;
use super::network::Network;
use super::report::{Mark, RejectReason, RuleOutput, Status};

/// Krum scores of the members of `set` against each other, with `c` neighbours each.
fn scores_within(dists: &[f64], n: usize, set: &[usize], c: usize) -> Vec<f64> {
    let mut buf = Vec::with_capacity(set.len());
    set.iter()
        .map(|&i| {
            buf.clear();
            buf.extend(set.iter().filter(|&&j| j != i).map(|&j| dists[i * n + j]));
            buf.sort_unstable_by(f64::total_cmp);
            buf.iter().take(c).sum()
        })
        .collect()
}

/// Position in `scores` of the smallest score; ties to the first position.
fn argmin(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s < scores[best] {
            best = i;
        }
    }
    best
}

fn check_krum(rule: Rule, n: usize, f: usize) -> Result<(), AggregateError> {
    if n < 2 * f + 3 {
        return Err(AggregateError::Condition {
            rule,
            n,
            f,
            requirement: format!("n >= 2f+3 = {}", 2 * f + 3),
        });
    }
    Ok(())
}

/// Krum scores of all n inputs (n ≥ 2f+3 is checked by the callers).
pub(crate) fn scores(rows: &[&[f32]], f: usize) -> Vec<f64> {
    let n = rows.len();
    let dists = kernels::pairwise_sq_dists(rows);
    let all: Vec<usize> = (0..n).collect();
    scores_within(&dists, n, &all, n - f - 2)
}

fn marks_for(rule: Rule, scores: &[f64], selected: &[usize], weight: Option<f64>) -> Vec<Mark> {
    scores
        .iter()
        .enumerate()
        .map(|(i, &s)| Mark {
            status: if selected.contains(&i) {
                Status::Used
            } else {
                Status::Rejected(RejectReason::NotSelected { rule })
            },
            score: Some(s),
            weight: selected.contains(&i).then_some(weight).flatten(),
        })
        .collect()
}

/// Krum: the single input with the lowest score.
pub(crate) fn krum(rows: &[&[f32]], f: usize) -> Result<RuleOutput, AggregateError> {
    check_krum(Rule::Krum, rows.len(), f)?;
    let s = scores(rows, f);
    let best = argmin(&s);
    Ok(RuleOutput {
        aggregate: rows[best].to_vec(),
        marks: marks_for(Rule::Krum, &s, &[best], Some(1.0)),
    })
}

/// Multi-Krum: plain mean of the `m` lowest-scored inputs (ties to the lower index).
pub(crate) fn multi_krum(
    rows: &[&[f32]],
    f: usize,
    m: Option<usize>,
) -> Result<RuleOutput, AggregateError> {
    let n = rows.len();
    check_krum(Rule::MultiKrum, n, f)?;
    let m = m.unwrap_or(n - f);
    if m == 0 || m > n - f {
        return Err(AggregateError::InvalidParam {
            rule: Rule::MultiKrum,
            param: "m",
            value: m.to_string(),
            reason: "need 1 <= m <= n - f",
        });
    }
    let s = scores(rows, f);
    let mut order: Vec<usize> = (0..n).collect();
    // Stable sort: equal scores keep index order, so ties go to the lower index.
    order.sort_by(|&a, &b| s[a].total_cmp(&s[b]));
    let mut best = order[..m].to_vec();
    best.sort_unstable();
    let chosen: Vec<&[f32]> = best.iter().map(|&i| rows[i]).collect();
    Ok(RuleOutput {
        aggregate: kernels::mean(&chosen),
        marks: marks_for(Rule::MultiKrum, &s, &best, Some(1.0 / m as f64)),
    })
}

/// Bulyan (paper-faithful, recursive Krum); needs n ≥ 4f+3.
pub(crate) fn bulyan(rows: &[&[f32]], f: usize) -> Result<RuleOutput, AggregateError> {
    let n = rows.len();
    if n < 4 * f + 3 {
        return Err(AggregateError::Condition {
            rule: Rule::Bulyan,
            n,
            f,
            requirement: format!("n >= 4f+3 = {}", 4 * f + 3),
        });
    }
    let theta = n - 2 * f;
    let beta = theta - 2 * f;
    let dists = kernels::pairwise_sq_dists(rows);
    let mut remaining: Vec<usize> = (0..n).collect();
    let first_scores = scores_within(&dists, n, &remaining, n - f - 2);
    let mut selected = Vec::with_capacity(theta);
    for _ in 0..theta {
        let c = remaining.len().saturating_sub(f + 2).max(1);
        let s = scores_within(&dists, n, &remaining, c);
        // Ties (structural once c = 1: mutual nearest neighbours score the same) go to the lower
        // score over all n inputs, then the lower index, so the result is order-independent.
        let pos = (0..remaining.len())
            .min_by(|&a, &b| {
                s[a].total_cmp(&s[b])
                    .then(first_scores[remaining[a]].total_cmp(&first_scores[remaining[b]]))
            })
            .unwrap_or(0);
        selected.push(remaining.remove(pos));
    }
    selected.sort_unstable();
    let chosen: Vec<&[f32]> = selected.iter().map(|&i| rows[i]).collect();
    let net = Network::sorting(theta);
    let aggregate = coordinate::sorted_columns(&chosen, &net, |block, w, _, out| {
        for (c, o) in out.iter_mut().enumerate() {
            *o = coordinate::closest_to_median_mean(block, w, c, theta, beta) as f32;
        }
    });
    Ok(RuleOutput {
        aggregate,
        marks: marks_for(Rule::Bulyan, &first_scores, &selected, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(v: &[Vec<f32>]) -> Vec<&[f32]> {
        v.iter().map(|r| r.as_slice()).collect()
    }

    #[test]
    fn flower_krum_vector() {
        // flwr server/strategy/krum_test.py: f=1, x = 0.2, 0.7, 1.0 (x4 dims) -> 0.7. Flower does
        // not check n >= 2f+3 there; with n = 3 we need f = 0 to run (c = n-f-2 = 1 both ways).
        let v: Vec<Vec<f32>> = [0.2f32, 0.7, 1.0].iter().map(|x| vec![*x; 4]).collect();
        let out = krum(&rows_of(&v), 0).unwrap();
        assert_eq!(out.aggregate, vec![0.7; 4]);
        let s: Vec<f64> = out.marks.iter().map(|m| m.score.unwrap()).collect();
        // s1 = s2 = 0.36 (= 4 * 0.3^2): the tie goes to the lower index.
        assert!((s[1] - 0.36).abs() < 1e-6 && (s[2] - 0.36).abs() < 1e-6);
        assert!(matches!(
            krum(&rows_of(&v), 1),
            Err(AggregateError::Condition { .. })
        ));
    }

    #[test]
    fn flower_multikrum_vector() {
        // flwr serverapp/strategy/multikrum_test.py: f=1, m=2, x = 0.2, 0.5, 1.0 -> 0.35.
        let v: Vec<Vec<f32>> = [0.2f32, 0.5, 1.0].iter().map(|x| vec![*x; 4]).collect();
        let out = multi_krum(&rows_of(&v), 0, Some(2)).unwrap();
        for x in out.aggregate {
            assert!((x - 0.35).abs() < 1e-6);
        }
    }

    #[test]
    fn bulyan_refuses_small_n_and_runs_at_4f_plus_3() {
        let v: Vec<Vec<f32>> = (0..6).map(|i| vec![i as f32, -(i as f32)]).collect();
        assert!(matches!(
            bulyan(&rows_of(&v), 1),
            Err(AggregateError::Condition { .. })
        ));
        let mut v: Vec<Vec<f32>> = (0..6).map(|i| vec![i as f32 * 0.1, 1.0]).collect();
        v.push(vec![100.0, -100.0]);
        let out = bulyan(&rows_of(&v), 1).unwrap();
        assert_eq!(
            out.marks[6].status,
            Status::Rejected(RejectReason::NotSelected { rule: Rule::Bulyan })
        );
        assert!(out.aggregate[0] >= 0.0 && out.aggregate[0] <= 0.5);
        assert_eq!(out.aggregate[1], 1.0);
    }
}
