//! HNSW recall@5 against brute force at 10K keys taken from the committed `tiny` model's final
//! hidden states over the held-out split (DESIGN §5: recall is measured on model-derived keys,
//! not on uniform noise, where HNSW's recall is known to be poor).
#![cfg(feature = "model")]

use candle_core::{DType, Device};
use ruvdllm::bank::hidden::{hidden_states, pack_canvases};
use ruvdllm::bank::{
    Adapter, Band, Bank, Config, KeyProjection, LayerFactors, Layout, LowRank, Matrix, Pattern,
};
use ruvdllm::data::{DEFAULT_SEED, Domain, Generator};
use ruvdllm::eval::tiny_base_dir;
use ruvdllm::model::checkpoint;
use ruvdllm::tokenizer::{ByteTokenizer, Tokenizer};

/// Keys of every position of `rows` canvases of `seq_len` held-out tokens.
fn keys(
    model: &ruvdllm::model::Model,
    proj: &KeyProjection,
    texts: &[Vec<u32>],
    rows: usize,
    seq_len: usize,
    seed: u64,
) -> Vec<Vec<f32>> {
    let sp = model.config().specials;
    let canvases = pack_canvases(texts, rows, seq_len, sp.bos, sp.eos);
    let d = model.config().d_model;
    let mut out = Vec::new();
    // two forwards' worth of rows at a time keeps peak memory small
    for (i, chunk) in canvases.chunks(16).enumerate() {
        let h = hidden_states(model, chunk, 0.5, seed + i as u64).unwrap();
        for row in h.chunks_exact(d) {
            out.push(proj.project(row).unwrap());
        }
    }
    out
}

/// A minimal rank-2 adapter: recall concerns keys only, so the payload is kept tiny.
fn payload() -> Adapter {
    let f = || LowRank::new(Matrix::zeros(2, 2), Matrix::zeros(2, 2)).unwrap();
    Adapter {
        layers: vec![LayerFactors { q: f(), v: f() }],
    }
}

#[test]
fn hnsw_recall_at_5_on_tiny_hidden_states() {
    let loaded = checkpoint::load(&tiny_base_dir(), DType::F32, &Device::Cpu).unwrap();
    let model = loaded.model;
    let tok = ByteTokenizer;
    let generator = Generator::new(DEFAULT_SEED);
    let texts: Vec<Vec<u32>> = Domain::ALL
        .iter()
        .flat_map(|d| generator.heldout(*d, 400))
        .map(|s| tok.encode(&s.text()))
        .collect();
    let proj = KeyProjection::new(7, model.config().d_model).unwrap();
    // 80 canvases × 128 positions = 10,240 keys (5 forwards of 16 rows)
    let stored = keys(&model, &proj, &texts, 80, 128, 1);
    assert!(stored.len() >= 10_000);
    let stored = &stored[..10_000];
    let mut bank = Bank::new(
        Band::Fine,
        Config {
            capacity: 20_000,
            ..Config::default()
        },
    )
    .unwrap();
    let patterns: Vec<Pattern> = stored
        .iter()
        .enumerate()
        .map(|(i, k)| Pattern::new(i as u64, Band::Fine, k, &payload(), 0).unwrap())
        .collect();
    bank.insert_many(patterns).unwrap();
    assert_eq!(bank.layout(), Some(&Layout::of(&payload())));
    // queries: other canvases (different texts and masks), 300 positions spread over them
    let mut rotated = texts.clone();
    rotated.rotate_left(977);
    let queries = keys(&model, &proj, &rotated, 16, 128, 99);
    let (mut hits, mut total) = (0usize, 0usize);
    for q in queries.iter().step_by(7).take(300) {
        let exact = bank.nearest_exact(q, 5).unwrap();
        let approx = bank.nearest(q, 5).unwrap();
        assert_eq!(exact.len(), 5);
        // ties count: an approximate hit is right if it is at least as similar as the 5th exact
        let fifth = exact[4].similarity;
        hits += approx
            .iter()
            .filter(|h| h.similarity >= fifth - 1e-6)
            .count()
            .min(5);
        total += 5;
    }
    let recall = hits as f64 / total as f64;
    eprintln!("HNSW recall@5 on tiny hidden-state keys (10K): {recall:.4}");
    assert!(recall >= 0.95, "recall@5 = {recall}");
}
