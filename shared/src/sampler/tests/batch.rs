//! Seeds and batches on the toy attention model: same seed → same output, different seeds →
//! different samples, and every row of a left-padded batch equals that row generated alone,
//! under every rule, guidance, threshold and cache.

use super::super::Alpha;
use super::super::testing::ToyModel;
use super::super::{CacheMode, DreamAlg, Options, Remasking, Request, RowRequest, Rule};
use super::{M, SP, VOCAB, check_invariants, run};

fn prompts() -> Vec<RowRequest> {
    vec![
        RowRequest {
            prompt: vec![SP.bos, 3, 1],
            seed: 11,
        },
        RowRequest {
            prompt: vec![SP.bos],
            seed: 12,
        },
        RowRequest {
            prompt: vec![SP.bos, 4, 4, 2, 7],
            seed: 13,
        },
    ]
}

fn variants() -> Vec<(&'static str, Options)> {
    let base = Options {
        gen_length: 8,
        block_length: 4,
        steps: Some(8),
        temperature: 0.7,
        ..Options::default()
    };
    let dream = |alg| Rule::Dream {
        alg,
        alg_temp: 0.0,
        top_p: Some(0.9),
        top_k: Some(6),
        eps: 1e-3,
    };
    vec![
        ("llada", base.clone()),
        (
            "greedy",
            Options {
                temperature: 0.0,
                ..base.clone()
            },
        ),
        (
            "random",
            Options {
                rule: Rule::Llada {
                    remasking: Remasking::Random,
                },
                ..base.clone()
            },
        ),
        (
            "cfg",
            Options {
                cfg_scale: 1.5,
                ..base.clone()
            },
        ),
        (
            "threshold",
            Options {
                threshold: Some(0.3),
                ..base.clone()
            },
        ),
        (
            "prefix",
            Options {
                cache: CacheMode::Prefix,
                ..base.clone()
            },
        ),
        (
            "dual+threshold",
            Options {
                cache: CacheMode::Dual,
                threshold: Some(0.3),
                ..base.clone()
            },
        ),
        (
            "dream/entropy",
            Options {
                rule: dream(DreamAlg::Entropy),
                ..base.clone()
            },
        ),
        (
            "dream/origin",
            Options {
                rule: dream(DreamAlg::Origin),
                ..base.clone()
            },
        ),
        (
            "dream/alg_temp",
            Options {
                rule: Rule::Dream {
                    alg: DreamAlg::MaskgitPlus,
                    alg_temp: 0.5,
                    top_p: None,
                    top_k: None,
                    eps: 1e-3,
                },
                ..base.clone()
            },
        ),
        (
            "mdlm",
            Options {
                rule: Rule::Mdlm {
                    schedule: Alpha::Cosine,
                },
                ..base.clone()
            },
        ),
        (
            "shifted",
            Options {
                shift_logits: Some(true),
                ..base
            },
        ),
    ]
}

#[test]
fn batch_rows_equal_rows_alone() {
    let model = ToyModel::new(VOCAB, 2);
    for (name, opts) in variants() {
        let batch = Request { rows: prompts() };
        let (out, seen) = run(&model, &opts, &batch);
        let lens: Vec<usize> = batch.rows.iter().map(|r| r.prompt.len()).collect();
        check_invariants(&seen, &lens, 4);
        for (r, row) in prompts().into_iter().enumerate() {
            let (alone, _) = run(&model, &opts, &Request { rows: vec![row] });
            assert_eq!(out.rows[r], alone.rows[0], "{name}: row {r}");
            assert!(!out.rows[r].ids.contains(&M), "{name}: row {r} unfinished");
        }
    }
}

#[test]
fn same_seed_same_output_different_seed_differs() {
    let model = ToyModel::new(VOCAB, 2);
    let opts = Options {
        gen_length: 16,
        block_length: 8,
        steps: Some(16),
        temperature: 1.0,
        early_stop: false,
        ..Options::default()
    };
    let sample = |seed| run(&model, &opts, &Request::single(vec![SP.bos, 2], seed)).0;
    let a = sample(1);
    assert_eq!(a, sample(1));
    let b = sample(2);
    assert_ne!(a.rows[0].ids, b.rows[0].ids);
    // T = 0 is deterministic whatever the seed.
    let greedy = Options {
        temperature: 0.0,
        ..opts
    };
    let g = |seed| run(&model, &greedy, &Request::single(vec![SP.bos, 2], seed)).0;
    assert_eq!(g(1).rows, g(2).rows);
}
