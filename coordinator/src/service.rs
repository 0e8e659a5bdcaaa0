//! The coordinator service: the round machine plus its I/O, independent of any transport.
//!
//! Transports (gRPC in [`crate::grpc`], libp2p later) authenticate the caller, turn wire messages
//! into domain types and call these methods with an [`Identity`]; everything else — revocation,
//! the round rules, durability, announcements, metrics — happens here once. The machine sits
//! behind a mutex that is never held across an `.await`; payload decoding (the only heavy step
//! besides aggregation) runs on the blocking pool outside it. Actions are executed in the order
//! the machine returns them, which is what makes the store's crash-ordering argument hold: an
//! accepted payload is on disk before the state that lists it, and both before the caller hears
//! "accepted".

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use ruvdllm::aggregate::ServerState;
use ruvdllm::codec::{self, EncodeOptions, Mode, Values};
use ruvdllm::delta::Delta;
use ruvdllm_proto::{Announcement, ChunkError, ConvertError, UpdateHeader, sha256_hex};
use tokio::sync::watch;

use crate::auth::{AuthError, Identity, RevocationList};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::round::{self, Action, Event, Machine, Reject, Submission};
use crate::store::{Store, StoreError};

/// Milliseconds since the Unix epoch; injected so tests can control time.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Everything a service call can fail with; transports map it to their status codes in one place.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("refused: {0}")]
    Reject(#[from] Reject),
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    #[error("no global adapter with hash {hash}")]
    NotFound { hash: String },
    #[error("upload: {0}")]
    Chunk(#[from] ChunkError),
    #[error("message: {0}")]
    Convert(#[from] ConvertError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

/// A global adapter as served: codec-encoded (f32, lossless) and hashed.
#[derive(Debug)]
pub struct GlobalBlob {
    pub round: u64,
    pub hash: String,
    pub bytes: Vec<u8>,
}

impl GlobalBlob {
    pub fn encode(round: u64, global: &Delta) -> Result<Self, ServiceError> {
        let bytes = codec::encode(global, &EncodeOptions::new(Mode::dense(Values::F32)))
            .map_err(|e| ServiceError::Internal(format!("encoding the global adapter: {e}")))?;
        Ok(Self {
            round,
            hash: sha256_hex(&bytes),
            bytes,
        })
    }
}

/// What a successful submission returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitAck {
    pub round: u64,
    pub accepted: u32,
}

/// A closed round as observers see it: the machine's report, how long the closing event took
/// (aggregation and the new global), and the global adapter it produced.
#[derive(Debug, Clone)]
pub struct ClosedRound {
    pub report: round::CloseReport,
    pub aggregate: std::time::Duration,
    pub global: Arc<Delta>,
    /// When the close was executed (monotonic).
    pub closed_at: std::time::Instant,
}

/// Closed rounds kept for observers.
pub const CLOSED_HISTORY: usize = 64;

struct Inner {
    machine: Machine,
    /// Time the machine spent on the event whose actions are being executed.
    handled_in: std::time::Duration,
    /// The current global and the previous one (nodes may still be fetching it).
    blobs: VecDeque<Arc<GlobalBlob>>,
}

/// The transport-independent coordinator.
pub struct Service {
    inner: Mutex<Inner>,
    store: Store,
    revocation: RevocationList,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    announce: watch::Sender<Announcement>,
    closed: watch::Sender<VecDeque<Arc<ClosedRound>>>,
    limits: codec::Limits,
    layout: Vec<(String, Vec<usize>)>,
}

fn decode_limits(global: &Delta, max_payload: u64) -> codec::Limits {
    let values = global.numel() as u64;
    codec::Limits {
        max_payload_bytes: max_payload,
        max_decoded_bytes: values
            .saturating_mul(4)
            .saturating_add(max_payload)
            .saturating_add(1 << 20),
        max_values: values,
        max_tensors: u32::try_from(global.tensors.len()).unwrap_or(u32::MAX),
        max_name_len: global
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(0),
        max_ndim: codec::MAX_NDIM,
    }
}

impl Service {
    /// Opens the state folder: resumes the persisted round, or starts round 1 from the initial
    /// adapter.
    pub fn open(
        settings: &Settings,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, ServiceError> {
        let store = Store::new(&settings.state_dir);
        let revocation = RevocationList::new(&settings.tls.revocation_list);
        let cfg = settings.round.clone();
        let initial = &settings.initial_adapter;
        let limits = decode_limits(initial, cfg.max_payload_bytes);
        let layout = initial.layout();
        let now = clock.now_ms();
        let mut machine = match store.load_state()? {
            None => {
                let m = Machine::new(cfg, initial.clone(), now);
                store.save_global(m.round(), m.global())?;
                store.save_state(m.state())?;
                tracing::info!(state_dir = %store.dir().display(), "new run: round 1 opened");
                m
            }
            Some(state) => Self::resume(&store, cfg, state, initial, &limits)?,
        };
        machine.set_revoked(revocation.current());
        let blob = Arc::new(GlobalBlob::encode(machine.round(), machine.global())?);
        let ann = announcement(
            &machine,
            machine.round(),
            blob.hash.clone(),
            machine.deadline_ms(),
        );
        metrics.current_round.set(machine.round() as i64);
        metrics
            .drawn_nodes
            .set(machine.participation().selected.len() as i64);
        let (announce, _) = watch::channel(ann);
        Ok(Arc::new(Self {
            inner: Mutex::new(Inner {
                machine,
                handled_in: std::time::Duration::ZERO,
                blobs: VecDeque::from([blob]),
            }),
            store,
            revocation,
            metrics,
            clock,
            announce,
            closed: watch::channel(VecDeque::new()).0,
            limits,
            layout,
        }))
    }

    fn resume(
        store: &Store,
        cfg: round::Config,
        mut state: round::RoundState,
        initial: &Delta,
        limits: &codec::Limits,
    ) -> Result<Machine, ServiceError> {
        if state.run_seed != cfg.run_seed || state.base_model_hash != cfg.base_model_hash {
            return Err(ServiceError::Internal(format!(
                "state folder {} belongs to run seed {} / base model {}, config says {} / {}",
                store.dir().display(),
                state.run_seed,
                state.base_model_hash,
                cfg.run_seed,
                cfg.base_model_hash
            )));
        }
        let global = initial
            .aligned(&store.load_global(state.round)?)
            .map_err(|e| {
                ServiceError::Internal(format!(
                    "stored global adapter does not match initial_adapter's layout: {e}"
                ))
            })?;
        let server_state = Self::resume_server_state(store, &cfg, state.round, initial)?;
        let mut deltas = Vec::new();
        let mut kept = Vec::new();
        let layout = initial.layout();
        for meta in state.accepted.drain(..) {
            let loaded = store
                .load_update(state.round, &meta.node)
                .and_then(|bytes| {
                    if sha256_hex(&bytes) != meta.payload_sha256 {
                        return Err(StoreError::Corrupt {
                            path: store.update_path(state.round, &meta.node),
                            reason: "payload hash differs from the state".into(),
                        });
                    }
                    codec::decode_expecting(&bytes, limits, &layout).map_err(|e| {
                        StoreError::Corrupt {
                            path: store.update_path(state.round, &meta.node),
                            reason: e.to_string(),
                        }
                    })
                });
            match loaded {
                Ok(d) => {
                    let d = global
                        .aligned(&d)
                        .map_err(|e| ServiceError::Internal(e.to_string()))?;
                    deltas.push(d);
                    kept.push(meta);
                }
                Err(e) => {
                    tracing::error!(node = %meta.node, error = %e, "dropping an accepted update that cannot be restored");
                }
            }
        }
        state.accepted = kept;
        tracing::info!(
            round = state.round,
            accepted = state.accepted.len(),
            "resumed round from the state folder"
        );
        let m = Machine::restore(cfg, state, global, server_state, deltas);
        store.save_state(m.state())?;
        Ok(m)
    }

    /// The server optimizer's moments stored with the global of `round`. Moments written by
    /// another optimizer than the configured one (the config changed between runs) are not
    /// reused: the optimizer starts from zero moments, as Flower's strategies do, and says so.
    fn resume_server_state(
        store: &Store,
        cfg: &round::Config,
        round: u64,
        initial: &Delta,
    ) -> Result<ServerState, ServiceError> {
        let opt = &cfg.server_opt;
        if !opt.is_stateful() {
            return Ok(ServerState::default());
        }
        let Some((name, stored)) = store.load_server_state(round)? else {
            if round > 1 {
                tracing::warn!(
                    round,
                    server_optimizer = opt.name(),
                    "no stored server-optimizer moments; starting from zero moments"
                );
            }
            return Ok(ServerState::default());
        };
        if name != opt.name() {
            tracing::warn!(
                round,
                stored = %name,
                configured = %opt,
                "stored server-optimizer moments belong to another optimizer; starting afresh"
            );
            return Ok(ServerState::default());
        }
        let align = |d: Option<Delta>| -> Result<Option<Delta>, ServiceError> {
            d.map(|d| {
                initial.aligned(&d).map_err(|e| {
                    ServiceError::Internal(format!(
                        "{}: server-optimizer moments do not match initial_adapter's layout: {e}",
                        store.server_state_path(round).display()
                    ))
                })
            })
            .transpose()
        };
        Ok(ServerState {
            m: align(stored.m)?,
            v: align(stored.v)?,
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest announcement.
    pub fn announcement(&self) -> Announcement {
        self.announce.borrow().clone()
    }

    /// Announcements as they change (the current one first).
    pub fn subscribe(&self) -> watch::Receiver<Announcement> {
        self.announce.subscribe()
    }

    /// The most recent closed rounds (up to [`CLOSED_HISTORY`], oldest first), updated as rounds
    /// close: a simulation reads aggregation time, refusals and the new global from here.
    pub fn closed_rounds(&self) -> watch::Receiver<VecDeque<Arc<ClosedRound>>> {
        self.closed.subscribe()
    }

    /// Feeds one event to the machine, timing it.
    fn handle(&self, g: &mut Inner, event: Event) -> Vec<Action> {
        let start = std::time::Instant::now();
        let actions = g.machine.handle(self.clock.now_ms(), event);
        g.handled_in = start.elapsed();
        actions
    }

    /// Refuses revoked callers (and drops their pending update), records last-seen.
    pub fn authorize(&self, id: &Identity) -> Result<(), ServiceError> {
        let now = self.clock.now_ms();
        self.metrics.seen(&id.node_id, (now / 1000) as i64);
        if self.revocation.is_revoked(&id.node_id) {
            let mut g = self.lock();
            let actions = self.handle(
                &mut g,
                Event::NodeRevoked {
                    node: id.node_id.clone(),
                },
            );
            self.execute(&mut g, actions, None)?;
            self.metrics
                .reject(ruvdllm_proto::RejectKind::Revoked.code());
            return Err(Reject::Revoked {
                node: id.node_id.clone(),
            }
            .into());
        }
        Ok(())
    }

    /// Registers the caller; returns the open round.
    pub fn register(
        &self,
        id: &Identity,
        node_id: &str,
        base_model_hash: &str,
    ) -> Result<u64, ServiceError> {
        self.authorize(id)?;
        if node_id != id.node_id {
            self.metrics
                .reject(ruvdllm_proto::RejectKind::IdentityMismatch.code());
            return Err(Reject::IdentityMismatch {
                identity: id.node_id.clone(),
                claimed: node_id.to_string(),
            }
            .into());
        }
        let mut g = self.lock();
        let actions = self.handle(
            &mut g,
            Event::Register {
                node: node_id.to_string(),
                base_model_hash: base_model_hash.to_string(),
            },
        );
        if let Some(reason) = self.execute(&mut g, actions, None)? {
            tracing::info!(node_id = %id.node_id, reason = %reason, "registration refused");
            return Err(reason.into());
        }
        Ok(g.machine.round())
    }

    /// The encoded global adapter with this hash (current or previous round).
    pub fn fetch(&self, id: &Identity, hash: &str) -> Result<Arc<GlobalBlob>, ServiceError> {
        self.authorize(id)?;
        let g = self.lock();
        g.blobs
            .iter()
            .find(|b| b.hash == hash)
            .cloned()
            .ok_or_else(|| ServiceError::NotFound {
                hash: hash.to_string(),
            })
    }

    /// Checks a header before any payload byte is received.
    pub fn admit(&self, id: &Identity, h: &UpdateHeader) -> Result<(), ServiceError> {
        self.authorize(id)?;
        let mut g = self.lock();
        let actions = self.handle(&mut g, Event::Tick);
        self.execute(&mut g, actions, None)?;
        g.machine
            .admit(&id.node_id, h.round, &h.payload_sha256, h.payload_size)
            .map_err(|r| {
                self.metrics.reject(r.kind().code());
                tracing::info!(node_id = %id.node_id, round = h.round, reason = %r, "update refused");
                ServiceError::Reject(r)
            })
    }

    /// Records a refusal detected by a transport (bad chunking, bad message).
    pub fn count_malformed(&self) {
        self.metrics
            .reject(ruvdllm_proto::RejectKind::Malformed.code());
    }

    /// Decodes and submits a complete payload whose size and hash were verified against `h`.
    pub async fn submit(
        &self,
        id: &Identity,
        h: UpdateHeader,
        payload: Vec<u8>,
    ) -> Result<SubmitAck, ServiceError> {
        self.authorize(id)?;
        if payload.len() as u64 != h.payload_size || sha256_hex(&payload) != h.payload_sha256 {
            self.count_malformed();
            return Err(ServiceError::Protocol(
                "payload does not match its header".into(),
            ));
        }
        let limits = self.limits.clone();
        let layout = self.layout.clone();
        let (decoded, payload) = tokio::task::spawn_blocking(move || {
            let d = codec::decode_expecting(&payload, &limits, &layout);
            (d, payload)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("decode task: {e}")))?;
        let mut g = self.lock();
        let sub = Submission {
            node: id.node_id.clone(),
            round: h.round,
            samples: h.samples,
            band_metrics: h.band_metrics,
            payload_sha256: h.payload_sha256,
            payload_len: h.payload_size,
            decoded,
        };
        let actions = self.handle(&mut g, Event::Submit(sub));
        let accepted = actions
            .iter()
            .any(|a| matches!(a, Action::Accepted { node, .. } if *node == id.node_id));
        let round = h.round;
        let count = g.machine.accepted_count() as u32;
        if let Some(reason) = self.execute(&mut g, actions, Some(&payload))? {
            tracing::info!(node_id = %id.node_id, round, reason = %reason, "update refused");
            return Err(reason.into());
        }
        if !accepted {
            return Err(ServiceError::Internal(
                "submission neither accepted nor refused".into(),
            ));
        }
        tracing::info!(node_id = %id.node_id, round, "update accepted");
        Ok(SubmitAck {
            round,
            accepted: count,
        })
    }

    /// Returns (open round, server time ms).
    pub fn heartbeat(&self, id: &Identity) -> Result<(u64, u64), ServiceError> {
        self.authorize(id)?;
        Ok((self.lock().machine.round(), self.clock.now_ms()))
    }

    /// Lets time pass: closes or extends a round whose deadline is over.
    pub fn tick(&self) -> Result<(), ServiceError> {
        let mut g = self.lock();
        let actions = self.handle(&mut g, Event::Tick);
        self.execute(&mut g, actions, None).map(|_| ())
    }

    /// Runs the machine's actions in order; returns the first refusal.
    fn execute(
        &self,
        g: &mut Inner,
        actions: Vec<Action>,
        payload: Option<&[u8]>,
    ) -> Result<Option<Reject>, ServiceError> {
        let mut refused = None;
        for a in actions {
            match a {
                Action::Registered { node } => {
                    tracing::info!(node_id = %node, round = g.machine.round(), "node registered");
                }
                Action::Accepted { node, round, .. } => {
                    let bytes = payload.ok_or_else(|| {
                        ServiceError::Internal("accepted without a payload".into())
                    })?;
                    self.store.save_update(round, &node, bytes)?;
                    self.metrics.accepted.inc();
                }
                Action::Rejected { node, reason } => {
                    tracing::debug!(node_id = %node, reason = %reason, "refused");
                    self.metrics.reject(reason.kind().code());
                    refused.get_or_insert(reason);
                }
                Action::Dropped { node, round } => {
                    tracing::warn!(node_id = %node, round, "revoked node's update dropped");
                }
                Action::StoreGlobal { round } => {
                    self.store.save_global(round, g.machine.global())?;
                    self.store.save_server_state(
                        round,
                        &g.machine.config().server_opt,
                        g.machine.server_state(),
                    )?;
                    let blob = Arc::new(GlobalBlob::encode(round, g.machine.global())?);
                    g.blobs.push_front(blob);
                    g.blobs.truncate(2);
                }
                Action::Persist => self.store.save_state(g.machine.state())?,
                Action::DiscardUpdates { round } => {
                    if let Err(e) = self.store.discard_updates(round) {
                        tracing::warn!(round, error = %e, "removing a closed round's payloads");
                    }
                }
                Action::RoundClosed(report) => {
                    self.metrics.rounds.inc();
                    if report.failed.is_some() {
                        self.metrics.rounds_failed.inc();
                    }
                    let secs = report.closed_at_ms.saturating_sub(report.opened_at_ms) as f64 / 1e3;
                    self.metrics.round_latency.observe(secs);
                    tracing::info!(
                        round = report.round,
                        nodes = ?report.nodes,
                        failed = ?report.failed,
                        seconds = secs,
                        "round closed"
                    );
                    if let Some(dp) = &g.machine.config().central_dp {
                        let next = g.machine.state().dp_clip.unwrap_or(dp.clip);
                        if let Some(e) = dp.epsilon(report.round) {
                            self.metrics.dp_epsilon.set(e);
                        }
                        // Every round up to this one released one noisy aggregate.
                        tracing::info!(
                            round = report.round,
                            epsilon = dp
                                .epsilon(report.round)
                                .map_or("none (no noise)".into(), |e| format!("{e:.3}")),
                            delta = dp.delta,
                            next_clip = next,
                            noise_multiplier = dp.noise_multiplier,
                            expected_nodes = dp.expected_nodes,
                            "central DP"
                        );
                    }
                    let closed = Arc::new(ClosedRound {
                        report,
                        aggregate: g.handled_in,
                        global: Arc::new(g.machine.global().clone()),
                        closed_at: std::time::Instant::now(),
                    });
                    self.closed.send_modify(|h| {
                        h.push_back(closed);
                        while h.len() > CLOSED_HISTORY {
                            h.pop_front();
                        }
                    });
                }
                Action::Announce {
                    round,
                    deadline_ms,
                    extended,
                } => {
                    let hash = g.blobs.front().map(|b| b.hash.clone()).unwrap_or_default();
                    self.metrics.current_round.set(round as i64);
                    self.metrics
                        .drawn_nodes
                        .set(g.machine.participation().selected.len() as i64);
                    if let Some(dp) = &g.machine.config().central_dp {
                        self.metrics
                            .dp_clip
                            .set(g.machine.state().dp_clip.unwrap_or(dp.clip));
                    }
                    tracing::info!(round, deadline_ms, extended, "round announced");
                    self.announce
                        .send_replace(announcement(&g.machine, round, hash, deadline_ms));
                }
            }
        }
        Ok(refused)
    }
}

/// The announcement of round `round` (the machine's open round) with its participation.
fn announcement(
    machine: &Machine,
    round: u64,
    global_hash: String,
    deadline_ms: u64,
) -> Announcement {
    let p = machine.participation();
    Announcement {
        round,
        global_hash,
        run_seed: machine.config().run_seed,
        deadline_unix_ms: deadline_ms,
        quorum: p.quorum as u32,
        min_nodes: p.min_nodes as u32,
        sample_size: p.sample_size as u32,
        selected: p.selected,
    }
}
