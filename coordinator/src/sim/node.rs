//! A simulated node: the real node runtime (`ruvdllm_node::daemon::Runtime`) with two thin
//! wrappers that observe it without changing what it does.
//!
//! * [`SimTrainer`] wraps the real [`TaloraTrainer`]. An honest node trains and (with local DP)
//!   clips and noises its update; it posts the update on the attackers' [`Board`]. A
//!   model-poisoning attacker does not train: it waits for the round's honest updates and submits
//!   its row of the attack. A label-flip attacker trains honestly on corrupted data.
//! * [`SimClient`] wraps the real client (gRPC or libp2p): it records when the global adapter arrived and how
//!   the coordinator answered the upload, snapshots the node's socket counters when its round
//!   ends, and releases each round announcement only once the orchestrator opened the gate for it
//!   (so the held-out evaluation of round r never competes with round r + 1 for the CPU, and no
//!   node starts a round past the last one).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ruvdllm::attack::Attack;
use ruvdllm::delta::Delta;
use ruvdllm_node::daemon::any_client::SocketBytes;
use ruvdllm_node::daemon::client::{AnnouncementStream, SubmitAck};
use ruvdllm_node::daemon::{
    ClientError, CoordinatorClient, LocalTrainer, LocalUpdate, RoundInfo, TaloraTrainer, TrainError,
};
use ruvdllm_proto::{RejectKind, UpdateHeader};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::board::{Board, Posted, attack_update, attacker_claims};
use super::events::{Bytes, Recorder};

/// What a node does each round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Role {
    Honest,
    /// Model poisoning: attacker `index` of `f`.
    Attacker {
        index: usize,
        f: usize,
        attack: Attack,
    },
    /// Trains honestly on label-flipped data (the data was corrupted when it was built).
    LabelFlip,
}

impl Role {
    pub fn is_attacker(&self) -> bool {
        !matches!(self, Role::Honest)
    }
}

/// The simulated node's trainer.
pub struct SimTrainer {
    pub node: usize,
    pub inner: TaloraTrainer,
    pub role: Role,
    pub board: Arc<Board>,
    pub recorder: Arc<Recorder>,
    /// Keys the attackers' randomness.
    pub seed: u64,
    /// How long an attacker waits for the honest updates.
    pub timeout: Duration,
}

impl LocalTrainer for SimTrainer {
    fn train_round(&mut self, ctx: &RoundInfo, global: &Delta) -> Result<LocalUpdate, TrainError> {
        let round = ctx.round;
        self.recorder
            .update(self.node, round, |e| e.train_start = Some(Instant::now()));
        let (update, loss) = match self.role {
            Role::Honest | Role::LabelFlip => {
                // Local DP, if configured, is applied inside (the node daemon's own path).
                let (update, stats) = self.inner.train(ctx, global)?;
                if self.role == Role::Honest {
                    self.board.post(
                        round,
                        self.node,
                        Posted {
                            flat: update.delta.flatten(),
                            samples: update.samples,
                            band_metrics: update.band_metrics.clone(),
                        },
                    );
                }
                (update, stats.train_loss())
            }
            Role::Attacker { index, f, attack } => {
                let honest = self
                    .board
                    .wait_honest(round, self.timeout)
                    .map_err(|e| TrainError(format!("attacker: {e}")))?;
                let flat = attack_update(&attack, &honest, index, f, self.seed ^ round)
                    .map_err(|e| TrainError(format!("attacker: {e}")))?;
                let delta = global
                    .with_flat(&flat)
                    .map_err(|e| TrainError(format!("attacker: {e}")))?;
                let (samples, band_metrics) = attacker_claims(&honest);
                (
                    LocalUpdate {
                        delta,
                        samples,
                        band_metrics,
                        train_loss: None,
                    },
                    f64::NAN,
                )
            }
        };
        self.recorder.update(self.node, round, |e| {
            e.train_end = Some(Instant::now());
            e.train_loss = loss;
        });
        Ok(update)
    }
}

/// The simulated node's client: the real client, observed and gated.
pub struct SimClient<C> {
    pub inner: C,
    pub node: usize,
    pub counters: SocketBytes,
    pub recorder: Arc<Recorder>,
    /// The highest round the orchestrator has released.
    pub gate: watch::Receiver<u64>,
    pub last_round: u64,
    /// The round of the last announcement handed to the runtime.
    pub current: Arc<AtomicU64>,
}

impl<C> SimClient<C> {
    fn bytes(&self) -> Bytes {
        Bytes {
            up: self.counters.sent(),
            down: self.counters.received(),
        }
    }
}

impl<C: CoordinatorClient> CoordinatorClient for SimClient<C> {
    async fn register(&self, node_id: &str, base_model_hash: &str) -> Result<u64, ClientError> {
        self.inner.register(node_id, base_model_hash).await
    }

    async fn watch_rounds(&self) -> Result<AnnouncementStream, ClientError> {
        let mut inner = self.inner.watch_rounds().await?;
        let (tx, rx) = mpsc::channel(4);
        let mut gate = self.gate.clone();
        let last = self.last_round;
        let current = self.current.clone();
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    _ = tx.closed() => return,
                    item = inner.next() => item,
                };
                let Some(item) = item else { return };
                if let Ok(a) = &item {
                    if a.round > last {
                        continue;
                    }
                    let round = a.round;
                    tokio::select! {
                        _ = tx.closed() => return,
                        r = gate.wait_for(|&g| g >= round) => if r.is_err() { return },
                    }
                    current.store(round, Ordering::SeqCst);
                }
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn fetch_adapter(&self, hash: &str) -> Result<Vec<u8>, ClientError> {
        let bytes = self.inner.fetch_adapter(hash).await?;
        let round = self.current.load(Ordering::SeqCst);
        let len = bytes.len() as u64;
        self.recorder.update(self.node, round, |e| {
            e.fetched_at = Some(Instant::now());
            e.codec_down = len;
        });
        Ok(bytes)
    }

    async fn submit_update(
        &self,
        header: UpdateHeader,
        payload: Arc<Vec<u8>>,
    ) -> Result<SubmitAck, ClientError> {
        let round = header.round;
        let len = payload.len() as u64;
        self.recorder.update(self.node, round, |e| {
            e.submit_start.get_or_insert_with(Instant::now);
            e.codec_up = len;
        });
        let result = self.inner.submit_update(header, payload).await;
        match &result {
            Ok(_) => self.recorder.finish(self.node, round, None, self.bytes()),
            Err(ClientError::Rejected { kind, .. }) if *kind == RejectKind::Duplicate => {
                self.recorder.finish(self.node, round, None, self.bytes())
            }
            Err(ClientError::Rejected { kind, .. }) => self.recorder.finish(
                self.node,
                round,
                Some(kind.code().to_string()),
                self.bytes(),
            ),
            // Transient: the runtime retries with the same payload.
            Err(_) => {}
        }
        result
    }

    async fn heartbeat(&self, round: u64) -> Result<u64, ClientError> {
        self.inner.heartbeat(round).await
    }
}
