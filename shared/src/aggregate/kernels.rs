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
//! near-duplicate updates — the diagonal is exactly 0 and no distance can come out negative. They
//! are the one place where f32 arithmetic is used inside a sum: n(n−1)/2 pairs make it the most
//! expensive kernel, so each pair's differences are squared and summed in f32 over runs of
//! [`F32_RUN`] values (8 per accumulator lane) and every run is flushed into the pair's f64 total.
//! The difference of two nearby f32 values is exact (Sterbenz), so the relative error of a distance
//! stays around 1e-6, far below anything Krum's ranking depends on, and duplicates still come out
//! exactly 0.

use rayon::prelude::*;

/// Coordinates per parallel work item: 2048 f32 per row keeps a block of 10–30 rows in L2.
pub(crate) const BLOCK: usize = 2048;

const LANES: usize = 8;

/// Σ a_k·b_k in f64.
#[inline(always)]
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
#[cfg(test)]
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
#[inline(always)]
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

/// Squared L2 norm of one row (parallel over blocks), in f64.
///
/// It is finite exactly when every value is: a NaN or ∞ propagates, and the square of the largest
/// finite f32 (≈1.2e77) summed over any realistic length cannot overflow f64. The pre-filter uses
/// this to check finiteness and measure the norm in one pass.
pub(crate) fn norm_sq(a: &[f32]) -> f64 {
    a.par_chunks(BLOCK * 8)
        .map(|c| with_avx2(|| dot(c, c)))
        .sum::<f64>()
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

/// Independent f32 accumulators in [`sq_diff_f32`]: four AVX registers, enough to hide the add
/// latency.
const F32_LANES: usize = 32;

/// Values per f32 partial sum in [`sq_diff_f32`] (8 per accumulator lane).
pub(crate) const F32_RUN: usize = 8 * F32_LANES;

/// Σ (a_k − b_k)², squared and summed in f32 over runs of [`F32_RUN`] values, runs summed in f64.
#[inline(always)]
fn sq_diff_f32(a: &[f32], b: &[f32]) -> f64 {
    let mut total = 0f64;
    for (ra, rb) in a.chunks(F32_RUN).zip(b.chunks(F32_RUN)) {
        let mut acc = [0f32; F32_LANES];
        let (ca, cb) = (ra.chunks_exact(F32_LANES), rb.chunks_exact(F32_LANES));
        let (ta, tb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for k in 0..F32_LANES {
                let t = x[k] - y[k];
                acc[k] += t * t;
            }
        }
        for (x, y) in ta.iter().zip(tb) {
            let t = x - y;
            acc[0] += t * t;
        }
        total += acc.iter().map(|v| *v as f64).sum::<f64>();
    }
    total
}

/// Adds the upper-triangle squared distances of coordinates `lo..hi` to `acc` (n×n, row-major).
#[inline(always)]
fn pair_block(rows: &[&[f32]], lo: usize, hi: usize, acc: &mut [f64]) {
    let n = rows.len();
    for i in 0..n {
        let ri = &rows[i][lo..hi];
        for j in i + 1..n {
            acc[i * n + j] += sq_diff_f32(ri, &rows[j][lo..hi]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn pair_block_avx2(rows: &[&[f32]], lo: usize, hi: usize, acc: &mut [f64]) {
    pair_block(rows, lo, hi, acc);
}

/// Runs `f` inside a function compiled with AVX2 when the running CPU has it, so that `f` (inlined
/// there) gets the wider vectors; otherwise calls it plainly. The kernels are written as simple
/// loops that LLVM vectorises for whichever target it compiles them for.
#[inline(always)]
pub(crate) fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the running CPU supports AVX2, checked just above.
        return unsafe { call_avx2(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn call_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// [`pair_block`] with AVX2 when the running CPU has it (the binary stays portable).
fn pair_block_dispatch(rows: &[&[f32]], lo: usize, hi: usize, acc: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the running CPU supports AVX2, checked just above.
        unsafe { pair_block_avx2(rows, lo, hi, acc) };
        return;
    }
    pair_block(rows, lo, hi, acc);
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
                pair_block_dispatch(rows, lo, (lo + BLOCK).min(d), &mut acc);
                acc
            },
        )
        .reduce(|| vec![0f64; n * n], add_into);
    let mut out = upper;
    for i in 0..n {
        out[i * n + i] = 0.0;
        for j in 0..i {
            out[i * n + j] = out[j * n + i];
        }
    }
    out
}

fn add_into(mut a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}

/// Σ (a_k − z_k)² in f64 where `z` is already f64 (a centre being iterated on).
#[inline(always)]
pub(crate) fn sq_dist_to(a: &[f32], z: &[f64]) -> f64 {
    sq_diff_f64(a, z)
}

/// One parallel pass over `out` in blocks of [`BLOCK`] values with n per-row f64 sums.
///
/// `body(lo, out_block, sums, scratch)` handles coordinates `lo..lo + out_block.len()`: it may
/// rewrite its block of `out`, add to the n `sums` (e.g. squared distances of each row to a centre
/// computed for this block while the rows are in cache) and use `scratch` (≥ the block length) as
/// it likes. Returns the sums over all blocks. This is what lets the iterative rules (geometric
/// median, centered clipping) do one pass over memory per iteration instead of two.
pub(crate) fn fold_blocks<T, F>(out: &mut [T], n: usize, body: F) -> Vec<f64>
where
    T: Send,
    F: Fn(usize, &mut [T], &mut [f64], &mut [f64]) + Sync,
{
    out.par_chunks_mut(BLOCK)
        .enumerate()
        .fold(
            || (vec![0f64; n], vec![0f64; BLOCK]),
            |(mut sums, mut scratch), (b, chunk)| {
                with_avx2(|| body(b * BLOCK, chunk, &mut sums, &mut scratch));
                (sums, scratch)
            },
        )
        .map(|(sums, _)| sums)
        .reduce(|| vec![0f64; n], add_into)
}

/// Σ_i w_i·x_i / Σ_i w_i, accumulated in f64 per coordinate and rounded to f32. The caller
/// guarantees Σ w_i > 0.
pub(crate) fn weighted_mean(rows: &[&[f32]], weights: &[f64]) -> Vec<f32> {
    let d = rows.first().map_or(0, |r| r.len());
    let total: f64 = weights.iter().sum();
    let mut out = vec![0f32; d];
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, o)| {
        with_avx2(|| {
            let lo = b * BLOCK;
            let mut acc = [0f64; BLOCK];
            let acc = &mut acc[..o.len()];
            for (r, &w) in rows.iter().zip(weights) {
                if w == 0.0 {
                    continue;
                }
                for (a, &x) in acc.iter_mut().zip(&r[lo..lo + o.len()]) {
                    *a += w * x as f64;
                }
            }
            for (o, a) in o.iter_mut().zip(acc.iter()) {
                *o = (*a / total) as f32;
            }
        })
    });
    out
}

/// Plain unweighted mean.
pub(crate) fn mean(rows: &[&[f32]]) -> Vec<f32> {
    weighted_mean(rows, &vec![1.0; rows.len()])
}

pub(crate) fn to_f32(v: &[f64]) -> Vec<f32> {
    v.par_iter().map(|&x| x as f32).collect()
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
        // f32 runs flushed into f64: about 1e-7 relative, far from the old f64-only 1e-12.
        assert!((d[1] - naive).abs() <= naive * 1e-6, "{} vs {naive}", d[1]);
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
        assert_eq!(norm_sq(&[3.0, 4.0]), 25.0);
        assert!(norm_sq(&[1.0, f32::NAN]).is_nan());
        assert_eq!(norm_sq(&[f32::MAX, f32::NEG_INFINITY]), f64::INFINITY);
        assert!(norm_sq(&[f32::MAX; 1000]).is_finite());
        assert!((sq_dist_to(&a, &[1.0, 2.0, 7.0]) - 16.0).abs() < 1e-12);
    }

    #[test]
    fn fold_blocks_sums_rows_and_rewrites_blocks() {
        let d = BLOCK * 2 + 5;
        let rows: Vec<Vec<f32>> = (0..3)
            .map(|i| (0..d).map(|k| (k % 7) as f32 - i as f32).collect())
            .collect();
        let mut out = vec![0f32; d];
        let sums = fold_blocks(&mut out, 3, |lo, o, s, _| {
            for (i, r) in rows.iter().enumerate() {
                s[i] += r[lo..lo + o.len()].iter().map(|v| *v as f64).sum::<f64>();
            }
            for (k, v) in o.iter_mut().enumerate() {
                *v = (lo + k) as f32;
            }
        });
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(sums[i], r.iter().map(|v| *v as f64).sum::<f64>());
        }
        assert!(out.iter().enumerate().all(|(k, v)| *v == k as f32));
    }
}
