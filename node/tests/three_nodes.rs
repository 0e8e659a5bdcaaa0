//! Three node daemons complete two rounds against an in-process coordinator on 127.0.0.1 — over
//! gRPC + mutual TLS and again over libp2p (Noise + yamux, allowlisted peer ids), the same test
//! body for both — and the global adapter after round 2 equals the offline aggregation of the
//! deltas they submitted; the nodes ride out a coordinator restart between rounds; and their
//! heartbeats move the coordinator's last-seen metric while they train.
//!
//! **Stand-in trainer (test only):** `StandIn` below is a deterministic function of (node, round,
//! global adapter), not training; it exists so the test can recompute every submitted delta —
//! including the int8 codec and each node's error-feedback residual — offline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ruvdllm::aggregate::daf::{DafConfig, aggregate_band_refs};
use ruvdllm::codec::{self, EncodeOptions, ErrorFeedback, Mode, Values};
use ruvdllm::delta::{Delta, NamedTensor};
use ruvdllm_coordinator::certs::{self, Layout};
use ruvdllm_coordinator::config::{File, Libp2pSection, RoundSection, Tls, TransportKind};
use ruvdllm_coordinator::daemon::{self, Running};
use ruvdllm_coordinator::metrics::NodeLabel;
use ruvdllm_coordinator::round::AcceptedMeta;
use ruvdllm_coordinator::round::close::{apply, daf_inputs, daf_refs};
use ruvdllm_coordinator::service::Clock;
use ruvdllm_node::daemon::any_client::AnyClient;
use ruvdllm_node::daemon::grpc_client::{GrpcClient, Target};
use ruvdllm_node::daemon::p2p_client::P2pClient;
use ruvdllm_node::daemon::{LocalTrainer, LocalUpdate, RoundInfo, Runtime, Settings, TrainError};
use ruvdllm_proto::p2p;

const BASE: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const NODES: [&str; 3] = ["alpha", "beta", "gamma"];

fn layout() -> Delta {
    Delta::new(vec![
        NamedTensor::new(
            "talora.coarse.l0.q.lora_B.weight",
            vec![8, 2],
            vec![0.0; 16],
        )
        .unwrap(),
        NamedTensor::new("talora.domain.l0.q.lora_B.weight", vec![8, 1], vec![0.0; 8]).unwrap(),
        NamedTensor::new("talora.fine.l0.v.lora_B.weight", vec![4, 1], vec![0.0; 4]).unwrap(),
    ])
    .unwrap()
}

/// Test-only stand-in for the TALoRA trainer (see the module docs).
#[derive(Clone)]
struct StandIn {
    index: usize,
    /// When set, round 2 waits until the flag turns true (to restart the coordinator meanwhile).
    hold: Option<Arc<AtomicBool>>,
}

impl StandIn {
    fn update(&self, round: u64, global: &Delta) -> LocalUpdate {
        let mut delta = global.clone();
        for (ti, t) in delta.tensors.iter_mut().enumerate() {
            for (j, v) in t.data.iter_mut().enumerate() {
                let x = ((self.index * 31 + ti * 7 + j * 3 + round as usize * 5) % 17) as f32;
                *v = (x - 8.0) * 0.01 * (self.index as f32 + 1.0) - 0.1 * *v;
            }
        }
        LocalUpdate {
            delta,
            samples: 100 + self.index as u64,
            band_metrics: BTreeMap::from([
                ("coarse".into(), 0.1),
                ("domain".into(), 0.2 + self.index as f64 * 0.1),
                ("fine".into(), 0.05),
            ]),
            train_loss: None,
        }
    }
}

impl LocalTrainer for StandIn {
    fn train_round(&mut self, ctx: &RoundInfo, global: &Delta) -> Result<LocalUpdate, TrainError> {
        if let Some(flag) = &self.hold
            && ctx.round == 2
        {
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(self.update(ctx.round, global))
    }
}

fn mode() -> EncodeOptions {
    EncodeOptions::new(Mode::dense(Values::Int8Block))
}

struct Cluster {
    dir: tempfile::TempDir,
    pki: Layout,
    cfg: File,
    /// The nodes' libp2p identities (on the coordinator's allowlist).
    keys: Vec<p2p::Keypair>,
}

fn cluster(transport: TransportKind) -> Cluster {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let pki = Layout::new(dir.path().join("certs"));
    certs::init(&pki, &["localhost".into()]).unwrap();
    for n in NODES {
        certs::issue(&pki, n).unwrap();
    }
    let initial = dir.path().join("initial.safetensors");
    ruvdllm::delta_io::save(
        &layout(),
        &initial,
        ruvdllm::delta_io::StoreDtype::F32,
        &Default::default(),
    )
    .unwrap();
    let cfg = File {
        listen: "127.0.0.1:0".into(),
        metrics_listen: String::new(),
        state_dir: dir.path().join("state"),
        initial_adapter: initial,
        zero_initial_adapter: true,
        base_model_hash: BASE.into(),
        run_seed: 5,
        tls: Tls {
            ca_cert: pki.ca_cert(),
            cert: pki.server_cert(),
            key: pki.server_key(),
            revocation_list: pki.revocation_list(),
        },
        round: RoundSection {
            min_nodes: 3,
            quorum: 3,
            duration_ms: 120_000,
            max_payload_bytes: 1 << 20,
            ..RoundSection::default()
        },
        aggregation: Default::default(),
        privacy: Default::default(),
        transport,
        libp2p: Libp2pSection {
            listen: "/ip4/127.0.0.1/tcp/0".into(),
            key: dir.path().join("coordinator.key"),
            allowlist: dir.path().join("allowlist.txt"),
            poll_wait_ms: 2_000,
        },
    };
    p2p::generate_keypair(&cfg.libp2p.key).unwrap();
    let keys: Vec<p2p::Keypair> = NODES
        .iter()
        .map(|_| p2p::Keypair::generate_ed25519())
        .collect();
    let list: String = NODES
        .iter()
        .zip(&keys)
        .map(|(n, k)| format!("{} {n}\n", p2p::peer_id(k)))
        .collect();
    std::fs::write(&cfg.libp2p.allowlist, list).unwrap();
    Cluster {
        dir,
        pki,
        cfg,
        keys,
    }
}

/// The client of node `index` for whichever transport the coordinator serves.
fn client(c: &Cluster, running: &Running, index: usize) -> AnyClient {
    match &running.p2p {
        None => {
            let n = NODES[index];
            let target = Target {
                addr: running.addr.to_string(),
                server_name: "localhost".into(),
                ca_cert: c.pki.ca_cert(),
                cert: c.pki.node_cert(n),
                key: c.pki.node_key(n),
            };
            AnyClient::Grpc(GrpcClient::new(&target, 1 << 20).unwrap())
        }
        Some(server) => {
            let config = p2p::Config {
                backoff_initial: Duration::from_millis(50),
                backoff_max: Duration::from_millis(500),
                ..p2p::Config::default()
            };
            let client = P2pClient::with_config(
                c.keys[index].clone(),
                server.listen_addr().clone(),
                1 << 20,
                config,
            )
            .unwrap();
            AnyClient::Libp2p(client)
        }
    }
}

type Nodes = (
    tokio::sync::watch::Sender<bool>,
    Vec<tokio::task::JoinHandle<Result<(), ruvdllm_node::daemon::NodeError>>>,
    Vec<tokio::sync::watch::Receiver<ruvdllm_node::daemon::Status>>,
);

fn spawn_nodes(
    c: &Cluster,
    running: &Running,
    hold: Option<Arc<AtomicBool>>,
    heartbeat: Duration,
) -> Nodes {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut status = Vec::new();
    for (index, n) in NODES.iter().enumerate() {
        let client = client(c, running, index);
        let settings = Settings {
            node_id: n.to_string(),
            base_model_hash: BASE.into(),
            encode: mode(),
            max_adapter_bytes: 1 << 20,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            heartbeat,
        };
        let trainer = StandIn {
            index,
            hold: hold.clone(),
        };
        let rt = Runtime::new(client, trainer, settings);
        status.push(rt.status());
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(rt.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        })));
    }
    (stop_tx, tasks, status)
}

/// The global after `rounds` rounds, recomputed offline: the same trainers, codec and error
/// feedback, aggregated round by round.
fn offline(rounds: u64) -> Delta {
    let mut global = layout();
    let mut feedback: Vec<ErrorFeedback> = NODES.iter().map(|_| ErrorFeedback::new()).collect();
    for round in 1..=rounds {
        let mut metas = Vec::new();
        let mut deltas = Vec::new();
        for (index, n) in NODES.iter().enumerate() {
            let upd = StandIn { index, hold: None }.update(round, &global);
            let payload = feedback[index].encode(&upd.delta, &mode()).unwrap();
            deltas.push(codec::decode(&payload, &codec::Limits::default()).unwrap());
            metas.push(AcceptedMeta {
                node: n.to_string(),
                samples: upd.samples,
                band_metrics: upd.band_metrics,
                payload_sha256: String::new(),
                payload_len: 0,
                accepted_at_ms: 0,
            });
        }
        let pairs: Vec<(&AcceptedMeta, &Delta)> = metas.iter().zip(&deltas).collect();
        let agg = aggregate_band_refs(
            &daf_refs(&daf_inputs(&pairs)),
            Some(&global),
            &DafConfig::new(0),
        )
        .unwrap();
        global = apply(&global, &agg.delta).unwrap();
    }
    global
}

async fn served_global(svc: &ruvdllm_coordinator::service::Service) -> Delta {
    let hash = svc.announcement().global_hash;
    let id = ruvdllm_coordinator::auth::Identity {
        node_id: "alpha".into(),
    };
    let blob = svc.fetch(&id, &hash).unwrap();
    codec::decode(&blob.bytes, &codec::Limits::default()).unwrap()
}

async fn wait_round(svc: &ruvdllm_coordinator::service::Service, round: u64) {
    let mut rounds = svc.subscribe();
    tokio::time::timeout(
        Duration::from_secs(120),
        rounds.wait_for(|a| a.round >= round),
    )
    .await
    .expect("round reached in time")
    .unwrap();
}

async fn stop(nodes: Nodes) {
    nodes.0.send(true).unwrap();
    for n in nodes.1 {
        n.await.unwrap().unwrap();
    }
}

/// No heartbeat within a test's lifetime unless a test asks for one.
const NO_HEARTBEAT: Duration = Duration::from_secs(3600);

async fn three_nodes_two_rounds(transport: TransportKind) {
    let c = cluster(transport);
    let running = daemon::start(c.cfg.validate().unwrap()).await.unwrap();
    assert_eq!(running.p2p.is_some(), transport == TransportKind::Libp2p);
    let nodes = spawn_nodes(&c, &running, None, NO_HEARTBEAT);
    wait_round(&running.service, 3).await;
    let served = served_global(&running.service).await;
    let expected = offline(2);
    assert_eq!(served, expected);
    assert!(expected.flatten().iter().any(|v| *v != 0.0));
    stop(nodes).await;
    let m = running.service.metrics().clone();
    running.shutdown().await.unwrap();
    // The transport's socket counters reach /metrics, and the payload bytes are inside them.
    assert!(m.bytes_in.get() > 0 && m.bytes_out.get() > 0);
    assert!(m.socket_read.get() > m.bytes_in.get(), "{transport:?}");
    assert!(m.socket_written.get() > m.bytes_out.get(), "{transport:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_two_rounds_match_offline_aggregation_grpc() {
    three_nodes_two_rounds(TransportKind::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_two_rounds_match_offline_aggregation_libp2p() {
    three_nodes_two_rounds(TransportKind::Libp2p).await;
}

async fn ride_out_a_restart(transport: TransportKind) {
    let c = cluster(transport);
    let running = daemon::start(c.cfg.validate().unwrap()).await.unwrap();
    let addr = running.addr;
    let hold = Arc::new(AtomicBool::new(false));
    let nodes = spawn_nodes(&c, &running, Some(hold.clone()), NO_HEARTBEAT);
    wait_round(&running.service, 2).await;
    // Graceful shutdown while every node waits on the round stream (or long-poll) and trains
    // round 2.
    running.shutdown().await.unwrap();
    let mut cfg = c.cfg.clone();
    cfg.listen = addr.to_string();
    cfg.libp2p.listen = format!("/ip4/127.0.0.1/tcp/{}", addr.port());
    let running = daemon::start(cfg.validate().unwrap()).await.unwrap();
    assert_eq!(running.service.announcement().round, 2, "resumed");
    hold.store(true, Ordering::SeqCst);
    wait_round(&running.service, 3).await;
    assert_eq!(served_global(&running.service).await, offline(2));
    for s in &nodes.2 {
        let mut s = s.clone();
        let done = tokio::time::timeout(Duration::from_secs(60), s.wait_for(|s| s.submitted >= 2));
        // Round 3 is open by now, so a fast node may already have submitted it too.
        assert!(done.await.unwrap().unwrap().submitted >= 2);
    }
    stop(nodes).await;
    running.shutdown().await.unwrap();
    drop(c.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ride_out_a_coordinator_restart_grpc() {
    ride_out_a_restart(TransportKind::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ride_out_a_coordinator_restart_libp2p() {
    ride_out_a_restart(TransportKind::Libp2p).await;
}

/// A clock the test moves by hand.
#[derive(Default)]
struct ManualClock(std::sync::atomic::AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// While every node trains (held in round 2) and sends nothing else over gRPC, its heartbeats
/// keep the coordinator's last-seen gauge moving: the clock jumps and the gauge follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_move_last_seen_while_training() {
    let c = cluster(TransportKind::Grpc);
    let clock = Arc::new(ManualClock(1_000_000.into()));
    let running = daemon::start_with_clock(c.cfg.validate().unwrap(), clock.clone())
        .await
        .unwrap();
    let hold = Arc::new(AtomicBool::new(false));
    let nodes = spawn_nodes(&c, &running, Some(hold.clone()), Duration::from_millis(50));
    wait_round(&running.service, 2).await;
    let seen = |n: &str| {
        running
            .service
            .metrics()
            .last_seen
            .get_or_create(&NodeLabel { node: n.into() })
            .get()
    };
    // 100 s later by the coordinator's clock; the round (120 s) is still open.
    clock.0.store(1_100_000, Ordering::SeqCst);
    for n in NODES {
        let moved = async {
            while seen(n) != 1_100 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), moved)
            .await
            .unwrap_or_else(|_| panic!("{n}: last seen stayed at {}", seen(n)));
    }
    for s in &nodes.2 {
        assert_eq!(s.borrow().submitted, 1, "still training round 2");
    }
    hold.store(true, Ordering::SeqCst);
    wait_round(&running.service, 3).await;
    stop(nodes).await;
    running.shutdown().await.unwrap();
}
