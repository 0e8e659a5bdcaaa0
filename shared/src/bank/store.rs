//! A bank: the patterns of one band, their HNSW index, scoring, success tracking and LRU
//! eviction.
//!
//! Retrieval is two-stage. The index finds the `candidates` (default 32) nearest keys; those are
//! re-ranked by the full score (similarity, success, recency) and the best `k` returned. The exact
//! variant ([`Bank::search_exact`]) scores every live pattern — the reference the benchmarks put
//! beside HNSW. Patterns outside the candidates are never scored, so a pattern of lower similarity
//! whose success or recency would lift it into the top `k` can be missed: HNSW search is
//! approximate in the *score*, not only in similarity (the report measures the overlap), and
//! `candidates` trades latency for agreement. Time is never read from a clock: every call that needs "now" takes it (any
//! monotone `u64`: seconds, rounds or steps).
//!
//! Eviction is least-recently-used at capacity: `last_use` is set at insertion and advanced by
//! [`Bank::touch`] when a pattern is applied; ties go to the smaller (older) id. An evicted pattern
//! is gone at once — the index keeps its node as a tombstone that searches skip (see
//! [`super::index`]).

use std::collections::{BTreeSet, HashMap};

use rayon::prelude::*;

use crate::aggregate::daf::Band;

use super::config::Config;
use super::error::{Error, Result};
use super::index::{Hit, Index};
use super::key::checked_key;
use super::matrix::Layout;
use super::pattern::Pattern;
use super::score::{Scored, rank, recency, score};

/// The patterns of one band.
pub struct Bank {
    band: Band,
    cfg: Config,
    layout: Option<Layout>,
    patterns: HashMap<u64, Pattern>,
    /// `(last_use, id)` of every pattern: the first element is the LRU victim.
    lru: BTreeSet<(u64, u64)>,
    index: Index,
    next_id: u64,
}

impl Bank {
    pub fn new(band: Band, cfg: Config) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            band,
            index: Index::new(cfg.hnsw.clone(), cfg.capacity.min(1 << 20)),
            cfg,
            layout: None,
            patterns: HashMap::new(),
            lru: BTreeSet::new(),
            next_id: 0,
        })
    }

    pub fn band(&self) -> Band {
        self.band
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The shapes every pattern of this bank has (fixed by the first insertion).
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.as_ref()
    }

    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn get(&self, id: u64) -> Option<&Pattern> {
        self.patterns.get(&id)
    }

    /// Patterns in id order.
    pub fn patterns(&self) -> Vec<&Pattern> {
        let mut v: Vec<&Pattern> = self.patterns.values().collect();
        v.sort_by_key(|p| p.id);
        v
    }

    /// A fresh id (larger than any this bank has seen).
    pub fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    pub(crate) fn set_next_id(&mut self, next: u64) {
        self.next_id = self.next_id.max(next);
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Inserts one pattern; returns the ids evicted to stay within capacity.
    pub fn insert(&mut self, pattern: Pattern) -> Result<Vec<u64>> {
        self.insert_many(vec![pattern])
    }

    /// Inserts patterns in one batch (the index is built in parallel); returns the ids evicted
    /// (least recently used first). Nothing changes if any pattern is invalid.
    pub fn insert_many(&mut self, patterns: Vec<Pattern>) -> Result<Vec<u64>> {
        let mut layout = self.layout.clone();
        let mut seen = std::collections::HashSet::with_capacity(patterns.len());
        for p in &patterns {
            if p.band != self.band {
                return Err(Error::WrongBand {
                    expected: self.band.name(),
                    got: p.band.name(),
                });
            }
            if self.patterns.contains_key(&p.id) || !seen.insert(p.id) {
                return Err(Error::DuplicateId { id: p.id });
            }
            let pl = p.layout();
            match &layout {
                Some(l) => l.check_layout(&pl)?,
                None => layout = Some(pl),
            }
        }
        self.layout = layout;
        let new_ids: Vec<u64> = patterns.iter().map(|p| p.id).collect();
        for p in patterns {
            self.next_id = self.next_id.max(p.id + 1);
            self.lru.insert((p.last_use, p.id));
            self.patterns.insert(p.id, p);
        }
        let mut evicted = Vec::new();
        while self.patterns.len() > self.cfg.capacity {
            let Some((_, id)) = self.lru.pop_first() else {
                break;
            };
            self.patterns.remove(&id);
            self.index.remove(id);
            evicted.push(id);
        }
        let entries: Vec<(u64, &[f32])> = new_ids
            .iter()
            .filter_map(|id| self.patterns.get(id).map(|p| (*id, p.key())))
            .collect();
        self.index.insert_many(&entries);
        if !evicted.is_empty() {
            tracing::debug!(
                band = self.band.name(),
                evicted = evicted.len(),
                "bank evicted LRU patterns"
            );
        }
        Ok(evicted)
    }

    /// Removes a pattern.
    pub fn remove(&mut self, id: u64) -> Result<Pattern> {
        let p = self.patterns.remove(&id).ok_or(Error::UnknownId { id })?;
        self.lru.remove(&(p.last_use, id));
        self.index.remove(id);
        Ok(p)
    }

    /// Marks patterns as used at `now` (they move to the back of the LRU order).
    pub fn touch(&mut self, ids: &[u64], now: u64) -> Result<()> {
        if let Some(id) = ids.iter().find(|id| !self.patterns.contains_key(id)) {
            return Err(Error::UnknownId { id: *id });
        }
        for id in ids {
            if let Some(p) = self.patterns.get_mut(id)
                && now > p.last_use
            {
                self.lru.remove(&(p.last_use, *id));
                p.last_use = now;
                self.lru.insert((now, *id));
            }
        }
        Ok(())
    }

    /// Folds one observed improvement into the pattern's success EMA; returns the new value.
    pub fn update_success(&mut self, id: u64, improvement: f32) -> Result<f32> {
        if !improvement.is_finite() {
            return Err(Error::NonFinite {
                what: "success improvement",
            });
        }
        let a = self.cfg.success_alpha;
        let p = self.patterns.get_mut(&id).ok_or(Error::UnknownId { id })?;
        p.success = (1.0 - a) * p.success + a * improvement.clamp(-1.0, 1.0);
        Ok(p.success)
    }

    fn scored(&self, hit: Hit, now: u64) -> Option<Scored> {
        let p = self.patterns.get(&hit.id)?;
        let rec = recency(now, p.last_use, self.cfg.recency_tau);
        Some(Scored {
            id: hit.id,
            score: score(&self.cfg.weights, hit.similarity, p.success, rec),
            similarity: hit.similarity,
            success: p.success,
            recency: rec,
        })
    }

    /// Top-`k` patterns by score among the index's nearest `max(k, candidates)` keys.
    pub fn search(&self, key: &[f32], k: usize, now: u64) -> Result<Vec<Scored>> {
        let key = checked_key(key)?;
        let hits = self.index.nearest(&key, k.max(self.cfg.candidates));
        let mut out: Vec<Scored> = hits
            .into_iter()
            .filter_map(|h| self.scored(h, now))
            .collect();
        out.sort_by(rank);
        out.truncate(k);
        Ok(out)
    }

    /// [`Bank::search`] for several keys at once (in parallel).
    pub fn search_batch(&self, keys: &[Vec<f32>], k: usize, now: u64) -> Result<Vec<Vec<Scored>>> {
        keys.par_iter().map(|q| self.search(q, k, now)).collect()
    }

    /// Exact top-`k` by score over every live pattern.
    pub fn search_exact(&self, key: &[f32], k: usize, now: u64) -> Result<Vec<Scored>> {
        let key = checked_key(key)?;
        let mut out: Vec<Scored> = self
            .index
            .scan(&key)
            .filter_map(|h| self.scored(h, now))
            .collect();
        let k = k.min(out.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        out.select_nth_unstable_by(k - 1, rank);
        out.truncate(k);
        out.sort_by(rank);
        Ok(out)
    }

    /// The `k` nearest keys by HNSW (similarity only).
    pub fn nearest(&self, key: &[f32], k: usize) -> Result<Vec<Hit>> {
        Ok(self.index.nearest(&checked_key(key)?, k))
    }

    /// The `k` nearest keys by exhaustive scan (similarity only).
    pub fn nearest_exact(&self, key: &[f32], k: usize) -> Result<Vec<Hit>> {
        Ok(self.index.nearest_exact(&checked_key(key)?, k))
    }

    /// Bytes of all stored patterns (int8 adapters, keys, metadata).
    pub fn pattern_bytes(&self) -> usize {
        self.patterns.values().map(Pattern::bytes).sum()
    }

    /// Approximate bytes of the index (see [`Index::approx_bytes`]).
    pub fn index_bytes(&self) -> usize {
        self.index.approx_bytes()
    }

    /// Ids in LRU order (next victim first).
    pub fn lru_order(&self) -> Vec<u64> {
        self.lru.iter().map(|(_, id)| *id).collect()
    }
}
