//! What every request handler shares: the model, the limits, the generation permits and the
//! counters.
//!
//! Generations are CPU- or GPU-bound and each holds a model snapshot plus a canvas, so they are
//! admitted through a semaphore of `max_concurrent` permits taken with `try_acquire` — a full
//! server answers 429 at once instead of queueing work it may never reach. The permit lives in
//! the blocking generation task, so it is returned when the generation really ends (finished,
//! failed or cancelled), not when the HTTP response does. The counters are published through a
//! `watch` channel so a daemon (or a test) can wait for a state instead of polling.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::config::{Config, ConfigError};
use super::model_handle::ModelHandle;

/// Counters of the generations this server ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Generations running now.
    pub active: usize,
    /// Generations that ran to their end.
    pub completed: u64,
    /// Generations stopped because their client went away or stalled.
    pub cancelled: u64,
    /// Generations that failed: options the sampler refused, or a model error.
    pub failed: u64,
    /// Requests refused with 429.
    pub rejected_busy: u64,
}

/// How a generation ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Cancelled,
    Failed,
}

/// The shared state of a completion server (cheap to clone).
#[derive(Clone)]
pub struct State {
    pub(crate) handle: ModelHandle,
    pub(crate) config: Arc<Config>,
    permits: Arc<Semaphore>,
    stats: Arc<watch::Sender<Stats>>,
    next_id: Arc<AtomicU64>,
    pub(crate) banks: Option<Arc<super::LocalBanks>>,
}

impl State {
    /// A server for `handle` under `config` (validated here).
    pub fn new(handle: ModelHandle, config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let (stats, _) = watch::channel(Stats::default());
        Ok(State {
            handle,
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
            config: Arc::new(config),
            stats: Arc::new(stats),
            next_id: Arc::new(AtomicU64::new(0)),
            banks: None,
        })
    }

    /// Serves DGR over `banks` to requests that ask for it (`"dgr": true` or DGR options).
    pub fn with_banks(mut self, banks: Arc<super::LocalBanks>) -> Self {
        self.banks = Some(banks);
        self
    }

    pub fn banks(&self) -> Option<&Arc<super::LocalBanks>> {
        self.banks.as_ref()
    }

    /// The served model (clone it to [`ModelHandle::replace`] the weights while serving).
    pub fn handle(&self) -> &ModelHandle {
        &self.handle
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters now and as they change.
    pub fn stats(&self) -> watch::Receiver<Stats> {
        self.stats.subscribe()
    }

    /// A generation permit, or `None` when `max_concurrent` generations are running (counted
    /// as a 429). The generation counts as active until the [`Admission`] is dropped.
    pub(crate) fn try_admit(&self) -> Option<Admission> {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                self.stats.send_modify(|s| s.active += 1);
                Some(Admission {
                    stats: Arc::clone(&self.stats),
                    permit: Some(permit),
                    outcome: Outcome::Failed,
                })
            }
            Err(_) => {
                self.stats.send_modify(|s| s.rejected_busy += 1);
                None
            }
        }
    }

    /// A fresh id with `prefix` (`cmpl`, `chatcmpl`) and the current Unix time.
    pub(crate) fn new_id(&self, prefix: &str) -> (String, u64) {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let salt: u32 = rand::random();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        (format!("{prefix}-{salt:08x}{n:x}"), now)
    }
}

/// One admitted generation: holds its permit and records its outcome when dropped — also when
/// the generation panics, which counts as failed.
pub(crate) struct Admission {
    stats: Arc<watch::Sender<Stats>>,
    permit: Option<OwnedSemaphorePermit>,
    outcome: Outcome,
}

impl Admission {
    pub(crate) fn set_outcome(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        drop(self.permit.take());
        let outcome = self.outcome;
        self.stats.send_modify(|s| {
            s.active = s.active.saturating_sub(1);
            match outcome {
                Outcome::Completed => s.completed += 1,
                Outcome::Cancelled => s.cancelled += 1,
                Outcome::Failed => s.failed += 1,
            }
        });
    }
}
