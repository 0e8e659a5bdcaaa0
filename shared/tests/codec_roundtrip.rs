//! Round trips of the delta codec: every mode stays within its stated bound, error feedback
//! conserves mass, and `inspect` agrees with what was encoded.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ruvdllm::codec::{
    self, EncodeOptions, ErrorFeedback, Limits, Mode, Shuffle, Values, tensor_error_bounds,
};
use ruvdllm::delta::{Delta, NamedTensor};

fn tensor_strategy(i: usize) -> impl Strategy<Value = NamedTensor> {
    (
        prop::collection::vec(0usize..6, 0..4),
        -7i32..2,
        any::<u64>(),
    )
        .prop_map(move |(shape, exp, seed)| {
            let n: usize = shape.iter().product();
            let scale = 10f32.powi(exp);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let data = (0..n)
                .map(|_| {
                    let v: f32 = rng.random_range(-1.0..1.0);
                    // A few exact zeros and outliers, as real deltas have.
                    match rng.random_range(0..10) {
                        0 => 0.0,
                        1 => v * scale * 20.0,
                        _ => v * scale,
                    }
                })
                .collect();
            NamedTensor::new(format!("t{i}.lora_B.weight"), shape, data).unwrap()
        })
}

fn delta_strategy() -> impl Strategy<Value = Delta> {
    (
        tensor_strategy(0),
        tensor_strategy(1),
        tensor_strategy(2),
        1usize..4,
    )
        .prop_map(|(a, b, c, n)| Delta::new(vec![a, b, c].into_iter().take(n).collect()).unwrap())
}

fn mode_strategy() -> impl Strategy<Value = Mode> {
    (
        prop::sample::select(Values::ALL.to_vec()),
        prop::sample::select(vec![None, Some(0.05), Some(0.1), Some(0.5), Some(1.0)]),
    )
        .prop_map(|(values, topk)| Mode { values, topk })
}

fn assert_within_bounds(mode: &Mode, original: &Delta, decoded: &Delta) {
    assert_eq!(original.layout(), decoded.layout());
    for (t, d) in original.tensors.iter().zip(&decoded.tensors) {
        let bounds = tensor_error_bounds(mode, t);
        for (i, ((x, y), b)) in t.data.iter().zip(&d.data).zip(&bounds).enumerate() {
            assert!(
                (x - y).abs() <= *b,
                "{mode} {}[{i}]: {x} -> {y}, bound {b}",
                t.name
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_mode_round_trips_within_its_bound(
        delta in delta_strategy(),
        mode in mode_strategy(),
        shuffle in prop::sample::select(vec![Shuffle::Auto, Shuffle::Always, Shuffle::Never]),
    ) {
        let opts = EncodeOptions { mode, level: 3, shuffle };
        let bytes = codec::encode(&delta, &opts).unwrap();
        let back = codec::decode(&bytes, &Limits::default()).unwrap();
        assert_within_bounds(&mode, &delta, &back);
        let summary = codec::inspect(&bytes).unwrap();
        prop_assert_eq!(summary.tensors.len(), delta.tensors.len());
        prop_assert_eq!(summary.total_values, delta.numel() as u64);
        prop_assert_eq!(summary.payload_bytes, bytes.len() as u64);
        for (s, t) in summary.tensors.iter().zip(&delta.tensors) {
            prop_assert_eq!(&s.name, &t.name);
            prop_assert_eq!(s.values, mode.values);
            prop_assert_eq!(s.stored, mode.kept(t.numel()) as u64);
        }
    }

    #[test]
    fn decoding_with_the_layout_accepts_any_order(delta in delta_strategy()) {
        let bytes = codec::encode(&delta, &EncodeOptions::default()).unwrap();
        let mut layout = delta.layout();
        layout.reverse();
        let back = codec::decode_expecting(&bytes, &Limits::default(), &layout).unwrap();
        prop_assert_eq!(back, delta);
    }
}

fn random_delta(rng: &mut ChaCha8Rng) -> Delta {
    let t = |name: &str, shape: Vec<usize>, rng: &mut ChaCha8Rng| {
        let n = shape.iter().product();
        let data = (0..n).map(|_| rng.random_range(-1e-3f32..1e-3)).collect();
        NamedTensor::new(name, shape, data).unwrap()
    };
    Delta::new(vec![
        t("a", vec![16, 4], rng),
        t("b", vec![8, 2], rng),
        t("c", vec![3], rng),
    ])
    .unwrap()
}

fn add(acc: &mut [f64], d: &Delta) {
    for (a, v) in acc.iter_mut().zip(d.flatten()) {
        *a += f64::from(v);
    }
}

#[test]
fn error_feedback_conserves_mass_over_rounds() {
    for mode in [
        "int4+topk:0.1",
        "int8+topk:0.05",
        "bf16",
        "topk:0.2",
        "int8-row",
    ] {
        let mode: Mode = mode.parse().unwrap();
        let opts = EncodeOptions::new(mode);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut ef = ErrorFeedback::new();
        let (mut sent, mut received) = (vec![0f64; 83], vec![0f64; 83]);
        let mut lossy_rounds = 0;
        for _ in 0..6 {
            let delta = random_delta(&mut rng);
            add(&mut sent, &delta);
            let bytes = ef.encode(&delta, &opts).unwrap();
            let got = codec::decode(&bytes, &Limits::default()).unwrap();
            if got != delta {
                lossy_rounds += 1;
            }
            add(&mut received, &got);
        }
        assert!(
            lossy_rounds > 0,
            "{mode} lost nothing: the test proves nothing"
        );
        let mut delivered = received.clone();
        add(&mut delivered, ef.residual().unwrap());
        for (i, (s, d)) in sent.iter().zip(&delivered).enumerate() {
            // Six rounds of f32 adds and subtractions on values of ~1e-3.
            assert!(
                (s - d).abs() <= 1e-8,
                "{mode} value {i}: sent {s}, delivered {d}"
            );
        }
        // The residual is not zero: the test exercises a lossy mode.
        assert!(ef.residual().unwrap().l2_norm() > 0.0);
    }
}

#[test]
fn top_k_dropped_values_are_exactly_the_residual() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let first = random_delta(&mut rng);
    let second = random_delta(&mut rng);
    let opts = EncodeOptions::new("topk:0.25".parse().unwrap());
    let mut ef = ErrorFeedback::new();
    ef.encode(&first, &opts).unwrap();
    let r1 = ef.residual().unwrap().clone();
    let bytes = ef.encode(&second, &opts).unwrap();
    let got = codec::decode(&bytes, &Limits::default()).unwrap();
    let residual = ef.residual().unwrap();
    for ((t1, t2), ((g, r), r0)) in first
        .tensors
        .iter()
        .zip(&second.tensors)
        .zip(got.tensors.iter().zip(&residual.tensors).zip(&r1.tensors))
    {
        assert_eq!(t1.name, t2.name);
        let mut dropped = 0;
        for i in 0..t2.data.len() {
            let compensated = t2.data[i] + r0.data[i];
            if g.data[i] == 0.0 {
                dropped += 1;
                assert_eq!(r.data[i], compensated, "{} [{i}]", t2.name);
            } else {
                assert_eq!(g.data[i], compensated);
                assert_eq!(r.data[i], 0.0);
            }
        }
        assert!(dropped > 0);
    }
}

#[test]
fn error_feedback_refuses_a_changed_layout_and_keeps_its_state() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let d = random_delta(&mut rng);
    let mut ef = ErrorFeedback::new();
    let opts = EncodeOptions::new("int8+topk:0.1".parse().unwrap());
    ef.encode(&d, &opts).unwrap();
    let before = ef.clone();
    let other = d.filter(|n| n != "c");
    assert!(matches!(
        ef.encode(&other, &opts),
        Err(codec::Error::Layout(_))
    ));
    assert_eq!(ef, before);
    ef.reset();
    assert!(ef.residual().is_none());
}

#[test]
fn quantized_modes_shrink_a_gaussian_delta() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let data: Vec<f32> = (0..4096)
        .map(|_| rng.random_range(-1e-3f32..1e-3))
        .collect();
    let d = Delta::new(vec![NamedTensor::new("w", vec![512, 8], data).unwrap()]).unwrap();
    let size = |m: &str| {
        codec::encode(&d, &EncodeOptions::new(m.parse().unwrap()))
            .unwrap()
            .len()
    };
    let raw = 4096 * 4;
    assert!(size("f32") < raw);
    assert!(size("bf16") < raw * 55 / 100);
    // One byte per value plus a 4-byte scale per 64 values; int4 half that.
    assert!(size("int8") < raw * 28 / 100);
    assert!(size("int4") < raw * 16 / 100);
    assert!(size("int8+topk:0.1") < raw * 6 / 100);
}
