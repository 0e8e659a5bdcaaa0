//! `coordinator simulate` flags and their validated form.
//!
//! Every flag has one default here, chosen so that the plain `coordinator simulate` proves
//! something on a 2-core machine in under three minutes (held-out loss down ≥ 10 %); the run
//! prints the resolved settings first and writes them into `report.json`, so a number in a report
//! can always be traced to the exact configuration behind it.

use std::path::PathBuf;

use clap::ValueEnum;
use ruvdllm::aggregate::daf::DafConfig;
use ruvdllm::aggregate::{ServerOptSpec, ServerOptimizer};
use ruvdllm::attack::Attack;
use ruvdllm::codec::Mode;
use ruvdllm::data::partition::Scheme;
use serde::Serialize;

use crate::config::{Aggregation, BandSection};

/// Default rounds.
pub const ROUNDS: u64 = 4;
/// Default local optimizer steps per node per round.
pub const LOCAL_STEPS: usize = 6;

/// Transport between nodes and the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Grpc,
    Libp2p,
}

/// Flags of `coordinator simulate`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Number of nodes (built-in data: spread over the 5 domains, shards within a domain).
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    #[arg(long, default_value_t = ROUNDS)]
    pub rounds: u64,
    #[arg(long, value_enum, default_value = "grpc")]
    pub transport: Transport,
    /// One rule for every band, weighted by sample count (default: DAF — trimmed mean /
    /// quality-weighted mean / trimmed mean). The domain band keeps DAF's norm (3× median) and
    /// cosine pre-filter either way.
    #[arg(long)]
    pub rule: Option<String>,
    #[arg(long)]
    pub rule_coarse: Option<String>,
    #[arg(long)]
    pub rule_domain: Option<String>,
    #[arg(long)]
    pub rule_fine: Option<String>,
    /// Fallback rule of every band: runs when a band's rule refuses its condition on n and f
    /// (for example after the pre-filters left too few updates), recorded in the round's notes.
    /// Without it such a round is refused and the global stays unchanged.
    #[arg(long)]
    pub fallback: Option<String>,
    /// Norm-bound pre-filter on every band: reject updates above this multiple of the median norm.
    #[arg(long)]
    pub norm_bound: Option<f64>,
    /// Near-duplicate pre-filter on every band: reject updates whose cosine to another update is
    /// above this (e.g. 0.99; colluding attackers sending one vector).
    #[arg(long)]
    pub duplicate_filter: Option<f64>,
    /// Cosine pre-filter on every band: reject updates whose cosine to --cosine-reference is
    /// below this (replaces the domain band's default filter against the previous global).
    #[arg(long, allow_hyphen_values = true)]
    pub cosine_filter: Option<f64>,
    /// The reference of --cosine-filter: `median` (the coordinate-wise median of the round's
    /// updates within the norm bound), `previous` (the last global; none in round 1) or `both`.
    #[arg(long, default_value = "median", requires = "cosine_filter")]
    pub cosine_reference: ruvdllm::aggregate::CosineReference,
    /// Byzantine nodes (the last K node ids), colluding every round.
    #[arg(long, default_value_t = 0)]
    pub byzantine: usize,
    /// Their attack: sign-flip, gaussian, scaling, random, alie, ipm, min-max, label-flip
    /// (optionally `:<param>`).
    #[arg(long)]
    pub attack: Option<String>,
    /// Byzantine nodes the robust rules assume (default: --byzantine).
    #[arg(long)]
    pub assume_f: Option<usize>,
    /// Give the nodes the built-in data of an N-node run (default: --nodes): node i gets the
    /// shard it would have among N nodes. `--nodes 7 --layout-nodes 10` is the 10-node run
    /// without its last three nodes — what the honest nodes of a run with 3 Byzantine nodes can
    /// achieve on their own.
    #[arg(long)]
    pub layout_nodes: Option<usize>,
    /// Codec of node updates: f32, f16, bf16, int8, int8-row, int4, optionally `+topk:<f>`.
    #[arg(long, default_value = "int8")]
    pub codec: String,
    /// Local DP: clip each update to this L2 norm before it leaves the node.
    #[arg(long)]
    pub dp_clip: Option<f64>,
    /// Local DP: noise multiplier z (N(0, (z·C)²) per coordinate of each clipped update).
    #[arg(long)]
    pub dp_noise: Option<f64>,
    /// δ of the (ε, δ) the RDP accountant reports.
    #[arg(long, default_value_t = 1e-5)]
    pub dp_delta: f64,
    /// Central DP instead of local: the coordinator clips each update to --dp-clip and adds
    /// N(0, (z·C/n)²) to the uniform FedAvg aggregate (every band uniform; needs --rule fedavg).
    #[arg(long, requires = "dp_clip")]
    pub dp_central: bool,
    /// With --dp-central: adapt the clip bound (starting at --dp-clip) to this quantile of the
    /// update norms each round (Andrew et al.; η 0.2, count noise n/20).
    #[arg(long, requires = "dp_central")]
    pub dp_adaptive_quantile: Option<f64>,
    #[arg(long, default_value_t = LOCAL_STEPS)]
    pub local_steps: usize,
    /// Peak learning rate of the nodes' TALoRA training (B only). On the committed base 0.3
    /// overshoots: exact match peaks after round 1 and falls back below the base's.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Server optimizer (Flower's semantics): fedavgm (default), fedadam, fedyogi, fedadagrad.
    #[arg(long)]
    pub server_opt: Option<String>,
    /// Server learning rate η: each round moves the global by this multiple of the (optimizer-
    /// processed) aggregate, in (0, 10]. Default: fedavgm 1 (plain averaging), fedadam 0.1,
    /// fedyogi 0.01, fedadagrad 0.1.
    #[arg(long)]
    pub server_lr: Option<f64>,
    /// fedavgm's heavy-ball momentum μ in [0, 1) (default 0).
    #[arg(long)]
    pub server_momentum: Option<f64>,
    /// fedadam / fedyogi: β₁ (default 0.9).
    #[arg(long)]
    pub server_beta1: Option<f64>,
    /// fedadam / fedyogi: β₂ (default 0.99).
    #[arg(long)]
    pub server_beta2: Option<f64>,
    /// fedadam / fedyogi / fedadagrad: τ (defaults 1e-9 / 1e-3 / 1e-9).
    #[arg(long)]
    pub server_tau: Option<f64>,
    /// Client sampling (Flower's fraction_fit): each round the coordinator draws
    /// max(⌊nodes · F⌋, --min-fit-nodes) nodes and only they train; F in (0, 1]. The
    /// centralized baseline then trains for the steps the drawn nodes spent.
    #[arg(long)]
    pub fraction_fit: Option<f64>,
    /// Fewest nodes drawn per round with --fraction-fit (Flower's min_fit_clients).
    #[arg(long, default_value_t = 2)]
    pub min_fit_nodes: usize,
    /// Each node keeps its AdamW moments from one round to the next (`[train]
    /// keep_optimizer_state` in node.toml) instead of starting every round afresh.
    #[arg(long)]
    pub keep_optimizer_state: bool,
    /// Rows per local step. On the committed base batch 8 holds exact match above the base's in
    /// every round (6/80 against 4/80); batch 4 peaks at 7/80 after round 2 and falls back to
    /// 5/80 (`--eval-n 16`, both).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Tokens per packed row, for training and evaluation.
    #[arg(long, default_value_t = 40)]
    pub seq_len: usize,
    /// Training samples per node (built-in data).
    #[arg(long, default_value_t = 64)]
    pub samples: usize,
    /// Local validation samples per node.
    #[arg(long, default_value_t = 4)]
    pub validation: usize,
    /// Text or `.jsonl` sample files instead of the built-in data: one per node, or split across
    /// the nodes.
    #[arg(long, num_args = 1..)]
    pub corpus: Vec<PathBuf>,
    /// How the data is split among the nodes: `domains` (built-in: two nodes per domain, each
    /// with its own shard of the domain's facts; corpus: as given), `iid` (the same samples
    /// pooled, shuffled and dealt evenly) or `dirichlet:ALPHA` (pooled, then label-skewed as
    /// Flower's DirichletPartitioner, the domain as label; small ALPHA = few domains per node).
    #[arg(long, default_value = "domains")]
    pub partition: String,
    /// Run each node as its own OS process (`node run --config <generated node.toml>`).
    #[arg(long)]
    pub processes: bool,
    /// The `node` binary for --processes (default: next to this executable).
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
    /// Base model (default: the committed tiny base).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Compute device of the nodes' model: `cpu`, `cuda` or `cuda:N` (a `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    pub device: ruvdllm::model::DeviceSpec,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder: report.json, plots, adapters, state, certificates.
    #[arg(long, default_value = "simulate-out")]
    pub out: PathBuf,
    /// Held-out samples per domain for the round metrics (80 in all by default: at 40, one
    /// answer is 2.5 points of exact match).
    #[arg(long, default_value_t = 16)]
    pub eval_n: usize,
    /// Monte-Carlo draws per sequence for the perplexity bound.
    #[arg(long, default_value_t = 2)]
    pub mc: usize,
    /// Tokens generated per held-out prompt for exact match (blocks of 8).
    #[arg(long, default_value_t = 16)]
    pub gen_length: usize,
    /// Also train centrally on the union of the nodes' data with the same total optimizer steps.
    #[arg(long)]
    pub centralized: bool,
    /// Peak learning rate of the centralized baseline (default: --lr). One long schedule
    /// (nodes × rounds × local steps) and the nodes' short rounds may each want their own rate: a
    /// fair baseline is tuned too.
    #[arg(long, requires = "centralized")]
    pub centralized_lr: Option<f64>,
    /// Seconds a round may stay open.
    #[arg(long, default_value_t = 600)]
    pub round_timeout: u64,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Refusals of the flags.
#[derive(Debug, thiserror::Error)]
pub enum SimConfigError {
    #[error("--{flag}: {reason}")]
    Invalid { flag: &'static str, reason: String },
    #[error("aggregation: {0}")]
    Aggregation(#[from] crate::config::ConfigError),
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> SimConfigError {
    SimConfigError::Invalid {
        flag,
        reason: reason.into(),
    }
}

/// What each node is (validated flags).
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub args: SimArgs,
    pub mode: Mode,
    pub attack: Option<Attack>,
    pub daf: DafConfig,
    pub server_opt: ServerOptimizer,
    /// Central DP at the coordinator (`--dp-central`).
    pub central_dp: Option<crate::round::CentralDp>,
    /// Indices of the Byzantine nodes.
    pub attackers: Vec<usize>,
    /// `--partition` (`None`: domains).
    pub partition: Option<Scheme>,
    /// `--fraction-fit` (`None`: every node trains every round).
    pub sampling: Option<crate::round::Sampling>,
}

impl SimArgs {
    /// The nodes' own (local) DP: `--dp-clip` without `--dp-central`.
    pub fn local_dp(&self) -> Option<f64> {
        self.dp_clip.filter(|_| !self.dp_central)
    }
}

impl SimConfig {
    pub fn is_attacker(&self, node: usize) -> bool {
        self.attackers.contains(&node)
    }

    /// The resolved configuration as it goes into `report.json`.
    pub fn to_json(&self) -> serde_json::Value {
        let a = &self.args;
        let mut v = serde_json::json!({
            "nodes": a.nodes,
            "rounds": a.rounds,
            "transport": a.transport,
            "rule": a.rule,
            "rule_coarse": a.rule_coarse,
            "rule_domain": a.rule_domain,
            "rule_fine": a.rule_fine,
            "fallback": a.fallback,
            "aggregation": self.daf,
            "norm_bound": a.norm_bound,
            "cosine_filter": a.cosine_filter,
            "cosine_reference": a.cosine_filter.map(|_| a.cosine_reference.name()),
            "byzantine": a.byzantine,
            "attackers": self.attackers,
            "attack": self.attack.map(|x| x.name()),
            "attack_spec": a.attack,
            "assume_f": a.assume_f.unwrap_or(a.byzantine),
            "layout_nodes": a.layout_nodes.unwrap_or(a.nodes),
            "codec": self.mode.to_string(),
            "dp_clip": a.dp_clip,
            "dp_noise": a.dp_noise,
            "dp_delta": a.dp_delta,
            "dp_central": a.dp_central,
            "dp_adaptive_quantile": a.dp_adaptive_quantile,
            "local_steps": a.local_steps,
            "lr": a.lr,
            "server_optimizer": self.server_opt,
            "keep_optimizer_state": a.keep_optimizer_state,
            "batch_size": a.batch_size,
            "seq_len": a.seq_len,
            "samples": a.samples,
            "validation": a.validation,
            "corpus": a.corpus,
            "processes": a.processes,
            "model": a.model,
            "device": a.device.to_string(),
            "seed": a.seed,
            "eval_n": a.eval_n,
            "mc": a.mc,
            "gen_length": a.gen_length,
            "centralized": a.centralized,
        });
        // Added apart: one more key in the literal above exceeds json!'s recursion limit.
        v["centralized_lr"] =
            serde_json::json!(a.centralized.then(|| a.centralized_lr.unwrap_or(a.lr)));
        v["duplicate_filter"] = serde_json::json!(a.duplicate_filter);
        v["fraction_fit"] = serde_json::json!(a.fraction_fit);
        v["min_fit_nodes"] = serde_json::json!(self.sampling.map(|s| s.min_fit));
        v["partition"] = serde_json::json!(
            self.partition
                .map_or_else(|| "domains".to_string(), |p| p.to_string())
        );
        v
    }

    /// One line of the settings, printed before round 1.
    pub fn summary(&self) -> String {
        let a = &self.args;
        format!(
            "{} nodes{}{} ({} Byzantine{}), {} rounds{} × {} local steps (batch {} × {} tokens, lr {}{}), \
             codec {}, rule {}{}, {} transport{}, seed {}, held-out {} per domain",
            a.nodes,
            a.layout_nodes
                .filter(|&l| l != a.nodes)
                .map_or(String::new(), |l| format!(
                    " with the data of the first {} of {l}",
                    a.nodes
                )),
            self.partition
                .map_or(String::new(), |p| format!(", data split {p}")),
            a.byzantine,
            self.attack.map_or(String::new(), |x| format!(
                ": {}",
                a.attack.as_deref().unwrap_or(x.name())
            )),
            a.rounds,
            self.sampling.map_or(String::new(), |s| format!(
                " × {} drawn nodes",
                s.size(a.nodes).unwrap_or(0)
            )),
            a.local_steps,
            a.batch_size,
            a.seq_len,
            a.lr,
            if a.keep_optimizer_state {
                ", AdamW state kept across rounds"
            } else {
                ""
            },
            self.mode,
            a.rule.as_deref().unwrap_or("DAF defaults"),
            if self.server_opt == ServerOptimizer::default() {
                String::new()
            } else {
                format!(", server optimizer {}", self.server_opt)
            },
            match a.transport {
                Transport::Grpc => "gRPC+mTLS",
                Transport::Libp2p => "libp2p",
            },
            if a.processes {
                ", one process per node"
            } else {
                ""
            },
            a.seed,
            a.eval_n,
        )
    }
}

impl SimArgs {
    /// Checks every flag and resolves the aggregation config.
    pub fn validate(self) -> Result<SimConfig, SimConfigError> {
        if self.nodes < 3 {
            return Err(invalid("nodes", "a round needs at least 3 nodes"));
        }
        if self.nodes > 1000 {
            return Err(invalid("nodes", "at most 1000 in one simulation"));
        }
        if self.rounds == 0 || self.rounds > 10_000 {
            return Err(invalid("rounds", "must be in 1..=10000"));
        }
        if self.local_steps == 0 {
            return Err(invalid("local-steps", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch-size", "must be at least 1"));
        }
        if !(8..=512).contains(&self.seq_len) {
            return Err(invalid("seq-len", "must be in 8..=512"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid("lr", "must be finite and positive"));
        }
        if self
            .centralized_lr
            .is_some_and(|lr| !(lr.is_finite() && lr > 0.0))
        {
            return Err(invalid("centralized-lr", "must be finite and positive"));
        }
        if self.samples == 0 || self.validation == 0 || self.eval_n == 0 || self.mc == 0 {
            return Err(invalid(
                "samples",
                "--samples, --validation, --eval-n and --mc must be positive",
            ));
        }
        if self.gen_length == 0 || !self.gen_length.is_multiple_of(8) {
            return Err(invalid("gen-length", "must be a positive multiple of 8"));
        }
        if self.round_timeout == 0 {
            return Err(invalid("round-timeout", "must be positive"));
        }
        let mode: Mode = self
            .codec
            .parse()
            .map_err(|e| invalid("codec", format!("{e}")))?;
        let attack = match (&self.attack, self.byzantine) {
            (None, 0) => None,
            (Some(_), 0) => return Err(invalid("attack", "needs --byzantine K with K ≥ 1")),
            (None, _) => return Err(invalid("byzantine", "needs --attack")),
            (Some(s), k) => {
                if k * 2 >= self.nodes {
                    return Err(invalid(
                        "byzantine",
                        format!("{k} of {} nodes leaves no honest majority", self.nodes),
                    ));
                }
                Some(
                    s.parse::<Attack>()
                        .map_err(|e| invalid("attack", e.to_string()))?,
                )
            }
        };
        if let Some(l) = self.layout_nodes {
            if l < self.nodes || l > 1000 {
                return Err(invalid(
                    "layout-nodes",
                    format!("must be in {}..=1000 (at least --nodes)", self.nodes),
                ));
            }
            if !self.corpus.is_empty() {
                return Err(invalid(
                    "layout-nodes",
                    "lays out the built-in data only; --corpus files are split across --nodes",
                ));
            }
        }
        if self.processes && self.byzantine > 0 {
            return Err(invalid(
                "processes",
                "attackers collude through an in-process board; run attacks without --processes",
            ));
        }
        match (self.dp_clip, self.dp_noise) {
            (None, None) => {}
            (Some(c), z) => {
                if !(c.is_finite() && c > 0.0) {
                    return Err(invalid("dp-clip", "must be finite and positive"));
                }
                if let Some(z) = z
                    && !(z.is_finite() && z >= 0.0)
                {
                    return Err(invalid("dp-noise", "must be finite and ≥ 0"));
                }
            }
            (None, Some(_)) => return Err(invalid("dp-noise", "needs --dp-clip")),
        }
        if !(self.dp_delta > 0.0 && self.dp_delta < 1.0) {
            return Err(invalid("dp-delta", "must be in (0, 1)"));
        }
        if let Some(k) = self.norm_bound
            && !(k.is_finite() && k > 0.0)
        {
            return Err(invalid("norm-bound", "must be finite and positive"));
        }
        if let Some(c) = self.cosine_filter
            && !(-1.0..=1.0).contains(&c)
        {
            return Err(invalid("cosine-filter", "must be in [-1, 1]"));
        }
        let f = self.assume_f.unwrap_or(self.byzantine);
        let mut daf = crate::config::daf_config(&self.aggregation(f))?;
        let server_opt = ServerOptSpec {
            name: self.server_opt.clone(),
            lr: self.server_lr,
            momentum: self.server_momentum,
            beta1: self.server_beta1,
            beta2: self.server_beta2,
            tau: self.server_tau,
        }
        .build()
        .map_err(|e| match e.key {
            "optimizer" => invalid("server-opt", e.reason),
            "lr" => invalid("server-lr", e.reason),
            "momentum" => invalid("server-momentum", e.reason),
            "beta1" => invalid("server-beta1", e.reason),
            "beta2" => invalid("server-beta2", e.reason),
            _ => invalid("server-tau", e.reason),
        })?;
        for (band, g) in [
            ("coarse", &daf.coarse),
            ("domain", &daf.domain),
            ("fine", &daf.fine),
        ] {
            let need = g.rule.min_inputs();
            if need > self.nodes {
                return Err(invalid(
                    "assume-f",
                    format!(
                        "the {band} band's rule {} with f = {} needs at least {need} updates a \
                         round, and {} nodes send {}",
                        g.rule.rule, g.rule.params.f, self.nodes, self.nodes
                    ),
                ));
            }
        }
        let attackers = (self.nodes - self.byzantine..self.nodes).collect();
        let central_dp = match (self.dp_central, self.dp_clip) {
            (true, Some(clip)) => {
                for g in [
                    &mut daf.coarse,
                    &mut daf.domain,
                    &mut daf.fine,
                    &mut daf.other,
                ] {
                    g.weights = ruvdllm::aggregate::daf::WeightSource::Uniform;
                }
                let dp = crate::round::CentralDp {
                    clip,
                    noise_multiplier: self.dp_noise.unwrap_or(0.0),
                    expected_nodes: self.nodes,
                    delta: self.dp_delta,
                    key: self.seed ^ 0xD9_CE27,
                    adaptive: self
                        .dp_adaptive_quantile
                        .map(|q| crate::round::dp::AdaptiveClip {
                            target_quantile: q,
                            lr: 0.2,
                            count_stddev: self.nodes as f64 / 20.0,
                        }),
                };
                dp.validate().map_err(|(field, reason)| {
                    invalid("dp-central", format!("{field}: {reason}"))
                })?;
                crate::round::dp::check_daf(&daf).map_err(|e| invalid("dp-central", e))?;
                Some(dp)
            }
            _ => None,
        };
        let partition = match self.partition.as_str() {
            "domains" => None,
            spec => Some(
                spec.parse::<Scheme>()
                    .map_err(|e| invalid("partition", e.to_string()))?,
            ),
        };
        let sampling = match self.fraction_fit {
            None => None,
            Some(fraction) => {
                let s = crate::round::Sampling {
                    fraction,
                    min_fit: self.min_fit_nodes.min(self.nodes),
                    // Every node registers before round 1 is drawn.
                    min_available: self.nodes,
                };
                if self.min_fit_nodes == 0 {
                    return Err(invalid("min-fit-nodes", "must be at least 1"));
                }
                s.validate()
                    .map_err(|(_, reason)| invalid("fraction-fit", reason))?;
                if self.byzantine > 0 {
                    return Err(invalid(
                        "fraction-fit",
                        "the colluding attackers wait for every honest update of a round; run \
                         attacks without client sampling",
                    ));
                }
                if self.dp_central {
                    return Err(invalid(
                        "fraction-fit",
                        "central DP assumes every node takes part in every round",
                    ));
                }
                Some(s)
            }
        };
        Ok(SimConfig {
            mode,
            attack,
            daf,
            server_opt,
            central_dp,
            attackers,
            partition,
            sampling,
            args: self,
        })
    }

    /// `--rule` sets every band's rule with sample-count weights; `--rule-<band>` overrides one
    /// band; `--norm-bound` adds the norm pre-filter everywhere.
    fn aggregation(&self, f: usize) -> Aggregation {
        let band = |specific: &Option<String>, domain: bool| {
            let rule = specific.clone().or_else(|| self.rule.clone());
            BandSection {
                weights: (domain && rule.is_some()).then(|| "samples".to_string()),
                rule,
                fallback: self.fallback.clone(),
                norm_bound_median_multiple: self.norm_bound,
                duplicate_bound: self.duplicate_filter,
                cosine_threshold: self.cosine_filter,
                cosine_reference: self
                    .cosine_filter
                    .map(|_| self.cosine_reference.name().to_string()),
                ..BandSection::default()
            }
        };
        Aggregation {
            f,
            coarse: band(&self.rule_coarse, false),
            domain: band(&self.rule_domain, true),
            fine: band(&self.rule_fine, false),
            other: band(&None, false),
            ..Aggregation::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimArgs,
    }

    fn parse(extra: &[&str]) -> Result<SimConfig, SimConfigError> {
        let mut argv = vec!["sim"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).args.validate()
    }

    #[test]
    fn defaults_validate_and_flags_are_checked() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.args.nodes, 10);
        assert!(c.attackers.is_empty());
        let c = parse(&["--byzantine", "3", "--attack", "scaling:50"]).unwrap();
        assert_eq!(c.attackers, vec![7, 8, 9]);
        assert_eq!(c.daf.coarse.rule.params.f, 3);
        let c = parse(&["--nodes", "7", "--layout-nodes", "10", "--assume-f", "3"]).unwrap();
        assert_eq!(c.to_json()["layout_nodes"], 10);
        let c = parse(&["--cosine-filter", "-0.1", "--norm-bound", "3"]).unwrap();
        for g in [&c.daf.coarse, &c.daf.domain, &c.daf.fine] {
            assert_eq!(g.prefilter.cosine_threshold, Some(-0.1));
            assert_eq!(
                g.prefilter.cosine_reference,
                ruvdllm::aggregate::CosineReference::Median
            );
        }
        let c = parse(&["--rule", "median", "--rule-fine", "krum"]).unwrap();
        assert_eq!(c.daf.domain.rule.rule, ruvdllm::aggregate::Rule::Median);
        assert_eq!(c.daf.fine.rule.rule, ruvdllm::aggregate::Rule::Krum);
        let c = parse(&["--rule", "median", "--fallback", "fedavg"]).unwrap();
        for g in [&c.daf.coarse, &c.daf.domain, &c.daf.fine] {
            assert_eq!(g.rule.fallback, Some(ruvdllm::aggregate::Rule::FedAvg));
        }
        assert_eq!(c.to_json()["fallback"], "fedavg");
        assert_eq!(c.to_json()["keep_optimizer_state"], false);
        assert_eq!(
            (c.partition, &c.to_json()["partition"]),
            (None, &serde_json::json!("domains"))
        );
        let c = parse(&["--partition", "dirichlet:0.5"]).unwrap();
        assert_eq!(c.partition, Some(Scheme::Dirichlet { alpha: 0.5 }));
        assert_eq!(c.to_json()["partition"], "dirichlet:0.5");
        assert!(
            c.summary().contains("data split dirichlet:0.5"),
            "{}",
            c.summary()
        );
        assert_eq!(
            parse(&["--partition", "iid"]).unwrap().partition,
            Some(Scheme::Iid)
        );
        for bad in ["dirichlet:0", "dirichlet", "Domains", "zipf"] {
            match parse(&["--partition", bad]) {
                Err(SimConfigError::Invalid {
                    flag: "partition", ..
                }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(c.sampling, None);
        let c = parse(&["--fraction-fit", "0.2"]).unwrap();
        let s = c.sampling.unwrap();
        assert_eq!(
            (s.fraction, s.min_fit, s.min_available, s.size(10)),
            (0.2, 2, 10, Some(2))
        );
        assert!(
            c.summary()
                .contains("4 rounds × 2 drawn nodes × 6 local steps"),
            "{}",
            c.summary()
        );
        assert_eq!(c.to_json()["fraction_fit"], 0.2);
        for bad in [
            &["--fraction-fit", "0"][..],
            &["--fraction-fit", "1.5"],
            &["--fraction-fit", "NaN"],
            &["--fraction-fit", "0.5", "--min-fit-nodes", "0"],
            &[
                "--fraction-fit",
                "0.5",
                "--byzantine",
                "2",
                "--attack",
                "gaussian",
            ],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let c = parse(&["--keep-optimizer-state"]).unwrap();
        assert!(c.args.keep_optimizer_state);
        assert!(c.summary().contains("AdamW state kept across rounds"));
        assert_eq!(parse(&[]).unwrap().daf.domain.rule.fallback, None);
        assert_eq!(parse(&[]).unwrap().server_opt, ServerOptimizer::default());
        let c = parse(&["--server-opt", "fedadam", "--server-lr", "0.05"]).unwrap();
        assert_eq!(
            c.server_opt,
            ServerOptimizer::FedAdam {
                eta: 0.05,
                beta1: 0.9,
                beta2: 0.99,
                tau: 1e-9
            }
        );
        assert_eq!(c.to_json()["server_optimizer"]["name"], "fedadam");
        assert!(
            c.summary().contains("server optimizer fedadam"),
            "{}",
            c.summary()
        );
        assert_eq!(
            parse(&["--centralized"]).unwrap().to_json()["centralized_lr"],
            0.1
        );
        assert!(parse(&[]).unwrap().to_json()["centralized_lr"].is_null());
        let c = parse(&["--centralized", "--centralized-lr", "0.05"]).unwrap();
        assert_eq!(c.to_json()["centralized_lr"], 0.05);
        let c = parse(&["--duplicate-filter", "0.99"]).unwrap();
        for g in [&c.daf.coarse, &c.daf.domain, &c.daf.fine] {
            assert_eq!(g.prefilter.duplicate_bound, Some(0.99));
        }
        assert_eq!(c.to_json()["duplicate_filter"], 0.99);
        for (bad, flag) in [
            (&["--duplicate-filter", "1.5"][..], "duplicate"),
            (
                &["--centralized", "--centralized-lr", "0"],
                "centralized-lr",
            ),
            (&["--server-opt", "fedsgd"], "server-opt"),
            (&["--server-momentum", "1"], "server-momentum"),
            (
                &["--server-opt", "fedadam", "--server-momentum", "0.9"],
                "server-momentum",
            ),
            (
                &["--server-opt", "fedyogi", "--server-beta2", "1.5"],
                "server-beta2",
            ),
            (
                &["--server-opt", "fedadagrad", "--server-tau", "0"],
                "server-tau",
            ),
        ] {
            let e = parse(bad).err().unwrap().to_string();
            assert!(e.contains(flag), "{bad:?}: {e}");
        }
        assert_eq!(
            parse(&["--transport", "libp2p"]).unwrap().args.transport,
            Transport::Libp2p
        );
        for bad in [
            &["--nodes", "2"][..],
            &["--byzantine", "5", "--attack", "ipm"],
            &["--byzantine", "1"],
            &["--attack", "ipm"],
            &["--codec", "int9"],
            &["--rule", "krumm"],
            &["--rule", "median", "--fallback", "krumm"],
            &["--dp-noise", "1"],
            &["--gen-length", "12"],
            &["--processes", "--byzantine", "1", "--attack", "ipm"],
            &["--nodes", "7", "--layout-nodes", "6"],
            &["--nodes", "7", "--rule", "krum", "--assume-f", "3"],
            &["--server-lr", "0"],
            &["--server-lr", "12"],
            &["--server-lr", "NaN"],
            &["--cosine-filter", "1.5"],
            &["--layout-nodes", "12", "--corpus", "a.txt"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // An unknown cosine reference is a usage error naming the choices.
        let e = Cli::try_parse_from(["sim", "--cosine-filter", "0", "--cosine-reference", "mean"])
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("expected previous, median or both"),
            "{e}"
        );
    }
}
