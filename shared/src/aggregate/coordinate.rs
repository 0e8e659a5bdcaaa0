//! Coordinate-wise rules: median and trimmed mean (Yin et al. 2018), and the β-closest-to-median
//! mean that finishes Bulyan.
//!
//! Each coordinate is an independent order statistic over the n inputs, so these rules ignore
//! sample counts (as Flower's do). They all run through [`sorted_columns`]: coordinates are cut into
//! blocks small enough for L1, the n row slices of a block are copied into a scratch buffer, a
//! [`Network`] sorts every column of the block at once, and a finishing closure reads the sorted
//! ranks (vectorised for median and trimmed mean). Rayon spreads groups of blocks over the cores.
//! Inputs are finite after the pre-filter, so `<` is the numeric order.

use rayon::prelude::*;

use super::config::Rule;
use super::error::AggregateError;
use super::network::Network;
use super::report::{Mark, RuleOutput};

/// Median of column `c` of a sorted block of `len` rows of `width` values: the middle value, or the
/// mean of the middle two for even `len`.
fn median_at(block: &[f32], width: usize, c: usize, len: usize) -> f64 {
    let at = |p: usize| block[p * width + c] as f64;
    if len % 2 == 1 {
        at(len / 2)
    } else {
        0.5 * (at(len / 2 - 1) + at(len / 2))
    }
}

/// Mean of the `beta` values of sorted column `c` (of `len` rows, row stride `width`) closest to
/// its median; ties go to the lower value. The chosen values are contiguous in sorted order, so a
/// two-pointer walk outwards from the median finds them; the walk is written with selects rather
/// than branches because which side wins is a coin flip per coordinate.
pub(crate) fn closest_to_median_mean(
    block: &[f32],
    width: usize,
    c: usize,
    len: usize,
    beta: usize,
) -> f64 {
    let at = |p: usize| block[p * width + c] as f64;
    let m = median_at(block, width, c, len);
    let mut lo = (0..len).filter(|&p| at(p) < m).count();
    let mut hi = lo;
    let mut sum = 0.0;
    for _ in 0..beta {
        // Values left of `lo` are < m and values from `hi` on are >= m, so no `abs` is needed.
        let left = at(lo.saturating_sub(1));
        let right = at(hi.min(len - 1));
        let l = if lo == 0 { f64::INFINITY } else { m - left };
        let r = if hi >= len { f64::INFINITY } else { right - m };
        let take_left = l <= r;
        sum += if take_left { left } else { right };
        lo -= usize::from(take_left);
        hi += usize::from(!take_left);
    }
    sum / beta as f64
}

/// Coordinates per block: the n rows of a block fill about 32 KiB (L1), at least 16 coordinates.
fn block_width(n: usize) -> usize {
    ((8192 / n.max(1)) / 16 * 16).clamp(16, 1024)
}

/// Blocks per parallel work item.
const BLOCKS_PER_TASK: usize = 32;

/// Sorts every coordinate's column with `net` and lets `finish` turn each sorted block into output
/// values. `finish(block, width, acc, out)` gets the sorted block (`net.wires()` rows of `width`
/// values, row-major), an f64 scratch of `width` values and the block's `width` outputs.
pub(crate) fn sorted_columns<F>(rows: &[&[f32]], net: &Network, finish: F) -> Vec<f32>
where
    F: Fn(&[f32], usize, &mut [f64], &mut [f32]) + Sync,
{
    let n = rows.len();
    debug_assert_eq!(n, net.wires());
    let d = rows.first().map_or(0, |r| r.len());
    let width = block_width(n);
    let task = width * BLOCKS_PER_TASK;
    let mut out = vec![0f32; d];
    out.par_chunks_mut(task).enumerate().for_each(|(t, chunk)| {
        let mut block = vec![0f32; n * width];
        let mut acc = vec![0f64; width];
        for (b, o) in chunk.chunks_mut(width).enumerate() {
            let lo = t * task + b * width;
            let w = o.len();
            let block = &mut block[..n * w];
            for (dst, r) in block.chunks_exact_mut(w).zip(rows) {
                dst.copy_from_slice(&r[lo..lo + w]);
            }
            net.apply(block, w);
            finish(block, w, &mut acc[..w], o);
        }
    });
    out
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
    let (a, b) = ((n - 1) / 2, n / 2);
    let net = Network::sorting(n).pruned([a, b]);
    let aggregate = sorted_columns(rows, &net, |block, w, _, out| {
        let (ra, rb) = (&block[a * w..(a + 1) * w], &block[b * w..(b + 1) * w]);
        if a == b {
            out.copy_from_slice(ra);
        } else {
            for ((o, x), y) in out.iter_mut().zip(ra).zip(rb) {
                *o = (0.5 * (*x as f64 + *y as f64)) as f32;
            }
        }
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
    let net = Network::sorting(n).pruned(k..n - k);
    let aggregate = sorted_columns(rows, &net, |block, w, acc, out| {
        acc.fill(0.0);
        // Summed rank by rank in ascending order, as a sorted column would be.
        for rank in block.chunks_exact(w).take(n - k).skip(k) {
            for (a, x) in acc.iter_mut().zip(rank) {
                *a += *x as f64;
            }
        }
        for (o, a) in out.iter_mut().zip(acc.iter()) {
            *o = (*a / kept) as f32;
        }
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

    fn closest(s: &[f32], beta: usize) -> f64 {
        closest_to_median_mean(s, 1, 0, s.len(), beta)
    }

    #[test]
    fn closest_to_median() {
        let s = [0.0f32, 1.0, 2.0, 2.5, 10.0];
        // median 2: closest three are 2, 2.5, 1.
        assert!((closest(&s, 3) - 5.5 / 3.0).abs() < 1e-12);
        assert_eq!(closest(&s, 1), 2.0);
        assert_eq!(closest(&s, 5), 15.5 / 5.0);
        // Even length: median 1.5 of [1, 2]; tie goes to the lower value.
        assert_eq!(closest(&[1.0, 2.0], 1), 1.0);
    }
}
