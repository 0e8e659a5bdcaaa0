//! The key index of one bank: an HNSW graph (hnsw_rs) with tombstones, and an exact scan beside
//! it for comparison and for small banks.
//!
//! * **Distance.** Keys are unit vectors, so cosine distance is `1 − a·b`. hnsw_rs's own
//!   `DistCosine` recomputes both norms in f64 scalar code, and its `DistDot` *asserts* on
//!   rounding (`dot ≤ 1.000002`, or `1 − dot ≥ 0` in the scalar fallback), which a library must not
//!   do on data it did not produce. [`UnitCosine`] is the same `1 − a·b`, clamped to `[0, 2]`,
//!   written with eight independent accumulators so the compiler vectorises it.
//! * **Deletion.** hnsw_rs cannot remove a node. An evicted entry becomes a *tombstone*: its slot
//!   is marked dead, searches over-fetch and drop dead slots (never returning them), and once
//!   tombstones exceed `rebuild_fraction` of the graph the graph is rebuilt from the live keys
//!   (amortised: a rebuild after every `fraction·n` evictions).
//! * **Ids.** The graph's data id is a slot number; slots map to pattern ids.

use std::collections::HashMap;
use std::sync::OnceLock;

use hnsw_rs::prelude::{Distance, Hnsw};

use super::config::HnswConfig;
use super::graph::Flat;
use super::key::KEY_DIM;

/// `1 − a·b` for unit vectors, clamped to `[0, 2]`.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnitCosine;

/// Dot product with eight lanes of accumulators.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

impl Distance<f32> for UnitCosine {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        let d = 1.0 - dot(va, vb);
        if d.is_nan() { 2.0 } else { d.clamp(0.0, 2.0) }
    }
}

/// A pattern id with its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub id: u64,
    pub similarity: f32,
}

/// HNSW over unit keys, with tombstones.
pub struct Index {
    cfg: HnswConfig,
    hnsw: Hnsw<'static, f32, UnitCosine>,
    /// slot → pattern id, `None` for a tombstone.
    slots: Vec<Option<u64>>,
    /// slot-major keys (`KEY_DIM` per slot), kept for the exact scan and for rebuilds.
    keys: Vec<f32>,
    slot_of: HashMap<u64, usize>,
    tombstones: usize,
    /// The graph's links as flat arrays, copied at the first query after a change.
    flat: OnceLock<Flat>,
}

fn new_graph(cfg: &HnswConfig, hint: usize) -> Hnsw<'static, f32, UnitCosine> {
    let mut h = Hnsw::new(
        cfg.max_connections,
        hint.max(16),
        cfg.max_layer,
        cfg.ef_construction,
        UnitCosine,
    );
    h.set_searching_mode(true);
    h
}

impl Index {
    pub fn new(cfg: HnswConfig, capacity_hint: usize) -> Self {
        Self {
            hnsw: new_graph(&cfg, capacity_hint),
            cfg,
            slots: Vec::new(),
            keys: Vec::new(),
            slot_of: HashMap::new(),
            tombstones: 0,
            flat: OnceLock::new(),
        }
    }

    pub fn config(&self) -> &HnswConfig {
        &self.cfg
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// Nodes in the graph, live or dead.
    pub fn graph_nodes(&self) -> usize {
        self.slots.len()
    }

    pub fn tombstones(&self) -> usize {
        self.tombstones
    }

    pub fn contains(&self, id: u64) -> bool {
        self.slot_of.contains_key(&id)
    }

    /// Adds unit keys (`KEY_DIM` each; the caller checked them) in one parallel batch.
    /// Ids already present are the caller's error to avoid (the bank checks).
    pub fn insert_many(&mut self, entries: &[(u64, &[f32])]) {
        self.flat = OnceLock::new();
        let first = self.slots.len();
        for (i, (id, key)) in entries.iter().enumerate() {
            debug_assert_eq!(key.len(), KEY_DIM);
            self.slots.push(Some(*id));
            self.keys.extend_from_slice(key);
            self.slot_of.insert(*id, first + i);
        }
        let batch: Vec<(&[f32], usize)> = (first..self.slots.len())
            .map(|s| (&self.keys[s * KEY_DIM..(s + 1) * KEY_DIM], s))
            .collect();
        if batch.len() == 1 {
            self.hnsw.insert_slice(batch[0]);
        } else if !batch.is_empty() {
            self.hnsw.parallel_insert_slice(&batch);
        }
    }

    /// Marks `id` dead; rebuilds the graph when tombstones pass the configured fraction.
    /// Returns whether `id` was present.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some(slot) = self.slot_of.remove(&id) else {
            return false;
        };
        self.slots[slot] = None;
        self.tombstones += 1;
        if self.tombstones as f32 > self.cfg.rebuild_fraction * self.slots.len() as f32 {
            self.rebuild();
        }
        true
    }

    /// Rebuilds the graph from the live keys only (slots are compacted).
    pub fn rebuild(&mut self) {
        let live: Vec<(u64, Vec<f32>)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(s, id)| {
                id.map(|id| (id, self.keys[s * KEY_DIM..(s + 1) * KEY_DIM].to_vec()))
            })
            .collect();
        tracing::debug!(
            live = live.len(),
            tombstones = self.tombstones,
            "rebuilding bank index"
        );
        self.hnsw = new_graph(&self.cfg, live.len());
        self.flat = OnceLock::new();
        self.slots.clear();
        self.keys.clear();
        self.slot_of.clear();
        self.tombstones = 0;
        let refs: Vec<(u64, &[f32])> = live.iter().map(|(id, k)| (*id, k.as_slice())).collect();
        self.insert_many(&refs);
    }

    /// Approximate `k` nearest live keys by HNSW (hnsw_rs's graph, searched over its flat copy,
    /// see the private `graph` module), nearest first.
    pub fn nearest(&self, key: &[f32], k: usize) -> Vec<Hit> {
        let want = k.min(self.len());
        if want == 0 {
            return Vec::new();
        }
        // Over-fetch for the expected share of tombstones, and widen until enough live hits come
        // back (bounded: at most the whole graph).
        let dead = self.tombstones as f64 / self.slots.len() as f64;
        let mut fetch = ((want as f64 / (1.0 - dead).max(0.05)).ceil() as usize
            + self.tombstones.min(4))
        .min(self.slots.len());
        loop {
            let ef = self.cfg.ef_search.max(fetch);
            let flat = self
                .flat
                .get_or_init(|| Flat::from_hnsw(&self.hnsw, self.slots.len()));
            let found = flat.search(&self.keys, key, fetch, ef);
            let hits: Vec<Hit> = found
                .iter()
                .filter_map(|&(slot, distance)| {
                    self.slots.get(slot).copied().flatten().map(|id| Hit {
                        id,
                        similarity: 1.0 - distance,
                    })
                })
                .take(want)
                .collect();
            if hits.len() >= want || fetch >= self.slots.len() {
                return hits;
            }
            fetch = (fetch * 2).min(self.slots.len());
        }
    }

    /// Exact `k` nearest live keys by a full scan, nearest first (ties: smaller id first).
    pub fn nearest_exact(&self, key: &[f32], k: usize) -> Vec<Hit> {
        let mut all: Vec<Hit> = self.scan(key).collect();
        let k = k.min(all.len());
        if k == 0 {
            return Vec::new();
        }
        let cmp = |a: &Hit, b: &Hit| b.similarity.total_cmp(&a.similarity).then(a.id.cmp(&b.id));
        all.select_nth_unstable_by(k - 1, cmp);
        all.truncate(k);
        all.sort_by(cmp);
        all
    }

    /// Similarity of every live key to `key`.
    pub fn scan<'a>(&'a self, key: &'a [f32]) -> impl Iterator<Item = Hit> + 'a {
        self.slots.iter().enumerate().filter_map(move |(s, id)| {
            id.map(|id| Hit {
                id,
                similarity: dot(key, &self.keys[s * KEY_DIM..(s + 1) * KEY_DIM]),
            })
        })
    }

    /// Approximate heap bytes of the index: keys, slot tables and graph links (hnsw_rs stores
    /// each key again, plus per-link an `Arc` and a distance, up to 2·M links on layer 0 and M
    /// above), and the flat copy queries walk (a `u32` per layer-0 link, an offset per slot).
    pub fn approx_bytes(&self) -> usize {
        let n = self.slots.len();
        let own = self.keys.len() * 4 + n * 16 + self.slot_of.len() * 24;
        let graph_keys = n * (KEY_DIM * 4 + 64);
        let links = n * 2 * self.cfg.max_connections * 16;
        let flat = n * (2 * self.cfg.max_connections * 4 + 4);
        own + graph_keys + links + flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::key::normalize;
    use rand::{Rng, SeedableRng};

    fn keys(n: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        // clustered: 20 centres plus noise, like real hidden states
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| {
                (0..KEY_DIM)
                    .map(|_| rng.random_range(-1.0f32..1.0))
                    .collect()
            })
            .collect();
        (0..n)
            .map(|i| {
                let c = &centres[i % 20];
                normalize(
                    c.iter()
                        .map(|x| x + rng.random_range(-0.3f32..0.3))
                        .collect(),
                    "k",
                )
                .unwrap()
            })
            .collect()
    }

    fn build(n: usize) -> (Index, Vec<Vec<f32>>) {
        let ks = keys(n, 5);
        let mut idx = Index::new(HnswConfig::default(), n);
        let entries: Vec<(u64, &[f32])> = ks
            .iter()
            .enumerate()
            .map(|(i, k)| (i as u64 * 10, k.as_slice()))
            .collect();
        idx.insert_many(&entries);
        (idx, ks)
    }

    #[test]
    fn distance_is_clamped_cosine() {
        let a = normalize(vec![1.0; 64], "a").unwrap();
        assert_eq!(UnitCosine.eval(&a, &a), 0.0);
        let b: Vec<f32> = a.iter().map(|x| -x).collect();
        assert!((UnitCosine.eval(&a, &b) - 2.0).abs() < 1e-6);
        assert_eq!(UnitCosine.eval(&[f32::NAN; 64], &a), 2.0);
        let x: Vec<f32> = (0..13).map(|i| i as f32).collect();
        assert_eq!(dot(&x, &x), x.iter().map(|v| v * v).sum::<f32>());
    }

    #[test]
    fn hnsw_finds_exact_neighbours_on_small_sets() {
        let (idx, ks) = build(500);
        let mut agree = 0;
        for q in ks.iter().step_by(25) {
            let a: Vec<u64> = idx.nearest(q, 5).iter().map(|h| h.id).collect();
            let b: Vec<u64> = idx.nearest_exact(q, 5).iter().map(|h| h.id).collect();
            agree += a.iter().filter(|x| b.contains(x)).count();
        }
        assert!(agree as f64 / (20.0 * 5.0) >= 0.95, "agree {agree}");
    }

    #[test]
    fn flat_search_matches_hnsw_rs_on_the_same_graph() {
        let (mut idx, ks) = build(3000);
        let (mut same, mut ours_exact, mut theirs_exact) = (0, 0, 0);
        let queries: Vec<&Vec<f32>> = ks.iter().step_by(60).collect();
        for q in &queries {
            let theirs: Vec<u64> = idx
                .hnsw
                .search(q, 10, idx.cfg.ef_search)
                .iter()
                .filter_map(|n| idx.slots[n.d_id])
                .collect();
            let ours: Vec<u64> = idx.nearest(q, 10).iter().map(|h| h.id).collect();
            let exact: Vec<u64> = idx.nearest_exact(q, 10).iter().map(|h| h.id).collect();
            same += ours.iter().filter(|x| theirs.contains(x)).count();
            ours_exact += ours.iter().filter(|x| exact.contains(x)).count();
            theirs_exact += theirs.iter().filter(|x| exact.contains(x)).count();
        }
        let n = (queries.len() * 10) as f64;
        assert!(same as f64 / n >= 0.95, "agreement with hnsw_rs {same}/{n}");
        assert!(
            ours_exact + 5 >= theirs_exact,
            "recall {ours_exact} vs {theirs_exact}"
        );
        // The flat copy follows later inserts: a new key is its own nearest neighbour.
        let fresh = normalize((0..KEY_DIM).map(|i| (i as f32).sin()).collect(), "k").unwrap();
        idx.insert_many(&[(7, fresh.as_slice())]);
        assert_eq!(idx.nearest(&fresh, 1)[0].id, 7);
    }

    #[test]
    fn removed_ids_are_never_returned_and_rebuild_happens() {
        let (mut idx, ks) = build(200);
        for id in (0..40).map(|i| i * 10) {
            assert!(idx.remove(id));
        }
        assert!(!idx.remove(0));
        assert_eq!(idx.len(), 160);
        assert_eq!(idx.tombstones(), 40); // 40/200 = 0.2 ≤ 0.25: not rebuilt yet
        for q in &ks {
            for h in idx.nearest(q, 10) {
                assert!(h.id >= 400, "dead id {} returned", h.id);
            }
            assert!(idx.nearest_exact(q, 10).iter().all(|h| h.id >= 400));
        }
        // the 51st tombstone passes 0.25 · 200
        for id in (40..50).map(|i| i * 10) {
            idx.remove(id);
        }
        assert_eq!(idx.tombstones(), 50);
        idx.remove(500);
        assert_eq!(idx.len(), 149);
        assert_eq!(idx.graph_nodes(), 149, "rebuild compacts the graph");
        assert_eq!(idx.tombstones(), 0);
        assert_eq!(idx.nearest(&ks[100], 1)[0].id, 1000);
    }

    #[test]
    fn empty_and_small_requests() {
        let idx = Index::new(HnswConfig::default(), 0);
        assert!(idx.nearest(&[0.0; 64], 3).is_empty());
        let (idx, ks) = build(3);
        assert_eq!(idx.nearest(&ks[0], 10).len(), 3);
        assert_eq!(idx.nearest_exact(&ks[0], 10).len(), 3);
        assert_eq!(idx.nearest_exact(&ks[0], 1)[0].id, 0);
    }
}
