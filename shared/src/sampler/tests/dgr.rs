//! DGR inside the sampler, on a small random model with real hidden states and hooks: selection
//! exactly above the threshold and capped, the one-step lag, the callback's report against the
//! deltas the forwards really received, empty banks, batches and caches.

use std::cell::RefCell;
use std::ops::ControlFlow;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};

use crate::bank::{self, Adapter, Band, Banks, KeyProjection, LayerFactors, LowRank, Matrix};
use crate::denoiser::{Batch, Denoiser};
use crate::model::{Config, KvCache, Model, checkpoint};
use crate::sampler::{
    CacheMode, DgrOptions, DgrUse, Error, Options, Output, Request, Retrieval, generate_with,
};
use crate::tokens::SpecialTokens;

const SP: SpecialTokens = SpecialTokens::BYTE;

fn cfg() -> Config {
    Config {
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 2,
        head_dim: 16,
        mlp_hidden: 48,
        ..Config::tiny()
    }
}

fn model() -> Model {
    let vm = VarMap::new();
    let mut m = checkpoint::trainable(&vm, &cfg(), &Device::Cpu).unwrap();
    checkpoint::seeded_init(&vm, 11, 0.3).unwrap();
    m.set_differentiable(false);
    m
}

/// Banks with `n` random rank-2 patterns per band (large, so they visibly change the output).
fn banks(n: usize) -> Banks {
    let c = cfg();
    let mut banks = Banks::new(bank::Config::default()).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for band in [Band::Coarse, Band::Domain, Band::Fine] {
        for _ in 0..n {
            let mut m = |r: usize, cols: usize| {
                Matrix::new(
                    r,
                    cols,
                    (0..r * cols)
                        .map(|_| rng.random_range(-1.0f32..1.0))
                        .collect(),
                    "m",
                )
                .unwrap()
            };
            let q = c.n_heads * c.head_dim;
            let v = c.n_kv_heads * c.head_dim;
            let adapter = Adapter {
                layers: (0..c.n_layers)
                    .map(|_| LayerFactors {
                        q: LowRank::new(m(2, c.d_model), m(q, 2)).unwrap(),
                        v: LowRank::new(m(2, c.d_model), m(v, 2)).unwrap(),
                    })
                    .collect(),
            };
            let key: Vec<f32> = (0..bank::KEY_DIM)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let b = banks.get_mut(band);
            let id = b.allocate_id();
            b.insert(bank::Pattern::new(id, band, &key, &adapter, 0).unwrap())
                .unwrap();
        }
    }
    banks
}

/// What one forward received and returned.
struct Call {
    window: (usize, usize),
    /// `(row, column)` pairs of the batch's position delta.
    delta: Vec<(usize, usize)>,
    logits: Tensor,
}

/// The model, recording every forward.
struct Recorder<'m> {
    m: &'m Model,
    calls: RefCell<Vec<Call>>,
}

impl Recorder<'_> {
    fn log(&self, b: &Batch, window: (usize, usize), logits: &Tensor) {
        let delta = b
            .position_delta
            .as_ref()
            .map(|d| d.rows().iter().flatten().copied().collect())
            .unwrap_or_default();
        self.calls.borrow_mut().push(Call {
            window,
            delta,
            logits: logits.clone(),
        });
    }
}

impl Denoiser for Recorder<'_> {
    type Cache = KvCache;
    fn vocab_size(&self) -> usize {
        self.m.vocab_size()
    }
    fn shift_logits(&self) -> bool {
        false
    }
    fn forward(&self, b: &Batch) -> Result<Tensor> {
        let l = Denoiser::forward(self.m, b)?;
        self.log(b, (0, b.ids.dim(1)?), &l);
        Ok(l)
    }
    fn forward_cached(&self, b: &Batch) -> Result<(Tensor, KvCache)> {
        let (l, c) = self.m.forward_cached(b)?;
        self.log(b, (0, b.ids.dim(1)?), &l);
        Ok((l, c))
    }
    fn forward_window(&self, b: &Batch, s: usize, n: usize, c: &mut KvCache) -> Result<Tensor> {
        let l = Denoiser::forward_window(self.m, b, s, n, c)?;
        self.log(b, (s, n), &l);
        Ok(l)
    }
    fn hidden_states(&self) -> Option<(usize, DType)> {
        self.m.hidden_states()
    }
    fn forward_hidden(&self, b: &Batch) -> Result<(Tensor, Tensor)> {
        let (l, h) = self.m.forward_hidden(b)?;
        self.log(b, (0, b.ids.dim(1)?), &l);
        Ok((l, h))
    }
    fn forward_cached_hidden(&self, b: &Batch) -> Result<(Tensor, Tensor, KvCache)> {
        let (l, h, c) = self.m.forward_cached_hidden(b)?;
        self.log(b, (0, b.ids.dim(1)?), &l);
        Ok((l, h, c))
    }
    fn forward_window_hidden(
        &self,
        b: &Batch,
        s: usize,
        n: usize,
        c: &mut KvCache,
    ) -> Result<(Tensor, Tensor)> {
        let (l, h) = self.m.forward_window_hidden(b, s, n, c)?;
        self.log(b, (s, n), &l);
        Ok((l, h))
    }
}

/// Per step and row: (t, masked positions before the step, applied, selected).
type Steps = Vec<Vec<(f64, Vec<usize>, Vec<DgrUse>, Vec<DgrUse>)>>;

fn run(
    d: &impl Denoiser,
    opts: &Options,
    req: &Request,
    banks: &Banks,
) -> std::result::Result<(Output, Steps), Error> {
    let proj = KeyProjection::new(3, cfg().d_model).unwrap();
    let retrieval = Retrieval {
        banks,
        projection: &proj,
        now: 1,
    };
    let mut steps = Steps::new();
    let mut before: Vec<Vec<usize>> = req
        .rows
        .iter()
        .map(|_| (0..opts.gen_length).collect())
        .collect();
    let out = generate_with(d, &Device::Cpu, &SP, opts, req, Some(retrieval), |e| {
        let mut v = Vec::new();
        for (r, row) in e.rows.iter().enumerate() {
            v.push((
                row.t,
                before[r].clone(),
                row.dgr_applied.clone(),
                row.dgr_selected.clone(),
            ));
            let gen_canvas = &row.canvas[row.prompt_len..];
            before[r] = (0..gen_canvas.len())
                .filter(|&i| gen_canvas[i] == SP.mask)
                .collect();
        }
        steps.push(v);
        ControlFlow::Continue(())
    })?;
    Ok((out, steps))
}

fn opts(dgr: DgrOptions) -> Options {
    Options {
        gen_length: 8,
        block_length: 4,
        steps: Some(4),
        early_stop: false,
        dgr: Some(dgr),
        ..Options::default()
    }
}

fn entropy(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x)) as f64;
    let e: Vec<f64> = row.iter().map(|x| (*x as f64 - max).exp()).collect();
    let z: f64 = e.iter().sum();
    let h: f64 = e
        .iter()
        .map(|x| x / z)
        .filter(|p| *p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    h / (row.len() as f64).ln()
}

#[test]
fn selection_is_exact_capped_and_applied_one_step_later() {
    let m = model();
    let rec = Recorder {
        m: &m,
        calls: RefCell::new(Vec::new()),
    };
    let prompt = vec![SP.bos, 40, 41, 42];
    let req = Request::single(prompt.clone(), 3);
    let p0 = prompt.len();
    // Threshold: the median first-step uncertainty, so some positions fall on each side.
    let first = Denoiser::forward(
        &m,
        &m.plain_batch(
            &Tensor::new(
                &[[
                    SP.bos, 40, 41, 42, SP.mask, SP.mask, SP.mask, SP.mask, SP.mask, SP.mask,
                    SP.mask, SP.mask,
                ]],
                &Device::Cpu,
            )
            .unwrap(),
        )
        .unwrap(),
    )
    .unwrap()
    .to_vec3::<f32>()
    .unwrap();
    let mut u0: Vec<f64> = (p0..p0 + 4).map(|p| entropy(&first[0][p])).collect();
    u0.sort_by(f64::total_cmp);
    let threshold = ((u0[1] + u0[2]) / 2.0) as f32;
    for cap in [10usize, 1] {
        rec.calls.borrow_mut().clear();
        let dgr = DgrOptions {
            threshold,
            max_positions: cap,
            ..DgrOptions::default()
        };
        let bk = banks(4);
        let (out, steps) = run(&rec, &opts(dgr), &req, &bk).unwrap();
        let calls = rec.calls.borrow();
        assert_eq!(calls.len(), steps.len());
        let mut applied_total = 0;
        let mut any_capped = false;
        for (s, st) in steps.iter().enumerate() {
            let (t, masked, applied, selected) = &st[0];
            // the block of this step, and its masked positions
            let block = s / 2;
            let cands: Vec<usize> = masked.iter().copied().filter(|p| p / 4 == block).collect();
            let lg = calls[s].logits.to_vec3::<f32>().unwrap();
            let mut want: Vec<(f64, usize)> = cands
                .iter()
                .map(|&p| (entropy(&lg[0][p0 + p]) / t.sqrt(), p))
                .filter(|(u, _)| *u > threshold as f64)
                .collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            any_capped |= want.len() > cap;
            want.truncate(cap);
            let got: Vec<usize> = selected.iter().map(|u| u.position).collect();
            assert_eq!(
                got,
                want.iter().map(|w| w.1).collect::<Vec<_>>(),
                "step {s}"
            );
            for (g, w) in selected.iter().zip(&want) {
                assert!((g.uncertainty as f64 - w.0).abs() < 1e-4);
                assert_eq!(g.band, bank::band_of(*t as f32));
                assert_eq!(g.patterns.len(), 3, "the bank has patterns: top-3");
            }
            // what the forward of step s received is exactly what step s − 1 selected
            let prev: Vec<(usize, usize)> = if s == 0 {
                Vec::new()
            } else {
                steps[s - 1][0]
                    .3
                    .iter()
                    .map(|u| (0, p0 + u.position))
                    .collect()
            };
            let mut delta = calls[s].delta.clone();
            delta.sort_unstable();
            let mut prev_sorted = prev.clone();
            prev_sorted.sort_unstable();
            assert_eq!(delta, prev_sorted, "step {s}: lagged delta");
            // and the callback reports exactly that, with the patterns selected a step earlier
            let rep: Vec<(usize, usize)> = applied.iter().map(|u| (0, p0 + u.position)).collect();
            assert_eq!(rep, prev, "step {s}: report");
            if s > 0 {
                assert_eq!(applied, &steps[s - 1][0].3);
            }
            applied_total += applied.len();
        }
        assert_eq!(out.dgr_applied, applied_total);
        assert!(applied_total > 0);
        if cap == 1 {
            assert!(any_capped, "the cap was exercised");
        }
    }
}

#[test]
fn empty_banks_give_the_output_without_dgr_and_patterns_change_it() {
    let m = model();
    let req = Request::with_seeds(vec![vec![SP.bos, 50, 51], vec![SP.bos, 60]], 9);
    let dgr = DgrOptions {
        threshold: 0.0,
        ..DgrOptions::default()
    };
    let plain = Options {
        dgr: None,
        ..opts(dgr.clone())
    };
    let none = crate::sampler::generate(&m, &Device::Cpu, &SP, &plain, &req, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let (empty, steps) = run(&m, &opts(dgr.clone()), &req, &banks(0)).unwrap();
    assert_eq!(empty.rows, none.rows);
    assert_eq!(empty.dgr_applied, 0);
    // positions are still selected, none applied
    assert!(steps.iter().flatten().any(|r| !r.3.is_empty()));
    assert!(steps.iter().flatten().all(|r| r.2.is_empty()));
    let (with, _) = run(&m, &opts(dgr), &req, &banks(4)).unwrap();
    assert!(with.dgr_applied > 0);
    assert_ne!(with.rows, none.rows, "large patterns change the generation");
}

#[test]
fn rows_of_a_batch_get_what_they_get_alone() {
    let m = model();
    let dgr = DgrOptions {
        threshold: 0.0,
        max_positions: 2,
        ..DgrOptions::default()
    };
    let bk = banks(4);
    let prompts = vec![vec![SP.bos, 50, 51, 52], vec![SP.bos, 60]];
    let (both, steps) = run(
        &m,
        &opts(dgr.clone()),
        &Request::with_seeds(prompts.clone(), 4),
        &bk,
    )
    .unwrap();
    for (r, p) in prompts.into_iter().enumerate() {
        let (alone, alone_steps) = run(
            &m,
            &opts(dgr.clone()),
            &Request::single(p, 4 + r as u64),
            &bk,
        )
        .unwrap();
        assert_eq!(alone.rows[0].ids, both.rows[r].ids, "row {r}");
        for (a, b) in alone_steps.iter().zip(&steps) {
            assert_eq!(a[0].2.len(), b[r].2.len());
            for (x, y) in a[0].2.iter().zip(&b[r].2) {
                assert_eq!((x.position, &x.patterns), (y.position, &y.patterns));
            }
        }
    }
}

#[test]
fn caches_apply_the_lagged_delta_inside_their_windows() {
    let m = model();
    let rec = Recorder {
        m: &m,
        calls: RefCell::new(Vec::new()),
    };
    let bk = banks(4);
    let dgr = DgrOptions {
        threshold: 0.0,
        max_positions: 2,
        ..DgrOptions::default()
    };
    for cache in [CacheMode::Prefix, CacheMode::Dual] {
        rec.calls.borrow_mut().clear();
        let o = Options {
            cache,
            ..opts(dgr.clone())
        };
        let req = Request::single(vec![SP.bos, 70, 71], 2);
        let (out, steps) = run(&rec, &o, &req, &bk).unwrap();
        assert!(out.window_nfe > 0);
        let calls = rec.calls.borrow();
        let mut applied = 0;
        for (s, st) in steps.iter().enumerate() {
            let rep: Vec<(usize, usize)> = st[0].2.iter().map(|u| (0, 3 + u.position)).collect();
            let (w0, wl) = calls[s].window;
            // every reported delta was on the batch and inside the computed window
            for p in &rep {
                assert!(calls[s].delta.contains(p));
                assert!(p.1 >= w0 && p.1 < w0 + wl);
            }
            if s > 0 {
                assert_eq!(rep.len(), steps[s - 1][0].3.len(), "{cache:?} step {s}");
            }
            applied += rep.len();
        }
        assert_eq!(out.dgr_applied, applied);
        assert!(applied > 0);
    }
}

#[test]
fn dgr_refuses_what_it_cannot_do() {
    let m = model();
    let req = Request::single(vec![SP.bos, 40], 1);
    let o = opts(DgrOptions::default());
    // no banks
    let e = crate::sampler::generate(&m, &Device::Cpu, &SP, &o, &req, |_| {
        ControlFlow::Continue(())
    });
    assert!(matches!(e, Err(Error::InvalidOption { option: "dgr", .. })));
    // a model without hidden states
    let toy = crate::sampler::testing::ToyModel::new(SP.pad as usize + 1, 1);
    let bk = banks(1);
    assert!(matches!(
        run(&toy, &o, &req, &bk),
        Err(Error::InvalidOption { option: "dgr", .. })
    ));
    // bad options
    for bad in [
        DgrOptions {
            threshold: f32::NAN,
            ..DgrOptions::default()
        },
        DgrOptions {
            top_k: 0,
            ..DgrOptions::default()
        },
        DgrOptions {
            max_positions: 100_000,
            ..DgrOptions::default()
        },
    ] {
        assert!(matches!(
            run(&m, &opts(bad), &req, &bk),
            Err(Error::InvalidOption { .. })
        ));
    }
}

#[test]
fn recording_a_generation_moves_the_used_patterns_only() {
    let m = model();
    let req = Request::single(vec![SP.bos, 70, 71], 4);
    let dgr = DgrOptions {
        threshold: 0.0,
        max_positions: 1,
        top_k: 1,
        ..DgrOptions::default()
    };
    let mut bk = banks(8);
    let before: Vec<(Band, u64, u64)> = bk
        .iter()
        .flat_map(|b| {
            b.patterns()
                .into_iter()
                .map(|p| (b.band(), p.id, p.last_use))
        })
        .collect();
    let (out, steps) = run(&m, &opts(dgr), &req, &bk).unwrap();
    // the output's usage is exactly the union of what the callback reported as applied
    let mut reported = bank::Usage::new();
    for r in steps.iter().flatten() {
        for u in &r.2 {
            reported.add(u.band, &u.patterns);
        }
    }
    assert_eq!(out.dgr_used, reported);
    assert!(!out.dgr_used.is_empty());
    let now = 5;
    let rec = out.dgr_used.record(&mut bk, now, None).unwrap();
    assert_eq!(rec.touched, out.dgr_used.len());
    let mut unused = 0;
    for (band, id, last) in before {
        let p = bk.get(band).get(id).unwrap();
        if out.dgr_used.contains(band, id) {
            assert_eq!(p.last_use, now, "{band:?} {id} was used");
        } else {
            assert_eq!(p.last_use, last, "{band:?} {id} was not used");
            unused += 1;
        }
        assert_eq!(p.success, 0.0, "no success signal in a plain generation");
    }
    assert!(unused > 0, "some patterns stayed unused");
}

#[test]
fn perplexity_bound_with_dgr_runs_the_lag_on_each_draw() {
    use crate::sampler::nll_bound_dgr;
    use crate::train::{Example, LikelihoodOptions, nll_bound};
    let m = model();
    let ex = |p: &[u32], a: &[u32]| Example {
        prompt: p.to_vec(),
        answer: a.to_vec(),
    };
    let examples = vec![ex(&[40, 41], &[42, 43, 44]), ex(&[50], &[51, 52])];
    let lik = LikelihoodOptions {
        mc_samples: 8,
        batch: 4,
        seq_len: 12,
        seed: 3,
    };
    let proj = KeyProjection::new(3, cfg().d_model).unwrap();
    let at = |banks: &Banks, threshold: f32| {
        let dgr = DgrOptions {
            threshold,
            ..DgrOptions::default()
        };
        let retrieval = Retrieval {
            banks,
            projection: &proj,
            now: 1,
        };
        nll_bound_dgr(&m, &examples, &lik, &dgr, retrieval).unwrap()
    };
    let plain = nll_bound(&m, &examples, &lik).unwrap();
    // Empty banks, or nothing above the threshold: the plain bound, bit for bit, one forward.
    let (empty, st) = at(&banks(0), 0.0);
    assert_eq!(empty, plain);
    assert_eq!((st.minibatches, st.with_delta, st.positions), (4, 0, 0));
    let full = banks(4);
    let (high, st) = at(&full, 1e9);
    assert_eq!(high, plain);
    assert_eq!(st.with_delta, 0);
    // Threshold 0: every masked position of the region is uncertain; DGR takes at most 10 per
    // row (the regions hold 9 and 10 targets, so all of them) and the second forward changes
    // the scored logits.
    let (with, st) = at(&full, 0.0);
    assert_eq!(st.with_delta, 4);
    assert!(st.positions > 0 && st.positions <= 4 * 4 * 10, "{st:?}");
    assert_eq!(with.tokens, plain.tokens);
    assert!(
        (with.nll - plain.nll).abs() > 1e-6,
        "{} vs {}",
        with.nll,
        plain.nll
    );
}
