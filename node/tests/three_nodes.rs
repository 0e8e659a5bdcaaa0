//! Three node daemons complete two rounds against an in-process coordinator over gRPC + mutual
//! TLS on 127.0.0.1, and the global adapter after round 2 equals the offline aggregation of the
//! deltas they submitted.
//!
//! **Stand-in trainer (test only):** `StandIn` below is a deterministic function of (node, round,
//! global adapter), not training; it exists so the test can recompute every submitted delta —
//! including the int8 codec and each node's error-feedback residual — offline.

use std::collections::BTreeMap;
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
        Ok(self.update(ctx.round, global))
    }
}

fn mode() -> EncodeOptions {
    EncodeOptions::new(Mode::dense(Values::Int8Block))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_two_rounds_match_offline_aggregation() {
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
    let running = daemon::start(cfg.validate().unwrap()).await.unwrap();
    let mut rounds = running.service.subscribe();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut nodes = Vec::new();
    for (index, n) in NODES.iter().enumerate() {
        let target = Target {
            addr: running.addr.to_string(),
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
        let rt = Runtime::new(client, StandIn { index }, settings);
        let mut stop = stop_rx.clone();
        nodes.push(tokio::spawn(rt.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        })));
    }

    tokio::time::timeout(Duration::from_secs(120), rounds.wait_for(|a| a.round >= 3))
        .await
        .expect("two rounds in time")
        .unwrap();
    let hash = running.service.announcement().global_hash;
    let id = ruvdllm_coordinator::auth::Identity {
        node_id: "alpha".into(),
    };
    let blob = running.service.fetch(&id, &hash).unwrap();
    let served = codec::decode(&blob.bytes, &codec::Limits::default()).unwrap();

    // Offline: the same trainers, codec and error feedback, aggregated round by round.
    let mut global = layout();
    let mut feedback: Vec<ErrorFeedback> = NODES.iter().map(|_| ErrorFeedback::new()).collect();
    for round in 1..=2u64 {
        let mut metas = Vec::new();
        let mut deltas = Vec::new();
        for (index, n) in NODES.iter().enumerate() {
            let upd = StandIn { index }.update(round, &global);
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
        let agg = aggregate_bands(&daf_inputs(&pairs), None, &DafConfig::new(0)).unwrap();
        global = apply(&global, &agg.delta).unwrap();
    }
    assert_eq!(served, global);
    assert!(global.flatten().iter().any(|v| *v != 0.0));

    stop_tx.send(true).unwrap();
    for n in nodes {
        n.await.unwrap().unwrap();
    }
    running.shutdown().await.unwrap();
}
