//! The round state machine: events in, actions out, time passed in.
//!
//! Nothing here touches a socket, a file or the system clock, so every rule of a round — who may
//! submit, when a round closes, what happens when too few nodes show up — is tested with explicit
//! timestamps (psyche's coordinator is built the same way). The service layer feeds events,
//! executes the returned [`Action`]s (persist, announce, count) and owns all I/O.
//!
//! Lifecycle of round r: open with a deadline → accept updates → close as soon as `quorum` updates
//! are in, or at the deadline if at least `min_nodes` are → aggregate per band → new global =
//! old + aggregate → open r + 1. A submission that arrives after its round closed is stale; a node
//! that never finishes its upload is simply not among the updates when the round closes.
//!
//! **Too few nodes at the deadline:** the round is *extended* — same round number, same global
//! adapter, the updates already accepted kept, a new deadline one round length from now, announced
//! again. Re-opening from scratch would throw away valid work from nodes that were on time and
//! make them train again on the same global; extending keeps it and only waits for more nodes.
//!
//! **Client sampling** (Flower's `fraction_fit`, [`Sampling`]): when a round opens, and once at
//! least `min_available` nodes are registered, the machine draws `max(⌊registered · fraction⌋,
//! min_fit)` of them (seeded by the run seed, the round and its extensions, so a restarted
//! coordinator draws the same); only those may submit, and the round closes when they all have
//! (quorum and `min_nodes` are capped at the draw). A round opened before enough nodes registered
//! is drawn at the registration that makes them enough, and its deadline restarts from that
//! moment. A round extended for lack of updates keeps the nodes it accepted and draws the rest
//! again from the registered nodes, so a drawn node that died does not stall the run.
//!
//! **Aggregation refused** (e.g. every domain-band weight is zero and no fallback is configured):
//! the round is closed without changing the global adapter, recorded as failed, and the next round
//! opens; a round never stays stuck on inputs that cannot be aggregated.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use ruvdllm::aggregate::daf::DafConfig;
use ruvdllm::aggregate::{ServerOptimizer, ServerState};
use ruvdllm::codec;
use ruvdllm::delta::Delta;

use super::close::{CloseReport, close_round};
use super::reject::Reject;
use super::state::{AcceptedMeta, REPLAY_WINDOW_ROUNDS, RoundState};

/// The rules of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Updates needed to aggregate at the deadline.
    pub min_nodes: usize,
    /// Updates at which the round closes early (≥ `min_nodes`).
    pub quorum: usize,
    /// Length of a round (and of an extension), milliseconds.
    pub round_ms: u64,
    pub base_model_hash: String,
    pub run_seed: u64,
    /// Largest accepted encoded payload.
    pub max_payload_bytes: u64,
    pub daf: DafConfig,
    /// How the global moves along each round's aggregate (default: plain FedAvg, x + Δ).
    pub server_opt: ServerOptimizer,
    /// Central DP-FedAvg at close (`None`: off); needs uniform FedAvg in every band.
    pub central_dp: Option<super::dp::CentralDp>,
    /// Client sampling (`None`: every registered node takes part in every round).
    pub sampling: Option<Sampling>,
}

/// Client sampling, as Flower's strategies do it: each round draws `max(⌊registered · fraction⌋,
/// min_fit)` registered nodes, once at least `min_available` are registered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Share of the registered nodes drawn per round, in (0, 1].
    pub fraction: f64,
    /// Fewest nodes drawn (≥ 1).
    pub min_fit: usize,
    /// Registered nodes needed before a round is drawn (≥ `min_fit`).
    pub min_available: usize,
}

impl Sampling {
    /// Checks the ranges; names the offending field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.fraction.is_finite() && self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err((
                "fraction_fit",
                format!("must be in (0, 1], got {}", self.fraction),
            ));
        }
        if self.min_fit == 0 {
            return Err(("min_fit_nodes", "must be at least 1".into()));
        }
        if self.min_available < self.min_fit {
            return Err((
                "min_available_nodes",
                format!(
                    "{} is below min_fit_nodes {}",
                    self.min_available, self.min_fit
                ),
            ));
        }
        Ok(())
    }

    /// Nodes drawn among `registered`, or `None` while fewer than `min_available` are registered.
    pub fn size(&self, registered: usize) -> Option<usize> {
        if registered < self.min_available.max(1) {
            return None;
        }
        let share = (registered as f64 * self.fraction).floor() as usize;
        Some(share.max(self.min_fit).min(registered))
    }
}

/// Who takes part in the open round, as the announcement carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Participation {
    pub quorum: usize,
    pub min_nodes: usize,
    /// 0: every registered node; else the nodes wanted.
    pub sample_size: usize,
    /// The drawn nodes (empty while the draw waits).
    pub selected: Vec<String>,
}

/// A node's update as the service hands it over: declared metadata plus the decode result.
#[derive(Debug)]
pub struct Submission {
    pub node: String,
    pub round: u64,
    pub samples: u64,
    pub band_metrics: BTreeMap<String, f64>,
    pub payload_sha256: String,
    pub payload_len: u64,
    pub decoded: Result<Delta, codec::Error>,
}

/// What happened outside the machine.
#[derive(Debug)]
pub enum Event {
    Register {
        node: String,
        base_model_hash: String,
    },
    Submit(Submission),
    /// Time passed (deadlines are checked on every event too).
    Tick,
    /// The node's certificate was revoked: its pending update is dropped.
    NodeRevoked {
        node: String,
    },
}

/// What the service must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Registered {
        node: String,
    },
    /// Store the payload of this accepted update (before [`Action::Persist`]).
    Accepted {
        node: String,
        round: u64,
        payload_sha256: String,
    },
    Rejected {
        node: String,
        reason: Reject,
    },
    /// A revoked node's accepted update was removed from the open round.
    Dropped {
        node: String,
        round: u64,
    },
    /// Store [`Machine::global`] as the adapter round `round` trains from.
    StoreGlobal {
        round: u64,
    },
    /// Write [`Machine::state`].
    Persist,
    /// The stored payloads of round `round` are no longer needed.
    DiscardUpdates {
        round: u64,
    },
    RoundClosed(CloseReport),
    /// Announce the open round (new, or extended with a later deadline).
    Announce {
        round: u64,
        deadline_ms: u64,
        extended: bool,
    },
}

struct Pending {
    meta: AcceptedMeta,
    delta: Delta,
}

/// The round machine.
pub struct Machine {
    cfg: Config,
    state: RoundState,
    global: Delta,
    /// The server optimizer's moments (empty for a stateless one).
    server_state: ServerState,
    pending: Vec<Pending>,
    revoked: std::collections::BTreeSet<String>,
}

impl Machine {
    /// A fresh run: round 1 opens at `now_ms` from `initial` (the layout every update must match).
    pub fn new(cfg: Config, initial: Delta, now_ms: u64) -> Self {
        let state = RoundState::initial(cfg.run_seed, &cfg.base_model_hash, now_ms, cfg.round_ms);
        Self {
            cfg,
            state,
            global: initial,
            server_state: ServerState::default(),
            pending: Vec::new(),
            revoked: Default::default(),
        }
    }

    /// Resumes from persisted state, the global adapter of `state.round` with the server
    /// optimizer's moments stored beside it, and the decoded payloads of `state.accepted` (same
    /// order; entries without a delta must have been removed).
    pub fn restore(
        cfg: Config,
        state: RoundState,
        global: Delta,
        server_state: ServerState,
        deltas: Vec<Delta>,
    ) -> Self {
        let pending = state
            .accepted
            .iter()
            .cloned()
            .zip(deltas)
            .map(|(meta, delta)| Pending { meta, delta })
            .collect();
        let mut m = Self {
            cfg,
            state,
            global,
            server_state,
            pending,
            revoked: Default::default(),
        };
        // Sampling switched on since the state was written (or its draw was still waiting):
        // draw now if enough nodes are registered; announcing is the service's start-up.
        if m.cfg.sampling.is_some() && m.state.selected.is_none() {
            m.draw();
        }
        m
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn state(&self) -> &RoundState {
        &self.state
    }

    pub fn round(&self) -> u64 {
        self.state.round
    }

    pub fn deadline_ms(&self) -> u64 {
        self.state.deadline_ms
    }

    /// The global adapter the open round trains from.
    pub fn global(&self) -> &Delta {
        &self.global
    }

    /// The server optimizer's moments after the last closed round (store them with the global).
    pub fn server_state(&self) -> &ServerState {
        &self.server_state
    }

    pub fn accepted_count(&self) -> usize {
        self.pending.len()
    }

    /// Who takes part in the open round: quorum and `min_nodes` capped at the draw.
    pub fn participation(&self) -> Participation {
        let (quorum, min_nodes) = (self.quorum(), self.min_nodes());
        match (&self.cfg.sampling, &self.state.selected) {
            (None, _) => Participation {
                quorum,
                min_nodes,
                sample_size: 0,
                selected: Vec::new(),
            },
            (Some(s), selected) => Participation {
                quorum,
                min_nodes,
                sample_size: selected.as_ref().map_or_else(
                    || s.size(self.state.registered.len()).unwrap_or(s.min_fit),
                    |d| d.len().max(1),
                ),
                selected: selected.iter().flatten().cloned().collect(),
            },
        }
    }

    /// Updates at which the open round closes early.
    fn quorum(&self) -> usize {
        match &self.state.selected {
            Some(d) if self.cfg.sampling.is_some() => self.cfg.quorum.min(d.len()).max(1),
            _ => self.cfg.quorum,
        }
    }

    /// Updates needed to aggregate at the deadline.
    fn min_nodes(&self) -> usize {
        match &self.state.selected {
            Some(d) if self.cfg.sampling.is_some() => self.cfg.min_nodes.min(d.len()).max(1),
            _ => self.cfg.min_nodes,
        }
    }

    /// Draws the open round's nodes (client sampling): keeps those already accepted, fills the
    /// rest from the other registered nodes in a seeded order. Returns whether a draw was made.
    fn draw(&mut self) -> bool {
        let Some(sampling) = self.cfg.sampling else {
            self.state.selected = None;
            return false;
        };
        let Some(size) = sampling.size(self.state.registered.len()) else {
            self.state.selected = None;
            return false;
        };
        let kept: std::collections::BTreeSet<String> =
            self.pending.iter().map(|p| p.meta.node.clone()).collect();
        let mut others: Vec<&String> = self
            .state
            .registered
            .iter()
            .filter(|n| !kept.contains(*n))
            .collect();
        let seed = self.state.run_seed
            ^ self.state.round.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ u64::from(self.state.extensions).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        others.shuffle(&mut rng);
        let mut drawn = kept;
        let want = size.saturating_sub(drawn.len());
        drawn.extend(others.into_iter().take(want).cloned());
        tracing::info!(
            round = self.state.round,
            drawn = drawn.len(),
            registered = self.state.registered.len(),
            "nodes drawn for the round"
        );
        self.state.selected = Some(drawn);
        true
    }

    /// Marks nodes as revoked without emitting actions (the revocation list read at start).
    pub fn set_revoked(&mut self, nodes: impl IntoIterator<Item = String>) {
        self.revoked = nodes.into_iter().collect();
    }

    /// The checks that need no payload, in refusal order: identity, round, duplicate, replay,
    /// size. The service runs them on the header before receiving any chunk.
    pub fn admit(&self, node: &str, round: u64, sha256: &str, len: u64) -> Result<(), Reject> {
        if self.revoked.contains(node) {
            return Err(Reject::Revoked { node: node.into() });
        }
        if !self.state.registered.contains(node) {
            return Err(Reject::UnknownNode { node: node.into() });
        }
        let current = self.state.round;
        if round < current {
            return Err(Reject::StaleRound {
                got: round,
                current,
            });
        }
        if round > current {
            return Err(Reject::FutureRound {
                got: round,
                current,
            });
        }
        if self.cfg.sampling.is_some()
            && !self
                .state
                .selected
                .as_ref()
                .is_some_and(|s| s.contains(node))
        {
            return Err(Reject::NotSelected {
                node: node.into(),
                round,
            });
        }
        if self.pending.iter().any(|p| p.meta.node == node) {
            return Err(Reject::Duplicate {
                node: node.into(),
                round,
            });
        }
        if let Some(&first_round) = self.state.seen.get(sha256) {
            return Err(Reject::Replayed {
                sha256: sha256.into(),
                first_round,
            });
        }
        if len > self.cfg.max_payload_bytes {
            return Err(Reject::Oversized {
                len,
                limit: self.cfg.max_payload_bytes,
            });
        }
        Ok(())
    }

    /// Feeds one event at time `now_ms`; deadlines up to `now_ms` are handled first.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        self.check_deadline(now_ms, &mut out);
        match event {
            Event::Tick => {}
            Event::Register {
                node,
                base_model_hash,
            } => self.register(now_ms, node, base_model_hash, &mut out),
            Event::Submit(s) => self.submit(now_ms, s, &mut out),
            Event::NodeRevoked { node } => self.revoke(node, &mut out),
        }
        out
    }

    fn register(&mut self, now_ms: u64, node: String, hash: String, out: &mut Vec<Action>) {
        if self.revoked.contains(&node) {
            out.push(Action::Rejected {
                reason: Reject::Revoked { node: node.clone() },
                node,
            });
        } else if hash != self.cfg.base_model_hash {
            // A node that changed its base model is no longer a member.
            if self.state.registered.remove(&node) {
                out.push(Action::Persist);
            }
            out.push(Action::Rejected {
                reason: Reject::BaseModelMismatch {
                    expected: self.cfg.base_model_hash.clone(),
                    got: hash,
                },
                node,
            });
        } else {
            let new = self.state.registered.insert(node.clone());
            if new {
                out.push(Action::Persist);
            }
            out.push(Action::Registered { node });
            // A round opened before enough nodes were registered is drawn now; its nodes get a
            // whole round from this moment.
            if self.cfg.sampling.is_some() && self.state.selected.is_none() && self.draw() {
                self.state.deadline_ms = now_ms.saturating_add(self.cfg.round_ms);
                out.push(Action::Persist);
                out.push(Action::Announce {
                    round: self.state.round,
                    deadline_ms: self.state.deadline_ms,
                    extended: false,
                });
            }
        }
    }

    fn submit(&mut self, now_ms: u64, s: Submission, out: &mut Vec<Action>) {
        let node = s.node.clone();
        match self.validate(s) {
            Err(reason) => out.push(Action::Rejected { node, reason }),
            Ok((meta, delta)) => {
                let meta = AcceptedMeta {
                    accepted_at_ms: now_ms,
                    ..meta
                };
                self.state
                    .seen
                    .insert(meta.payload_sha256.clone(), self.state.round);
                self.state.accepted.push(meta.clone());
                out.push(Action::Accepted {
                    node,
                    round: self.state.round,
                    payload_sha256: meta.payload_sha256.clone(),
                });
                self.pending.push(Pending { meta, delta });
                out.push(Action::Persist);
                if self.pending.len() >= self.quorum() {
                    self.close(now_ms, out);
                }
            }
        }
    }

    fn validate(&self, s: Submission) -> Result<(AcceptedMeta, Delta), Reject> {
        self.admit(&s.node, s.round, &s.payload_sha256, s.payload_len)?;
        let delta = s.decoded.map_err(|e| Reject::from_codec(&e))?;
        self.global
            .check_same_layout(&delta)
            .map_err(|e| Reject::Malformed {
                reason: format!("layout differs from the global adapter: {e}"),
            })?;
        if !delta.all_finite() {
            return Err(Reject::NonFinite {
                detail: "decoded delta holds NaN or infinity".into(),
            });
        }
        let delta = self.global.aligned(&delta).map_err(|e| Reject::Malformed {
            reason: e.to_string(),
        })?;
        Ok((
            AcceptedMeta {
                node: s.node,
                samples: s.samples,
                band_metrics: s.band_metrics,
                payload_sha256: s.payload_sha256,
                payload_len: s.payload_len,
                accepted_at_ms: 0,
            },
            delta,
        ))
    }

    fn revoke(&mut self, node: String, out: &mut Vec<Action>) {
        self.revoked.insert(node.clone());
        let before = self.pending.len();
        self.pending.retain(|p| p.meta.node != node);
        self.state.accepted.retain(|m| m.node != node);
        let registered = self.state.registered.remove(&node);
        if self.pending.len() != before {
            out.push(Action::Dropped {
                node,
                round: self.state.round,
            });
        }
        if registered || self.pending.len() != before {
            out.push(Action::Persist);
        }
    }

    fn check_deadline(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if now_ms < self.state.deadline_ms && self.pending.len() < self.quorum() {
            return;
        }
        if self.pending.len() >= self.min_nodes() {
            self.close(now_ms, out);
        } else if now_ms >= self.state.deadline_ms {
            self.state.deadline_ms = now_ms.saturating_add(self.cfg.round_ms);
            self.state.extensions += 1;
            // Drawn nodes that never answered are replaced (the accepted ones stay).
            self.draw();
            tracing::warn!(
                round = self.state.round,
                accepted = self.pending.len(),
                min_nodes = self.min_nodes(),
                "too few updates at the deadline; round extended"
            );
            out.push(Action::Persist);
            out.push(Action::Announce {
                round: self.state.round,
                deadline_ms: self.state.deadline_ms,
                extended: true,
            });
        }
    }

    fn close(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let round = self.state.round;
        let inputs: Vec<(&AcceptedMeta, &Delta)> =
            self.pending.iter().map(|p| (&p.meta, &p.delta)).collect();
        // Central DP runs at this round's clip bound (the adapted one, when it adapts).
        let dp = self.cfg.central_dp.map(|d| super::dp::CentralDp {
            clip: self.state.dp_clip.unwrap_or(d.clip),
            ..d
        });
        let (new_global, mut report) = close_round(
            round,
            &self.global,
            &inputs,
            &self.cfg.daf,
            dp.as_ref(),
            &self.cfg.server_opt,
            &mut self.server_state,
            self.state.opened_at_ms,
            now_ms,
        );
        if let Some(g) = new_global {
            self.global = g;
            if let Some(dp) = dp.filter(|d| d.adaptive.is_some()) {
                let norms: Vec<f64> = self.pending.iter().map(|p| p.delta.l2_norm()).collect();
                self.state.dp_clip = Some(dp.next_clip(round, &norms));
            }
        }
        if self.cfg.sampling.is_some() {
            report.selected = Some(self.state.selected.iter().flatten().cloned().collect());
        }
        self.pending.clear();
        self.state.accepted.clear();
        self.state.round = round + 1;
        self.state.opened_at_ms = now_ms;
        self.state.deadline_ms = now_ms.saturating_add(self.cfg.round_ms);
        self.state.extensions = 0;
        self.draw();
        let oldest = self.state.round.saturating_sub(REPLAY_WINDOW_ROUNDS);
        self.state.seen.retain(|_, r| *r >= oldest);
        out.push(Action::StoreGlobal {
            round: self.state.round,
        });
        out.push(Action::Persist);
        out.push(Action::DiscardUpdates { round });
        out.push(Action::RoundClosed(report));
        out.push(Action::Announce {
            round: self.state.round,
            deadline_ms: self.state.deadline_ms,
            extended: false,
        });
    }
}
