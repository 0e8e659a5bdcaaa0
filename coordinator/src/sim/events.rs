//! What the simulated nodes did, as the simulation observes it: per node and round, when the
//! global adapter arrived, when training ran, what was uploaded and how the coordinator answered,
//! and the node's socket counters at the moment its round ended.
//!
//! Nodes record from their own tasks and blocking threads; the orchestrator waits on
//! [`Recorder::wait_done`] until every node finished a round, then turns the records into one
//! row of the report. Socket bytes of a round are the difference of two snapshots of the node's
//! counters taken when consecutive rounds ended, so every byte lands in exactly one round (or in
//! the tail after the last one) and the per-round figures add up to the counters.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

/// Socket counters of one node at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bytes {
    pub up: u64,
    pub down: u64,
}

/// One node's round.
#[derive(Debug, Clone, Default)]
pub struct NodeEvents {
    pub fetched_at: Option<Instant>,
    /// Encoded size of the global adapter it downloaded.
    pub codec_down: u64,
    pub train_start: Option<Instant>,
    pub train_end: Option<Instant>,
    pub train_loss: f64,
    pub submit_start: Option<Instant>,
    /// Encoded size of the update it uploaded.
    pub codec_up: u64,
    /// `Some(None)`: accepted; `Some(Some(reason))`: refused; `None`: not finished.
    pub outcome: Option<Option<String>>,
    pub done_at: Option<Instant>,
    /// Socket counters when the round ended for this node.
    pub bytes_at_done: Bytes,
}

/// The shared record of every node's rounds.
#[derive(Debug)]
pub struct Recorder {
    nodes: Mutex<Vec<BTreeMap<u64, NodeEvents>>>,
    /// Bumped on every finished node-round.
    done: watch::Sender<u64>,
}

impl Recorder {
    pub fn new(nodes: usize) -> Self {
        Self {
            nodes: Mutex::new(vec![BTreeMap::new(); nodes]),
            done: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<BTreeMap<u64, NodeEvents>>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Updates node `node`'s record of `round` (out-of-range nodes are ignored).
    pub fn update(&self, node: usize, round: u64, f: impl FnOnce(&mut NodeEvents)) {
        if let Some(n) = self.lock().get_mut(node) {
            f(n.entry(round).or_default());
        }
    }

    /// Marks the node's round finished with its outcome and current socket counters.
    pub fn finish(&self, node: usize, round: u64, outcome: Option<String>, bytes: Bytes) {
        self.update(node, round, |e| {
            e.outcome = Some(outcome);
            e.done_at = Some(Instant::now());
            e.bytes_at_done = bytes;
        });
        self.done.send_modify(|n| *n += 1);
    }

    /// A copy of node `node`'s record of `round`.
    pub fn get(&self, node: usize, round: u64) -> NodeEvents {
        self.lock()
            .get(node)
            .and_then(|n| n.get(&round))
            .cloned()
            .unwrap_or_default()
    }

    /// Socket counters when node `node` finished the last round before `round` (zero before
    /// round 1).
    pub fn bytes_before(&self, node: usize, round: u64) -> Bytes {
        self.lock()
            .get(node)
            .and_then(|n| {
                n.range(..round)
                    .rev()
                    .find_map(|(_, e)| e.done_at.map(|_| e.bytes_at_done))
            })
            .unwrap_or_default()
    }

    /// How many nodes finished `round`.
    pub fn done_count(&self, round: u64) -> usize {
        self.lock()
            .iter()
            .filter(|n| n.get(&round).is_some_and(|e| e.done_at.is_some()))
            .count()
    }

    fn all_done(&self, round: u64) -> bool {
        self.done_count(round) == self.lock().len()
    }

    /// Notified whenever a node finishes a round.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.done.subscribe()
    }

    /// Waits until every node finished `round`.
    pub async fn wait_done(&self, round: u64) {
        let mut rx = self.done.subscribe();
        loop {
            if self.all_done(round) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rounds_finish_and_bytes_chain() {
        let r = Recorder::new(2);
        r.update(0, 1, |e| e.codec_up = 10);
        r.finish(0, 1, None, Bytes { up: 100, down: 50 });
        assert!(!r.all_done(1));
        r.finish(1, 1, Some("refused".into()), Bytes { up: 7, down: 3 });
        r.wait_done(1).await;
        assert_eq!(r.get(0, 1).codec_up, 10);
        assert_eq!(r.get(1, 1).outcome, Some(Some("refused".into())));
        assert_eq!(r.bytes_before(0, 2), Bytes { up: 100, down: 50 });
        assert_eq!(r.bytes_before(0, 1), Bytes::default());
    }
}
