//! LLaDA's loop on scripted logits: exact per-step accounting, blocks, EOS options, CFG,
//! cancellation.

use std::ops::ControlFlow;

use candle_core::Device;

use super::super::testing::{CallKind, ScriptedModel};
use super::super::{Options, Remasking, Request, Rule, generate};
use super::{M, SP, VOCAB, check_invariants, one_hot, run};

/// Confidence scores by canvas position (prompt is positions 0..2).
const SCORES: [f32; 10] = [0.0, 0.0, 0.5, 2.0, 1.0, 3.0, 4.0, 0.1, 2.5, 2.6];

fn scripted() -> ScriptedModel<impl Fn(&[u32], usize) -> Vec<f32>> {
    ScriptedModel::new(VOCAB, |_row: &[u32], p: usize| {
        one_hot(p as u32 % 10, SCORES[p])
    })
}

#[test]
fn step_accounting_matches_llada() {
    let model = scripted();
    let opts = Options {
        gen_length: 8,
        block_length: 4,
        steps: Some(6),
        early_stop: false,
        ..Options::default()
    };
    let (out, seen) = run(&model, &opts, &Request::single(vec![SP.bos, 1], 0));
    // Per block get_num_transfer_tokens(4, 3) = [2, 1, 1], most confident first:
    // block 0 scores (p2..p5) = [0.5, 2, 1, 3] → {3, 5}, {4}, {2};
    // block 1 scores (p6..p9) = [4, 0.1, 2.5, 2.6] → {6, 9}, {8}, {7}. Relative to gen start:
    let want: Vec<Vec<usize>> = vec![vec![1, 3], vec![2], vec![0], vec![4, 7], vec![6], vec![5]];
    let got: Vec<Vec<usize>> = seen.iter().map(|s| s.committed[0].clone()).collect();
    assert_eq!(got, want);
    let blocks: Vec<(usize, usize)> = seen.iter().map(|s| (s.block, s.step_in_block)).collect();
    assert_eq!(blocks, vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
    let t: Vec<f64> = seen.iter().map(|s| s.t[0]).collect();
    assert_eq!(t, vec![1.0, 0.5, 0.25, 1.0, 0.5, 0.25]);
    assert_eq!(
        seen.iter().map(|s| s.nfe).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert_eq!(out.rows[0].ids, vec![2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(
        (out.steps, out.nfe, out.rows[0].steps, out.rows[0].nfe),
        (6, 6, 6, 6)
    );
    assert!(!out.rows[0].stopped_at_eos);
    check_invariants(&seen, &[2], 4);
    // The model itself never saw a future block unmasked.
    let calls = model.calls.borrow();
    assert_eq!(calls.len(), 6);
    for (i, c) in calls.iter().enumerate() {
        assert_eq!(c.kind, CallKind::Full);
        if i < 3 {
            assert!(c.ids[0][6..].iter().all(|&t| t == M));
        }
    }
}

#[test]
fn remainder_goes_to_first_steps() {
    let model = ScriptedModel::new(VOCAB, |_: &[u32], p: usize| one_hot(3, p as f32));
    let opts = Options {
        gen_length: 10,
        block_length: 10,
        steps: Some(4),
        ..Options::default()
    };
    let (_, seen) = run(&model, &opts, &Request::single(vec![SP.bos], 0));
    let counts: Vec<usize> = seen.iter().map(|s| s.committed[0].len()).collect();
    assert_eq!(counts, vec![3, 3, 2, 2]);
    // Highest score = rightmost position first.
    assert_eq!(seen[0].committed[0], vec![7, 8, 9]);
}

#[test]
fn early_stop_fills_eos_and_saves_steps() {
    // Position 4 (gen index 2) predicts EOS most confidently; positions 2 and 3 come next.
    let f = |_: &[u32], p: usize| match p {
        4 => one_hot(SP.eos, 9.0),
        2 | 3 => one_hot(1, 8.0 - p as f32),
        _ => one_hot(2, 0.5),
    };
    let model = ScriptedModel::new(VOCAB, f);
    let opts = Options {
        gen_length: 8,
        block_length: 8,
        steps: Some(8),
        ..Options::default()
    };
    let req = Request::single(vec![SP.bos, 5], 1);
    let (out, seen) = run(&model, &opts, &req);
    let e = SP.eos;
    assert_eq!(out.rows[0].ids, vec![1, 1, e, e, e, e, e, e]);
    assert!(out.rows[0].stopped_at_eos);
    assert_eq!((out.steps, out.nfe, out.rows[0].steps), (3, 3, 3));
    assert!(seen.last().unwrap().finished[0]);
    // Without early stop the reference behaviour: all 8 steps, the tail is the model's.
    let model = ScriptedModel::new(VOCAB, f);
    let (out, _) = run(
        &model,
        &Options {
            early_stop: false,
            ..opts
        },
        &req,
    );
    assert_eq!(out.rows[0].ids, vec![1, 1, e, 2, 2, 2, 2, 2]);
    assert_eq!(out.steps, 8);
    assert!(!out.rows[0].stopped_at_eos);
}

#[test]
fn eos_options() {
    // Position 2 prefers EOS (EoT at position 3) with the top score, else token 7.
    let f = |_: &[u32], p: usize| {
        let mut l = one_hot(7, 1.0 + p as f32 * 0.1);
        match p {
            2 => l[SP.eos as usize] = 5.0,
            3 => l[SP.eot.unwrap() as usize] = 5.0,
            _ => {}
        }
        l
    };
    let base = Options {
        gen_length: 4,
        block_length: 4,
        steps: Some(4),
        early_stop: false,
        ..Options::default()
    };
    let req = Request::single(vec![SP.bos, 1], 0);
    // Plain: EOS/EoT are the most confident and go first.
    let (out, seen) = run(&ScriptedModel::new(VOCAB, f), &base, &req);
    assert_eq!(out.rows[0].ids, vec![SP.eos, 14, 7, 7]);
    assert_eq!(seen[0].committed[0], vec![0]);
    // confidence_eos_eot_inf: committed last (positions 2, 3 of the canvas → gen 0, 1).
    let opts = Options {
        confidence_eos_eot_inf: true,
        ..base.clone()
    };
    let (out, seen) = run(&ScriptedModel::new(VOCAB, f), &opts, &req);
    assert_eq!(out.rows[0].ids, vec![SP.eos, 14, 7, 7]);
    let order: Vec<usize> = seen.iter().map(|s| s.committed[0][0]).collect();
    assert_eq!(order, vec![3, 2, 0, 1]);
    // logits_eos_inf: EOS is never sampled (EoT still is).
    let opts = Options {
        logits_eos_inf: true,
        ..base
    };
    let (out, _) = run(&ScriptedModel::new(VOCAB, f), &opts, &req);
    assert_eq!(out.rows[0].ids, vec![7, 14, 7, 7]);
}

#[test]
fn classifier_free_guidance() {
    // Conditional rows see the prompt token 1 at position 1; the unconditional copy sees MASK.
    // c = [1, 0, 2], u = [0, 1, 2.5] on tokens 0..3; s = 2 → u + 3(c − u) = [3, −2, 0.5].
    let f = |row: &[u32], _p: usize| {
        let mut l = vec![-30.0; VOCAB];
        let v: [f32; 3] = if row[1] == M {
            [0.0, 1.0, 2.5]
        } else {
            [1.0, 0.0, 2.0]
        };
        l[..3].copy_from_slice(&v);
        l
    };
    let opts = Options {
        gen_length: 2,
        block_length: 2,
        steps: Some(2),
        ..Options::default()
    };
    let req = Request::single(vec![SP.bos, 1], 0);
    let (out, _) = run(&ScriptedModel::new(VOCAB, f), &opts, &req);
    assert_eq!(out.rows[0].ids, vec![2, 2]);
    let model = ScriptedModel::new(VOCAB, f);
    let cfg = Options {
        cfg_scale: 2.0,
        ..opts
    };
    let (out, _) = run(&model, &cfg, &req);
    assert_eq!(out.rows[0].ids, vec![0, 0]);
    assert_eq!(out.nfe, 2);
    // One batched forward per step: the conditional row and its prompt-masked copy.
    let calls = model.calls.borrow();
    assert_eq!(calls[0].ids, vec![vec![SP.bos, 1, M, M], vec![M, M, M, M]]);
}

#[test]
fn random_remasking_respects_counts_and_seed() {
    let model = ScriptedModel::new(VOCAB, |_: &[u32], p: usize| one_hot(p as u32 % 10, 1.0));
    let opts = Options {
        gen_length: 8,
        block_length: 4,
        steps: Some(4),
        rule: Rule::Llada {
            remasking: Remasking::Random,
        },
        ..Options::default()
    };
    let order = |seed| {
        let (_, seen) = run(&model, &opts, &Request::single(vec![SP.bos], seed));
        check_invariants(&seen, &[1], 4);
        assert!(seen.iter().all(|s| s.committed[0].len() == 2));
        seen.iter()
            .map(|s| s.committed[0].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(order(5), order(5));
    let distinct: std::collections::HashSet<_> = (0..8).map(order).collect();
    assert!(distinct.len() > 1);
}

#[test]
fn callback_break_cancels() {
    let model = scripted();
    let opts = Options {
        gen_length: 8,
        block_length: 4,
        steps: Some(8),
        ..Options::default()
    };
    let out = generate(
        &model,
        &Device::Cpu,
        &SP,
        &opts,
        &Request::single(vec![SP.bos, 1], 0),
        |e| {
            if e.step == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .unwrap();
    assert!(out.cancelled);
    assert_eq!((out.steps, out.nfe), (3, 3));
    assert_eq!(out.rows[0].ids.iter().filter(|&&t| t == M).count(), 5);
}
