//! `node.toml`: the file, its defaults, and the validated [`Settings`] a node daemon runs on.
//!
//! Same three layers as the coordinator: TOML ([`File`], defaults in `impl Default`) → CLI/env
//! [`Overrides`] → [`File::validate`], which refuses bad values naming the field. The `[data]`
//! section says what the node trains on: a built-in domain and split, or corpus files (in compose
//! and Kubernetes a node's ordinal picks its domain).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ruvdllm::adapter::train::{BandSchedule, TrainOptions};
use ruvdllm::adapter::{Spec, Target as AdapterTarget};
use ruvdllm::codec::{EncodeOptions, Mode};
use serde::{Deserialize, Serialize};

use crate::daemon::any_client::{ClientTarget, P2pTarget};
use crate::daemon::grpc_client::Target;
pub use crate::daemon::local_data::DataSource;
use crate::daemon::runtime;
use ruvdllm_proto::p2p::{self, Multiaddr, PeerId};

/// Config problems, each naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("`{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `[tls]`: the federation CA and this node's certificate (subject CN = node id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            ca_cert: "certs/ca.crt".into(),
            cert: "certs/node.crt".into(),
            key: "certs/node.key".into(),
        }
    }
}

/// Which transport reaches the coordinator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// gRPC over mutual TLS (`coordinator`, `server_name`, `[tls]`).
    #[default]
    Grpc,
    /// libp2p, Noise + yamux over TCP (`[libp2p]`).
    Libp2p,
}

/// `[libp2p]`: the coordinator's address and peer id, and this node's key pair (`node keygen`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Libp2pSection {
    /// The coordinator's multiaddr, e.g. `/ip4/10.0.0.5/tcp/7444` or `/dns4/coordinator/tcp/7444`.
    pub coordinator: String,
    /// The coordinator's peer id (`coordinator keygen` prints it); Noise checks it on connect.
    pub coordinator_peer_id: String,
    pub key: PathBuf,
}

impl Default for Libp2pSection {
    fn default() -> Self {
        Self {
            coordinator: "/ip4/127.0.0.1/tcp/7444".into(),
            coordinator_peer_id: String::new(),
            key: "keys/node.key".into(),
        }
    }
}

impl Libp2pSection {
    fn validate(&self) -> Result<P2pTarget, ConfigError> {
        let peer: PeerId = self.coordinator_peer_id.parse().map_err(|e| {
            invalid(
                "libp2p.coordinator_peer_id",
                format!("{:?}: {e}", self.coordinator_peer_id),
            )
        })?;
        let mut addr: Multiaddr = self
            .coordinator
            .parse()
            .map_err(|e| invalid("libp2p.coordinator", format!("{:?}: {e}", self.coordinator)))?;
        match addr.iter().last() {
            Some(p2p::Protocol::P2p(named)) if named != peer => {
                return Err(invalid(
                    "libp2p.coordinator",
                    format!("names peer {named}, but coordinator_peer_id is {peer}"),
                ));
            }
            Some(p2p::Protocol::P2p(_)) => {}
            _ => addr.push(p2p::Protocol::P2p(peer)),
        }
        if !addr.iter().any(|p| matches!(p, p2p::Protocol::Tcp(_))) {
            return Err(invalid(
                "libp2p.coordinator",
                format!(
                    "{:?}: expected a TCP address such as /ip4/127.0.0.1/tcp/7444",
                    self.coordinator
                ),
            ));
        }
        p2p::load_keypair(&self.key).map_err(|e| {
            invalid(
                "libp2p.key",
                format!("{e} (create one with `node keygen --out <file>`)"),
            )
        })?;
        Ok(P2pTarget {
            coordinator: addr,
            key: self.key.clone(),
        })
    }
}

/// `[data]`: a built-in domain and split, or corpus files (text cut into chunks, or `.jsonl` samples).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Data {
    pub domain: String,
    pub split: String,
    pub corpus: Vec<PathBuf>,
    /// Local validation files (text or `.jsonl`); when set, every `corpus` sample trains.
    pub validation_corpus: Vec<PathBuf>,
    /// This node's shard of the domain's fine-tuning data, out of `shards` nodes sharing it.
    pub shard: usize,
    pub shards: usize,
    /// Training samples drawn (built-in), or the cap on corpus chunks.
    pub samples: usize,
    /// Local validation samples (the per-band improvement the node reports is measured on them).
    pub validation: usize,
}

impl Default for Data {
    fn default() -> Self {
        Self {
            domain: "arithmetic".into(),
            split: "finetune".into(),
            corpus: Vec::new(),
            validation_corpus: Vec::new(),
            shard: 0,
            shards: 1,
            samples: 256,
            validation: 16,
        }
    }
}

impl Data {
    /// Where the node's samples come from (checked: shards, counts, files).
    pub fn source(&self) -> Result<DataSource, ConfigError> {
        if self.shards == 0 || self.shard >= self.shards {
            return Err(invalid(
                "data.shard",
                format!("shard {} of {} shards", self.shard, self.shards),
            ));
        }
        if self.samples == 0 || self.validation == 0 {
            return Err(invalid(
                "data.samples",
                "samples and validation must be positive",
            ));
        }
        if self.corpus.is_empty() && !self.validation_corpus.is_empty() {
            return Err(invalid(
                "data.validation_corpus",
                "needs data.corpus (the built-in data brings its own validation samples)",
            ));
        }
        Ok(if self.corpus.is_empty() {
            let split: ruvdllm::data::Split = self
                .split
                .parse()
                .map_err(|e| invalid("data.split", format!("{e}")))?;
            if self.shards > 1 && split != ruvdllm::data::Split::Finetune {
                return Err(invalid(
                    "data.shards",
                    "shards apply to the finetune split only",
                ));
            }
            DataSource::Builtin {
                domain: self
                    .domain
                    .parse()
                    .map_err(|e| invalid("data.domain", format!("{e}")))?,
                split,
                shard: self.shard,
                shards: self.shards,
            }
        } else {
            for (key, files) in [
                ("data.corpus", &self.corpus),
                ("data.validation_corpus", &self.validation_corpus),
            ] {
                if let Some(p) = files.iter().find(|p| !p.is_file()) {
                    return Err(invalid(key, format!("{} is not a file", p.display())));
                }
            }
            DataSource::Corpus {
                train: self.corpus.clone(),
                validation: self.validation_corpus.clone(),
            }
        })
    }
}

/// `[train]`: local TALoRA training per round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Train {
    /// Optimizer steps per round.
    pub steps: usize,
    pub batch_size: usize,
    pub seq_len: usize,
    pub lr: f64,
    pub warmup: usize,
    /// Ranks of the coarse, domain and fine bands (must match the coordinator's adapter).
    pub ranks: String,
    /// Adapted linears: `q,v`, `all`, or a list.
    pub targets: String,
    /// `round-robin`, `curriculum`, or one band.
    pub band_schedule: String,
    /// Seed of the training noise and data order.
    pub seed: u64,
    /// Keep each band's AdamW moments from one round to the next (in memory: a restarted node
    /// starts afresh). Federated rounds then follow on like one long local run; see the README's
    /// convergence probes.
    pub keep_optimizer_state: bool,
}

impl Default for Train {
    fn default() -> Self {
        let d = TrainOptions::default();
        Self {
            steps: 30,
            batch_size: d.batch_size,
            seq_len: 48,
            lr: d.lr,
            warmup: d.warmup,
            ranks: "8,4,2".into(),
            targets: "q,v".into(),
            band_schedule: "round-robin".into(),
            seed: 0,
            keep_optimizer_state: false,
        }
    }
}

/// The validated `[train]` section.
#[derive(Debug, Clone)]
pub struct TrainSettings {
    pub spec: Spec,
    pub options: TrainOptions,
    pub seed: u64,
}

/// `[banks]`: the node's local pattern banks (DESIGN §5), filled after every round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BanksSection {
    /// Folder the banks persist in; empty: kept in memory only (lost on restart).
    pub dir: PathBuf,
    /// Seed of the key projection (the same for insertion and retrieval).
    pub key_seed: u64,
}

impl Default for BanksSection {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            key_seed: ruvdllm::bank::DEFAULT_KEY_SEED,
        }
    }
}

/// `[serve]`: the generation API of the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeSection {
    /// `host:port` to serve `/v1/completions` on; empty: no API.
    pub listen: String,
    /// Model id of the API (`model` in requests).
    pub model_id: String,
    pub max_concurrent: usize,
    pub max_tokens: usize,
}

impl Default for ServeSection {
    fn default() -> Self {
        let c = crate::serve::Config::default();
        Self {
            listen: String::new(),
            model_id: "ruvdllm".into(),
            max_concurrent: c.max_concurrent,
            max_tokens: c.max_tokens,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct File {
    pub node_id: String,
    /// `grpc` (default) or `libp2p`.
    pub transport: TransportKind,
    /// Coordinator `host:port` (gRPC).
    pub coordinator: String,
    /// Name checked against the coordinator's certificate.
    pub server_name: String,
    /// The base model checkpoint; its SHA-256 is the base-model hash sent at registration.
    pub base_model: PathBuf,
    /// Explicit base-model hash (overrides hashing `base_model`).
    pub base_model_hash: String,
    /// Where the node trains and serves: `cpu` (default), `cuda` or `cuda:N` (GPUs need a node
    /// built with `--features cuda`).
    pub device: String,
    /// Codec mode for updates: f32, f16, bf16, int8, int8-row, int4, optionally `+topk:<f>`.
    pub codec: String,
    pub zstd_level: i32,
    pub max_adapter_bytes: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Seconds between heartbeats while the node waits for a round or trains.
    pub heartbeat_secs: u64,
    pub tls: Tls,
    pub libp2p: Libp2pSection,
    pub data: Data,
    pub train: Train,
    pub banks: BanksSection,
    pub serve: ServeSection,
    pub privacy: PrivacySection,
    /// Append one JSON line per finished round to this file (timings, encoded sizes, the
    /// coordinator's answer, socket counters); empty: no journal.
    pub journal: PathBuf,
}

impl Default for File {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            transport: TransportKind::Grpc,
            coordinator: "127.0.0.1:7443".into(),
            server_name: "localhost".into(),
            base_model: PathBuf::new(),
            base_model_hash: String::new(),
            device: "cpu".into(),
            codec: "int8".into(),
            zstd_level: 3,
            max_adapter_bytes: 256 << 20,
            backoff_base_ms: 200,
            backoff_max_ms: 10_000,
            heartbeat_secs: 10,
            tls: Tls::default(),
            libp2p: Libp2pSection::default(),
            data: Data::default(),
            train: Train::default(),
            banks: BanksSection::default(),
            serve: ServeSection::default(),
            privacy: PrivacySection::default(),
            journal: PathBuf::new(),
        }
    }
}

/// `[privacy]`: local differential privacy (see [`crate::daemon::privacy`]). Off unless `clip`
/// is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacySection {
    /// L2 bound of each update (whole adapter delta); unset: no local DP.
    pub clip: Option<f64>,
    /// Noise multiplier z: N(0, (z·clip)²) per coordinate; 0 clips without noise (no ε).
    pub noise_multiplier: f64,
    /// δ of the (ε, δ) the node logs after each round.
    pub delta: f64,
    /// Fixed noise seed, for reproducible experiments only (anyone who knows it can remove the
    /// noise); unset: a secret drawn from the operating system at start-up.
    pub seed: Option<u64>,
}

impl Default for PrivacySection {
    fn default() -> Self {
        Self {
            clip: None,
            noise_multiplier: 0.0,
            delta: 1e-5,
            seed: None,
        }
    }
}

impl PrivacySection {
    fn validate(&self) -> Result<Option<crate::daemon::privacy::LocalDp>, ConfigError> {
        let Some(clip) = self.clip else {
            if self.noise_multiplier != 0.0 || self.seed.is_some() {
                return Err(invalid(
                    "privacy.clip",
                    "noise_multiplier and seed need a clip bound",
                ));
            }
            return Ok(None);
        };
        let dp = crate::daemon::privacy::LocalDp {
            clip,
            noise_multiplier: self.noise_multiplier,
            delta: self.delta,
            seed: self.seed,
        };
        dp.validate().map_err(|(field, reason)| {
            invalid(
                match field {
                    "clip" => "privacy.clip",
                    "noise_multiplier" => "privacy.noise_multiplier",
                    _ => "privacy.delta",
                },
                reason,
            )
        })?;
        Ok(Some(dp))
    }
}

/// CLI/env overrides of `node run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Overrides {
    #[arg(long, env = "RUVDLLM_NODE_ID")]
    pub node_id: Option<String>,
    /// Transport: grpc or libp2p.
    #[arg(long, env = "RUVDLLM_TRANSPORT", value_enum)]
    pub transport: Option<TransportKind>,
    /// Coordinator `host:port`.
    #[arg(long, env = "RUVDLLM_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Built-in data domain (e.g. picked from a StatefulSet ordinal).
    #[arg(long, env = "RUVDLLM_DATA_DOMAIN")]
    pub domain: Option<String>,
}

/// Everything the node daemon runs on, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub transport: ClientTarget,
    pub runtime: runtime::Settings,
    pub data: DataSource,
    /// Training / validation sample counts of `[data]`.
    pub samples: usize,
    pub validation: usize,
    /// The base checkpoint to train on (`None`: the committed tiny base).
    pub model: Option<PathBuf>,
    /// The device the model trains and serves on.
    pub device: ruvdllm::model::DeviceSpec,
    pub train: TrainSettings,
    /// Bank folder (`None`: in memory) and key seed.
    pub banks_dir: Option<PathBuf>,
    pub key_seed: u64,
    /// The API's address (`None`: not served), model id and limits.
    pub serve_listen: Option<std::net::SocketAddr>,
    pub serve_id: String,
    pub serve: crate::serve::Config,
    /// The round journal (`None`: not written).
    pub journal: Option<PathBuf>,
    /// Local DP (`None`: off).
    pub privacy: Option<crate::daemon::privacy::LocalDp>,
}

impl File {
    /// Reads a TOML file; relative paths inside it are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut f: File = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut paths: Vec<&mut PathBuf> = vec![
            &mut f.tls.ca_cert,
            &mut f.tls.cert,
            &mut f.tls.key,
            &mut f.libp2p.key,
        ];
        if !f.base_model.as_os_str().is_empty() {
            paths.push(&mut f.base_model);
        }
        paths.extend(f.data.corpus.iter_mut());
        paths.extend(f.data.validation_corpus.iter_mut());
        if !f.banks.dir.as_os_str().is_empty() {
            paths.push(&mut f.banks.dir);
        }
        if !f.journal.as_os_str().is_empty() {
            paths.push(&mut f.journal);
        }
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(f)
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(v) = &o.node_id {
            self.node_id = v.clone();
        }
        if let Some(v) = o.transport {
            self.transport = v;
        }
        if let Some(v) = &o.coordinator {
            self.coordinator = v.clone();
        }
        if let Some(v) = &o.domain {
            self.data.domain = v.clone();
        }
    }

    pub fn validate(&self) -> Result<Settings, ConfigError> {
        if self.node_id.is_empty() {
            return Err(invalid("node_id", "must be set"));
        }
        if !self
            .node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            || self.node_id.len() > 64
        {
            return Err(invalid("node_id", "1-64 characters of A-Z a-z 0-9 . _ -"));
        }
        let mode: Mode = self
            .codec
            .parse()
            .map_err(|e| invalid("codec", format!("{e}")))?;
        if !(1..=19).contains(&self.zstd_level) {
            return Err(invalid("zstd_level", "must be in 1..=19"));
        }
        if self.heartbeat_secs == 0 || self.heartbeat_secs > 3600 {
            return Err(invalid("heartbeat_secs", "must be in 1..=3600"));
        }
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            return Err(invalid(
                "backoff_base_ms",
                "must be positive and at most backoff_max_ms",
            ));
        }
        let device = self
            .device
            .parse::<ruvdllm::model::DeviceSpec>()
            .map_err(|e| invalid("device", e.to_string()))?;
        let base_model_hash = if !self.base_model_hash.is_empty() {
            ruvdllm_proto::types::check_hash("base_model_hash", &self.base_model_hash)
                .map_err(|e| invalid("base_model_hash", e.to_string()))?;
            self.base_model_hash.clone()
        } else if !self.base_model.as_os_str().is_empty() {
            crate::model_arg::checkpoint_hash(&self.base_model)
                .map_err(|e| invalid("base_model", format!("{}: {e}", self.base_model.display())))?
        } else {
            return Err(invalid("base_model", "set base_model or base_model_hash"));
        };
        let transport = match self.transport {
            TransportKind::Grpc => {
                if !self.coordinator.contains(':') {
                    return Err(invalid("coordinator", "expected host:port"));
                }
                for (field, p) in [
                    ("tls.ca_cert", &self.tls.ca_cert),
                    ("tls.cert", &self.tls.cert),
                    ("tls.key", &self.tls.key),
                ] {
                    if !p.is_file() {
                        return Err(invalid(field, format!("{} is not a file", p.display())));
                    }
                }
                ClientTarget::Grpc(Target {
                    addr: self.coordinator.clone(),
                    server_name: self.server_name.clone(),
                    ca_cert: self.tls.ca_cert.clone(),
                    cert: self.tls.cert.clone(),
                    key: self.tls.key.clone(),
                })
            }
            TransportKind::Libp2p => ClientTarget::Libp2p(self.libp2p.validate()?),
        };
        let data = self.data.source()?;
        let serve_listen = if self.serve.listen.is_empty() {
            None
        } else {
            Some(
                self.serve
                    .listen
                    .parse::<std::net::SocketAddr>()
                    .map_err(|e| invalid("serve.listen", format!("{}: {e}", self.serve.listen)))?,
            )
        };
        let serve = crate::serve::Config {
            max_concurrent: self.serve.max_concurrent,
            max_tokens: self.serve.max_tokens,
            ..crate::serve::Config::default()
        };
        serve
            .validate()
            .map_err(|e| invalid("serve", e.to_string()))?;
        if self.serve.model_id.is_empty() {
            return Err(invalid("serve.model_id", "must be set"));
        }
        Ok(Settings {
            transport,
            runtime: runtime::Settings {
                node_id: self.node_id.clone(),
                base_model_hash,
                encode: EncodeOptions {
                    level: self.zstd_level,
                    ..EncodeOptions::new(mode)
                },
                max_adapter_bytes: self.max_adapter_bytes,
                backoff_base: Duration::from_millis(self.backoff_base_ms),
                backoff_max: Duration::from_millis(self.backoff_max_ms),
                heartbeat: Duration::from_secs(self.heartbeat_secs),
            },
            data,
            samples: self.data.samples,
            validation: self.data.validation,
            model: (!self.base_model.as_os_str().is_empty()).then(|| self.base_model.clone()),
            device,
            train: self.train.validate()?,
            banks_dir: (!self.banks.dir.as_os_str().is_empty()).then(|| self.banks.dir.clone()),
            key_seed: self.banks.key_seed,
            serve_listen,
            serve_id: self.serve.model_id.clone(),
            serve,
            journal: (!self.journal.as_os_str().is_empty()).then(|| self.journal.clone()),
            privacy: self.privacy.validate()?,
        })
    }
}

impl Train {
    fn validate(&self) -> Result<TrainSettings, ConfigError> {
        let ranks =
            Spec::parse_ranks(&self.ranks).map_err(|e| invalid("train.ranks", e.to_string()))?;
        let targets = AdapterTarget::parse_list(&self.targets)
            .map_err(|e| invalid("train.targets", e.to_string()))?;
        let spec = Spec::new(ranks, targets).map_err(|e| invalid("train.ranks", e.to_string()))?;
        let schedule: BandSchedule = self
            .band_schedule
            .parse()
            .map_err(|e| invalid("train.band_schedule", format!("{e}")))?;
        if self.steps == 0 {
            return Err(invalid("train.steps", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(invalid("train.batch_size", "must be at least 1"));
        }
        if !(8..=4096).contains(&self.seq_len) {
            return Err(invalid("train.seq_len", "must be in 8..=4096"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid("train.lr", "must be finite and positive"));
        }
        Ok(TrainSettings {
            spec,
            options: TrainOptions {
                steps: self.steps,
                batch_size: self.batch_size,
                seq_len: self.seq_len,
                lr: self.lr,
                warmup: self.warmup,
                schedule,
                keep_optimizer_state: self.keep_optimizer_state,
                ..TrainOptions::default()
            },
            seed: self.seed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_roundtrip_through_toml() {
        let f = File::default();
        let back: File = toml::from_str(&toml::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn refusals_name_the_field() {
        let e = File::default().validate().unwrap_err().to_string();
        assert!(e.contains("node_id"), "{e}");
        let f = File {
            node_id: "n1".into(),
            codec: "int9".into(),
            ..File::default()
        };
        assert!(f.validate().unwrap_err().to_string().contains("codec"));
        let f = File {
            node_id: "n1".into(),
            base_model_hash: "xyz".into(),
            ..File::default()
        };
        assert!(
            f.validate()
                .unwrap_err()
                .to_string()
                .contains("base_model_hash")
        );
        let f = File {
            node_id: "n1".into(),
            device: "tpu:0".into(),
            ..File::default()
        };
        let e = f.validate().unwrap_err().to_string();
        assert!(e.contains("device") && e.contains("cuda:N"), "{e}");
        // A validation corpus needs a training corpus, and every file must exist.
        let dir = tempfile::tempdir().unwrap();
        let train = dir.path().join("train.jsonl");
        std::fs::write(&train, "{\"answer\": \"a\"}\n").unwrap();
        let with_data = |corpus: Vec<PathBuf>, validation_corpus: Vec<PathBuf>| Data {
            corpus,
            validation_corpus,
            ..Data::default()
        };
        let e = with_data(vec![], vec![train.clone()])
            .source()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data.validation_corpus") && e.contains("needs data.corpus"),
            "{e}"
        );
        let e = with_data(vec![train.clone()], vec![dir.path().join("missing.jsonl")])
            .source()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data.validation_corpus") && e.contains("not a file"),
            "{e}"
        );
        assert_eq!(
            with_data(vec![train.clone()], vec![train.clone()])
                .source()
                .unwrap(),
            DataSource::Corpus {
                train: vec![train.clone()],
                validation: vec![train]
            }
        );
    }

    #[test]
    fn privacy_section_is_read_and_checked() {
        let p: PrivacySection =
            toml::from_str("clip = 2.0\nnoise_multiplier = 0.8\nseed = 4").unwrap();
        let dp = p.validate().unwrap().unwrap();
        assert_eq!(
            dp,
            crate::daemon::privacy::LocalDp {
                clip: 2.0,
                noise_multiplier: 0.8,
                delta: 1e-5,
                seed: Some(4),
            }
        );
        assert_eq!(PrivacySection::default().validate().unwrap(), None);
        for (text, field) in [
            ("noise_multiplier = 1.0", "privacy.clip"),
            ("clip = -1.0", "privacy.clip"),
            (
                "clip = 1.0\nnoise_multiplier = -0.5",
                "privacy.noise_multiplier",
            ),
            ("clip = 1.0\ndelta = 0.0", "privacy.delta"),
        ] {
            let p: PrivacySection = toml::from_str(text).unwrap();
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
        assert!(toml::from_str::<PrivacySection>("clip = 1.0\nepsilon = 3.0").is_err());
    }

    #[test]
    fn libp2p_section_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("n.key");
        let coordinator = p2p::peer_id(&p2p::Keypair::generate_ed25519());
        let mut s = Libp2pSection {
            coordinator: "/ip4/127.0.0.1/tcp/7444".into(),
            coordinator_peer_id: coordinator.to_string(),
            key: key.clone(),
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("libp2p.key") && e.contains("node keygen"), "{e}");
        p2p::generate_keypair(&key).unwrap();
        let t = s.validate().unwrap();
        assert_eq!(
            t.coordinator.to_string(),
            format!("/ip4/127.0.0.1/tcp/7444/p2p/{coordinator}")
        );
        s.coordinator = format!("/ip4/127.0.0.1/tcp/7444/p2p/{coordinator}");
        assert_eq!(s.validate().unwrap(), t);
        let other = p2p::peer_id(&p2p::Keypair::generate_ed25519());
        s.coordinator = format!("/ip4/127.0.0.1/tcp/7444/p2p/{other}");
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("libp2p.coordinator")
        );
        s.coordinator = "/ip4/127.0.0.1/udp/7444".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("libp2p.coordinator")
        );
        s.coordinator = "/ip4/127.0.0.1/tcp/7444".into();
        s.coordinator_peer_id = "not-a-peer".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("libp2p.coordinator_peer_id")
        );
    }
}
