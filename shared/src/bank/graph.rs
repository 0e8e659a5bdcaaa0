//! A read-only flat copy of the HNSW graph that queries walk.
//!
//! hnsw_rs builds the graph (its parallel insertion and neighbour selection), but its search walks
//! `Arc`-linked points behind per-point locks, allocates an `Arc` per candidate and tracks visited
//! points in a SipHash map — at 10K 64-d keys most of a query's time is that bookkeeping, not
//! distances. After the graph changes, the index copies its links once into flat `u32` arrays
//! (one CSR table per layer) and queries run the same search over them: greedy descent through
//! the upper layers from the entry point, then a beam of width `ef` on layer 0 (Malkov &
//! Yashunin, Algorithms 2 and 5), with a bitset of visited slots, prefetching the keys of a node's
//! unvisited neighbours before computing their distances (at 100K keys the keys come from memory,
//! and the loads then overlap the arithmetic). Same graph, same algorithm, same results; only the
//! bookkeeping is cheaper.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use hnsw_rs::prelude::{Distance, Hnsw};

use super::index::UnitCosine;
use super::key::KEY_DIM;

/// Links of one layer: `links[offsets[s]..offsets[s + 1]]` are slot `s`'s neighbours.
#[derive(Debug, Default)]
struct Csr {
    offsets: Vec<u32>,
    links: Vec<u32>,
}

impl Csr {
    fn from_pairs(n: usize, mut pairs: Vec<(u32, u32)>) -> Csr {
        // Stable by source slot: each slot keeps hnsw_rs's neighbour order.
        pairs.sort_by_key(|p| p.0);
        let mut offsets = vec![0u32; n + 1];
        for &(s, _) in &pairs {
            offsets[s as usize + 1] += 1;
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        Csr {
            offsets,
            links: pairs.into_iter().map(|p| p.1).collect(),
        }
    }

    fn of(&self, slot: u32) -> &[u32] {
        let s = slot as usize;
        match (self.offsets.get(s), self.offsets.get(s + 1)) {
            (Some(&a), Some(&b)) => &self.links[a as usize..b as usize],
            _ => &[],
        }
    }
}

/// A distance with a total order (the search's heaps).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dist(f32);

impl Eq for Dist {}

impl PartialOrd for Dist {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Dist {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Asks the CPU to start loading slot `s`'s key (four cache lines) into cache.
#[inline]
fn prefetch_key(keys: &[f32], s: u32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let i = s as usize * KEY_DIM;
        if let Some(key) = keys.get(i..i + KEY_DIM) {
            for line in key.chunks(16) {
                // SAFETY: a prefetch is only a hint; it never faults or reads into the program,
                // and the address is inside `keys` anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast::<i8>()) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (keys, s);
}

/// The flat graph over slots `0..n`.
#[derive(Debug)]
pub(crate) struct Flat {
    n: usize,
    entry: Option<u32>,
    /// Layer 0 first.
    layers: Vec<Csr>,
}

impl Flat {
    /// Copies the links of `hnsw`, whose data ids are the slots `0..n`.
    pub(crate) fn from_hnsw(hnsw: &Hnsw<'static, f32, UnitCosine>, n: usize) -> Flat {
        let mut pairs: Vec<Vec<(u32, u32)>> = Vec::new();
        let mut entry: Option<(usize, u32)> = None;
        for point in hnsw.get_point_indexation() {
            let slot = point.get_origin_id();
            if slot >= n {
                continue;
            }
            let level = point.get_point_id().0 as usize;
            // The entry point: a point of the highest level (hnsw_rs's own is the first to reach it).
            if entry.is_none_or(|(l, s)| level > l || (level == l && (slot as u32) < s)) {
                entry = Some((level, slot as u32));
            }
            for (layer, neighbours) in point.get_neighborhood_id().into_iter().enumerate() {
                if pairs.len() <= layer {
                    pairs.resize_with(layer + 1, Vec::new);
                }
                pairs[layer].extend(
                    neighbours
                        .iter()
                        .filter(|nb| nb.d_id < n)
                        .map(|nb| (slot as u32, nb.d_id as u32)),
                );
            }
        }
        Flat {
            n,
            entry: entry.map(|(_, s)| s),
            layers: pairs.into_iter().map(|p| Csr::from_pairs(n, p)).collect(),
        }
    }

    /// The `k` nearest slots to `query` by beam search of width `ef` (≥ k), nearest first, as
    /// `(slot, distance)`. `keys` is slot-major, `KEY_DIM` per slot.
    pub(crate) fn search(
        &self,
        keys: &[f32],
        query: &[f32],
        k: usize,
        ef: usize,
    ) -> Vec<(usize, f32)> {
        let Some(mut ep) = self.entry else {
            return Vec::new();
        };
        if k == 0 {
            return Vec::new();
        }
        let dist = |s: u32| {
            let i = s as usize * KEY_DIM;
            UnitCosine.eval(query, &keys[i..i + KEY_DIM])
        };
        let mut d_ep = dist(ep);
        for layer in self.layers.iter().skip(1).rev() {
            loop {
                let mut moved = false;
                for &nb in layer.of(ep) {
                    let d = dist(nb);
                    if d < d_ep {
                        (ep, d_ep, moved) = (nb, d, true);
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        let ef = ef.max(k);
        let mut visited = vec![0u64; self.n.div_ceil(64)];
        let mut visit = |s: u32| {
            let (w, b) = (s as usize / 64, 1u64 << (s % 64));
            let seen = visited[w] & b != 0;
            visited[w] |= b;
            seen
        };
        visit(ep);
        let mut candidates = BinaryHeap::with_capacity(ef * 2);
        let mut best = BinaryHeap::with_capacity(ef + 1);
        candidates.push(Reverse((Dist(d_ep), ep)));
        best.push((Dist(d_ep), ep));
        let Some(layer0) = self.layers.first() else {
            return vec![(ep as usize, d_ep)];
        };
        let mut fresh: Vec<u32> = Vec::with_capacity(64);
        while let Some(Reverse((Dist(dc), c))) = candidates.pop() {
            let worst = best.peek().map_or(f32::INFINITY, |b: &(Dist, u32)| b.0.0);
            if dc > worst {
                break;
            }
            // Unvisited neighbours first, their keys prefetched, then the distances: the loads
            // of the next keys overlap the arithmetic of the first (at 100K keys they come from
            // memory, not cache).
            fresh.clear();
            fresh.extend(layer0.of(c).iter().copied().filter(|&nb| !visit(nb)));
            for &nb in &fresh {
                prefetch_key(keys, nb);
            }
            for &nb in &fresh {
                let d = dist(nb);
                let worst = best.peek().map_or(f32::INFINITY, |b| b.0.0);
                if best.len() < ef || d < worst {
                    candidates.push(Reverse((Dist(d), nb)));
                    best.push((Dist(d), nb));
                    if best.len() > ef {
                        best.pop();
                    }
                }
            }
        }
        let mut out: Vec<(Dist, u32)> = best.into_vec();
        out.sort_unstable();
        out.truncate(k);
        out.into_iter().map(|(d, s)| (s as usize, d.0)).collect()
    }
}
