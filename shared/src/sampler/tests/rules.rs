//! Dream and MDLM rules through the whole loop.

use super::super::testing::{ScriptedModel, ToyModel};
use super::super::{Alpha, DreamAlg, Options, Request, Rule};
use super::{M, SP, VOCAB, check_invariants, one_hot, run};

fn dream(alg: DreamAlg) -> Rule {
    Rule::Dream {
        alg,
        alg_temp: 0.0,
        top_p: None,
        top_k: None,
        eps: 1e-3,
    }
}

#[test]
fn dream_counts_follow_eps_timesteps() {
    let model = ToyModel::new(VOCAB, 2);
    for alg in [
        DreamAlg::MaskgitPlus,
        DreamAlg::TopkMargin,
        DreamAlg::Entropy,
    ] {
        let opts = Options {
            gen_length: 8,
            block_length: 8,
            steps: Some(4),
            rule: dream(alg),
            early_stop: false,
            ..Options::default()
        };
        let (out, seen) = run(&model, &opts, &Request::single(vec![SP.bos, 2], 3));
        // int(8·0.24975) = 1, int(7·0.33289) = 2, int(5·0.49900) = 2, then all 3.
        let counts: Vec<usize> = seen.iter().map(|s| s.committed[0].len()).collect();
        assert_eq!(counts, vec![1, 2, 2, 3], "{alg:?}");
        assert!(!out.rows[0].ids.contains(&M));
        check_invariants(&seen, &[2], 8);
    }
}

#[test]
fn dream_origin_reveals_all_at_last_step() {
    let model = ToyModel::new(VOCAB, 2);
    let opts = Options {
        gen_length: 8,
        block_length: 8,
        steps: Some(3),
        temperature: 0.5,
        rule: dream(DreamAlg::Origin),
        early_stop: false,
        ..Options::default()
    };
    for seed in 0..5 {
        let (out, seen) = run(&model, &opts, &Request::single(vec![SP.bos], seed));
        // At most 3 steps; the loop ends early only if the coin flips revealed everything.
        assert!(seen.len() <= 3);
        assert!(!out.rows[0].ids.contains(&M));
        let total: usize = seen.iter().map(|s| s.committed[0].len()).sum();
        assert_eq!(total, 8);
    }
}

#[test]
fn dream_entropy_prefers_peaked_positions() {
    // Gen position 2 is sharply peaked, the rest flat-ish: it goes first.
    let f = |_: &[u32], p: usize| {
        if p == 3 {
            one_hot(4, 9.0)
        } else {
            let mut l = vec![0.0; VOCAB];
            l[1] = 0.5;
            l
        }
    };
    let opts = Options {
        gen_length: 4,
        block_length: 4,
        steps: Some(4),
        rule: dream(DreamAlg::Entropy),
        early_stop: false,
        ..Options::default()
    };
    let (out, seen) = run(
        &ScriptedModel::new(VOCAB, f),
        &opts,
        &Request::single(vec![SP.bos], 0),
    );
    // int(4·(1 − 0.75025/1)) = 0 at step 0: a wasted forward, as in the reference.
    assert!(seen[0].committed[0].is_empty());
    let first: Vec<usize> = seen.iter().flat_map(|s| s.committed[0].clone()).collect();
    assert_eq!(first[0], 2);
    assert_eq!(out.rows[0].ids, vec![1, 1, 4, 1]);
}

#[test]
fn dream_shift_uses_previous_position() {
    let f = |_: &[u32], p: usize| one_hot(p as u32 % 10, 3.0);
    let opts = Options {
        gen_length: 4,
        block_length: 4,
        steps: Some(4),
        rule: dream(DreamAlg::MaskgitPlus),
        ..Options::default()
    };
    let req = Request::single(vec![SP.bos, 1, 2], 0);
    let (out, _) = run(&ScriptedModel::new(VOCAB, f), &opts, &req);
    assert_eq!(out.rows[0].ids, vec![3, 4, 5, 6]);
    // The model asks for the shift …
    let mut model = ScriptedModel::new(VOCAB, f);
    model.shift = true;
    let (out, _) = run(&model, &opts, &req);
    assert_eq!(out.rows[0].ids, vec![2, 3, 4, 5]);
    // … or the option forces it either way.
    let forced = Options {
        shift_logits: Some(false),
        ..opts
    };
    let (out, _) = run(&model, &forced, &req);
    assert_eq!(out.rows[0].ids, vec![3, 4, 5, 6]);
}

#[test]
fn mdlm_last_step_completes_each_block() {
    let model = ToyModel::new(VOCAB, 2);
    for (schedule, steps) in [
        (Alpha::Linear, None),
        (Alpha::Cosine, Some(6)),
        (Alpha::Linear, Some(2)),
    ] {
        let opts = Options {
            gen_length: 12,
            block_length: 6,
            steps,
            temperature: 0.9,
            rule: Rule::Mdlm { schedule },
            early_stop: false,
            ..Options::default()
        };
        let per_block = steps.map_or(8, |s| s / 2);
        for seed in 0..4 {
            let (out, seen) = run(&model, &opts, &Request::single(vec![SP.bos, 7], seed));
            check_invariants(&seen, &[2], 6);
            assert!(!out.rows[0].ids.contains(&M));
            // Every block runs until its last scheduled step unless it filled up earlier.
            assert!(seen.len() <= 2 * per_block);
            for b in 0..2 {
                let steps_b: Vec<_> = seen.iter().filter(|s| s.block == b).collect();
                let last = steps_b.last().unwrap();
                let end = 2 + (b + 1) * 6;
                assert!(last.canvas[0][..end].iter().all(|&t| t != M));
                assert!(steps_b.len() <= per_block);
            }
        }
    }
}
