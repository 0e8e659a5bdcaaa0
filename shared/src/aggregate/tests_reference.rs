//! The fast kernels (sorting networks over column blocks, f32 distance runs, fused iteration
//! passes) against plain reference implementations written the obvious way: one coordinate or one
//! vector at a time, everything in f64, full sorts. Random data with n = 3..=16 (odd and even), a
//! length that spans several blocks with a ragged tail, duplicated rows, quantised values (ties in
//! every order statistic) and gross outliers.

use super::*;
use crate::privacy::normal_stream;

const D: usize = 4099;

fn data(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut g = normal_stream(seed, n as u64);
    let mut rows: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            (0..D)
                .map(|k| {
                    let v = g.next_normal();
                    // A quarter of the coordinates on a coarse grid so that equal values are common.
                    let v = if k % 4 == 0 {
                        (v * 2.0).round() / 2.0
                    } else {
                        v
                    };
                    (v * if i == n - 1 { 40.0 } else { 1.0 }) as f32
                })
                .collect()
        })
        .collect();
    if n >= 5 {
        rows[1] = rows[0].clone();
    }
    rows
}

fn column(rows: &[Vec<f32>], k: usize) -> Vec<f64> {
    let mut c: Vec<f64> = rows.iter().map(|r| r[k] as f64).collect();
    c.sort_by(f64::total_cmp);
    c
}

fn ref_median(rows: &[Vec<f32>]) -> Vec<f64> {
    let n = rows.len();
    (0..D)
        .map(|k| {
            let c = column(rows, k);
            if n % 2 == 1 {
                c[n / 2]
            } else {
                0.5 * (c[n / 2 - 1] + c[n / 2])
            }
        })
        .collect()
}

fn ref_trimmed(rows: &[Vec<f32>], t: usize) -> Vec<f64> {
    let n = rows.len();
    (0..D)
        .map(|k| column(rows, k)[t..n - t].iter().sum::<f64>() / (n - 2 * t) as f64)
        .collect()
}

fn ref_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum()
}

fn ref_mean(rows: &[&Vec<f32>], w: &[f64]) -> Vec<f64> {
    let total: f64 = w.iter().sum();
    (0..D)
        .map(|k| {
            rows.iter()
                .zip(w)
                .map(|(r, wi)| wi * r[k] as f64)
                .sum::<f64>()
                / total
        })
        .collect()
}

/// Krum score of `i` within `set`: sum of the c smallest squared distances to the others.
fn ref_score(rows: &[Vec<f32>], set: &[usize], i: usize, c: usize) -> f64 {
    let mut d: Vec<f64> = set
        .iter()
        .filter(|&&j| j != i)
        .map(|&j| ref_dist(&rows[i], &rows[j]))
        .collect();
    d.sort_by(f64::total_cmp);
    d.iter().take(c).sum()
}

fn ref_bulyan(rows: &[Vec<f32>], f: usize) -> Vec<f64> {
    let n = rows.len();
    let (theta, beta) = (n - 2 * f, n - 4 * f);
    let all: Vec<usize> = (0..n).collect();
    let full: Vec<f64> = all
        .iter()
        .map(|&i| ref_score(rows, &all, i, n - f - 2))
        .collect();
    let mut remaining = all;
    let mut chosen = Vec::new();
    for _ in 0..theta {
        let c = remaining.len().saturating_sub(f + 2).max(1);
        let s: Vec<f64> = remaining
            .iter()
            .map(|&i| ref_score(rows, &remaining, i, c))
            .collect();
        let pos = (0..remaining.len())
            .min_by(|&a, &b| {
                s[a].total_cmp(&s[b])
                    .then(full[remaining[a]].total_cmp(&full[remaining[b]]))
            })
            .unwrap();
        chosen.push(rows[remaining.remove(pos)].clone());
    }
    let med = ref_median(&chosen);
    (0..D)
        .map(|k| {
            let mut c = column(&chosen, k);
            // Closest to the median first; equal distances to the lower value.
            c.sort_by(|a, b| {
                (a - med[k])
                    .abs()
                    .total_cmp(&(b - med[k]).abs())
                    .then(a.total_cmp(b))
            });
            c[..beta].iter().sum::<f64>() / beta as f64
        })
        .collect()
}

fn ref_geomedian(rows: &[Vec<f32>], iters: usize, nu: f64) -> Vec<f64> {
    let all: Vec<&Vec<f32>> = rows.iter().collect();
    let dists = |z: &[f64]| -> Vec<f64> {
        rows.iter()
            .map(|r| {
                r.iter()
                    .zip(z)
                    .map(|(x, y)| (*x as f64 - y).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect()
    };
    let mut z = ref_mean(&all, &vec![1.0; rows.len()]);
    let mut d = dists(&z);
    let mut objective: f64 = d.iter().sum();
    for _ in 0..iters {
        let w: Vec<f64> = d.iter().map(|di| 1.0 / di.max(nu)).collect();
        z = ref_mean(&all, &w);
        d = dists(&z);
        let next: f64 = d.iter().sum();
        let done = (objective - next).abs() <= 1e-10 * objective.max(f64::MIN_POSITIVE);
        objective = next;
        if done {
            break;
        }
    }
    z
}

fn ref_centered_clip(rows: &[Vec<f32>], tau: f64, iters: usize) -> Vec<f64> {
    let n = rows.len() as f64;
    let mut v = vec![0f64; D];
    for _ in 0..iters {
        let clip: Vec<f64> = rows
            .iter()
            .map(|r| {
                let d = r
                    .iter()
                    .zip(&v)
                    .map(|(x, y)| (*x as f64 - y).powi(2))
                    .sum::<f64>()
                    .sqrt();
                if d > tau { tau / d } else { 1.0 }
            })
            .collect();
        v = (0..D)
            .map(|k| {
                v[k] + rows
                    .iter()
                    .zip(&clip)
                    .map(|(r, c)| c * (r[k] as f64 - v[k]))
                    .sum::<f64>()
                    / n
            })
            .collect();
    }
    v
}

fn assert_close(rule: Rule, n: usize, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 2e-5 * (1.0 + w.abs()),
            "{rule}, n = {n}, coordinate {k}: fast {g} vs reference {w}"
        );
    }
}

fn run(rows: &[Vec<f32>], cfg: &RuleConfig) -> Outcome {
    let ids: Vec<String> = (0..rows.len()).map(|i| format!("n{i}")).collect();
    let inputs = Input::equal(&ids, rows);
    aggregate(&inputs, None, cfg, &Prefilter::default()).unwrap()
}

#[test]
fn fast_paths_match_the_references_for_n_3_to_16() {
    for n in 3..=16 {
        let rows = data(n, 7 + n as u64);
        let refs: Vec<&Vec<f32>> = rows.iter().collect();

        let out = run(&rows, &RuleConfig::new(Rule::Median));
        assert_close(Rule::Median, n, &out.aggregate, &ref_median(&rows));

        let t = n / 4;
        let mut c = RuleConfig::new(Rule::TrimmedMean);
        c.params.trim = Some(t);
        let out = run(&rows, &c);
        assert_close(Rule::TrimmedMean, n, &out.aggregate, &ref_trimmed(&rows, t));

        let out = run(&rows, &RuleConfig::new(Rule::FedAvg));
        assert_close(
            Rule::FedAvg,
            n,
            &out.aggregate,
            &ref_mean(&refs, &vec![1.0; n]),
        );

        // Krum family: scores within f32-run accuracy, the same choice as the f64 reference.
        let f = (n - 3) / 2;
        let all: Vec<usize> = (0..n).collect();
        let scores: Vec<f64> = all
            .iter()
            .map(|&i| ref_score(&rows, &all, i, n - f - 2))
            .collect();
        let out = run(&rows, &RuleConfig::new(Rule::Krum).with_f(f));
        for (r, s) in out.inputs.iter().zip(&scores) {
            assert!((r.score.unwrap() - s).abs() <= 1e-5 * s, "krum n = {n}");
        }
        let mut order = all.clone();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        assert_eq!(out.used(), vec![order[0]], "krum n = {n}");
        let out = run(&rows, &RuleConfig::new(Rule::MultiKrum).with_f(f));
        let mut best = order[..n - f].to_vec();
        best.sort_unstable();
        assert_eq!(out.used(), best, "multi-krum n = {n}");
        let chosen: Vec<&Vec<f32>> = best.iter().map(|&i| &rows[i]).collect();
        let want = ref_mean(&chosen, &vec![1.0; chosen.len()]);
        assert_close(Rule::MultiKrum, n, &out.aggregate, &want);

        let fb = (n - 3) / 4;
        let out = run(&rows, &RuleConfig::new(Rule::Bulyan).with_f(fb));
        assert_close(Rule::Bulyan, n, &out.aggregate, &ref_bulyan(&rows, fb));

        let out = run(&rows, &RuleConfig::new(Rule::GeoMedian));
        assert_close(
            Rule::GeoMedian,
            n,
            &out.aggregate,
            &ref_geomedian(&rows, 8, 1e-6),
        );

        let mut c = RuleConfig::new(Rule::CenteredClip);
        c.params.cc_tau = 20.0;
        let out = run(&rows, &c);
        assert_close(
            Rule::CenteredClip,
            n,
            &out.aggregate,
            &ref_centered_clip(&rows, 20.0, 3),
        );
    }
}
