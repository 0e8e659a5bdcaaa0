//! The node runtime: one task that owns the trainer and the error-feedback state and drives the
//! round protocol through a [`CoordinatorClient`].
//!
//! Session: register → watch rounds → for each new round: fetch the global adapter (its SHA-256
//! must equal the announced hash) → train on a blocking thread → encode with the configured codec
//! mode plus error feedback → submit, retrying with backoff. Any transient failure ends the
//! session and a new one starts after a jittered, growing delay, which is how the node rides out
//! a coordinator restart. A round's payload is encoded once and resent unchanged on retries, so
//! error feedback is charged once; if the coordinator had already accepted it before crashing the
//! retry is refused as a duplicate, which the node takes as success.
//!
//! Beside the sessions a heartbeat task calls `heartbeat` every `Settings::heartbeat` for as long
//! as the runtime runs, so the coordinator's per-node last-seen metric keeps moving while the node
//! waits for a round or trains (when it sends nothing else); its failures are only logged, the
//! sessions notice a lost coordinator themselves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ruvdllm::codec::{self, EncodeOptions, ErrorFeedback};
use ruvdllm::delta::Delta;
use ruvdllm_proto::{Announcement, RejectKind, UpdateHeader, sha256_hex};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tracing::Instrument;

use super::any_client::SocketBytes;
use super::backoff::Backoff;
use super::client::{ClientError, CoordinatorClient};
use super::journal::{self, Journal};
use super::trainer::{LocalTrainer, RoundInfo, TrainError};

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: String,
    pub base_model_hash: String,
    pub encode: EncodeOptions,
    /// Largest global adapter accepted (encoded bytes).
    pub max_adapter_bytes: u64,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Time between heartbeats.
    pub heartbeat: Duration,
}

/// Failures that stop the runtime (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("the coordinator refused this node: {0}")]
    Refused(ClientError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("the trainer returned a delta whose layout differs from the global adapter: {0}")]
    Layout(ruvdllm::delta::DeltaError),
    #[error("encoding the update: {0}")]
    Encode(codec::Error),
}

/// What the runtime has done so far (for health checks and tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// The last round this node finished (submitted, or gave up on).
    pub last_round: u64,
    pub submitted: u64,
    pub last_error: Option<String>,
    /// The newest global adapter fetched, with its round.
    pub global_round: u64,
}

/// The latest global adapter a node fetched (B matrices), with what is needed to rebuild it.
#[derive(Debug, Clone)]
pub struct Global {
    pub round: u64,
    pub run_seed: u64,
    /// SHA-256 of the encoded adapter, as announced.
    pub hash: String,
    pub delta: Arc<Delta>,
}

pub type GlobalHandle = watch::Receiver<Option<Global>>;

enum SessionEnd {
    Retry(ClientError),
    Fatal(NodeError),
}

impl From<ClientError> for SessionEnd {
    fn from(e: ClientError) -> Self {
        SessionEnd::Retry(e)
    }
}

/// The runtime.
pub struct Runtime<C, T> {
    client: Arc<C>,
    trainer: Option<T>,
    settings: Settings,
    feedback: ErrorFeedback,
    status: watch::Sender<Status>,
    global: watch::Sender<Option<Global>>,
    journal: Option<(Journal, Option<SocketBytes>)>,
}

impl<C: CoordinatorClient, T: LocalTrainer> Runtime<C, T> {
    pub fn new(client: C, trainer: T, settings: Settings) -> Self {
        Self {
            client: Arc::new(client),
            trainer: Some(trainer),
            settings,
            feedback: ErrorFeedback::new(),
            status: watch::channel(Status::default()).0,
            global: watch::channel(None).0,
            journal: None,
        }
    }

    /// Appends a line to `journal` for every finished round, with the client's socket counters
    /// when given (see [`super::journal`]).
    pub fn with_journal(mut self, journal: Journal, socket: Option<SocketBytes>) -> Self {
        self.journal = Some((journal, socket));
        self
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    pub fn global(&self) -> GlobalHandle {
        self.global.subscribe()
    }

    /// Runs sessions until `shutdown` resolves or the coordinator refuses this node for good.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), NodeError> {
        let span = tracing::info_span!("node", node_id = %self.settings.node_id);
        let _heartbeat = AbortOnDrop(tokio::spawn(
            heartbeat(
                Arc::clone(&self.client),
                self.settings.heartbeat,
                self.status.subscribe(),
            )
            .instrument(span.clone()),
        ));
        let mut backoff = Backoff::new(self.settings.backoff_base, self.settings.backoff_max);
        tokio::pin!(shutdown);
        loop {
            let end = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                end = self.session(&mut backoff).instrument(span.clone()) => end,
            };
            let e = match end {
                SessionEnd::Fatal(e) => {
                    let _e = span.enter();
                    tracing::error!(error = %e, "stopping");
                    return Err(e);
                }
                SessionEnd::Retry(e) => e,
            };
            let delay = backoff.next_delay();
            {
                let _e = span.enter();
                tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "session ended; retrying");
            }
            self.status
                .send_modify(|s| s.last_error = Some(e.to_string()));
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn fatal_refusal(e: &ClientError) -> bool {
        matches!(
            e.reject_kind(),
            Some(
                RejectKind::Revoked
                    | RejectKind::BaseModelMismatch
                    | RejectKind::IdentityMismatch
                    | RejectKind::UnknownNode
            )
        )
    }

    async fn session(&mut self, backoff: &mut Backoff) -> SessionEnd {
        let s = &self.settings;
        let round = match self.client.register(&s.node_id, &s.base_model_hash).await {
            Ok(r) => r,
            Err(e) if Self::fatal_refusal(&e) => return SessionEnd::Fatal(NodeError::Refused(e)),
            Err(e) => return e.into(),
        };
        tracing::info!(round, "registered");
        let mut rounds = match self.client.watch_rounds().await {
            Ok(r) => r,
            Err(e) => return e.into(),
        };
        backoff.reset();
        while let Some(ann) = rounds.next().await {
            let ann = match ann {
                Ok(a) => a,
                Err(e) if Self::fatal_refusal(&e) => {
                    return SessionEnd::Fatal(NodeError::Refused(e));
                }
                Err(e) => return e.into(),
            };
            if ann.round <= self.status.borrow().last_round {
                continue;
            }
            if !ann.selects(&self.settings.node_id) {
                // Client sampling: another node trains this round. The round may be announced
                // again (drawn late, or re-drawn at an extension), so it is not marked done.
                tracing::info!(
                    round = ann.round,
                    sample_size = ann.sample_size,
                    drawn = ann.selected.len(),
                    "not drawn for this round; waiting for the next"
                );
                continue;
            }
            let span = tracing::info_span!("round", round = ann.round);
            if let Err(end) = self.round(&ann, backoff).instrument(span).await {
                return end;
            }
        }
        SessionEnd::Retry(ClientError::Unavailable("round stream ended".into()))
    }

    async fn round(&mut self, ann: &Announcement, backoff: &mut Backoff) -> Result<(), SessionEnd> {
        let mut entry = journal::Entry {
            round: ann.round,
            ..journal::Entry::default()
        };
        let bytes = self.client.fetch_adapter(&ann.global_hash).await?;
        let actual = sha256_hex(&bytes);
        if actual != ann.global_hash {
            return Err(ClientError::Protocol(format!(
                "global adapter hashes to {actual}, announced {}",
                ann.global_hash
            ))
            .into());
        }
        let limits = codec::Limits {
            max_payload_bytes: self.settings.max_adapter_bytes,
            ..codec::Limits::default()
        };
        let global = codec::decode(&bytes, &limits)
            .map_err(|e| ClientError::Protocol(format!("decoding the global adapter: {e}")))?;
        let global = Arc::new(global);
        self.global.send_replace(Some(Global {
            round: ann.round,
            run_seed: ann.run_seed,
            hash: ann.global_hash.clone(),
            delta: global.clone(),
        }));
        self.status.send_modify(|s| s.global_round = ann.round);
        entry.fetched_ms = journal::now_ms();
        entry.codec_down = bytes.len() as u64;

        let info = RoundInfo {
            round: ann.round,
            run_seed: ann.run_seed,
            global_hash: ann.global_hash.clone(),
        };
        let Some(mut trainer) = self.trainer.take() else {
            return Err(SessionEnd::Fatal(NodeError::Train(TrainError(
                "trainer lost after a failed training task".into(),
            ))));
        };
        let g = global.clone();
        entry.train_start_ms = journal::now_ms();
        let joined = tokio::task::spawn_blocking(move || {
            let r = trainer.train_round(&info, &g);
            (trainer, r)
        })
        .await;
        let (trainer, result) = match joined {
            Ok(x) => x,
            Err(e) => {
                return Err(SessionEnd::Fatal(NodeError::Train(TrainError(format!(
                    "training task panicked: {e}"
                )))));
            }
        };
        self.trainer = Some(trainer);
        entry.train_end_ms = journal::now_ms();
        let update = result.map_err(|e| SessionEnd::Fatal(e.into()))?;
        entry.train_loss = update.train_loss;
        global
            .check_same_layout(&update.delta)
            .map_err(|e| SessionEnd::Fatal(NodeError::Layout(e)))?;
        let payload = self
            .feedback
            .encode(&update.delta, &self.settings.encode)
            .map_err(|e| SessionEnd::Fatal(NodeError::Encode(e)))?;
        let payload = Arc::new(payload);
        let header = UpdateHeader {
            round: ann.round,
            samples: update.samples,
            band_metrics: update.band_metrics.into_iter().collect::<BTreeMap<_, _>>(),
            payload_size: payload.len() as u64,
            payload_sha256: sha256_hex(&payload),
        };
        tracing::info!(
            bytes = payload.len(),
            samples = header.samples,
            "submitting"
        );
        entry.codec_up = payload.len() as u64;
        entry.submit_start_ms = journal::now_ms();
        loop {
            match self
                .client
                .submit_update(header.clone(), payload.clone())
                .await
            {
                Ok(ack) => {
                    tracing::info!(accepted = ack.accepted, "update accepted");
                    self.finish(entry, true, None);
                    return Ok(());
                }
                Err(e) if e.reject_kind() == Some(RejectKind::Duplicate) => {
                    tracing::info!("coordinator already holds this round's update");
                    self.finish(entry, true, None);
                    return Ok(());
                }
                Err(e) if Self::fatal_refusal(&e) => {
                    return Err(SessionEnd::Fatal(NodeError::Refused(e)));
                }
                Err(e @ ClientError::Rejected { .. }) => {
                    tracing::warn!(error = %e, "update refused; skipping this round");
                    self.status
                        .send_modify(|s| s.last_error = Some(e.to_string()));
                    self.finish(entry, false, Some(e.to_string()));
                    return Ok(());
                }
                Err(e) if e.is_transient() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "submit failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn finish(&self, mut entry: journal::Entry, submitted: bool, refusal: Option<String>) {
        if let Some((journal, socket)) = &self.journal {
            entry.done_ms = journal::now_ms();
            entry.submitted = submitted;
            entry.refusal = refusal;
            entry.socket_up = socket.as_ref().map(SocketBytes::sent);
            entry.socket_down = socket.as_ref().map(SocketBytes::received);
            // The journal is a report: failing to write it must not stop the node.
            if let Err(e) = journal.append(&entry) {
                tracing::warn!(path = %journal.path().display(), error = %e, "journal not written");
            }
        }
        self.status.send_modify(|s| {
            s.last_round = entry.round;
            if submitted {
                s.submitted += 1;
            }
        });
    }
}

/// Aborts a task when dropped, so the heartbeat stops with the runtime however `run` returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends a heartbeat every `every` carrying the round the node works on.
async fn heartbeat<C: CoordinatorClient>(
    client: Arc<C>,
    every: Duration,
    status: watch::Receiver<Status>,
) {
    let every = every.max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let round = status.borrow().global_round;
        match client.heartbeat(round).await {
            Ok(open) => tracing::trace!(round, open, "heartbeat"),
            Err(e) => tracing::debug!(round, error = %e, "heartbeat failed"),
        }
    }
}
