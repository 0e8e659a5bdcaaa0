//! `--processes`: every node is its own OS process running the node daemon
//! (`node run --config nodes/<id>/node.toml`), exactly as an operator would start it; only the
//! coordinator and the held-out evaluation stay in this process.
//!
//! The generated configs carry the same data assignment, training options and codec as the
//! in-process mode, and a round journal (`nodes/<id>/rounds.jsonl`, see
//! `ruvdllm_node::daemon::journal`): what this process cannot observe inside another one — each
//! node's socket bytes (counted by its own client, as in-process), training times and loss, encoded
//! sizes and the coordinator's answer — comes from the node's journal line of the round. The
//! round's total latency, aggregation time, acceptances and held-out figures are measured here as
//! in-process. Node processes run freely from round to round (nothing gates them); after the last
//! round closes they get SIGTERM, which the daemon handles gracefully.
//!
//! The node binary is `--node-bin`, else `node` next to this executable. A `coordinator` binary
//! passed as `--node-bin` (or running this simulation itself without a `node` beside it) runs the
//! same node daemon code through its hidden `sim-node` subcommand.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ruvdllm_node::config::{
    Data, File as NodeFile, Libp2pSection, PrivacySection, Tls, Train, TransportKind,
};
use ruvdllm_node::daemon::any_client::ClientTarget;
use ruvdllm_node::daemon::journal::{self, Journal};
use ruvdllm_node::daemon::local_data::DataSource;

use super::cluster::{self, node_id};
use super::events::{Bytes, NodeEvents};
use super::record::NodeView;
use super::run::{Driven, Observer, Prepared, finish_round};
use crate::daemon::Running;

/// How to start a node process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeBin {
    /// `node run --config …`
    Node(PathBuf),
    /// `coordinator sim-node --config …` (the same daemon code).
    Coordinator(PathBuf),
}

impl NodeBin {
    /// Resolves `--node-bin` or the binaries next to this executable.
    pub fn resolve(flag: Option<&Path>) -> anyhow::Result<Self> {
        let classify = |p: &Path| {
            if p.file_stem().is_some_and(|s| s == "coordinator") {
                NodeBin::Coordinator(p.to_path_buf())
            } else {
                NodeBin::Node(p.to_path_buf())
            }
        };
        if let Some(p) = flag {
            anyhow::ensure!(p.is_file(), "--node-bin {} is not a file", p.display());
            return Ok(classify(p));
        }
        let exe = std::env::current_exe().context("locating this executable")?;
        let dir = exe.parent().unwrap_or(Path::new("."));
        for c in [dir.join("node"), dir.join("../node")] {
            if c.is_file() {
                return Ok(NodeBin::Node(c));
            }
        }
        if exe.file_stem().is_some_and(|s| s == "coordinator") {
            return Ok(NodeBin::Coordinator(exe));
        }
        anyhow::bail!(
            "no `node` binary next to {} (build it with `cargo build -p ruvdllm-node`, or pass --node-bin)",
            exe.display()
        )
    }

    fn command(&self, config: &Path) -> Command {
        let (bin, sub) = match self {
            NodeBin::Node(p) => (p, "run"),
            NodeBin::Coordinator(p) => (p, "sim-node"),
        };
        let mut c = Command::new(bin);
        c.arg(sub).arg("--config").arg(config);
        c
    }
}

/// Writes `nodes/<id>/node.toml` for node `i` (and its corpus share, if any).
fn write_config(prep: &Prepared, running: &Running, i: usize) -> anyhow::Result<PathBuf> {
    let a = &prep.cfg.args;
    let id = node_id(i);
    let dir = prep.out.nodes().join(&id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = cluster::target(&prep.pki, running.addr, i);
    let (transport, libp2p) = match cluster::client_target(&prep.out, &prep.pki, running, i) {
        ClientTarget::Grpc(_) => (TransportKind::Grpc, Libp2pSection::default()),
        ClientTarget::Libp2p(t) => {
            let peer = match &prep.transport {
                crate::config::Transport::Libp2p(l) => l.peer_id.to_string(),
                crate::config::Transport::Grpc => String::new(),
            };
            let section = Libp2pSection {
                coordinator: t.coordinator.to_string(),
                coordinator_peer_id: peer,
                key: t.key,
            };
            (TransportKind::Libp2p, section)
        }
    };
    let mut data = Data {
        samples: a.samples,
        validation: a.validation,
        ..Data::default()
    };
    if a.corpus.is_empty() && prep.cfg.partition.is_none() {
        if let DataSource::Builtin {
            domain,
            split,
            shard,
            shards,
        } = cluster::builtin_source(i, a.layout_nodes.unwrap_or(a.nodes))
        {
            data.domain = domain.name().into();
            data.split = split.name().into();
            data.shard = shard;
            data.shards = shards;
        }
    } else {
        // The samples this node holds in-process, exactly: training and validation files of
        // JSON lines (prompts and domains kept).
        let d = &prep.data[i];
        let write = |name: &str, samples: &[ruvdllm::data::Sample]| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            ruvdllm::data::corpus::write_jsonl(&path, samples)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };
        data.corpus = vec![write("train.jsonl", &d.train)?];
        data.validation_corpus = vec![write("validation.jsonl", &d.validation)?];
        data.samples = d.train.len();
        data.validation = d.validation.len();
    }
    let opts = super::inprocess::node_train_options(prep);
    let file = NodeFile {
        node_id: id,
        transport,
        libp2p,
        coordinator: target.addr.clone(),
        server_name: target.server_name.clone(),
        base_model: prep.model_path.clone(),
        base_model_hash: prep.base_hash.clone(),
        device: a.device.to_string(),
        codec: prep.cfg.mode.to_string(),
        zstd_level: 3,
        max_adapter_bytes: 256 << 20,
        backoff_base_ms: 50,
        backoff_max_ms: 2000,
        tls: Tls {
            ca_cert: target.ca_cert,
            cert: target.cert,
            key: target.key,
        },
        data,
        train: Train {
            steps: opts.steps,
            batch_size: opts.batch_size,
            seq_len: opts.seq_len,
            lr: opts.lr,
            warmup: opts.warmup,
            keep_optimizer_state: opts.keep_optimizer_state,
            seed: a.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9),
            ..Train::default()
        },
        journal: journal_path(prep, i),
        // The in-process nodes' local DP, seeded the same way, so both modes draw the same noise.
        privacy: PrivacySection {
            clip: a.local_dp(),
            noise_multiplier: a.local_dp().and(a.dp_noise).unwrap_or(0.0),
            delta: a.dp_delta,
            seed: a
                .local_dp()
                .map(|_| a.seed ^ (i as u64).wrapping_mul(0x9E37)),
        },
        ..NodeFile::default()
    };
    let path = dir.join("node.toml");
    std::fs::write(&path, toml::to_string(&file)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn journal_path(prep: &Prepared, i: usize) -> PathBuf {
    prep.out.nodes().join(node_id(i)).join("rounds.jsonl")
}

/// Node `i`'s journal line of `round`, waiting up to `wait` for it: a node writes the line when the
/// coordinator answered its upload, which can be just after the round closed.
async fn journal_entry(
    prep: &Prepared,
    i: usize,
    round: u64,
    wait: Duration,
) -> anyhow::Result<Option<journal::Entry>> {
    let path = journal_path(prep, i);
    let deadline = Instant::now() + wait;
    loop {
        let entries = Journal::read(&path).map_err(anyhow::Error::msg)?;
        if let Some(e) = entries.into_iter().rev().find(|e| e.round == round) {
            return Ok(Some(e));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The journal line as the round's node events (wall-clock times mapped onto this process's
/// monotonic clock).
fn events_of(e: &journal::Entry) -> NodeEvents {
    let (now, now_ms) = (Instant::now(), journal::now_ms());
    let at = |ms: u64| {
        (ms > 0)
            .then(|| now.checked_sub(Duration::from_millis(now_ms.saturating_sub(ms))))
            .flatten()
    };
    NodeEvents {
        fetched_at: at(e.fetched_ms),
        codec_down: e.codec_down,
        train_start: at(e.train_start_ms),
        train_end: at(e.train_end_ms),
        train_loss: e.train_loss.unwrap_or(f64::NAN),
        submit_start: at(e.submit_start_ms),
        codec_up: e.codec_up,
        outcome: Some(if e.submitted {
            None
        } else {
            Some(e.refusal.clone().unwrap_or_else(|| "refused".into()))
        }),
        done_at: at(e.done_ms),
        bytes_at_done: Bytes {
            up: e.socket_up.unwrap_or(0),
            down: e.socket_down.unwrap_or(0),
        },
    }
}

fn stop(children: &mut [(usize, Child)]) {
    for (_, c) in children.iter() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (_, c) in children.iter_mut() {
        while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(c.try_wait(), Ok(None)) {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

pub async fn drive(
    prep: &Arc<Prepared>,
    running: &Running,
    obs: &dyn Observer,
) -> anyhow::Result<Driven> {
    let a = &prep.cfg.args;
    let bin = NodeBin::resolve(a.node_bin.as_deref())?;
    let mut children: Vec<(usize, Child)> = Vec::with_capacity(a.nodes);
    let spawned: anyhow::Result<()> = (|| {
        for i in 0..a.nodes {
            let config = write_config(prep, running, i)?;
            let log = std::fs::File::create(config.with_file_name("node.log"))?;
            let child = bin
                .command(&config)
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .with_context(|| format!("starting {bin:?} for {}", node_id(i)))?;
            children.push((i, child));
        }
        Ok(())
    })();
    let result = match spawned {
        Ok(()) => rounds(prep, running, obs, &mut children).await,
        Err(e) => Err(e),
    };
    let mut kids = std::mem::take(&mut children);
    tokio::task::spawn_blocking(move || stop(&mut kids))
        .await
        .context("stopping node processes")?;
    result
}

async fn rounds(
    prep: &Arc<Prepared>,
    running: &Running,
    obs: &dyn Observer,
    children: &mut [(usize, Child)],
) -> anyhow::Result<Driven> {
    let a = &prep.cfg.args;
    let mut closed_rx = running.service.closed_rounds();
    let mut out = Vec::new();
    let mut bytes_before = vec![Bytes::default(); a.nodes];
    let mut start = Instant::now();
    for r in 1..=a.rounds {
        obs.round_started(r);
        let deadline = Instant::now() + Duration::from_secs(a.round_timeout + 30);
        let closed = loop {
            if let Some(c) = closed_rx.borrow().iter().find(|c| c.report.round == r) {
                break c.clone();
            }
            for (i, c) in children.iter_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    anyhow::bail!(
                        "{} exited during round {r} ({status}); see {}",
                        node_id(*i),
                        prep.out
                            .nodes()
                            .join(node_id(*i))
                            .join("node.log")
                            .display()
                    );
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "round {r} did not close in time");
            let _ = tokio::time::timeout(Duration::from_millis(200), closed_rx.changed()).await;
        };
        let mut views = Vec::with_capacity(a.nodes);
        for (i, before) in bytes_before.iter().enumerate() {
            if !super::run::took_part(&closed, i) {
                continue;
            }
            let wait = if closed.report.nodes.contains(&node_id(i)) {
                Duration::from_secs(10)
            } else {
                Duration::from_millis(500)
            };
            let events = match journal_entry(prep, i, r, wait).await? {
                Some(e) => events_of(&e),
                // No line (yet): the node's round is still running; only the acceptance is known.
                None => NodeEvents {
                    outcome: closed.report.nodes.contains(&node_id(i)).then_some(None),
                    ..NodeEvents::default()
                },
            };
            views.push(NodeView {
                node: i,
                before: *before,
                events,
                attacker: false,
            });
        }
        for v in &views {
            if v.events.done_at.is_some() {
                bytes_before[v.node] = v.events.bytes_at_done;
            }
        }
        out.push(finish_round(prep, obs, r, start, &views, &closed).await?);
        start = closed.closed_at;
    }
    Ok(Driven {
        rounds: out,
        sockets: None,
    })
}
