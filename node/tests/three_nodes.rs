//! Three node daemons complete two rounds against an in-process coordinator over gRPC + mutual
//! TLS on 127.0.0.1, and the global adapter after round 2 equals the offline aggregation of the
//! deltas they submitted; and the nodes ride out a coordinator restart between rounds.
//!
//! **Stand-in trainer (test only):** `StandIn` below is a deterministic function of (node, round,
//! global adapter), not training; it exists so the test can recompute every submitted delta —
//! including the int8 codec and each node's error-feedback residual — offline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ruvdllm::aggregate::daf::{DafConfig, aggregate_bands};
use ruvdllm::codec::{self, EncodeOptions, ErrorFeedback, Mode, Values};
use ruvdllm::delta::{Delta, NamedTensor};
use ruvdllm_coordinator::certs::{self, Layout};
use ruvdllm_coordinator::config::{File, RoundSection, Tls};
use ruvdllm_coordinator::daemon;
use ruvdllm_coordinator::round::AcceptedMeta;
use ruvdllm_coordinator::round::close::{apply, daf_inputs};
use ruvdllm_node::daemon::grpc_client::{GrpcClient, Target};
use ruvdllm_node::daemon::{LocalTrainer, LocalUpdate, RoundInfo, Runtime, Settings, TrainError};

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
}

fn cluster() -> Cluster {
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
        },
        aggregation: Default::default(),
    };
    Cluster { dir, pki, cfg }
}

type Nodes = (
    tokio::sync::watch::Sender<bool>,
    Vec<tokio::task::JoinHandle<Result<(), ruvdllm_node::daemon::NodeError>>>,
    Vec<tokio::sync::watch::Receiver<ruvdllm_node::daemon::Status>>,
);

fn spawn_nodes(addr: std::net::SocketAddr, pki: &Layout, hold: Option<Arc<AtomicBool>>) -> Nodes {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut status = Vec::new();
    for (index, n) in NODES.iter().enumerate() {
        let target = Target {
            addr: addr.to_string(),
            server_name: "localhost".into(),
            ca_cert: pki.ca_cert(),
            cert: pki.node_cert(n),
            key: pki.node_key(n),
        };
        let client = GrpcClient::new(&target, 1 << 20).unwrap();
        let settings = Settings {
            node_id: n.to_string(),
            base_model_hash: BASE.into(),
            encode: mode(),
            max_adapter_bytes: 1 << 20,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
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
        let agg = aggregate_bands(&daf_inputs(&pairs), Some(&global), &DafConfig::new(0)).unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_two_rounds_match_offline_aggregation() {
    let c = cluster();
    let running = daemon::start(c.cfg.validate().unwrap()).await.unwrap();
    let nodes = spawn_nodes(running.addr, &c.pki, None);
    wait_round(&running.service, 3).await;
    let served = served_global(&running.service).await;
    let expected = offline(2);
    assert_eq!(served, expected);
    assert!(expected.flatten().iter().any(|v| *v != 0.0));
    stop(nodes).await;
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ride_out_a_coordinator_restart() {
    let c = cluster();
    let running = daemon::start(c.cfg.validate().unwrap()).await.unwrap();
    let addr = running.addr;
    let hold = Arc::new(AtomicBool::new(false));
    let nodes = spawn_nodes(addr, &c.pki, Some(hold.clone()));
    wait_round(&running.service, 2).await;
    // Graceful shutdown while every node holds an open round stream and is training round 2.
    running.shutdown().await.unwrap();
    let mut cfg = c.cfg.clone();
    cfg.listen = addr.to_string();
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
