//! Coordinate-wise rules: median and trimmed mean (Yin et al. 2018), and the β-closest-to-median
//! mean that finishes Bulyan.
//!
//! Each coordinate is an independent order statistic over the n inputs, so these rules ignore
//! sample counts (as Flower's do) and cost O(n log n) per coordinate. Columns are gathered into a
//! small scratch buffer per parallel block and sorted with `total_cmp` (inputs are finite after the
//! pre-filter, so the order is the numeric order).

use super::config::Rule;
use super::error::AggregateError;
use super::kernels;
use super::report::{Mark, RuleOutput};

/// Median of a sorted slice: the middle value, or the mean of the middle two for even length.
pub(crate) fn sorted_median(s: &[f32]) -> f64 {
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2] as f64
    } else {
        0.5 * (s[n / 2 - 1] as f64 + s[n / 2] as f64)
    }
}

/// Mean of the `beta` values of the sorted slice closest to its median (ties go to the lower
/// value). The chosen values are contiguous in sorted order, so a two-pointer walk finds them.
pub(crate) fn closest_to_median_mean(s: &[f32], beta: usize) -> f64 {
    let m = sorted_median(s);
    let mut lo = s.partition_point(|v| (*v as f64) < m);
    let mut hi = lo;
    let mut sum = 0.0;
    for _ in 0..beta {
        let left = (lo > 0).then(|| (m - s[lo - 1] as f64).abs());
        let right = (hi < s.len()).then(|| (s[hi] as f64 - m).abs());
        let take_left = match (left, right) {
            (Some(l), Some(r)) => l <= r,
            (Some(_), None) => true,
            _ => false,
        };
        if take_left {
            lo -= 1;
            sum += s[lo] as f64;
        } else {
            sum += s[hi] as f64;
            hi += 1;
        }
    }
    sum / beta as f64
}

/// Sorts a short column (n = number of nodes, typically 10–100). Insertion sort with plain `<`
/// beats the general sort by several times at these lengths; the pre-filter guarantees finite
/// values, so `<` is a total order here.
pub(crate) fn sort(col: &mut [f32]) {
    if col.len() > 64 {
        col.sort_unstable_by(f32::total_cmp);
        return;
    }
    for i in 1..col.len() {
        let v = col[i];
        let mut j = i;
        while j > 0 && v < col[j - 1] {
            col[j] = col[j - 1];
            j -= 1;
        }
        col[j] = v;
    }
}

/// Coordinate-wise median; needs n ≥ 2f+1.
pub(crate) fn median(rows: &[&[f32]], f: usize) -> Result<RuleOutput, AggregateError> {
    let n = rows.len();
    if n < 2 * f + 1 {
        return Err(AggregateError::Condition {
            rule: Rule::Median,
            n,
            f,
            requirement: format!("n >= 2f+1 = {}", 2 * f + 1),
        });
    }
    let aggregate = kernels::per_coordinate(rows, |col| {
        sort(col);
        sorted_median(col)
    });
    Ok(RuleOutput {
        aggregate,
        marks: vec![Mark::used(); n],
    })
}

/// Trimmed mean dropping exactly `k` values per side per coordinate; needs 2k < n.
pub(crate) fn trimmed_mean(
    rows: &[&[f32]],
    k: usize,
    f: usize,
) -> Result<RuleOutput, AggregateError> {
    let n = rows.len();
    if 2 * k >= n {
        return Err(AggregateError::Condition {
            rule: Rule::TrimmedMean,
            n,
            f,
            requirement: format!("n > 2k = {} (k = {k} trimmed per side)", 2 * k),
        });
    }
    if k < f {
        tracing::warn!(k, f, "trimmed mean trims fewer values per side than f");
    }
    let kept = (n - 2 * k) as f64;
    let aggregate = kernels::per_coordinate(rows, |col| {
        sort(col);
        col[k..n - k].iter().map(|v| *v as f64).sum::<f64>() / kept
    });
    Ok(RuleOutput {
        aggregate,
        marks: vec![Mark::used(); n],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_even_and_odd() {
        let r: Vec<Vec<f32>> = vec![vec![1.0, 5.0], vec![3.0, 1.0], vec![2.0, 9.0]];
        let rows: Vec<&[f32]> = r.iter().map(|v| v.as_slice()).collect();
        assert_eq!(median(&rows, 1).unwrap().aggregate, vec![2.0, 5.0]);
        assert_eq!(median(&rows[..2], 0).unwrap().aggregate, vec![2.0, 3.0]);
        assert!(matches!(
            median(&rows[..2], 1),
            Err(AggregateError::Condition { .. })
        ));
    }

    #[test]
    fn trimmed_mean_trims_exactly_k() {
        let r: Vec<Vec<f32>> = [1.0f32, 100.0, 2.0, 3.0, -50.0]
            .iter()
            .map(|v| vec![*v])
            .collect();
        let rows: Vec<&[f32]> = r.iter().map(|v| v.as_slice()).collect();
        assert_eq!(trimmed_mean(&rows, 1, 1).unwrap().aggregate, vec![2.0]);
        assert_eq!(trimmed_mean(&rows, 2, 1).unwrap().aggregate, vec![2.0]);
        assert_eq!(trimmed_mean(&rows, 0, 0).unwrap().aggregate, vec![11.2]);
        assert!(trimmed_mean(&rows[..4], 2, 1).is_err());
    }

    #[test]
    fn short_sort_sorts() {
        let mut v = vec![3.0f32, -1.0, 2.5, -1.0, 0.0, 7.0];
        sort(&mut v);
        assert_eq!(v, vec![-1.0, -1.0, 0.0, 2.5, 3.0, 7.0]);
    }

    #[test]
    fn closest_to_median() {
        let s = [0.0f32, 1.0, 2.0, 2.5, 10.0];
        // median 2: closest three are 2, 2.5, 1.
        assert!((closest_to_median_mean(&s, 3) - 5.5 / 3.0).abs() < 1e-12);
        assert_eq!(closest_to_median_mean(&s, 1), 2.0);
        assert_eq!(closest_to_median_mean(&s, 5), 15.5 / 5.0);
        // Even length: median 1.5 of [1, 2]; tie goes to the lower value.
        assert_eq!(closest_to_median_mean(&[1.0, 2.0], 1), 1.0);
    }
}
