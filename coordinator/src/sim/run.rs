//! One simulation from flags to report: the parts both modes share.
//!
//! [`run`] prepares everything that is not a node — output folder, the base model (loaded once,
//! shared read-only), each node's data, the held-out evaluator and the base's quality, a fresh PKI
//! and the real coordinator daemon on `127.0.0.1:0` — then hands the rounds to the in-process
//! driver ([`super::inprocess`]) or the one-process-per-node driver ([`super::processes`]), and
//! finally adds the centralized baseline, the DP accounting and the outputs (`report.json`, SVG
//! plots; every round's global adapter was saved as it closed).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use ruvdllm::adapter::{Naming, Shape, Spec, Talora};
use ruvdllm::attack::{Attack, label_flip};
use ruvdllm::delta::Delta;
use ruvdllm::model::Model;
use ruvdllm::tokenizer::Tokenizer;
use ruvdllm_node::daemon::local_data::LocalData;

use super::cluster::{self, OutDir};
use super::config::SimConfig;
use super::evaluate::Evaluator;
use super::record::{self, NodeView};
use super::report::{NodeData, Quality, Report, RoundRecord, SocketTotals, table_row};
use crate::certs::Layout;
use crate::daemon::Running;
use crate::service::ClosedRound;

/// Ends round `r` of either driver: saves the round's global adapter and evaluates it (off the
/// async runtime: evaluation is seconds of CPU), builds the round's record from the nodes' views
/// and the closed round, and prints its table row.
pub async fn finish_round(
    prep: &Arc<Prepared>,
    obs: &dyn Observer,
    r: u64,
    start: Instant,
    views: &[NodeView],
    closed: &ClosedRound,
) -> anyhow::Result<RoundRecord> {
    let p = prep.clone();
    let global = closed.global.clone();
    let quality = tokio::task::spawn_blocking(move || {
        p.save_adapter(r, &global)?;
        p.quality(Some(&global))
    })
    .await
    .context("evaluation task")??;
    let rec = record::build(r, start, views, closed, quality);
    obs.line(&table_row(&rec));
    obs.round_finished(r);
    Ok(rec)
}

/// Where a simulation reports progress and its round table.
pub trait Observer: Send + Sync {
    /// A line of output (settings, table header and rows, summary).
    fn line(&self, text: &str);
    /// Round `round` was released to the nodes.
    fn round_started(&self, _round: u64) {}
    /// `done` of `of` nodes finished the current round.
    fn nodes_done(&self, _done: usize, _of: usize) {}
    /// Round `round`'s row is complete.
    fn round_finished(&self, _round: u64) {}
}

/// Everything the round drivers share.
pub struct Prepared {
    pub cfg: SimConfig,
    pub out: OutDir,
    pub model: Arc<Model>,
    pub model_path: PathBuf,
    pub tok: Arc<dyn Tokenizer>,
    pub spec: Spec,
    pub initial: Talora,
    pub base_hash: String,
    pub data: Vec<LocalData>,
    pub evaluator: Arc<Evaluator>,
    pub pki: Layout,
    /// The coordinator's transport (`--transport`), keys and allowlist already written.
    pub transport: crate::config::Transport,
}

impl Prepared {
    /// Rows per packed sequence minus BOS and one EOS: the corpus chunk budget.
    pub fn max_len(&self) -> usize {
        self.cfg.args.seq_len.saturating_sub(2)
    }

    /// Saves the global adapter after `round` and returns its folder.
    pub fn save_adapter(&self, round: u64, global: &Delta) -> anyhow::Result<PathBuf> {
        let t = Talora::from_delta(
            self.spec.clone(),
            self.initial.run_seed(),
            self.initial.shape(),
            global,
        )?;
        let dir = self.out.adapter(round);
        t.save(
            &dir,
            &self.model_path.display().to_string(),
            Naming::of(self.model.config().arch),
        )
        .with_context(|| format!("saving {}", dir.display()))?;
        Ok(dir)
    }

    /// Held-out quality of a global adapter (blocking; run off the async threads).
    pub fn quality(&self, global: Option<&Delta>) -> anyhow::Result<Quality> {
        let m = self
            .evaluator
            .adapted(&self.spec, self.initial.run_seed(), global)?;
        Ok(self.evaluator.quality(&m)?)
    }
}

/// What a round driver returns.
pub struct Driven {
    pub rounds: Vec<RoundRecord>,
    pub sockets: Option<SocketTotals>,
}

/// Whether node `i` took part in a closed round: every node, or one the coordinator drew.
pub fn took_part(closed: &ClosedRound, i: usize) -> bool {
    closed
        .report
        .selected
        .as_ref()
        .is_none_or(|s| s.contains(&cluster::node_id(i)))
}

/// Runs a whole simulation.
pub fn run(cfg: SimConfig, obs: &dyn Observer) -> anyhow::Result<Report> {
    let wall = Instant::now();
    crate::daemon::install_crypto();
    let prep = prepare(cfg)?;
    obs.line(&format!("settings: {}", prep.cfg.summary()));
    let data: Vec<NodeData> = prep
        .data
        .iter()
        .enumerate()
        .map(|(i, d)| NodeData::new(cluster::node_id(i), d))
        .collect();
    if prep.cfg.partition.is_some() {
        let lines: Vec<String> = data.iter().map(NodeData::line).collect();
        obs.line(&format!("data: {}", lines.join("; ")));
    }
    let base = prep.quality(None).context("evaluating the base")?;
    obs.line(&format!(
        "base {}: held-out loss {:.4}, perplexity bound {:.3}, exact match {}/{} ({} held-out samples)",
        prep.model_path.display(),
        base.heldout_loss,
        base.ppl_bound,
        base.exact_match_correct,
        base.exact_match_total,
        prep.evaluator.len()
    ));
    prep.save_adapter(0, &prep.initial.to_delta())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let prep = Arc::new(prep);
    let driven = rt.block_on(async {
        let settings = cluster::coordinator_settings(
            &prep.out,
            prep.transport.clone(),
            &prep.pki,
            &prep.initial,
            &prep.base_hash,
            prep.cfg.args.nodes,
            prep.cfg.daf.clone(),
            prep.cfg.server_opt,
            prep.cfg.central_dp,
            prep.cfg.sampling,
            prep.cfg.args.round_timeout * 1000,
        );
        let running: Running = crate::daemon::start(settings)
            .await
            .context("starting the coordinator")?;
        obs.line(&super::report::table_header());
        let result = if prep.cfg.args.processes {
            super::processes::drive(&prep, &running, obs).await
        } else {
            super::inprocess::drive(&prep, &running, obs).await
        };
        let stopped = running.shutdown().await;
        let driven = result?;
        stopped.context("stopping the coordinator")?;
        anyhow::Ok(driven)
    })?;
    drop(rt);
    let centralized = if prep.cfg.args.centralized {
        let q = super::centralized::run(&prep)?;
        Some(q)
    } else {
        None
    };
    let dp_epsilon = match (prep.cfg.args.dp_clip, prep.cfg.args.dp_noise) {
        (Some(_), Some(z)) if z > 0.0 => Some(
            ruvdllm::privacy::epsilon(1.0, z, prep.cfg.args.rounds, prep.cfg.args.dp_delta)
                .context("DP accounting")?,
        ),
        _ => None,
    };
    let a = &prep.cfg.args;
    let last = driven.rounds.last().map_or(0, |r| r.round);
    let reproduce = if !a.corpus.is_empty() {
        format!(
            "none for --corpus runs (their held-out set is the nodes' validation chunks); the \
             adapters are in {}",
            prep.out.adapters().display()
        )
    } else {
        format!(
            "node eval --talora {} --n {} --seq-len {} --mc {} --seed {} --gen-length {} --block-length 8{}",
            prep.out.adapter(last).display(),
            a.eval_n,
            a.seq_len,
            a.mc,
            a.seed,
            a.gen_length,
            a.model
                .as_ref()
                .map_or(String::new(), |m| format!(" --model {}", m.display()))
        )
    };
    let report = Report {
        config: prep.cfg.to_json(),
        seed: a.seed,
        base,
        rounds: driven.rounds,
        wall_s: wall.elapsed().as_secs_f64(),
        sockets: driven.sockets,
        centralized,
        dp_epsilon,
        reproduce,
        data,
    };
    report.write(&prep.out.report())?;
    let plots = super::plot::write_all(&report, &prep.out.root)?;
    summarize(&report, obs, &prep.out, &plots);
    Ok(report)
}

fn summarize(report: &Report, obs: &dyn Observer, out: &OutDir, plots: &[PathBuf]) {
    if let Some(last) = report.rounds.last() {
        obs.line(&format!(
            "held-out loss {:.4} → {:.4} ({:+.1} %), exact match {}/{} → {}/{}, perplexity bound {:.3} → {:.3}",
            report.base.heldout_loss,
            last.quality.heldout_loss,
            -100.0 * report.loss_improvement(),
            report.base.exact_match_correct,
            report.base.exact_match_total,
            last.quality.exact_match_correct,
            last.quality.exact_match_total,
            report.base.ppl_bound,
            last.quality.ppl_bound,
        ));
    }
    if let Some(c) = &report.centralized {
        obs.line(&format!(
            "centralized (same total steps on the union of the data, lr {}): held-out loss {:.4}, \
             perplexity bound {:.3}, exact match {}/{}",
            report.config["centralized_lr"],
            c.heldout_loss,
            c.ppl_bound,
            c.exact_match_correct,
            c.exact_match_total
        ));
    }
    if let Some(e) = report.dp_epsilon {
        let c = &report.config;
        obs.line(&format!(
            "{} DP: ε = {e:.3} at δ = {} after {} rounds",
            if c["dp_central"] == true {
                "central"
            } else {
                "local"
            },
            c["dp_delta"],
            report.rounds.len()
        ));
    }
    obs.line(&format!(
        "wall {:.1} s; wrote {}, {}; adapters in {}",
        report.wall_s,
        out.report().display(),
        plots
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        out.adapters().display()
    ));
    obs.line(&format!("reproduce the last row: {}", report.reproduce));
}

fn prepare(cfg: SimConfig) -> anyhow::Result<Prepared> {
    let a = &cfg.args;
    // The model (and its device) first: a refused device or checkpoint leaves no output folder.
    let model_path = ruvdllm_node::model_arg::resolve(a.model.as_deref());
    let (loaded, tok) = ruvdllm_node::model_arg::load_on(a.model.as_deref(), a.device)?;
    // Absolute, as the output folder is: node processes resolve a relative path in their
    // `node.toml` against that file's folder, and the adapters record it as their base.
    let model_path = model_path
        .canonicalize()
        .with_context(|| format!("resolving {}", model_path.display()))?;
    let out = OutDir::create(&a.out)?;
    let base_hash = ruvdllm_node::model_arg::checkpoint_hash(&model_path)
        .with_context(|| format!("hashing {}", model_path.display()))?;
    let model = Arc::new(loaded.model);
    anyhow::ensure!(
        a.seq_len <= model.config().max_seq_len,
        "--seq-len {} exceeds the model's {}",
        a.seq_len,
        model.config().max_seq_len
    );
    let tok: Arc<dyn Tokenizer> = Arc::from(tok);
    let spec = Spec::default();
    let initial = cluster::initial_adapter(&spec, a.seed, Shape::from(model.config()))?;
    let max_len = a.seq_len.saturating_sub(2);
    let mut data = cluster::node_data(&cluster::DataPlan {
        nodes: a.nodes,
        layout: a.layout_nodes.unwrap_or(a.nodes),
        samples: a.samples,
        validation: a.validation,
        corpus: &a.corpus,
        max_len,
        partition: cfg.partition,
        seed: a.seed,
    })?;
    if cfg.attack == Some(Attack::LabelFlip) {
        for &i in &cfg.attackers {
            for s in &mut data[i].train {
                label_flip(&s.prompt, &mut s.answer);
            }
        }
    }
    let evaluator = if a.corpus.is_empty() {
        Evaluator::builtin(
            model.clone(),
            tok.clone(),
            a.eval_n,
            a.seq_len,
            a.mc,
            a.seed,
            a.gen_length,
        )
    } else {
        let held: Vec<_> = data.iter().flat_map(|d| d.validation.clone()).collect();
        Evaluator::corpus(
            model.clone(),
            tok.clone(),
            held,
            a.seq_len,
            a.mc,
            a.seed,
            a.gen_length,
        )
    };
    let pki = cluster::pki(&out, a.nodes)?;
    let transport = match a.transport {
        super::Transport::Grpc => crate::config::Transport::Grpc,
        super::Transport::Libp2p => {
            crate::config::Transport::Libp2p(cluster::libp2p(&out, a.nodes)?)
        }
    };
    Ok(Prepared {
        transport,
        out,
        model,
        model_path,
        tok,
        spec,
        initial,
        base_hash,
        data,
        evaluator: Arc::new(evaluator),
        pki,
        cfg,
    })
}
