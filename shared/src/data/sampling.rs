//! Endless sample streams: epoch-wise sampling without replacement over a set of units.
//!
//! A stream walks a shuffled permutation of its units and reshuffles when it runs out, so the first
//! `units` samples cover every unit exactly once (a node sees its whole shard each epoch) and any
//! prefix of a stream is the shorter request with the same arguments. The shuffle is incremental
//! (one Fisher–Yates step per sample), so taking a few samples from a large table costs little.

use super::stream::Stream;
use super::table::Table;
use super::{Domain, Sample};

/// An endless stream of one domain's samples (empty only if it has no units).
pub struct Samples<'a> {
    domain: Domain,
    table: &'a dyn Table,
    order: Vec<u32>,
    pos: usize,
    rng: Stream,
}

impl<'a> Samples<'a> {
    pub(crate) fn new(domain: Domain, table: &'a dyn Table, units: Vec<u32>, rng: Stream) -> Self {
        Self {
            domain,
            table,
            order: units,
            pos: 0,
            rng,
        }
    }

    /// Distinct units this stream cycles through (the length of one epoch).
    pub fn epoch_len(&self) -> usize {
        self.order.len()
    }
}

impl std::fmt::Debug for Samples<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Samples")
            .field("domain", &self.domain)
            .field("epoch_len", &self.order.len())
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl Iterator for Samples<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.order.is_empty() {
            return None;
        }
        if self.pos == self.order.len() {
            self.pos = 0;
        }
        // Incremental Fisher–Yates: position `pos` gets a uniform pick of the not-yet-used rest.
        let j = self.pos + self.rng.index(self.order.len() - self.pos);
        self.order.swap(self.pos, j);
        let unit = self.order[self.pos] as usize;
        self.pos += 1;
        Some(render(self.domain, self.table, unit, &mut self.rng))
    }
}

/// Round-robin interleaving of several streams (one sample from each in turn).
pub struct Mixed<'a> {
    streams: Vec<Samples<'a>>,
    next: usize,
}

impl<'a> Mixed<'a> {
    pub(crate) fn new(streams: Vec<Samples<'a>>) -> Self {
        Self { streams, next: 0 }
    }
}

impl std::fmt::Debug for Mixed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixed")
            .field("streams", &self.streams)
            .field("next", &self.next)
            .finish()
    }
}

impl Iterator for Mixed<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        // Skip empty streams; give up after one full round without a sample.
        for _ in 0..self.streams.len() {
            let i = self.next;
            self.next = (self.next + 1) % self.streams.len();
            if let Some(sample) = self.streams[i].next() {
                return Some(sample);
            }
        }
        None
    }
}

/// Renders one unit of `table` as a sample of `domain`.
pub(crate) fn render(domain: Domain, table: &dyn Table, unit: usize, rng: &mut Stream) -> Sample {
    let (prompt, answer) = table.render(unit, rng);
    Sample {
        domain: Some(domain),
        prompt,
        answer,
    }
}
