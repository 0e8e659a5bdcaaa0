//! Numerical kernels shared by the rules: norms, pairwise distances, weighted means.
//!
//! Every rule reads n rows of d f32 values (d = 3.67 M at the 7B TALoRA shape), so the kernels are
//! written for one streaming pass per call: rows are cut into cache-sized coordinate blocks that
//! rayon spreads over the cores, and every sum is accumulated in f64 with eight independent
//! accumulators (so the compiler can vectorise without reassociating floats).
//!
//! Pairwise distances are computed directly as Σ(x_i − x_j)² per block rather than through the
//! Gram identity ‖x‖² + ‖y‖² − 2x·y: the cost is the same one pass over the data (n(n−1)/2 pair
//! sums per block, all rows of the block in cache), and there is no catastrophic cancellation for
//! near-duplicate updates — the diagonal is exactly 0 and no distance can come out negative.

use rayon::prelude::*;

/// Coordinates per parallel work item: 2048 f32 per row keeps a block of 10–30 rows in L2.
pub(crate) const BLOCK: usize = 2048;

const LANES: usize = 8;

/// Σ a_k·b_k in f64.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..LANES {
            acc[k] += x[k] as f64 * y[k] as f64;
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += *x as f64 * *y as f64;
    }
    s
}

/// Σ (a_k − b_k)² in f64.
pub(crate) fn sq_diff(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..LANES {
            let t = x[k] as f64 - y[k] as f64;
            acc[k] += t * t;
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        let t = *x as f64 - *y as f64;
        s += t * t;
    }
    s
}

/// Σ (a_k − b_k)² in f64 where `b` is already f64.
fn sq_diff_f64(a: &[f32], b: &[f64]) -> f64 {
    let mut acc = [0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..LANES {
            let t = x[k] as f64 - y[k];
            acc[k] += t * t;
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        let t = *x as f64 - *y;
        s += t * t;
    }
    s
}

/// L2 norm of one row (parallel over blocks).
pub(crate) fn norm(a: &[f32]) -> f64 {
    a.par_chunks(BLOCK * 8)
        .map(|c| dot(c, c))
        .sum::<f64>()
        .sqrt()
}

/// Cosine similarity of `a` and `b` (None when either is the zero vector).
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> Option<f64> {
    let (ab, aa, bb) = a
        .par_chunks(BLOCK * 8)
        .zip(b.par_chunks(BLOCK * 8))
        .map(|(x, y)| (dot(x, y), dot(x, x), dot(y, y)))
        .reduce(|| (0.0, 0.0, 0.0), |p, q| (p.0 + q.0, p.1 + q.1, p.2 + q.2));
    let den = aa.sqrt() * bb.sqrt();
    (den > 0.0).then(|| (ab / den).clamp(-1.0, 1.0))
}

/// Symmetric n×n matrix (row-major) of squared L2 distances, exactly 0 on the diagonal.
pub(crate) fn pairwise_sq_dists(rows: &[&[f32]]) -> Vec<f64> {
    let n = rows.len();
    let d = rows.first().map_or(0, |r| r.len());
    let blocks = d.div_ceil(BLOCK);
    let upper = (0..blocks)
        .into_par_iter()
        .fold(
            || vec![0f64; n * n],
            |mut acc, b| {
                let lo = b * BLOCK;
                let hi = (lo + BLOCK).min(d);
                for i in 0..n {
                    let ri = &rows[i][lo..hi];
                    for j in i + 1..n {
                        acc[i * n + j] += sq_diff(ri, &rows[j][lo..hi]);
                    }
                }
                acc
            },
        )
        .reduce(
            || vec![0f64; n * n],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let mut out = upper;
    for i in 0..n {
        out[i * n + i] = 0.0;
        for j in 0..i {
            out[i * n + j] = out[j * n + i];
        }
    }
    out
}

/// Euclidean distance from every row to the f64 point `z`.
pub(crate) fn dists_to(rows: &[&[f32]], z: &[f64]) -> Vec<f64> {
    rows.iter()
        .map(|r| {
            r.par_chunks(BLOCK * 8)
                .zip(z.par_chunks(BLOCK * 8))
                .map(|(x, y)| sq_diff_f64(x, y))
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

/// Σ_i w_i·x_i / Σ_i w_i, accumulated in f64. The caller guarantees Σ w_i > 0.
pub(crate) fn weighted_mean_f64(rows: &[&[f32]], weights: &[f64]) -> Vec<f64> {
    let d = rows.first().map_or(0, |r| r.len());
    let total: f64 = weights.iter().sum();
    let mut out = vec![0f64; d];
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, acc)| {
        let lo = b * BLOCK;
        let len = acc.len();
        for (r, &w) in rows.iter().zip(weights) {
            if w == 0.0 {
                continue;
            }
            for (a, &x) in acc.iter_mut().zip(&r[lo..lo + len]) {
                *a += w * x as f64;
            }
        }
        for a in acc.iter_mut() {
            *a /= total;
        }
    });
    out
}

/// [`weighted_mean_f64`] rounded to f32.
pub(crate) fn weighted_mean(rows: &[&[f32]], weights: &[f64]) -> Vec<f32> {
    to_f32(&weighted_mean_f64(rows, weights))
}

/// Plain unweighted mean.
pub(crate) fn mean(rows: &[&[f32]]) -> Vec<f32> {
    weighted_mean(rows, &vec![1.0; rows.len()])
}

pub(crate) fn to_f32(v: &[f64]) -> Vec<f32> {
    v.par_iter().map(|&x| x as f32).collect()
}

/// Applies `per_coord` to every coordinate's column of n values, in parallel blocks. The closure
/// gets a scratch buffer holding the column (it may reorder it) and returns the output value.
pub(crate) fn per_coordinate<F>(rows: &[&[f32]], per_coord: F) -> Vec<f32>
where
    F: Fn(&mut [f32]) -> f64 + Sync,
{
    let n = rows.len();
    let d = rows.first().map_or(0, |r| r.len());
    let mut out = vec![0f32; d];
    out.par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(b, chunk)| {
            let lo = b * BLOCK;
            let mut col = vec![0f32; n];
            for (j, o) in chunk.iter_mut().enumerate() {
                for (c, r) in col.iter_mut().zip(rows) {
                    *c = r[lo + j];
                }
                *o = per_coord(&mut col) as f32;
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_match_naive_and_are_exact_for_duplicates() {
        let a: Vec<f32> = (0..5000).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let b: Vec<f32> = a.iter().map(|v| v + 1e-3).collect();
        let c = a.clone();
        let rows: Vec<&[f32]> = vec![&a, &b, &c];
        let d = pairwise_sq_dists(&rows);
        assert_eq!(d[0], 0.0);
        assert_eq!(d[2], 0.0, "duplicates are at distance exactly 0");
        let naive: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum();
        assert!((d[1] - naive).abs() <= naive * 1e-12);
        assert_eq!(d[1], d[3]);
        assert!(d.iter().all(|v| *v >= 0.0));
    }

    #[test]
    fn weighted_mean_and_cosine() {
        let a = vec![1.0f32, 2.0, 3.0];
        let b = vec![3.0f32, 2.0, 1.0];
        let m = weighted_mean(&[&a, &b], &[1.0, 3.0]);
        assert_eq!(m, vec![2.5, 2.0, 1.5]);
        assert!((cosine(&a, &a).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(cosine(&a, &[0.0; 3]), None);
        assert!((norm(&[3.0, 4.0]) - 5.0).abs() < 1e-12);
        let dz = dists_to(&[&a], &[1.0, 2.0, 7.0]);
        assert!((dz[0] - 4.0).abs() < 1e-12);
    }
}
