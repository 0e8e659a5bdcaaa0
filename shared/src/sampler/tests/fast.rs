//! Fast-dLLM: threshold decoding and the prefix / dual block-wise caches.

use super::super::batch::positions;
use super::super::testing::{CallKind, ToyModel};
use super::super::{CacheMode, DreamAlg, Options, Request, Rule, noise};
use super::{M, SP, VOCAB, check_invariants, run};
use crate::denoiser::{Batch, Denoiser};
use candle_core::{Device, Tensor};

/// The toy model's greedy confidence (softmax prob of the argmax, MASK excluded) at every
/// position of an unpadded canvas.
fn confidences(model: &ToyModel, canvas: &[u32]) -> Vec<f64> {
    let l = canvas.len();
    let batch = Batch {
        ids: Tensor::from_vec(canvas.to_vec(), (1, l), &Device::Cpu).unwrap(),
        positions: Tensor::from_vec(positions(&vec![1; l]), (1, l), &Device::Cpu).unwrap(),
        key_mask: None,
        t: None,
        position_delta: None,
    };
    let logits = model.forward(&batch).unwrap().to_vec3::<f32>().unwrap();
    logits[0]
        .iter()
        .map(|row| {
            let mut l: Vec<f64> = row.iter().map(|&x| f64::from(x)).collect();
            l[M as usize] = f64::NEG_INFINITY;
            let mut p = Vec::new();
            noise::softmax(&l, &mut p);
            p.iter().copied().fold(0.0, f64::max)
        })
        .collect()
}

#[test]
fn threshold_commits_top1_and_everything_above_tau() {
    let model = ToyModel::new(VOCAB, 1);
    let tau = 0.5;
    let opts = Options {
        gen_length: 16,
        block_length: 8,
        threshold: Some(tau),
        early_stop: false,
        ..Options::default()
    };
    let prompt = vec![SP.bos, 5, 6];
    let (out, seen) = run(&model, &opts, &Request::single(prompt.clone(), 0));
    check_invariants(&seen, &[3], 8);
    let mut before: Vec<u32> = prompt.iter().copied().chain([M; 16]).collect();
    let mut multi = 0;
    for s in &seen {
        let conf = confidences(&model, &before);
        let start = 3 + s.block * 8;
        let masked: Vec<usize> = (start..start + 8).filter(|&p| before[p] == M).collect();
        let best = masked
            .iter()
            .copied()
            .max_by(|&a, &b| conf[a].total_cmp(&conf[b]).then(b.cmp(&a)))
            .unwrap();
        let mut want: Vec<usize> = masked
            .iter()
            .copied()
            .filter(|&p| p == best || conf[p] >= tau)
            .map(|p| p - 3)
            .collect();
        want.sort();
        assert!(!s.committed[0].is_empty());
        assert_eq!(s.committed[0], want, "step {}", s.step);
        multi += usize::from(want.len() > 1);
        before = s.canvas[0].clone();
    }
    // The loop adapts: fewer steps than tokens, and each block runs until it is full.
    assert!(multi > 0 && seen.len() < 16, "{} steps", seen.len());
    assert!(!out.rows[0].ids.contains(&M));
    assert_eq!(out.nfe, seen.len());
}

fn cache_variants() -> Vec<Options> {
    let base = Options {
        gen_length: 12,
        block_length: 4,
        steps: Some(12),
        temperature: 0.8,
        ..Options::default()
    };
    vec![
        base.clone(),
        Options {
            temperature: 0.0,
            threshold: Some(0.4),
            ..base.clone()
        },
        Options {
            cfg_scale: 0.5,
            ..base.clone()
        },
        Options {
            rule: Rule::Dream {
                alg: DreamAlg::TopkMargin,
                alg_temp: 0.0,
                top_p: None,
                top_k: None,
                eps: 1e-3,
            },
            shift_logits: Some(true),
            ..base
        },
    ]
}

#[test]
fn caches_refreshed_every_step_equal_uncached() {
    let model = ToyModel::new(VOCAB, 2);
    let req = Request::with_seeds(vec![vec![SP.bos, 3], vec![SP.bos, 1, 2, 9]], 4);
    for opts in cache_variants() {
        let (plain, _) = run(&model, &opts, &req);
        for cache in [CacheMode::Prefix, CacheMode::Dual] {
            let o = Options {
                cache,
                refresh_every: Some(1),
                ..opts.clone()
            };
            let (cached, _) = run(&model, &o, &req);
            assert_eq!(cached.rows, plain.rows, "{cache:?} {o:?}");
            assert_eq!(cached.window_nfe, 0);
        }
    }
}

#[test]
fn exact_cache_per_block_equals_uncached() {
    // One toy layer: cached keys depend only on their own token, and within a block only the
    // block changes, so a refresh per block is exact and the window logic is checked bit for bit.
    let model = ToyModel::new(VOCAB, 1);
    let req = Request::with_seeds(vec![vec![SP.bos, 3], vec![SP.bos, 1, 2, 9]], 4);
    for opts in cache_variants() {
        let (plain, _) = run(&model, &opts, &req);
        for cache in [CacheMode::Prefix, CacheMode::Dual] {
            let o = Options {
                cache,
                ..opts.clone()
            };
            let (cached, _) = run(&model, &o, &req);
            assert_eq!(cached.rows, plain.rows, "{cache:?} {o:?}");
            assert!(cached.window_nfe > 0);
        }
    }
}

#[test]
fn cache_call_pattern_and_nfe() {
    let prompt = vec![SP.bos, 3, 5];
    let opts = Options {
        gen_length: 8,
        block_length: 4,
        steps: Some(8),
        early_stop: false,
        ..Options::default()
    };
    let expect = |cache, refresh_every, shift: bool| {
        let model = ToyModel::new(VOCAB, 2);
        let o = Options {
            cache,
            refresh_every,
            shift_logits: Some(shift),
            ..opts.clone()
        };
        let (out, seen) = run(&model, &o, &Request::single(prompt.clone(), 0));
        check_invariants(&seen, &[3], 4);
        assert!(!out.rows[0].ids.contains(&M));
        let calls = model.calls.borrow().clone();
        assert_eq!(calls.len(), out.nfe);
        assert_eq!(out.rows[0].nfe, out.nfe);
        let windows = calls
            .iter()
            .filter(|c| matches!(c, CallKind::Window { .. }))
            .count();
        assert_eq!(windows, out.window_nfe);
        calls
    };
    let w = |start, len| CallKind::Window { start, len };
    let c = CallKind::Cached;
    // Prefix: refresh at block start, then [block_start, 11).
    assert_eq!(
        expect(CacheMode::Prefix, None, false),
        vec![c, w(3, 8), w(3, 8), w(3, 8), c, w(7, 4), w(7, 4), w(7, 4)]
    );
    // Dual: only the block.
    assert_eq!(
        expect(CacheMode::Dual, None, false),
        vec![c, w(3, 4), w(3, 4), w(3, 4), c, w(7, 4), w(7, 4), w(7, 4)]
    );
    // Refresh every 2 steps.
    assert_eq!(
        expect(CacheMode::Dual, Some(2), false),
        vec![c, w(3, 4), c, w(3, 4), c, w(7, 4), c, w(7, 4)]
    );
    // Shifted logits: the window starts one earlier.
    assert_eq!(
        expect(CacheMode::Dual, None, true),
        vec![c, w(2, 5), w(2, 5), w(2, 5), c, w(6, 5), w(6, 5), w(6, 5)]
    );
    assert_eq!(
        expect(CacheMode::None, None, false),
        vec![CallKind::Full; 8]
    );
}
