use std::sync::Arc;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use super::*;
use crate::adapter::Spec;
use crate::delta::Delta;
use crate::model::lora::{PositionDelta, PositionGroup};
use crate::model::{Config, checkpoint};

pub(crate) fn small_cfg() -> Config {
    Config {
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        mlp_hidden: 96,
        ..Config::tiny()
    }
}

pub(crate) fn random_model(seed: u64) -> Model {
    let vm = VarMap::new();
    let mut m = checkpoint::trainable(&vm, &small_cfg(), &Device::Cpu).unwrap();
    checkpoint::seeded_init(&vm, seed, 0.3).unwrap();
    m.set_differentiable(false);
    m
}

/// Deterministic pseudo-random values in [-amp, amp).
fn fill(d: &mut Delta, seed: u64, amp: f32) {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
    for v in d.tensors.iter_mut().flat_map(|t| t.data.iter_mut()) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *v = ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp;
    }
}

fn ids(rows: usize) -> Tensor {
    let row: Vec<u32> = (0..10u32).map(|i| 40 + 7 * i).collect();
    let flat: Vec<u32> = (0..rows).flat_map(|_| row.iter().copied()).collect();
    Tensor::from_vec(flat, (rows, 10), &Device::Cpu).unwrap()
}

fn logits(m: &Model, t: Option<Vec<f64>>, rows: usize) -> Tensor {
    let mut b = m.plain_batch(&ids(rows)).unwrap();
    b.t = t;
    m.forward_full(&b, None).unwrap().logits
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn merged_forward_equals_hooked_forward_and_unmerge_restores() {
    let base = random_model(1);
    let shape = Shape::from(base.config());
    let mut lora = Lora::new(4, 8.0, Target::ALL.to_vec(), shape, 7).unwrap();
    fill(&mut lora.b, 3, 0.2);
    let l0 = logits(&base, None, 2);

    let mut hooked = base.clone();
    hooked.set_adapter(lora.to_adapter(&base).unwrap());
    let l1 = logits(&hooked, None, 2);
    assert!(
        max_diff(&l0, &l1) > 1e-2,
        "the adapter must change the output"
    );

    let mut merged = base.clone();
    lora.merge_into(&mut merged).unwrap();
    let l2 = logits(&merged, None, 2);
    let d = max_diff(&l1, &l2);
    assert!(d < 1e-3, "merged vs hooked differ by {d}");
    // Merging into a clone leaves the original's weights alone.
    assert_eq!(max_diff(&logits(&base, None, 2), &l0), 0.0);

    lora.unmerge_from(&mut merged).unwrap();
    let d = max_diff(&logits(&merged, None, 2), &l0);
    assert!(d < 1e-4, "unmerged vs base differ by {d}");

    hooked.clear_adapter();
    assert_eq!(max_diff(&logits(&hooked, None, 2), &l0), 0.0);
}

#[test]
fn talora_rows_follow_their_own_timestep() {
    let base = random_model(2);
    let shape = Shape::from(base.config());
    let mut t = Talora::new(Spec::default(), 5, shape).unwrap();
    // Only the coarse band is non-zero.
    let mut d = t.to_delta();
    fill(&mut d, 9, 0.3);
    for x in d
        .tensors
        .iter_mut()
        .filter(|x| !x.name.starts_with("talora.coarse."))
    {
        x.data.iter_mut().for_each(|v| *v = 0.0);
    }
    t.set_b(&d).unwrap();
    let mut m = base.clone();
    m.set_adapter(t.to_adapter(&base).unwrap());
    let base_l = logits(&base, None, 2);
    let l = logits(&m, Some(vec![0.9, 0.1]), 2);
    let row = |x: &Tensor, r: usize| x.narrow(0, r, 1).unwrap();
    assert!(
        max_diff(&row(&l, 0), &row(&base_l, 0)) > 1e-2,
        "t = 0.9 uses the coarse band"
    );
    assert!(
        max_diff(&row(&l, 1), &row(&base_l, 1)) < 1e-6,
        "t = 0.1 uses only the fine band"
    );
    // No timestep: the domain band (zero here) → the base model.
    assert!(max_diff(&logits(&m, None, 2), &base_l) < 1e-6);
    // Half-way through the fade the coarse band counts half: the output moves part of the way.
    let half = logits(&m, Some(vec![0.7, 0.7]), 2);
    let dh = max_diff(&row(&half, 0), &row(&base_l, 0));
    assert!(dh > 1e-4 && dh < max_diff(&row(&l, 0), &row(&base_l, 0)));
    // A wrong number of timesteps is an error, not a silent broadcast.
    let mut b = m.plain_batch(&ids(2)).unwrap();
    b.t = Some(vec![0.5]);
    assert!(m.forward_full(&b, None).is_err());
    // An adapter for another model shape is refused.
    let mut other = shape;
    other.d_model = 32;
    let wrong = Talora::new(Spec::default(), 5, other).unwrap();
    assert!(matches!(
        wrong.to_adapter(&base),
        Err(Error::Incompatible { .. })
    ));
}

#[test]
fn position_delta_everywhere_equals_a_whole_model_adapter() {
    let base = random_model(3);
    let shape = Shape::from(base.config());
    let mut lora = Lora::new(2, 2.0, Target::QV.to_vec(), shape, 1).unwrap();
    fill(&mut lora.b, 4, 0.3);
    let mut hooked = base.clone();
    hooked.set_adapter(lora.to_adapter(&base).unwrap());
    let want = logits(&hooked, None, 2);

    let all: Vec<(usize, usize)> = (0..2).flat_map(|r| (0..10).map(move |p| (r, p))).collect();
    let mut g = PositionGroup::new(all, lora.scale()).unwrap();
    for (a, b) in lora.a.tensors.iter().zip(&lora.b.tensors) {
        let (layer, target, _) = crate::adapter::names::parse_peft(&a.name).unwrap();
        let f = LowRank {
            a: tensor(a, DType::F32, &Device::Cpu).unwrap(),
            b: tensor(b, DType::F32, &Device::Cpu).unwrap(),
        };
        g.insert(layer, target, f).unwrap();
    }
    let mut batch = base.plain_batch(&ids(2)).unwrap();
    batch.position_delta = Some(Arc::new(PositionDelta::new(vec![g]).unwrap()));
    let got = base.forward_full(&batch, None).unwrap().logits;
    let d = max_diff(&want, &got);
    assert!(d < 1e-4, "position delta vs adapter differ by {d}");
}

#[test]
fn position_delta_touches_only_its_positions_and_respects_windows() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 5, 8), &dev).unwrap();
    let a = Tensor::randn(0f32, 1.0, (3, 8), &dev).unwrap();
    let b = Tensor::randn(0f32, 1.0, (6, 3), &dev).unwrap();
    let mut g = PositionGroup::new(vec![(0, 1), (1, 4)], 0.5).unwrap();
    g.insert(
        0,
        Target::Q,
        LowRank {
            a: a.clone(),
            b: b.clone(),
        },
    )
    .unwrap();
    let pd = PositionDelta::new(vec![g]).unwrap();
    let y0 = Tensor::zeros((2, 5, 6), DType::F32, &dev).unwrap();
    let y = pd.apply(0, Target::Q, &x, y0.clone(), 0).unwrap();
    let manual = |r: usize, p: usize| {
        let xr = x
            .narrow(0, r, 1)
            .unwrap()
            .narrow(1, p, 1)
            .unwrap()
            .reshape((1, 8))
            .unwrap();
        (xr.matmul(&a.t().unwrap())
            .unwrap()
            .matmul(&b.t().unwrap())
            .unwrap()
            * 0.5)
            .unwrap()
            .reshape(6)
            .unwrap()
    };
    let yv = y.to_vec3::<f32>().unwrap();
    for (r, rows) in yv.iter().enumerate() {
        for (p, values) in rows.iter().enumerate() {
            if (r, p) == (0, 1) || (r, p) == (1, 4) {
                let row = Tensor::new(values.as_slice(), &dev).unwrap();
                assert!(max_diff(&row, &manual(r, p)) < 1e-5);
            } else {
                assert!(values.iter().all(|&v| v == 0.0), "({r}, {p}) changed");
            }
        }
    }
    // Other linears are untouched.
    let same = pd.apply(0, Target::V, &x, y0.clone(), 0).unwrap();
    assert_eq!(max_diff(&same, &y0), 0.0);
    // A window [3, 5): only (1, 4) falls inside, at local position 1.
    let xw = x.narrow(1, 3, 2).unwrap().contiguous().unwrap();
    let yw = pd
        .apply(
            0,
            Target::Q,
            &xw,
            Tensor::zeros((2, 2, 6), DType::F32, &dev).unwrap(),
            3,
        )
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    assert!(yw[0].iter().flatten().all(|&v| v == 0.0));
    let got = Tensor::new(yw[1][1].as_slice(), &dev).unwrap();
    assert!(max_diff(&got, &manual(1, 4)) < 1e-5);
    // Bounds and duplicates are checked.
    assert!(pd.check(2, 5).is_ok());
    assert!(pd.check(1, 5).is_err());
    assert!(pd.check(2, 4).is_err());
    assert!(PositionGroup::new(vec![(0, 1), (0, 1)], 1.0).is_err());
}

#[test]
fn stacked_groups_of_mixed_ranks_add_up_like_one_group_at_a_time() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 5, 8), &dev).unwrap();
    let f = |r: usize, o: usize| LowRank {
        a: Tensor::randn(0f32, 1.0, (r, 8), &dev).unwrap(),
        b: Tensor::randn(0f32, 1.0, (o, r), &dev).unwrap(),
    };
    // Group 1: rank 3 on Q only. Group 2: rank 2 on Q and V, sharing position (0, 1) with group 1.
    let mut g1 = PositionGroup::new(vec![(0, 1), (1, 4)], 0.5).unwrap();
    g1.insert(0, Target::Q, f(3, 6)).unwrap();
    let mut g2 = PositionGroup::new(vec![(0, 1), (0, 2)], -2.0).unwrap();
    g2.insert(0, Target::Q, f(2, 6)).unwrap();
    g2.insert(0, Target::V, f(2, 6)).unwrap();
    let y0 = Tensor::randn(0f32, 1.0, (2, 5, 6), &dev).unwrap();
    let together = PositionDelta::new(vec![g1.clone(), g2.clone()]).unwrap();
    assert_eq!(together.rows().len(), 2);
    for (target, window) in [(Target::Q, 0), (Target::V, 0), (Target::Q, 1)] {
        let xw = x
            .narrow(1, window, 5 - window)
            .unwrap()
            .contiguous()
            .unwrap();
        let yw = y0
            .narrow(1, window, 5 - window)
            .unwrap()
            .contiguous()
            .unwrap();
        let got = together.apply(0, target, &xw, yw.clone(), window).unwrap();
        let mut want = yw;
        for g in [&g1, &g2] {
            let one = PositionDelta::new(vec![g.clone()]).unwrap();
            want = one.apply(0, target, &xw, want, window).unwrap();
        }
        let d = max_diff(&got, &want);
        assert!(d < 1e-5, "{target:?} window {window}: {d}");
        assert!(max_diff(&got, &y0.narrow(1, window, 5 - window).unwrap()) > 1e-3);
    }
    // The fast path checks its shapes against the groups.
    let mut s = PositionDelta::stacked(vec![vec![(0, 1)], vec![(1, 2)]]).unwrap();
    let a = Tensor::zeros((2, 4, 8), DType::F32, &dev).unwrap();
    let bt = Tensor::zeros((2, 4, 6), DType::F32, &dev).unwrap();
    assert!(
        s.insert_stacked(0, Target::Q, a.clone(), bt.clone())
            .is_ok()
    );
    assert!(
        s.insert_stacked(0, Target::Q, a.narrow(0, 0, 1).unwrap(), bt.clone())
            .is_err()
    );
    assert!(
        s.insert_stacked(0, Target::Q, a, bt.narrow(1, 0, 3).unwrap())
            .is_err()
    );
    assert!(PositionDelta::stacked(vec![vec![(0, 1), (0, 1)]]).is_err());
    // Groups must agree on a linear's shape.
    let mut g3 = PositionGroup::new(vec![(1, 1)], 1.0).unwrap();
    g3.insert(0, Target::Q, f(2, 7)).unwrap();
    assert!(PositionDelta::new(vec![g1, g3]).is_err());
}
