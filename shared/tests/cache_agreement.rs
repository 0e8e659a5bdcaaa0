//! Fast-dLLM's block-wise caches on the pretrained `tiny` base: how far the approximation moves
//! the output.
//!
//! With bidirectional attention the cached keys/values of the other blocks go stale while the
//! current block fills in, so a cache refreshed once per block is only approximately the uncached
//! sampler. On a trained model the drift should be small: on 20 held-out prompts (gen 32, block 8,
//! one token per step, greedy) the prefix and dual caches must agree with the uncached tokens on at
//! least 90 % of positions. Refreshing at every step makes every forward a full one, which must
//! reproduce the uncached output exactly.
//!
//! The checkpoint is `$RUVDLLM_MODEL` or the committed `shared/assets/tiny`; a missing checkpoint
//! fails the test (a random model would say nothing about the approximation on real text).
#![cfg(feature = "model")]

use std::ops::ControlFlow;
use std::path::PathBuf;

use candle_core::{DType, Device};
use ruvdllm::data::{DEFAULT_SEED, Domain, Generator, Split};
use ruvdllm::model::{Model, checkpoint};
use ruvdllm::sampler::{CacheMode, Options, Output, Request, generate};
use ruvdllm::tokenizer::{ByteTokenizer, Tokenizer};

const PROMPTS: usize = 20;
const MIN_AGREEMENT: f64 = 0.90;

fn checkpoint_dir() -> PathBuf {
    match std::env::var_os("RUVDLLM_MODEL") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/tiny")),
    }
}

fn tiny() -> Model {
    let dir = checkpoint_dir();
    assert!(
        dir.join("config.json").is_file() && dir.join("model.safetensors").is_file(),
        "the cache-agreement test needs the pretrained tiny checkpoint (config.json + \
         model.safetensors) at {}; commit it there or point RUVDLLM_MODEL at a copy",
        dir.display()
    );
    match checkpoint::load(&dir, DType::F32, &Device::Cpu) {
        Ok(loaded) => loaded.model,
        Err(e) => panic!("loading the tiny checkpoint at {}: {e}", dir.display()),
    }
}

/// `BOS prompt` of the first held-out queries, the domains taken in turn.
fn heldout_prompts(n: usize) -> Vec<Vec<u32>> {
    let data = Generator::new(DEFAULT_SEED);
    let per = n.div_ceil(Domain::ALL.len());
    let by_domain: Vec<_> = Domain::ALL
        .iter()
        .map(|&d| data.samples(Split::HeldOut, d, per))
        .collect();
    let bos = ByteTokenizer.specials().bos;
    (0..per)
        .flat_map(|i| by_domain.iter().map(move |v| &v[i]))
        .take(n)
        .map(|s| {
            std::iter::once(bos)
                .chain(ByteTokenizer.encode(&s.prompt))
                .collect()
        })
        .collect()
}

fn options(cache: CacheMode, refresh_every: Option<usize>) -> Options {
    Options {
        gen_length: 32,
        block_length: 8,
        steps: Some(32),
        temperature: 0.0,
        early_stop: false,
        cache,
        refresh_every,
        ..Options::default()
    }
}

fn run(model: &Model, opts: &Options, prompts: &[Vec<u32>]) -> Output {
    let req = Request::with_seeds(prompts.to_vec(), 11);
    let specials = model.config().specials;
    generate(model, &Device::Cpu, &specials, opts, &req, |_| {
        ControlFlow::Continue(())
    })
    .expect("generation succeeds")
}

/// `(agreement over every generated position, agreement where the reference is not EOS)`.
fn agreement(reference: &Output, other: &Output, eos: u32) -> (f64, f64) {
    let (mut same, mut total, mut same_content, mut content) = (0, 0, 0, 0);
    for (a, b) in reference.rows.iter().zip(&other.rows) {
        assert_eq!(a.ids.len(), b.ids.len());
        for (&x, &y) in a.ids.iter().zip(&b.ids) {
            total += 1;
            same += usize::from(x == y);
            if x != eos {
                content += 1;
                same_content += usize::from(x == y);
            }
        }
    }
    let frac = |s: usize, t: usize| if t == 0 { 1.0 } else { s as f64 / t as f64 };
    (frac(same, total), frac(same_content, content))
}

#[test]
fn block_caches_agree_with_the_uncached_sampler() {
    let model = tiny();
    let specials = model.config().specials;
    let prompts = heldout_prompts(PROMPTS);
    assert_eq!(prompts.len(), PROMPTS);
    let plain = run(&model, &options(CacheMode::None, None), &prompts);
    assert_eq!((plain.nfe, plain.window_nfe), (32, 0));
    for row in &plain.rows {
        assert!(!row.ids.contains(&specials.mask));
    }
    for cache in [CacheMode::Prefix, CacheMode::Dual] {
        let cached = run(&model, &options(cache, None), &prompts);
        // One full forward per block (4 blocks), every other step a window forward.
        assert_eq!((cached.nfe, cached.window_nfe), (32, 28), "{cache:?}");
        let (all, content) = agreement(&plain, &cached, specials.eos);
        println!(
            "{cache:?} cache, refresh once per block: token agreement {:.1} % \
             ({:.1} % on positions where the uncached output is not EOS), {PROMPTS} prompts",
            100.0 * all,
            100.0 * content
        );
        assert!(
            all >= MIN_AGREEMENT,
            "{cache:?} cache agrees with the uncached sampler on {:.1} % of tokens, below {:.0} %",
            100.0 * all,
            100.0 * MIN_AGREEMENT
        );
    }
}

#[test]
fn refresh_at_every_step_reproduces_the_uncached_output() {
    let model = tiny();
    let prompts = heldout_prompts(1);
    let plain = run(&model, &options(CacheMode::None, None), &prompts);
    for cache in [CacheMode::Prefix, CacheMode::Dual] {
        let every = run(&model, &options(cache, Some(1)), &prompts);
        assert_eq!(every.window_nfe, 0, "{cache:?}");
        assert_eq!(every.rows, plain.rows, "{cache:?}");
    }
}
