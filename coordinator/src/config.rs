//! `coordinator.toml`: the file, its defaults, and the validated [`Settings`] the daemon runs on.
//!
//! Three layers (psyche / STYLE.md): the TOML file ([`File`], every field defaulted once in
//! `impl Default`) → CLI/env overrides ([`Overrides`]) → [`File::validate`], which resolves every
//! choice into [`Settings`] with nothing optional left and refuses inconsistent values with a
//! [`ConfigError`] naming the field. `coordinator validate-config` runs exactly this.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ruvdllm::aggregate::daf::{DafConfig, GroupConfig, WeightSource};
use ruvdllm::aggregate::{NormBound, Rule, ServerOptSpec, ServerOptimizer};
use ruvdllm::delta::Delta;
use ruvdllm_proto::p2p::{self, Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::round;

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
    #[error("initial_adapter: {0}")]
    Adapter(#[from] ruvdllm::delta_io::IoError),
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `[tls]`: the coordinator's certificate, the CA that signs node certificates, the revocation
/// list (one node id per line, re-read when it changes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub revocation_list: PathBuf,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            ca_cert: "certs/ca.crt".into(),
            cert: "certs/server.crt".into(),
            key: "certs/server.key".into(),
            revocation_list: "certs/revoked.txt".into(),
        }
    }
}

/// Which transport nodes use to reach the coordinator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// gRPC over TLS with client certificates (`listen`, `[tls]`).
    #[default]
    Grpc,
    /// libp2p: Noise + yamux over TCP, peers admitted by an allowlist (`[libp2p]`).
    Libp2p,
}

/// `[libp2p]`: where to listen, the coordinator's key pair (`coordinator keygen`), and the
/// allowlist file of `<peer-id> <node-id>` lines (re-read when it changes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Libp2pSection {
    /// A multiaddr such as `/ip4/0.0.0.0/tcp/7444`.
    pub listen: String,
    pub key: PathBuf,
    pub allowlist: PathBuf,
    /// Longest a round long-poll is held before it is answered with the current round.
    pub poll_wait_ms: u64,
}

impl Default for Libp2pSection {
    fn default() -> Self {
        Self {
            listen: "/ip4/0.0.0.0/tcp/7444".into(),
            key: "keys/coordinator.key".into(),
            allowlist: "allowlist.txt".into(),
            poll_wait_ms: 20_000,
        }
    }
}

/// The validated `[libp2p]` section.
#[derive(Debug, Clone)]
pub struct Libp2p {
    pub listen: Multiaddr,
    pub key: PathBuf,
    pub allowlist: PathBuf,
    pub poll_wait: Duration,
    /// The peer id of `key`, which nodes put in their config.
    pub peer_id: PeerId,
}

/// The validated transport.
#[derive(Debug, Clone)]
pub enum Transport {
    /// gRPC + mutual TLS on `Settings::listen` with `Settings::tls`.
    Grpc,
    Libp2p(Libp2p),
}

/// `[round]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoundSection {
    pub min_nodes: usize,
    pub quorum: usize,
    pub duration_ms: u64,
    pub max_payload_bytes: u64,
    /// Client sampling (Flower's `fraction_fit`): the share of registered nodes drawn each
    /// round, in (0, 1]. Unset: every registered node takes part in every round.
    pub fraction_fit: Option<f64>,
    /// Fewest nodes drawn per round (Flower's `min_fit_clients`; default 2).
    pub min_fit_nodes: Option<usize>,
    /// Registered nodes needed before a round is drawn (Flower's `min_available_clients`;
    /// default `min_fit_nodes`).
    pub min_available_nodes: Option<usize>,
}

impl Default for RoundSection {
    fn default() -> Self {
        Self {
            min_nodes: 3,
            quorum: 3,
            duration_ms: 600_000,
            max_payload_bytes: 64 << 20,
            fraction_fit: None,
            min_fit_nodes: None,
            min_available_nodes: None,
        }
    }
}

impl RoundSection {
    /// The client-sampling settings, checked; `None` when `fraction_fit` is unset.
    pub fn sampling(&self) -> Result<Option<round::Sampling>, ConfigError> {
        let Some(fraction) = self.fraction_fit else {
            if self.min_fit_nodes.is_some() || self.min_available_nodes.is_some() {
                return Err(invalid(
                    "round.min_fit_nodes",
                    "applies with round.fraction_fit (client sampling) only",
                ));
            }
            return Ok(None);
        };
        let min_fit = self.min_fit_nodes.unwrap_or(2);
        let s = round::Sampling {
            fraction,
            min_fit,
            min_available: self.min_available_nodes.unwrap_or(min_fit),
        };
        s.validate().map_err(|(field, reason)| {
            invalid(
                match field {
                    "fraction_fit" => "round.fraction_fit",
                    "min_fit_nodes" => "round.min_fit_nodes",
                    _ => "round.min_available_nodes",
                },
                reason,
            )
        })?;
        Ok(Some(s))
    }
}

/// One band's aggregation (`[aggregation.coarse]` …); unset fields keep the DAF default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BandSection {
    pub rule: Option<String>,
    pub fallback: Option<String>,
    /// `samples`, `uniform` or `improvement`.
    pub weights: Option<String>,
    pub trim: Option<usize>,
    pub m: Option<usize>,
    /// Reject updates with a norm above this multiple of the median norm.
    pub norm_bound_median_multiple: Option<f64>,
    /// Reject updates whose cosine to another update is above this (near duplicates: colluding
    /// nodes sending one vector), in (0, 1], e.g. 0.99.
    pub duplicate_bound: Option<f64>,
    /// Reject updates with a cosine to the reference below this.
    pub cosine_threshold: Option<f64>,
    /// The cosine filter's reference: `previous` (the last global, default), `median` (the
    /// coordinate-wise median of the round's updates within the norm bound) or `both`.
    pub cosine_reference: Option<String>,
}

/// `[aggregation]`: DAF per band.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Aggregation {
    /// Assumed Byzantine nodes per round.
    pub f: usize,
    /// Server optimizer, Flower's semantics: `fedavgm` (default), `fedadam`, `fedyogi`,
    /// `fedadagrad`. Its moments are stored with each round's global in `state_dir`.
    pub server_optimizer: Option<String>,
    /// η: the global moves by this multiple of each round's (optimizer-processed) aggregate.
    /// Defaults: fedavgm 1 (plain averaging), fedadam 0.1, fedyogi 0.01, fedadagrad 0.1.
    pub server_lr: Option<f64>,
    /// fedavgm's heavy-ball momentum μ (default 0).
    pub server_momentum: Option<f64>,
    /// fedadam / fedyogi: β₁ (default 0.9) and β₂ (default 0.99).
    pub server_beta1: Option<f64>,
    pub server_beta2: Option<f64>,
    /// fedadam / fedyogi / fedadagrad: τ, the adaptivity floor (defaults 1e-9 / 1e-3 / 1e-9).
    pub server_tau: Option<f64>,
    pub coarse: BandSection,
    pub domain: BandSection,
    pub fine: BandSection,
    pub other: BandSection,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct File {
    /// `grpc` (default) or `libp2p`.
    pub transport: TransportKind,
    /// gRPC listen address (`host:port`).
    pub listen: String,
    /// Prometheus `/metrics` address; empty disables it.
    pub metrics_listen: String,
    pub state_dir: PathBuf,
    /// A safetensors delta giving the global adapter's layout (tensor names and shapes).
    pub initial_adapter: PathBuf,
    /// Start from all-zero B matrices (true) or from the file's values.
    pub zero_initial_adapter: bool,
    /// SHA-256 (hex) of the base model every node must run.
    pub base_model_hash: String,
    pub run_seed: u64,
    pub tls: Tls,
    pub libp2p: Libp2pSection,
    pub round: RoundSection,
    pub aggregation: Aggregation,
    pub privacy: PrivacySection,
}

/// `[privacy]`: central DP-FedAvg at close (see [`round::dp`]). Off unless `clip` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacySection {
    /// L2 bound C of each update; unset: no central DP.
    pub clip: Option<f64>,
    /// Noise multiplier z: N(0, (z·C/m)²) per coordinate of the aggregate.
    pub noise_multiplier: f64,
    /// The fixed denominator m (the number of nodes expected each round).
    pub expected_nodes: usize,
    /// δ of the (ε, δ) logged after each round.
    pub delta: f64,
    /// Fixed noise seed, for reproducible experiments only; unset: a secret from the OS.
    pub seed: Option<u64>,
    /// Adapt `clip` to this quantile of the update norms each round (Andrew et al.; 0.5 follows
    /// the median); unset: `clip` stays fixed.
    pub target_quantile: Option<f64>,
    /// η of the adaptive update C ← C·exp(−η(b̄ − γ)).
    pub clip_lr: f64,
    /// Noise std on the unclipped count (default expected_nodes / 20).
    pub count_stddev: Option<f64>,
}

impl Default for PrivacySection {
    fn default() -> Self {
        Self {
            clip: None,
            noise_multiplier: 0.0,
            expected_nodes: 0,
            delta: 1e-5,
            seed: None,
            target_quantile: None,
            clip_lr: 0.2,
            count_stddev: None,
        }
    }
}

impl PrivacySection {
    /// The validated settings (`None`: off); `daf` must be uniform FedAvg in every band.
    pub fn validate(&self, daf: &DafConfig) -> Result<Option<round::CentralDp>, ConfigError> {
        let Some(clip) = self.clip else {
            if self.noise_multiplier != 0.0
                || self.seed.is_some()
                || self.expected_nodes != 0
                || self.target_quantile.is_some()
            {
                return Err(invalid(
                    "privacy.clip",
                    "noise_multiplier, expected_nodes, seed and target_quantile need a clip bound \
                     (the starting one with target_quantile)",
                ));
            }
            return Ok(None);
        };
        let dp = round::CentralDp {
            clip,
            noise_multiplier: self.noise_multiplier,
            expected_nodes: self.expected_nodes,
            delta: self.delta,
            key: self.seed.unwrap_or_else(rand::random),
            adaptive: self.target_quantile.map(|q| round::dp::AdaptiveClip {
                target_quantile: q,
                lr: self.clip_lr,
                count_stddev: self
                    .count_stddev
                    .unwrap_or(self.expected_nodes as f64 / 20.0),
            }),
        };
        dp.validate()
            .map_err(|(field, reason)| invalid(&format!("privacy.{field}"), reason))?;
        round::dp::check_daf(daf).map_err(|reason| invalid("privacy", reason))?;
        Ok(Some(dp))
    }
}

impl Default for File {
    fn default() -> Self {
        Self {
            transport: TransportKind::Grpc,
            listen: "0.0.0.0:7443".into(),
            metrics_listen: "0.0.0.0:9464".into(),
            state_dir: "state".into(),
            initial_adapter: "initial_adapter.safetensors".into(),
            zero_initial_adapter: true,
            base_model_hash: String::new(),
            run_seed: 0,
            tls: Tls::default(),
            libp2p: Libp2pSection::default(),
            round: RoundSection::default(),
            aggregation: Aggregation::default(),
            privacy: PrivacySection::default(),
        }
    }
}

/// CLI/env overrides of `coordinator run` (flattened into the subcommand).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Overrides {
    /// Transport nodes use: grpc or libp2p.
    #[arg(long, env = "RUVDLLM_TRANSPORT", value_enum)]
    pub transport: Option<TransportKind>,
    /// gRPC listen address.
    #[arg(long, env = "RUVDLLM_LISTEN")]
    pub listen: Option<String>,
    /// Prometheus listen address ("" disables).
    #[arg(long, env = "RUVDLLM_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// State folder.
    #[arg(long, env = "RUVDLLM_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Everything the daemon runs on, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub transport: Transport,
    /// gRPC listen address (unused with libp2p).
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub state_dir: PathBuf,
    pub initial_adapter: Delta,
    pub tls: Tls,
    pub round: round::Config,
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
        for p in [
            &mut f.state_dir,
            &mut f.initial_adapter,
            &mut f.tls.ca_cert,
            &mut f.tls.cert,
            &mut f.tls.key,
            &mut f.tls.revocation_list,
            &mut f.libp2p.key,
            &mut f.libp2p.allowlist,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(f)
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(v) = o.transport {
            self.transport = v;
        }
        if let Some(v) = &o.listen {
            self.listen = v.clone();
        }
        if let Some(v) = &o.metrics_listen {
            self.metrics_listen = v.clone();
        }
        if let Some(v) = &o.state_dir {
            self.state_dir = v.clone();
        }
    }

    /// Resolves and checks everything (reads the initial adapter and the TLS files' presence).
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let listen = self
            .listen
            .parse()
            .map_err(|e| invalid("listen", format!("{:?}: {e}", self.listen)))?;
        let metrics_listen = if self.metrics_listen.is_empty() {
            None
        } else {
            Some(self.metrics_listen.parse().map_err(|e| {
                invalid("metrics_listen", format!("{:?}: {e}", self.metrics_listen))
            })?)
        };
        if self.base_model_hash.is_empty() {
            return Err(invalid("base_model_hash", "must be set"));
        }
        let r = &self.round;
        if r.min_nodes == 0 {
            return Err(invalid("round.min_nodes", "must be at least 1"));
        }
        if r.quorum < r.min_nodes {
            return Err(invalid(
                "round.quorum",
                format!("{} is below min_nodes {}", r.quorum, r.min_nodes),
            ));
        }
        if r.duration_ms == 0 {
            return Err(invalid("round.duration_ms", "must be positive"));
        }
        if r.max_payload_bytes == 0 {
            return Err(invalid("round.max_payload_bytes", "must be positive"));
        }
        let sampling = r.sampling()?;
        let transport = match self.transport {
            TransportKind::Grpc => {
                for (field, p) in [
                    ("tls.ca_cert", &self.tls.ca_cert),
                    ("tls.cert", &self.tls.cert),
                    ("tls.key", &self.tls.key),
                ] {
                    if !p.is_file() {
                        return Err(invalid(field, format!("{} is not a file", p.display())));
                    }
                }
                Transport::Grpc
            }
            TransportKind::Libp2p => Transport::Libp2p(self.libp2p.validate()?),
        };
        let daf = daf_config(&self.aggregation)?;
        let server_opt = server_optimizer(&self.aggregation)?;
        let central_dp = self.privacy.validate(&daf)?;
        if sampling.is_some() && central_dp.is_some() {
            return Err(invalid(
                "round.fraction_fit",
                "central DP assumes every node takes part in every round (its fixed denominator \
                 and its accountant's sampling rate); use one or the other",
            ));
        }
        let (mut initial, _) = ruvdllm::delta_io::load(&self.initial_adapter)?;
        if initial.tensors.is_empty() {
            return Err(invalid("initial_adapter", "holds no tensors"));
        }
        if self.zero_initial_adapter {
            for t in &mut initial.tensors {
                t.data.iter_mut().for_each(|v| *v = 0.0);
            }
        } else if !initial.all_finite() {
            return Err(invalid("initial_adapter", "holds non-finite values"));
        }
        Ok(Settings {
            transport,
            listen,
            metrics_listen,
            state_dir: self.state_dir.clone(),
            initial_adapter: initial,
            tls: self.tls.clone(),
            round: round::Config {
                min_nodes: r.min_nodes,
                quorum: r.quorum,
                round_ms: r.duration_ms,
                base_model_hash: self.base_model_hash.clone(),
                run_seed: self.run_seed,
                max_payload_bytes: r.max_payload_bytes,
                daf,
                server_opt,
                central_dp,
                sampling,
            },
        })
    }
}

impl Libp2pSection {
    fn validate(&self) -> Result<Libp2p, ConfigError> {
        let listen: Multiaddr = self
            .listen
            .parse()
            .map_err(|e| invalid("libp2p.listen", format!("{:?}: {e}", self.listen)))?;
        let mut has_ip = false;
        let mut has_tcp = false;
        for p in listen.iter() {
            match p {
                p2p::Protocol::Ip4(_) | p2p::Protocol::Ip6(_) => has_ip = true,
                p2p::Protocol::Tcp(_) => has_tcp = true,
                _ => {}
            }
        }
        if !(has_ip && has_tcp) {
            return Err(invalid(
                "libp2p.listen",
                format!(
                    "{:?}: expected an IP and TCP address such as /ip4/0.0.0.0/tcp/7444",
                    self.listen
                ),
            ));
        }
        let keypair = p2p::load_keypair(&self.key).map_err(|e| {
            invalid(
                "libp2p.key",
                format!("{e} (create one with `coordinator keygen --out <file>`)"),
            )
        })?;
        p2p::AllowlistFile::open(&self.allowlist)
            .map_err(|e| invalid("libp2p.allowlist", e.to_string()))?;
        if !(1..=600_000).contains(&self.poll_wait_ms) {
            return Err(invalid("libp2p.poll_wait_ms", "must be in 1..=600000"));
        }
        Ok(Libp2p {
            listen,
            key: self.key.clone(),
            allowlist: self.allowlist.clone(),
            poll_wait: Duration::from_millis(self.poll_wait_ms),
            peer_id: p2p::peer_id(&keypair),
        })
    }
}

fn rule(field: &str, name: &str) -> Result<Rule, ConfigError> {
    name.parse().map_err(|e| invalid(field, format!("{e}")))
}

fn band(
    name: &str,
    s: &BandSection,
    mut g: GroupConfig,
    f: usize,
) -> Result<GroupConfig, ConfigError> {
    let field = |k: &str| format!("aggregation.{name}.{k}");
    if let Some(r) = &s.rule {
        g.rule.rule = rule(&field("rule"), r)?;
    }
    g.rule.params.f = f;
    if let Some(r) = &s.fallback {
        g.rule.fallback = Some(rule(&field("fallback"), r)?);
    }
    if let Some(w) = &s.weights {
        g.weights = match w.as_str() {
            "samples" => WeightSource::Samples,
            "uniform" => WeightSource::Uniform,
            "improvement" => WeightSource::Improvement { floor: 0.0 },
            other => {
                return Err(invalid(
                    &field("weights"),
                    format!("`{other}` (expected samples, uniform or improvement)"),
                ));
            }
        };
    }
    if s.trim.is_some() {
        g.rule.params.trim = s.trim;
    }
    if s.m.is_some() {
        g.rule.params.m = s.m;
    }
    if let Some(k) = s.norm_bound_median_multiple {
        if !(k.is_finite() && k > 0.0) {
            return Err(invalid(&field("norm_bound_median_multiple"), "must be > 0"));
        }
        g.prefilter.norm_bound = Some(NormBound::MedianMultiple(k));
    }
    if let Some(d) = s.duplicate_bound {
        if !(d > 0.0 && d <= 1.0) {
            return Err(invalid(&field("duplicate_bound"), "must be in (0, 1]"));
        }
        g.prefilter.duplicate_bound = Some(d);
    }
    if let Some(c) = s.cosine_threshold {
        if !(-1.0..=1.0).contains(&c) {
            return Err(invalid(&field("cosine_threshold"), "must be in [-1, 1]"));
        }
        g.prefilter.cosine_threshold = Some(c);
    }
    if let Some(r) = &s.cosine_reference {
        g.prefilter.cosine_reference = r
            .parse()
            .map_err(|e: String| invalid(&field("cosine_reference"), e))?;
    }
    Ok(g)
}

/// `aggregation.server_*`: the server optimizer with Flower's defaults, each value checked.
pub fn server_optimizer(a: &Aggregation) -> Result<ServerOptimizer, ConfigError> {
    ServerOptSpec {
        name: a.server_optimizer.clone(),
        lr: a.server_lr,
        momentum: a.server_momentum,
        beta1: a.server_beta1,
        beta2: a.server_beta2,
        tau: a.server_tau,
    }
    .build()
    .map_err(|e| {
        let key = match e.key {
            "optimizer" => "aggregation.server_optimizer".to_string(),
            k => format!("aggregation.server_{k}"),
        };
        invalid(&key, e.reason)
    })
}

/// The DAF config: DESIGN §6 defaults for `f`, overridden per band.
pub fn daf_config(a: &Aggregation) -> Result<DafConfig, ConfigError> {
    let d = DafConfig::new(a.f);
    Ok(DafConfig {
        coarse: band("coarse", &a.coarse, d.coarse, a.f)?,
        domain: band("domain", &a.domain, d.domain, a.f)?,
        fine: band("fine", &a.fine, d.fine, a.f)?,
        other: band("other", &a.other, d.other, a.f)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_roundtrip_through_toml() {
        let f = File::default();
        let text = toml::to_string(&f).unwrap();
        let back: File = toml::from_str(&text).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn server_optimizer_defaults_to_plain_averaging_and_refuses_bad_values() {
        let mut a = Aggregation::default();
        assert_eq!(server_optimizer(&a).unwrap(), ServerOptimizer::default());
        a.server_lr = Some(1.5);
        assert_eq!(server_optimizer(&a).unwrap().lr(), 1.5);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 11.0] {
            a.server_lr = Some(bad);
            let e = server_optimizer(&a).unwrap_err().to_string();
            assert!(e.contains("aggregation.server_lr"), "{bad}: {e}");
        }
        let f: File = toml::from_str(
            "[aggregation]\nserver_optimizer = \"fedyogi\"\nserver_lr = 0.02\nserver_tau = 1e-4\n",
        )
        .unwrap();
        assert_eq!(
            server_optimizer(&f.aggregation).unwrap(),
            ServerOptimizer::FedYogi {
                eta: 0.02,
                beta1: 0.9,
                beta2: 0.99,
                tau: 1e-4
            }
        );
        let f: File = toml::from_str("[aggregation]\nserver_optimizer = \"fedsgd\"\n").unwrap();
        let e = server_optimizer(&f.aggregation).unwrap_err().to_string();
        assert!(
            e.contains("aggregation.server_optimizer") && e.contains("fedadam"),
            "{e}"
        );
        let f: File =
            toml::from_str("[aggregation]\nserver_momentum = 0.9\nserver_beta1 = 0.5\n").unwrap();
        let e = server_optimizer(&f.aggregation).unwrap_err().to_string();
        assert!(e.contains("aggregation.server_beta1"), "{e}");
    }

    #[test]
    fn band_overrides_and_refusals() {
        let mut a = Aggregation {
            f: 1,
            ..Aggregation::default()
        };
        a.domain.rule = Some("median".into());
        a.domain.weights = Some("samples".into());
        a.fine.fallback = Some("fedavg".into());
        let d = daf_config(&a).unwrap();
        assert_eq!(d.domain.rule.rule, Rule::Median);
        assert_eq!(d.domain.weights, WeightSource::Samples);
        assert_eq!(d.fine.rule.fallback, Some(Rule::FedAvg));
        assert_eq!(d.coarse.rule.params.f, 1);
        assert_eq!(d.fine.prefilter.duplicate_bound, None);
        a.fine.duplicate_bound = Some(0.99);
        assert_eq!(
            daf_config(&a).unwrap().fine.prefilter.duplicate_bound,
            Some(0.99)
        );
        a.fine.duplicate_bound = Some(1.5);
        let e = daf_config(&a).unwrap_err().to_string();
        assert!(e.contains("aggregation.fine.duplicate_bound"), "{e}");
        a.fine.duplicate_bound = None;
        a.coarse.rule = Some("krumm".into());
        let e = daf_config(&a).unwrap_err().to_string();
        assert!(e.contains("aggregation.coarse.rule"), "{e}");
    }

    #[test]
    fn central_dp_needs_uniform_fedavg_everywhere() {
        let mut a = Aggregation::default();
        let p: PrivacySection =
            toml::from_str("clip = 1.0\nnoise_multiplier = 1.1\nexpected_nodes = 10").unwrap();
        // The default aggregation (trimmed mean, quality weights) is refused, naming the band.
        let e = p
            .validate(&daf_config(&a).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("privacy") && e.contains("fedavg"), "{e}");
        for b in [&mut a.coarse, &mut a.domain, &mut a.fine, &mut a.other] {
            b.rule = Some("fedavg".into());
            b.weights = Some("uniform".into());
        }
        let dp = p.validate(&daf_config(&a).unwrap()).unwrap().unwrap();
        assert_eq!((dp.clip, dp.expected_nodes), (1.0, 10));
        assert_eq!(
            PrivacySection::default()
                .validate(&daf_config(&a).unwrap())
                .unwrap(),
            None
        );
        for (text, field) in [
            ("noise_multiplier = 1.0", "privacy.clip"),
            ("clip = 1.0", "privacy.expected_nodes"),
            ("clip = 0.0\nexpected_nodes = 3", "privacy.clip"),
            (
                "clip = 1.0\nexpected_nodes = 3\ndelta = 2.0",
                "privacy.delta",
            ),
        ] {
            let p: PrivacySection = toml::from_str(text).unwrap();
            let e = p
                .validate(&daf_config(&a).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn validate_names_the_field() {
        let f = File {
            base_model_hash: "h".into(),
            round: RoundSection {
                quorum: 2,
                ..RoundSection::default()
            },
            ..File::default()
        };
        let e = f.validate().unwrap_err().to_string();
        assert!(e.contains("round.quorum"), "{e}");
        let f = File {
            listen: "nope".into(),
            ..File::default()
        };
        assert!(f.validate().unwrap_err().to_string().contains("listen"));
        // Client sampling: ranges, and its companions only with fraction_fit.
        let round = |fraction_fit, min_fit_nodes, min_available_nodes| RoundSection {
            fraction_fit,
            min_fit_nodes,
            min_available_nodes,
            ..RoundSection::default()
        };
        assert_eq!(round(None, None, None).sampling().unwrap(), None);
        let s = round(Some(0.3), None, None).sampling().unwrap().unwrap();
        assert_eq!((s.min_fit, s.min_available), (2, 2));
        for (r, field) in [
            (round(Some(0.0), None, None), "round.fraction_fit"),
            (round(Some(2.0), None, None), "round.fraction_fit"),
            (round(Some(0.5), Some(0), None), "round.min_fit_nodes"),
            (
                round(Some(0.5), Some(3), Some(2)),
                "round.min_available_nodes",
            ),
            (round(None, Some(3), None), "round.min_fit_nodes"),
        ] {
            let e = r.sampling().unwrap_err().to_string();
            assert!(e.contains(field), "{r:?}: {e}");
        }
        let text = "[round]\nfraction_fit = 0.2\nmin_fit_nodes = 3\n";
        let f: File = toml::from_str(text).unwrap();
        assert_eq!(f.round.sampling().unwrap().unwrap().min_fit, 3);
    }

    #[test]
    fn libp2p_section_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("c.key");
        let allow = dir.path().join("allow.txt");
        let mut s = Libp2pSection {
            listen: "/ip4/127.0.0.1/tcp/0".into(),
            key: key.clone(),
            allowlist: allow.clone(),
            poll_wait_ms: 1000,
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("libp2p.key") && e.contains("coordinator keygen"),
            "{e}"
        );
        let kp = p2p::generate_keypair(&key).unwrap();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("libp2p.allowlist"), "{e}");
        std::fs::write(&allow, "not-a-peer node-1\n").unwrap();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("libp2p.allowlist")
        );
        let peer = p2p::peer_id(&p2p::Keypair::generate_ed25519());
        std::fs::write(&allow, format!("{peer} node-1\n")).unwrap();
        let ok = s.validate().unwrap();
        assert_eq!(ok.peer_id, p2p::peer_id(&kp));
        s.listen = "/dns4/example.org/tcp/1".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("libp2p.listen")
        );
        s.listen = "/ip4/127.0.0.1/udp/1".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("libp2p.listen")
        );
        s.listen = "nonsense".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("libp2p.listen")
        );
    }
}
