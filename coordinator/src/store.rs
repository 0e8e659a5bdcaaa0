//! Durable coordinator state under `state_dir`.
//!
//! ```text
//! state_dir/
//!   state.json                     the round machine's snapshot (RoundState)
//!   global/round-000001.safetensors the global adapter round r trains from (F32, exact)
//!   global/round-000001.server-opt.safetensors  a stateful server optimizer's moments after
//!                                  the rounds before r (`m.<tensor>`, `v.<tensor>`, F32, exact)
//!   updates/round-000001/<node>.rvdc the accepted payloads of the open round, as received
//! ```
//!
//! Every file is written with [`write_atomic`] (temp file, fsync, rename, fsync of the folder).
//! Ordering makes a crash at any point safe: an accepted payload is written *before* the state
//! that lists it and before the node is told it was accepted, so after SIGKILL the state lists
//! exactly the acknowledged updates (a payload file the state does not list belongs to a
//! submission that was never acknowledged; the node resubmits it). The next global (and the
//! server optimizer's moments) are written before the state that opens its round, so a restart
//! never points at a missing adapter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ruvdllm::aggregate::{ServerOptimizer, ServerState};
use ruvdllm::delta::{Delta, NamedTensor};
use ruvdllm::delta_io::{self, StoreDtype};
use ruvdllm::fsutil::write_atomic;

use crate::round::RoundState;

/// Store failures, with the path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Delta(#[from] delta_io::IoError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The state folder.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn global_path(&self, round: u64) -> PathBuf {
        self.dir
            .join("global")
            .join(format!("round-{round:06}.safetensors"))
    }

    pub fn server_state_path(&self, round: u64) -> PathBuf {
        self.dir
            .join("global")
            .join(format!("round-{round:06}.server-opt.safetensors"))
    }

    fn updates_dir(&self, round: u64) -> PathBuf {
        self.dir.join("updates").join(format!("round-{round:06}"))
    }

    pub fn update_path(&self, round: u64, node: &str) -> PathBuf {
        self.updates_dir(round).join(format!("{node}.rvdc"))
    }

    /// The persisted state, or None for a fresh folder.
    pub fn load_state(&self) -> Result<Option<RoundState>, StoreError> {
        let path = self.state_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    pub fn save_state(&self, state: &RoundState) -> Result<(), StoreError> {
        let path = self.state_path();
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes).map_err(io(&path))
    }

    pub fn save_global(&self, round: u64, global: &Delta) -> Result<(), StoreError> {
        let meta = HashMap::from([("round".to_string(), round.to_string())]);
        delta_io::save(global, &self.global_path(round), StoreDtype::F32, &meta)?;
        Ok(())
    }

    pub fn load_global(&self, round: u64) -> Result<Delta, StoreError> {
        Ok(delta_io::load(&self.global_path(round))?.0)
    }

    /// Stores a stateful server optimizer's moments beside the global of `round` (nothing for a
    /// stateless optimizer or before its first step).
    pub fn save_server_state(
        &self,
        round: u64,
        opt: &ServerOptimizer,
        state: &ServerState,
    ) -> Result<(), StoreError> {
        let mut tensors = Vec::new();
        for (prefix, moment) in [("m.", &state.m), ("v.", &state.v)] {
            for t in moment.iter().flat_map(|d| &d.tensors) {
                tensors.push(NamedTensor {
                    name: format!("{prefix}{}", t.name),
                    ..t.clone()
                });
            }
        }
        if tensors.is_empty() {
            return Ok(());
        }
        let path = self.server_state_path(round);
        let delta = Delta::new(tensors).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let meta = HashMap::from([
            ("round".to_string(), round.to_string()),
            ("server_optimizer".to_string(), opt.name().to_string()),
        ]);
        delta_io::save(&delta, &path, StoreDtype::F32, &meta)?;
        Ok(())
    }

    /// The server optimizer's moments stored beside the global of `round` and the name of the
    /// optimizer that wrote them, or None when there are none.
    pub fn load_server_state(
        &self,
        round: u64,
    ) -> Result<Option<(String, ServerState)>, StoreError> {
        let path = self.server_state_path(round);
        if !path.exists() {
            return Ok(None);
        }
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let (delta, meta) = delta_io::load(&path)?;
        let name = meta
            .get("server_optimizer")
            .cloned()
            .ok_or_else(|| corrupt("no `server_optimizer` in the metadata".into()))?;
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for t in delta.tensors {
            let (into, rest) = if let Some(rest) = t.name.strip_prefix("m.") {
                (&mut m, rest.to_string())
            } else if let Some(rest) = t.name.strip_prefix("v.") {
                (&mut v, rest.to_string())
            } else {
                return Err(corrupt(format!("unexpected tensor `{}`", t.name)));
            };
            into.push(NamedTensor { name: rest, ..t });
        }
        let moment = |ts: Vec<NamedTensor>| -> Result<Option<Delta>, StoreError> {
            if ts.is_empty() {
                return Ok(None);
            }
            Delta::new(ts).map(Some).map_err(|e| corrupt(e.to_string()))
        };
        Ok(Some((
            name,
            ServerState {
                m: moment(m)?,
                v: moment(v)?,
            },
        )))
    }

    pub fn save_update(&self, round: u64, node: &str, payload: &[u8]) -> Result<(), StoreError> {
        let path = self.update_path(round, node);
        write_atomic(&path, payload).map_err(io(&path))
    }

    pub fn load_update(&self, round: u64, node: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.update_path(round, node);
        std::fs::read(&path).map_err(io(&path))
    }

    /// Removes the stored payloads of a closed round.
    pub fn discard_updates(&self, round: u64) -> Result<(), StoreError> {
        let dir = self.updates_dir(round);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&dir)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruvdllm::delta::NamedTensor;

    #[test]
    fn state_global_and_updates_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        assert!(s.load_state().unwrap().is_none());
        let st = RoundState::initial(3, "h", 10, 100);
        s.save_state(&st).unwrap();
        assert_eq!(s.load_state().unwrap().unwrap(), st);
        let g = Delta::new(vec![
            NamedTensor::new("t", vec![2], vec![1.0, -2.0]).unwrap(),
        ])
        .unwrap();
        s.save_global(4, &g).unwrap();
        assert_eq!(s.load_global(4).unwrap(), g);
        s.save_update(4, "n1", b"abc").unwrap();
        assert_eq!(s.load_update(4, "n1").unwrap(), b"abc");
        s.discard_updates(4).unwrap();
        assert!(s.load_update(4, "n1").is_err());
        s.discard_updates(4).unwrap();
        std::fs::write(dir.path().join("state.json"), b"{").unwrap();
        assert!(matches!(s.load_state(), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn server_optimizer_moments_roundtrip_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        let g = Delta::new(vec![
            NamedTensor::new("talora.coarse.q", vec![2], vec![1.0, -2.0]).unwrap(),
            NamedTensor::new("talora.fine.q", vec![1], vec![0.5]).unwrap(),
        ])
        .unwrap();
        let opt = ServerOptimizer::FedAdagrad {
            eta: 0.1,
            tau: 1e-9,
        };
        assert!(s.load_server_state(3).unwrap().is_none());
        // Nothing to store before the first step.
        s.save_server_state(3, &opt, &ServerState::default())
            .unwrap();
        assert!(!s.server_state_path(3).exists());
        let state = ServerState {
            m: None,
            v: Some(g.clone()),
        };
        s.save_server_state(3, &opt, &state).unwrap();
        assert_eq!(
            s.load_server_state(3).unwrap(),
            Some(("fedadagrad".to_string(), state))
        );
        // A truncated file is a typed error naming the path, never a panic.
        let path = s.server_state_path(3);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let e = s.load_server_state(3).unwrap_err().to_string();
        assert!(e.contains("server-opt"), "{e}");
        // A tensor that is neither `m.` nor `v.` is refused.
        let odd = Delta::new(vec![
            NamedTensor::new("x.talora.coarse.q", vec![1], vec![1.0]).unwrap(),
        ])
        .unwrap();
        let meta = HashMap::from([("server_optimizer".to_string(), "fedadam".to_string())]);
        delta_io::save(&odd, &path, StoreDtype::F32, &meta).unwrap();
        let e = s.load_server_state(3).unwrap_err().to_string();
        assert!(e.contains("unexpected tensor"), "{e}");
    }
}
