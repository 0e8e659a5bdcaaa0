//! Retrieval workloads shared by the `retrieval` criterion bench and `retrieval_report`: keys are
//! final hidden states of the `tiny` model (held-out and pretraining text, half the positions
//! masked, as mid-denoising canvases look), projected to 64-d; pattern payloads are seeded random
//! rank-2 q/v adapters with the model's shapes, so the memory column is a real bank's.

use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use ruvdllm::bank::hidden::{hidden_states, pack_canvases};
use ruvdllm::bank::{
    Adapter, Band, Bank, Config as BankConfig, KeyProjection, LayerFactors, Layout, LowRank,
    Matrix, Pattern, Target,
};
use ruvdllm::data::{DEFAULT_SEED, Domain, Generator};
use ruvdllm::model::Model;
use ruvdllm::tokenizer::{ByteTokenizer, Tokenizer};

/// Positions per canvas and canvases per forward when collecting hidden states.
pub const CANVAS_LEN: usize = 128;
pub const CANVAS_ROWS: usize = 16;
/// The seed of the key projection used by every benchmark.
pub const KEY_SEED: u64 = 7;

/// Token sequences of held-out samples of every domain and of pretraining samples, interleaved;
/// `offset` rotates them so query keys come from other canvases than stored ones.
pub fn texts(per_domain: usize, pretrain: usize, offset: usize) -> Vec<Vec<u32>> {
    let g = Generator::new(DEFAULT_SEED);
    let tok = ByteTokenizer;
    let mut heldout: Vec<Vec<u32>> = Domain::ALL
        .iter()
        .flat_map(|d| g.heldout(*d, per_domain))
        .map(|s| tok.encode(&s.text()))
        .collect();
    let pre: Vec<Vec<u32>> = g
        .pretrain_mixed(pretrain)
        .iter()
        .map(|s| tok.encode(&s.text()))
        .collect();
    let mut out = Vec::with_capacity(heldout.len() + pre.len());
    let mut pre_it = pre.into_iter();
    for h in heldout.drain(..) {
        out.push(h);
        if let Some(p) = pre_it.next() {
            out.push(p);
        }
    }
    out.extend(pre_it);
    if !out.is_empty() {
        let k = offset % out.len();
        out.rotate_left(k);
    }
    out
}

/// `n` keys: the projected hidden states of every position of enough canvases.
pub fn model_keys(
    model: &Model,
    texts: &[Vec<u32>],
    n: usize,
    seed: u64,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let sp = model.config().specials;
    let d = model.config().d_model;
    let proj = KeyProjection::new(KEY_SEED, d)?;
    let canvases = pack_canvases(texts, n.div_ceil(CANVAS_LEN), CANVAS_LEN, sp.bos, sp.eos);
    let mut keys = Vec::with_capacity(n);
    for (i, chunk) in canvases.chunks(CANVAS_ROWS).enumerate() {
        let h = hidden_states(model, chunk, 0.5, seed.wrapping_add(i as u64))?;
        let mut part: Vec<Vec<f32>> = h
            .par_chunks_exact(d)
            .map(|row| proj.project(row))
            .collect::<Result<_, _>>()?;
        keys.append(&mut part);
    }
    keys.truncate(n);
    Ok(keys)
}

/// A seeded random rank-2 adapter with `layout`'s shapes.
pub fn random_adapter(layout: &Layout, seed: u64) -> Adapter {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut m = |r: usize, c: usize| {
        Matrix::new(
            r,
            c,
            (0..r * c)
                .map(|_| rng.random_range(-0.05f32..0.05))
                .collect(),
            "bench",
        )
        .expect("sizes agree by construction")
    };
    Adapter {
        layers: layout
            .layers
            .iter()
            .map(|[(qo, qi), (vo, vi)]| LayerFactors {
                q: LowRank::new(m(2, *qi), m(*qo, 2)).expect("rank 2"),
                v: LowRank::new(m(2, *vi), m(*vo, 2)).expect("rank 2"),
            })
            .collect(),
    }
}

/// The q/v layout of a model config.
pub fn layout_of(cfg: &ruvdllm::model::Config) -> Layout {
    Layout::uniform(
        cfg.n_layers,
        cfg.d_model,
        cfg.n_heads * cfg.head_dim,
        cfg.n_kv_heads * cfg.head_dim,
    )
}

/// One pattern per key (payloads drawn from a pool of 64 random adapters, each quantized into
/// its own pattern), with last uses spread over `0..keys.len()`.
pub fn patterns(keys: &[Vec<f32>], layout: &Layout, band: Band) -> anyhow::Result<Vec<Pattern>> {
    let pool: Vec<Adapter> = (0..64).map(|s| random_adapter(layout, s)).collect();
    let ps = keys
        .par_iter()
        .enumerate()
        .map(|(i, k)| Pattern::new(i as u64, band, k, &pool[i % pool.len()], i as u64))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ps)
}

/// A bank holding one pattern per key (capacity = number of keys).
pub fn build_bank(keys: &[Vec<f32>], layout: &Layout) -> anyhow::Result<Bank> {
    let mut bank = Bank::new(
        Band::Domain,
        BankConfig {
            capacity: keys.len().max(1),
            ..BankConfig::default()
        },
    )?;
    bank.insert_many(patterns(keys, layout, Band::Domain)?)?;
    Ok(bank)
}

/// Recall@k of HNSW against the exact scan, counting ties (a hit at least as similar as the
/// exact k-th is right).
pub fn recall_at(bank: &Bank, queries: &[Vec<f32>], k: usize) -> anyhow::Result<f64> {
    let (mut hits, mut total) = (0usize, 0usize);
    for q in queries {
        let exact = bank.nearest_exact(q, k)?;
        let Some(last) = exact.last() else { continue };
        let approx = bank.nearest(q, k)?;
        hits += approx
            .iter()
            .filter(|h| h.similarity >= last.similarity - 1e-6)
            .count()
            .min(exact.len());
        total += exact.len();
    }
    Ok(if total == 0 {
        1.0
    } else {
        hits as f64 / total as f64
    })
}

/// Resident set size of this process in KiB (`VmRSS`), where `/proc` exists.
pub fn rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// DGR's composition workload: every position's `Σ w_i B_i A_i` written into the stacked rows the
/// model's position hook takes (`A [k·2, in]`, `w·Bᵀ [k·2, out]`), for every layer and q|v of
/// `layout`, `positions` positions of `top_k` patterns each.
pub struct StackedRows {
    /// `(layer, target, in, out)` of every linear.
    linears: Vec<(usize, Target, usize, usize)>,
    /// Per linear: the A rows and the Bᵀ rows of every position.
    stacks: Vec<(Vec<f32>, Vec<f32>)>,
    rows: usize,
}

impl StackedRows {
    pub fn new(layout: &Layout, positions: usize, top_k: usize) -> Self {
        let linears: Vec<(usize, Target, usize, usize)> = (0..layout.layers.len())
            .flat_map(|l| {
                Target::ALL.map(|t| {
                    let (out, inp) = layout.layers[l][t.index()];
                    (l, t, inp, out)
                })
            })
            .collect();
        let rows = top_k * ruvdllm::bank::PATTERN_RANK;
        let stacks = linears
            .iter()
            .map(|&(_, _, inp, out)| {
                (
                    vec![0.0; positions * rows * inp],
                    vec![0.0; positions * rows * out],
                )
            })
            .collect();
        Self {
            linears,
            stacks,
            rows,
        }
    }

    /// Writes position `pos`'s composition of `parts` (exactly `top_k` patterns) into every linear.
    pub fn compose(&mut self, pos: usize, parts: &[(&Pattern, f32)]) -> anyhow::Result<()> {
        let rows = self.rows;
        for (&(l, t, inp, out), (a, bt)) in self.linears.iter().zip(self.stacks.iter_mut()) {
            ruvdllm::bank::compose::compose_rows_into(
                parts,
                l,
                t,
                &mut a[pos * rows * inp..(pos + 1) * rows * inp],
                &mut bt[pos * rows * out..(pos + 1) * rows * out],
            )?;
        }
        Ok(())
    }

    /// `B·(A·x)` at position `pos` for every linear (what the hook adds there); returns one
    /// output vector per linear.
    pub fn apply(&self, pos: usize, x: &[f32]) -> Vec<Vec<f32>> {
        let rows = self.rows;
        self.linears
            .iter()
            .zip(&self.stacks)
            .map(|(&(_, _, inp, out), (a, bt))| {
                let a = &a[pos * rows * inp..(pos + 1) * rows * inp];
                let bt = &bt[pos * rows * out..(pos + 1) * rows * out];
                let mut y = vec![0.0f32; out];
                for (ar, br) in a.chunks_exact(inp).zip(bt.chunks_exact(out)) {
                    let h = ruvdllm::bank::index::dot(ar, x);
                    for (yo, b) in y.iter_mut().zip(br) {
                        *yo += h * b;
                    }
                }
                y
            })
            .collect()
    }
}
