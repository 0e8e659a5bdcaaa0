//! The in-process driver: N real node runtimes in this process, each with its own client (gRPC
//! over its own mTLS connection, or libp2p over its own Noise connection) to the coordinator, its
//! own counted socket and its own trainer.
//!
//! Round r: open the gate for r (nodes fetch the global adapter, train, upload) → wait until the
//! coordinator closed r and every node has its answer → evaluate the new global adapter on the
//! held-out split, save it, print the row → r + 1. A node runtime that stops, or a round that does
//! not finish within `--round-timeout`, ends the simulation with an error naming it.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::Context;
use ruvdllm::codec::EncodeOptions;
use ruvdllm_node::daemon::any_client::{AnyClient, SocketBytes};
use ruvdllm_node::daemon::{Runtime, Settings, TaloraTrainer};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::board::Board;
use super::cluster::{self, node_id};
use super::events::Recorder;
use super::node::{Role, SimClient, SimTrainer};
use super::record::NodeView;
use super::report::{SocketTotals, TLS13_CLOSE_NOTIFY_BYTES};
use super::run::{Driven, Observer, Prepared, finish_round};
use crate::daemon::Running;
use crate::service::ClosedRound;
use ruvdllm_node::daemon::privacy::LocalDp;

/// Largest global adapter a simulated node accepts.
const MAX_ADAPTER_BYTES: u64 = 256 << 20;

/// The role of node `i`.
fn role(prep: &Prepared, i: usize) -> Role {
    let cfg = &prep.cfg;
    match cfg.attack {
        Some(attack) if cfg.is_attacker(i) => match attack {
            ruvdllm::attack::Attack::LabelFlip => Role::LabelFlip,
            _ => Role::Attacker {
                index: cfg.attackers.iter().position(|&a| a == i).unwrap_or(0),
                f: cfg.attackers.len(),
                attack,
            },
        },
        _ => Role::Honest,
    }
}

pub async fn drive(
    prep: &Arc<Prepared>,
    running: &Running,
    obs: &dyn Observer,
) -> anyhow::Result<Driven> {
    let a = &prep.cfg.args;
    let n = a.nodes;
    let recorder = Arc::new(Recorder::new(n));
    let poisoners = (0..n)
        .filter(|&i| matches!(role(prep, i), Role::Attacker { .. }))
        .count();
    let board = Arc::new(Board::new(n - poisoners));
    let (gate, gate_rx) = watch::channel(0u64);
    let (stop, stop_rx) = watch::channel(false);
    let mut counters = Vec::with_capacity(n);
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let target = cluster::client_target(&prep.out, &prep.pki, running, i);
        let (inner, c) = AnyClient::counted(&target, MAX_ADAPTER_BYTES)
            .with_context(|| format!("client of {}", node_id(i)))?;
        counters.push(c.clone());
        let client = SimClient {
            inner,
            node: i,
            counters: c,
            recorder: recorder.clone(),
            gate: gate_rx.clone(),
            last_round: a.rounds,
            current: Arc::new(AtomicU64::new(0)),
        };
        let tok = prep.tok.as_ref();
        let trainer = TaloraTrainer::new(
            prep.model.clone(),
            prep.spec.clone(),
            ruvdllm::eval::examples(&prep.data[i].train, tok),
            ruvdllm::eval::examples(&prep.data[i].validation, tok),
            node_train_options(prep),
            a.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9),
        )
        .with_context(|| format!("trainer of {}", node_id(i)))?;
        let trainer = match a.local_dp() {
            Some(clip) => trainer.with_privacy(LocalDp {
                clip,
                noise_multiplier: a.dp_noise.unwrap_or(0.0),
                delta: a.dp_delta,
                seed: Some(a.seed ^ (i as u64).wrapping_mul(0x9E37)),
            }),
            None => trainer,
        };
        let trainer = SimTrainer {
            node: i,
            inner: trainer,
            role: role(prep, i),
            board: board.clone(),
            recorder: recorder.clone(),
            seed: a.seed,
            timeout: Duration::from_secs(a.round_timeout),
        };
        let settings = Settings {
            node_id: node_id(i),
            base_model_hash: prep.base_hash.clone(),
            encode: EncodeOptions::new(prep.cfg.mode),
            max_adapter_bytes: MAX_ADAPTER_BYTES,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            heartbeat: Duration::from_secs(10),
        };
        let runtime = Runtime::new(client, trainer, settings);
        let mut stop_rx = stop_rx.clone();
        tasks.spawn(async move {
            let r = runtime
                .run(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await;
            (i, r)
        });
    }

    let mut closed_rx = running.service.closed_rounds();
    let mut rounds = Vec::new();
    // Nodes that train each round: all, or the coordinator's draw (client sampling).
    let expected = prep.cfg.sampling.and_then(|s| s.size(n)).unwrap_or(n);
    for r in 1..=a.rounds {
        obs.round_started(r);
        let start = Instant::now();
        gate.send_replace(r);
        let wait = async {
            let mut done_rx = recorder.subscribe();
            loop {
                obs.nodes_done(recorder.done_count(r), expected);
                if recorder.done_count(r) >= expected {
                    break;
                }
                if done_rx.changed().await.is_err() {
                    break;
                }
            }
            closed_rx
                .wait_for(|h| h.iter().any(|c| c.report.round == r))
                .await
                .map(|h| h.iter().find(|c| c.report.round == r).cloned())
        };
        let closed: Arc<ClosedRound> = tokio::select! {
            c = wait => c.ok().flatten().context("the coordinator stopped publishing rounds")?,
            Some(j) = tasks.join_next() => {
                let (i, res) = j.context("a node task panicked")?;
                anyhow::bail!("{} stopped during round {r}: {:?}", node_id(i), res.err());
            }
            _ = tokio::time::sleep(Duration::from_secs(a.round_timeout + 30)) => {
                anyhow::bail!("round {r} did not finish within {} s", a.round_timeout + 30);
            }
        };
        let views: Vec<NodeView> = (0..n)
            .filter(|&i| super::run::took_part(&closed, i))
            .map(|i| NodeView {
                node: i,
                events: recorder.get(i, r),
                before: recorder.bytes_before(i, r),
                attacker: prep.cfg.is_attacker(i),
            })
            .collect();
        rounds.push(finish_round(prep, obs, r, start, &views, &closed).await?);
    }

    let _ = stop.send(true);
    while let Some(j) = tasks.join_next().await {
        let (i, res) = j.context("a node task panicked")?;
        res.with_context(|| format!("{} stopped with an error", node_id(i)))?;
    }
    let sockets = settle_sockets(prep, running, &counters, &recorder).await;
    Ok(Driven {
        rounds,
        sockets: Some(sockets),
    })
}

/// The nodes' TALoRA options from the flags.
pub fn node_train_options(prep: &Prepared) -> ruvdllm::adapter::train::TrainOptions {
    let a = &prep.cfg.args;
    ruvdllm::adapter::train::TrainOptions {
        steps: a.local_steps,
        batch_size: a.batch_size,
        seq_len: a.seq_len,
        lr: a.lr,
        warmup: 0,
        keep_optimizer_state: a.keep_optimizer_state,
        ..Default::default()
    }
}

/// Final socket totals once the coordinator has read everything the nodes sent (the nodes'
/// connections are closed by now; a bounded wait covers bytes still in flight).
async fn settle_sockets(
    prep: &Prepared,
    running: &Running,
    counters: &[SocketBytes],
    recorder: &Recorder,
) -> SocketTotals {
    let sent = || counters.iter().map(|c| c.sent()).sum::<u64>();
    let m = running.service.metrics();
    // Closing connections still move bytes (TLS close_notify, HTTP/2 GOAWAY); wait until both
    // ends agree. Equal counts return at once. A close_notify the coordinator will never read
    // (its side finished on the GOAWAY, see `SocketTotals::unread_up`) ends the wait once the
    // count has held still for a second; the generous bound only matters on a starved machine
    // (a loaded 2-core CI runner needed more than 5 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut still: Option<(u64, Instant)> = None;
    loop {
        let (read, sent) = (m.socket_read.get(), sent());
        let unread = sent.saturating_sub(read);
        if read == sent || Instant::now() >= deadline {
            break;
        }
        let whole = read < sent
            && unread.is_multiple_of(TLS13_CLOSE_NOTIFY_BYTES)
            && unread / TLS13_CLOSE_NOTIFY_BYTES <= counters.len() as u64;
        match still {
            Some((r, since)) if r == read && whole => {
                if since.elapsed() >= Duration::from_secs(1) {
                    break;
                }
            }
            _ => still = Some((read, Instant::now())),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = prep.cfg.args.rounds + 1;
    let tails: Vec<(u64, u64)> = counters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let b = recorder.bytes_before(i, last);
            (
                c.sent().saturating_sub(b.up),
                c.received().saturating_sub(b.down),
            )
        })
        .collect();
    SocketTotals {
        node_up: counters.iter().map(|c| c.sent()).collect(),
        node_down: counters.iter().map(|c| c.received()).collect(),
        tail_up: tails.iter().map(|t| t.0).collect(),
        tail_down: tails.iter().map(|t| t.1).collect(),
        coordinator_read: m.socket_read.get(),
        coordinator_written: m.socket_written.get(),
    }
}
