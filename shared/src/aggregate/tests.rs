//! Cross-rule tests: laws (permutation invariance, sort-based references), Flower conformance via
//! the public entry point, fallbacks, and robustness against every attack at f = 3 of 10.

use proptest::prelude::*;

use super::*;
use crate::attack::Attack;

fn run(rows: &[Vec<f32>], weights: &[f64], cfg: &RuleConfig) -> Result<Outcome, AggregateError> {
    let ids: Vec<String> = (0..rows.len()).map(|i| format!("n{i}")).collect();
    let inputs: Vec<Input<'_>> = rows
        .iter()
        .zip(weights)
        .zip(&ids)
        .map(|((r, &w), id)| Input {
            node_id: id,
            values: r,
            weight: w,
        })
        .collect();
    aggregate(&inputs, None, cfg, &Prefilter::default())
}

fn cfg(rule: Rule, f: usize) -> RuleConfig {
    RuleConfig::new(rule).with_f(f)
}

fn matrix(
    n: std::ops::Range<usize>,
    d: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<Vec<f32>>> {
    (n, d).prop_flat_map(|(n, d)| {
        prop::collection::vec(prop::collection::vec(-100.0f32..100.0, d), n)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_rule_is_permutation_invariant(
        rows in matrix(7..11, 1..6),
        seed in any::<u64>(),
    ) {
        let n = rows.len();
        let weights: Vec<f64> = (0..n).map(|i| 1.0 + ((seed >> (i % 60)) & 7) as f64).collect();
        // A seeded Fisher–Yates permutation.
        let mut perm: Vec<usize> = (0..n).collect();
        let mut s = seed | 1;
        for i in (1..n).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            perm.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let prows: Vec<Vec<f32>> = perm.iter().map(|&i| rows[i].clone()).collect();
        let pw: Vec<f64> = perm.iter().map(|&i| weights[i]).collect();
        for rule in Rule::ALL {
            let mut c = cfg(rule, 1);
            c.params.cc_tau = 50.0;
            let a = run(&rows, &weights, &c).unwrap();
            let b = run(&prows, &pw, &c).unwrap();
            for (x, y) in a.aggregate.iter().zip(&b.aggregate) {
                prop_assert!((x - y).abs() <= 1e-4 * (1.0 + x.abs()), "{rule}: {x} vs {y}");
            }
            // With tied Krum scores the chosen index legitimately depends on order.
            let mut scores: Vec<f64> = a.inputs.iter().filter_map(|r| r.score).collect();
            scores.sort_by(f64::total_cmp);
            if scores.windows(2).all(|w| w[0] < w[1]) {
                for (k, &i) in perm.iter().enumerate() {
                    prop_assert_eq!(&a.inputs[i].status, &b.inputs[k].status, "{}", rule);
                }
            }
        }
    }

    #[test]
    fn median_and_trimmed_mean_match_sort_reference(rows in matrix(1..12, 1..5), k in 0usize..6) {
        let n = rows.len();
        let d = rows[0].len();
        let col = |j: usize| {
            let mut c: Vec<f64> = rows.iter().map(|r| r[j] as f64).collect();
            c.sort_by(f64::total_cmp);
            c
        };
        let med = run(&rows, &vec![1.0; n], &cfg(Rule::Median, 0)).unwrap();
        for j in 0..d {
            let c = col(j);
            let want = if n % 2 == 1 { c[n / 2] } else { (c[n / 2 - 1] + c[n / 2]) / 2.0 };
            prop_assert!((med.aggregate[j] as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()));
        }
        let mut tc = cfg(Rule::TrimmedMean, 0);
        tc.params.trim = Some(k);
        let tm = run(&rows, &vec![1.0; n], &tc);
        if 2 * k >= n {
            let refused = matches!(tm, Err(AggregateError::Condition { .. }));
            prop_assert!(refused);
        } else {
            let tm = tm.unwrap();
            for j in 0..d {
                let c = col(j);
                let want = c[k..n - k].iter().sum::<f64>() / (n - 2 * k) as f64;
                prop_assert!((tm.aggregate[j] as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()));
            }
        }
    }
}

#[test]
fn flower_vectors_through_the_entry_point() {
    let k: Vec<Vec<f32>> = [0.2f32, 0.7, 1.0].iter().map(|x| vec![*x; 4]).collect();
    let out = run(&k, &[1.0; 3], &cfg(Rule::Krum, 0)).unwrap();
    assert_eq!(out.aggregate, vec![0.7; 4]);
    assert_eq!(out.used(), vec![1]);
    let mk: Vec<Vec<f32>> = [0.2f32, 0.5, 1.0].iter().map(|x| vec![*x; 4]).collect();
    let mut c = cfg(Rule::MultiKrum, 0);
    c.params.m = Some(2);
    let out = run(&mk, &[1.0; 3], &c).unwrap();
    assert!(out.aggregate.iter().all(|x| (x - 0.35).abs() < 1e-6));
}

fn planted() -> Vec<Vec<f32>> {
    let mut rows: Vec<Vec<f32>> = (0..7)
        .map(|i| {
            (0..8)
                .map(|j| 1.0 + 0.01 * ((i * 5 + j * 3) % 7) as f32)
                .collect()
        })
        .collect();
    rows.push(vec![5.0; 8]);
    rows.push(vec![-3.0; 8]);
    rows.push(
        (0..8)
            .map(|j| if j % 2 == 0 { 9.0 } else { -9.0 })
            .collect(),
    );
    rows
}

#[test]
fn krum_and_multi_krum_pick_the_honest_cluster() {
    let rows = planted();
    let out = run(&rows, &[1.0; 10], &cfg(Rule::Krum, 3)).unwrap();
    assert!(out.used()[0] < 7);
    let out = run(&rows, &[1.0; 10], &cfg(Rule::MultiKrum, 3)).unwrap();
    assert_eq!(out.used(), (0..7).collect::<Vec<_>>());
    for r in &out.inputs[7..] {
        assert_eq!(
            r.status,
            Status::Rejected(RejectReason::NotSelected {
                rule: Rule::MultiKrum
            })
        );
        assert!(r.score.unwrap() > out.inputs[0].score.unwrap());
    }
    let mut c = cfg(Rule::MultiKrum, 3);
    c.params.m = Some(8);
    assert!(matches!(
        run(&rows, &[1.0; 10], &c),
        Err(AggregateError::InvalidParam { .. })
    ));
}

#[test]
fn conditions_refuse_or_run_the_recorded_fallback() {
    let rows = planted();
    let err = run(&rows, &[1.0; 10], &cfg(Rule::Bulyan, 2)).unwrap_err();
    assert!(
        matches!(
            err,
            AggregateError::Condition {
                rule: Rule::Bulyan,
                n: 10,
                f: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        run(&rows[..8], &[1.0; 8], &cfg(Rule::Krum, 3)),
        Err(AggregateError::Condition {
            rule: Rule::Krum,
            ..
        })
    ));
    let c = cfg(Rule::Bulyan, 2).with_fallback(Rule::Median);
    let out = run(&rows, &[1.0; 10], &c).unwrap();
    assert_eq!(out.rule, Rule::Median);
    assert_eq!(out.fallback.as_ref().unwrap().configured, Rule::Bulyan);
    let median = run(&rows, &[1.0; 10], &cfg(Rule::Median, 2)).unwrap();
    assert_eq!(out.aggregate, median.aggregate);
    // A fallback whose own condition fails is an error naming both.
    let c = cfg(Rule::Bulyan, 5).with_fallback(Rule::Krum);
    assert!(matches!(
        run(&rows, &[1.0; 10], &c),
        Err(AggregateError::FallbackFailed { .. })
    ));
    // Bulyan runs at n = 4f + 3 = 7 on the honest rows with f = 1.
    let out = run(&rows[..7], &[1.0; 7], &cfg(Rule::Bulyan, 1)).unwrap();
    assert!(out.fallback.is_none());
}

#[test]
fn min_inputs_is_exactly_where_each_rule_starts_to_run() {
    // Distinct rows so no rule degenerates; planted() has 10 rows.
    let rows: Vec<Vec<f32>> = (0..24)
        .map(|i| {
            (0..6)
                .map(|j| ((i * 7 + j * 3) % 11) as f32 - 5.0)
                .collect()
        })
        .collect();
    let ones = vec![1.0; rows.len()];
    let mut configs = Vec::new();
    for rule in Rule::ALL {
        for f in 0..4 {
            configs.push(cfg(rule, f));
        }
    }
    let mut trimmed = cfg(Rule::TrimmedMean, 3);
    trimmed.params.trim = Some(1);
    configs.push(trimmed);
    let mut mk = cfg(Rule::MultiKrum, 1);
    mk.params.m = Some(8);
    configs.push(mk);
    configs.push(cfg(Rule::Bulyan, 2).with_fallback(Rule::Median));
    for c in configs {
        let k = c.min_inputs();
        assert!((1..rows.len()).contains(&k), "{c:?}");
        assert!(run(&rows[..k], &ones[..k], &c).is_ok(), "{c:?} at n = {k}");
        if k > 1 {
            assert!(
                run(&rows[..k - 1], &ones[..k - 1], &c).is_err(),
                "{c:?} at n = {}",
                k - 1
            );
        }
    }
}

#[test]
fn entry_point_validates_and_reports_buckets() {
    let rows = planted();
    let short = vec![vec![1.0f32; 8], vec![1.0f32; 7]];
    assert!(matches!(
        run(&short, &[1.0; 2], &cfg(Rule::FedAvg, 0)),
        Err(AggregateError::LengthMismatch { index: 1, .. })
    ));
    assert_eq!(
        run(&[], &[], &cfg(Rule::FedAvg, 0)).unwrap_err(),
        AggregateError::NoInputs
    );
    let nan = vec![vec![f32::NAN; 8]];
    assert_eq!(
        run(&nan, &[1.0], &cfg(Rule::FedAvg, 0)).unwrap_err(),
        AggregateError::AllRejected { n: 1 }
    );
    let ids: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    let inputs = Input::equal(&ids, &rows);
    let pf = Prefilter {
        bucket_size: Some(2),
        seed: 3,
        ..Prefilter::default()
    };
    let out = aggregate(&inputs, None, &cfg(Rule::Median, 1), &pf).unwrap();
    let mut buckets: Vec<usize> = out.inputs.iter().map(|r| r.bucket.unwrap()).collect();
    buckets.sort_unstable();
    assert_eq!(buckets, vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
    assert!(aggregate(&inputs, Some(&[0.0; 3]), &cfg(Rule::Median, 1), &pf).is_err());
}

/// f = 3 of 10 attackers with every attack: prints each rule's distance to the honest mean and
/// checks what theory guarantees.
#[test]
fn robustness_f3_of_10_under_every_attack() {
    let d = 64;
    let mut g = crate::privacy::normal_stream(11, 0);
    let base: Vec<f64> = (0..d).map(|_| g.next_normal()).collect();
    let honest: Vec<Vec<f32>> = (0..7)
        .map(|_| {
            base.iter()
                .map(|b| (b + 0.1 * g.next_normal()) as f32)
                .collect()
        })
        .collect();
    let hrows: Vec<&[f32]> = honest.iter().map(|r| r.as_slice()).collect();
    let hmean = kernels::mean(&hrows);
    let previous: Vec<f32> = base
        .iter()
        .map(|b| (b + 0.05 * g.next_normal()) as f32)
        .collect();
    let attacks: Vec<Attack> = Attack::all()
        .into_iter()
        .filter(|a| *a != Attack::LabelFlip)
        .collect();
    println!(
        "distance to honest mean (f = 3 of n = 10, d = {d}, honest spread 0.1/coord):\n{:<14}{}",
        "rule",
        attacks
            .iter()
            .map(|a| format!("{:>11}", a.name()))
            .collect::<String>()
    );
    for rule in Rule::ALL {
        let mut line = format!("{:<14}", rule.name());
        for attack in &attacks {
            let mut rows = honest.clone();
            rows.extend(attack.generate(&hrows, 3, 5).unwrap());
            let mut c = cfg(rule, 3);
            c.params.cc_tau = 1.0;
            c.params.cc_iters = 5;
            let ids: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
            let inputs = Input::equal(&ids, &rows);
            // Last round's aggregate: centered clipping starts from it.
            match aggregate(&inputs, Some(&previous), &c, &Prefilter::default()) {
                Err(AggregateError::Condition { .. }) => {
                    assert_eq!(rule, Rule::Bulyan, "only Bulyan needs n >= 4f+3 = 15");
                    line.push_str(&format!("{:>11}", "refuses"));
                }
                Err(e) => panic!("{rule} under {attack}: {e}"),
                Ok(out) => {
                    let dist = kernels::sq_diff(&out.aggregate, &hmean).sqrt();
                    line.push_str(&format!("{dist:>11.3}"));
                    if matches!(rule, Rule::Median | Rule::TrimmedMean) {
                        for (j, v) in out.aggregate.iter().enumerate() {
                            let lo = hrows.iter().map(|r| r[j]).fold(f32::INFINITY, f32::min);
                            let hi = hrows.iter().map(|r| r[j]).fold(f32::NEG_INFINITY, f32::max);
                            assert!(
                                *v >= lo - 1e-5 && *v <= hi + 1e-5,
                                "{rule} under {attack}: coordinate {j} = {v} outside [{lo}, {hi}]"
                            );
                        }
                    }
                    if rule == Rule::Krum
                        && matches!(attack, Attack::Gaussian { .. } | Attack::Scaling { .. })
                    {
                        assert!(out.used()[0] < 7, "Krum picked an attacker under {attack}");
                    }
                }
            }
        }
        println!("{line}");
    }
}
