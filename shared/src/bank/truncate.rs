//! Rank-2 truncation of a low-rank update `ΔW = B · A` — how a rank-8 band adapter becomes a
//! pattern.
//!
//! The best rank-2 approximation in Frobenius (and spectral) norm is the SVD truncated to the two
//! largest singular values (Eckart–Young). `ΔW` is `[out, in]` (4096² at 7B scale), but it has rank
//! `r ≤ 8`, so the SVD never needs it dense:
//!
//! 1. thin QR of both factors (modified Gram–Schmidt, f64): `B = Q_b R_b`, `Aᵀ = Q_a R_a`, so
//!    `ΔW = Q_b (R_b R_aᵀ) Q_aᵀ` with an `r × r` core `C`;
//! 2. SVD of the core by one-sided Jacobi (Hestenes): rotate column pairs of `C` until they are
//!    orthogonal; column norms are the singular values, `C V = U Σ`;
//! 3. the two largest: `u_j = Q_b U_j`, `v_j = Q_a V_j`, and the factors are split evenly,
//!    `B' = [√σ₁ u₁, √σ₂ u₂]`, `A' = [√σ₁ v₁ᵀ; √σ₂ v₂ᵀ]`, so both halves have similar magnitudes
//!    (which is what per-row int8 storage wants).
//!
//! Cost `O((in + out) · r²)`, exact to float rounding: a rank-≤2 input comes back unchanged as a
//! product. An input of rank below 2 is padded with zero directions.

use super::error::Result;
use super::matrix::{LowRank, Matrix};

/// The rank every pattern stores.
pub const PATTERN_RANK: usize = 2;

/// Columns of a row-major `rows × cols` f64 matrix, as vectors.
fn columns(m: &Matrix, transpose: bool) -> Vec<Vec<f64>> {
    if transpose {
        // columns of mᵀ are rows of m
        (0..m.rows())
            .map(|r| m.row(r).iter().map(|v| *v as f64).collect())
            .collect()
    } else {
        (0..m.cols())
            .map(|c| (0..m.rows()).map(|r| m.get(r, c) as f64).collect())
            .collect()
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Thin QR by modified Gram–Schmidt: returns orthonormal (or zero, for dependent columns) `q`
/// columns and the upper-triangular `r` (row-major `k × k`).
fn thin_qr(mut cols: Vec<Vec<f64>>) -> (Vec<Vec<f64>>, Vec<f64>) {
    let k = cols.len();
    let mut r = vec![0.0f64; k * k];
    let scale = cols.iter().map(|c| dot(c, c).sqrt()).fold(0.0f64, f64::max);
    let tiny = scale * 1e-12;
    for j in 0..k {
        for i in 0..j {
            let proj = dot(&cols[i], &cols[j]);
            r[i * k + j] = proj;
            let (head, tail) = cols.split_at_mut(j);
            for (x, q) in tail[0].iter_mut().zip(&head[i]) {
                *x -= proj * q;
            }
        }
        let norm = dot(&cols[j], &cols[j]).sqrt();
        if norm > tiny && norm > 0.0 {
            r[j * k + j] = norm;
            cols[j].iter_mut().for_each(|x| *x /= norm);
        } else {
            r[j * k + j] = 0.0;
            cols[j].iter_mut().for_each(|x| *x = 0.0);
        }
    }
    (cols, r)
}

/// One-sided Jacobi SVD of a square `k × k` row-major matrix: `(σ, U columns, V columns)`,
/// sorted by decreasing σ.
fn jacobi_svd(c: &[f64], k: usize) -> (Vec<f64>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut w: Vec<Vec<f64>> = (0..k)
        .map(|j| (0..k).map(|i| c[i * k + j]).collect())
        .collect();
    let mut v: Vec<Vec<f64>> = (0..k)
        .map(|j| (0..k).map(|i| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for _sweep in 0..100 {
        let mut rotated = false;
        for p in 0..k {
            for q in p + 1..k {
                let alpha = dot(&w[p], &w[p]);
                let beta = dot(&w[q], &w[q]);
                let gamma = dot(&w[p], &w[q]);
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let cs = 1.0 / (1.0 + t * t).sqrt();
                let sn = cs * t;
                for m in [&mut w, &mut v] {
                    let (head, tail) = m.split_at_mut(q);
                    for (xp, xq) in head[p].iter_mut().zip(tail[0].iter_mut()) {
                        let (a, b) = (*xp, *xq);
                        *xp = cs * a - sn * b;
                        *xq = sn * a + cs * b;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut order: Vec<usize> = (0..k).collect();
    let sigma: Vec<f64> = w.iter().map(|col| dot(col, col).sqrt()).collect();
    order.sort_by(|a, b| sigma[*b].total_cmp(&sigma[*a]));
    let mut s_out = Vec::with_capacity(k);
    let mut u_out = Vec::with_capacity(k);
    let mut v_out = Vec::with_capacity(k);
    for j in order {
        let s = sigma[j];
        s_out.push(s);
        u_out.push(if s > 0.0 {
            w[j].iter().map(|x| x / s).collect()
        } else {
            vec![0.0; k]
        });
        v_out.push(v[j].clone());
    }
    (s_out, u_out, v_out)
}

/// `Σ_i basis[i] · coeff[i]` for orthonormal basis columns.
fn combine(basis: &[Vec<f64>], coeff: &[f64], len: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; len];
    for (b, c) in basis.iter().zip(coeff) {
        if *c != 0.0 {
            out.iter_mut().zip(b).for_each(|(o, x)| *o += c * x);
        }
    }
    out
}

/// The singular values of `B · A` (descending), computed from the factors.
pub fn singular_values(f: &LowRank) -> Vec<f64> {
    let (_, rb) = thin_qr(columns(&f.b, false));
    let (_, ra) = thin_qr(columns(&f.a, true));
    let k = f.rank();
    let core = core_matrix(&rb, &ra, k);
    jacobi_svd(&core, k).0
}

/// `C = R_b · R_aᵀ` (both `k × k`, row-major).
fn core_matrix(rb: &[f64], ra: &[f64], k: usize) -> Vec<f64> {
    let mut c = vec![0.0f64; k * k];
    for i in 0..k {
        for j in 0..k {
            c[i * k + j] = (0..k).map(|l| rb[i * k + l] * ra[j * k + l]).sum();
        }
    }
    c
}

/// The best rank-2 approximation of `B · A` as factors `A' [2, in]`, `B' [out, 2]`.
pub fn truncate_rank2(f: &LowRank) -> Result<LowRank> {
    let (out, inp, k) = (f.out_dim(), f.in_dim(), f.rank());
    let mut a = vec![0.0f32; PATTERN_RANK * inp];
    let mut b = vec![0.0f32; out * PATTERN_RANK];
    if k > 0 {
        let (qb, rb) = thin_qr(columns(&f.b, false));
        let (qa, ra) = thin_qr(columns(&f.a, true));
        let core = core_matrix(&rb, &ra, k);
        let (sigma, u, v) = jacobi_svd(&core, k);
        for j in 0..PATTERN_RANK.min(k) {
            let root = sigma[j].sqrt();
            if root == 0.0 {
                continue;
            }
            let left = combine(&qb, &u[j], out);
            let right = combine(&qa, &v[j], inp);
            for (r, x) in left.iter().enumerate() {
                b[r * PATTERN_RANK + j] = (x * root) as f32;
            }
            for (c, x) in right.iter().enumerate() {
                a[j * inp + c] = (x * root) as f32;
            }
        }
    }
    LowRank::new(
        Matrix::new(PATTERN_RANK, inp, a, "truncated A")?,
        Matrix::new(out, PATTERN_RANK, b, "truncated B")?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(rows: usize, cols: usize, rng: &mut impl Rng) -> Matrix {
        Matrix::new(
            rows,
            cols,
            (0..rows * cols)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect(),
            "r",
        )
        .unwrap()
    }

    fn frob2(m: &Matrix) -> f64 {
        m.data().iter().map(|v| (*v as f64).powi(2)).sum()
    }

    fn diff(a: &Matrix, b: &Matrix) -> Matrix {
        let d = a.data().iter().zip(b.data()).map(|(x, y)| x - y).collect();
        Matrix::new(a.rows(), a.cols(), d, "d").unwrap()
    }

    #[test]
    fn rank2_input_is_reproduced() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let f = LowRank::new(random(2, 9, &mut rng), random(7, 2, &mut rng)).unwrap();
        let t = truncate_rank2(&f).unwrap();
        let err = frob2(&diff(&f.product(), &t.product()));
        assert!(err < 1e-9 * frob2(&f.product()), "err {err}");
    }

    #[test]
    fn picks_the_two_largest_directions() {
        // B·A = diag-like with known singular values 1, 5, 3, 0.5 on orthogonal axes.
        let s = [1.0f32, 5.0, 3.0, 0.5];
        let mut a = Matrix::zeros(4, 6).into_data();
        let mut b = Matrix::zeros(5, 4).into_data();
        for (j, sv) in s.iter().enumerate() {
            a[j * 6 + j + 1] = 1.0;
            b[j * 4 + j] = *sv;
        }
        let f = LowRank::new(
            Matrix::new(4, 6, a, "a").unwrap(),
            Matrix::new(5, 4, b, "b").unwrap(),
        )
        .unwrap();
        let sv = singular_values(&f);
        assert!((sv[0] - 5.0).abs() < 1e-9 && (sv[1] - 3.0).abs() < 1e-9);
        let t = truncate_rank2(&f).unwrap();
        let p = t.product();
        assert!((p.get(1, 2) - 5.0).abs() < 1e-5);
        assert!((p.get(2, 3) - 3.0).abs() < 1e-5);
        assert!(p.get(0, 1).abs() < 1e-5 && p.get(3, 4).abs() < 1e-5);
    }

    #[test]
    fn residual_matches_eckart_young_and_is_orthogonal() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let f = LowRank::new(random(8, 20, &mut rng), random(16, 8, &mut rng)).unwrap();
        let full = f.product();
        let t = truncate_rank2(&f).unwrap();
        let resid = diff(&full, &t.product());
        let sv = singular_values(&f);
        let tail: f64 = sv[2..].iter().map(|s| s * s).sum();
        let got = frob2(&resid);
        assert!((got - tail).abs() < 1e-4 * frob2(&full), "{got} vs {tail}");
        // total energy = Σσ²
        let all: f64 = sv.iter().map(|s| s * s).sum();
        assert!((all - frob2(&full)).abs() < 1e-4 * all);
        // the residual has no component along the kept right directions: resid · A'ᵀ ≈ 0
        for j in 0..2 {
            for r in 0..16 {
                let d: f64 = (0..20)
                    .map(|c| resid.get(r, c) as f64 * t.a.get(j, c) as f64)
                    .sum();
                assert!(d.abs() < 1e-3, "row {r} dir {j}: {d}");
            }
        }
    }

    #[test]
    fn rank_one_and_zero_inputs_pad_with_zeros() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let f = LowRank::new(random(1, 5, &mut rng), random(4, 1, &mut rng)).unwrap();
        let t = truncate_rank2(&f).unwrap();
        assert_eq!((t.rank(), t.in_dim(), t.out_dim()), (2, 5, 4));
        assert!(frob2(&diff(&f.product(), &t.product())) < 1e-9);
        let z = LowRank::new(Matrix::zeros(3, 5), Matrix::zeros(4, 3)).unwrap();
        let t = truncate_rank2(&z).unwrap();
        assert!(t.product().data().iter().all(|v| *v == 0.0));
    }
}
