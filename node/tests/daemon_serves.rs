//! A node daemon in a federated round serves `/v1/completions` over a real socket, and the served
//! model follows the global adapter: after the coordinator opens round 2 with a new (non-zero)
//! global, `/v1/models` names it and completions report the new model version.
//!
//! **Stand-in trainer (test only):** the three nodes submit `StandIn` deltas, a deterministic
//! function of (node, round) in the TALoRA B layout of the served model, so the rounds are fast;
//! the served weights are the real base with the real global TALoRA adapter attached.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ruvdllm::adapter::{Shape, Spec, Talora};
use ruvdllm::candle_core::Device;
use ruvdllm::candle_nn::VarMap;
use ruvdllm::codec::{EncodeOptions, Mode, Values};
use ruvdllm::delta::Delta;
use ruvdllm::model::{Config, Model, checkpoint};
use ruvdllm::tokenizer::ByteTokenizer;
use ruvdllm_coordinator::certs::{self, Layout};
use ruvdllm_coordinator::config::{File, RoundSection, Tls};
use ruvdllm_coordinator::daemon;
use ruvdllm_node::daemon::grpc_client::{GrpcClient, Target};
use ruvdllm_node::daemon::serving::follow_global;
use ruvdllm_node::daemon::{LocalTrainer, LocalUpdate, RoundInfo, Runtime, Settings, TrainError};
use ruvdllm_node::serve::{self, LocalBanks, ModelHandle, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BASE: &str = "4444444444444444444444444444444444444444444444444444444444444444";
const NODES: [&str; 3] = ["alpha", "beta", "gamma"];
const RUN_SEED: u64 = 5;

fn base() -> Model {
    let cfg = Config {
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 2,
        head_dim: 16,
        mlp_hidden: 48,
        ..Config::tiny()
    };
    let vm = VarMap::new();
    let mut m = checkpoint::trainable(&vm, &cfg, &Device::Cpu).unwrap();
    checkpoint::seeded_init(&vm, 3, 0.3).unwrap();
    m.set_differentiable(false);
    m
}

/// Lets the trainers finish round `r` only once the test allowed it, so the served adapter
/// cannot run ahead of the assertions (a fast stand-in would otherwise close rounds faster than
/// the test polls).
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<u64>, Condvar)>);

impl Gate {
    fn allow(&self, round: u64) {
        *self.0.0.lock().unwrap() = round;
        self.0.1.notify_all();
    }

    fn wait(&self, round: u64) -> Result<(), TrainError> {
        let (lock, cv) = &*self.0;
        let (guard, timeout) = cv
            .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(120), |allowed| {
                *allowed < round
            })
            .unwrap();
        drop(guard);
        if timeout.timed_out() {
            return Err(TrainError(format!("round {round} was never allowed")));
        }
        Ok(())
    }
}

/// Test-only stand-in for the TALoRA trainer (see the module docs).
struct StandIn(usize, Gate);

impl LocalTrainer for StandIn {
    fn train_round(&mut self, ctx: &RoundInfo, global: &Delta) -> Result<LocalUpdate, TrainError> {
        self.1.wait(ctx.round)?;
        let mut delta = global.clone();
        for (ti, t) in delta.tensors.iter_mut().enumerate() {
            for (j, v) in t.data.iter_mut().enumerate() {
                let x = ((self.0 * 31 + ti * 7 + j * 3 + ctx.round as usize * 5) % 17) as f32;
                *v = (x - 8.0) * 0.05;
            }
        }
        Ok(LocalUpdate {
            delta,
            samples: 10,
            band_metrics: BTreeMap::from([
                ("coarse".into(), 0.1),
                ("domain".into(), 0.1),
                ("fine".into(), 0.1),
            ]),
            train_loss: None,
        })
    }
}

/// One HTTP/1.1 exchange on a fresh connection; returns (status, JSON body).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let json = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

async fn card(addr: std::net::SocketAddr) -> serde_json::Value {
    let (status, v) = http(addr, "GET", "/v1/models", "").await;
    assert_eq!(status, 200);
    v["data"][0]["ruvdllm"].clone()
}

/// Polls `/v1/models` until the served adapter names `round`.
async fn wait_served(addr: std::net::SocketAddr, round: u64) -> serde_json::Value {
    let want = format!("round {round} ");
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let c = card(addr).await;
            if c["adapter"].as_str().is_some_and(|a| a.starts_with(&want)) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the new global is served in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_daemon_serves_the_latest_global() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let model = Arc::new(base());
    let spec = Spec::default();
    let dir = tempfile::tempdir().unwrap();
    let pki = Layout::new(dir.path().join("certs"));
    certs::init(&pki, &["localhost".into()]).unwrap();
    for n in NODES {
        certs::issue(&pki, n).unwrap();
    }
    let initial = dir.path().join("initial.safetensors");
    let zero = Talora::new(spec.clone(), RUN_SEED, Shape::from(model.config())).unwrap();
    ruvdllm::delta_io::save(
        &zero.to_delta(),
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
        run_seed: RUN_SEED,
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
            max_payload_bytes: 1 << 24,
            ..RoundSection::default()
        },
        aggregation: Default::default(),
        privacy: Default::default(),
        transport: Default::default(),
        libp2p: Default::default(),
    };
    let running = daemon::start(cfg.validate().unwrap()).await.unwrap();

    // The node daemon "alpha" serves the API; it joins rounds like the others.
    let handle = ModelHandle::new("ruvdllm", model.clone(), Arc::new(ByteTokenizer)).unwrap();
    let banks = Arc::new(LocalBanks::open(None, model.config().d_model, 1).unwrap());
    let state = State::new(handle.clone(), serve::Config::default())
        .unwrap()
        .with_banks(banks);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut api_stop = stop_rx.clone();
    let api = tokio::spawn(serve::run(listener, state, async move {
        let _ = api_stop.wait_for(|s| *s).await;
    }));
    let gate = Gate::default();
    let mut tasks = Vec::new();
    let mut follower = None;
    for (i, n) in NODES.iter().enumerate() {
        let target = Target {
            addr: running.addr.to_string(),
            server_name: "localhost".into(),
            ca_cert: pki.ca_cert(),
            cert: pki.node_cert(n),
            key: pki.node_key(n),
        };
        let settings = Settings {
            node_id: n.to_string(),
            base_model_hash: BASE.into(),
            encode: EncodeOptions::new(Mode::dense(Values::F32)),
            max_adapter_bytes: 1 << 24,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            heartbeat: Duration::from_secs(10),
        };
        let rt = Runtime::new(
            GrpcClient::new(&target, 1 << 24).unwrap(),
            StandIn(i, gate.clone()),
            settings,
        );
        if i == 0 {
            follower = Some(tokio::spawn(follow_global(
                rt.global(),
                handle.clone(),
                model.clone(),
                spec.clone(),
            )));
        }
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(rt.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        })));
    }

    // Round 1: the zero global is served.
    let first = wait_served(api_addr, 1).await;
    let req = r#"{"model":"ruvdllm","prompt":"ab","max_tokens":8,"steps":8,"seed":1}"#;
    let (status, c1) = http(api_addr, "POST", "/v1/completions", req).await;
    assert_eq!(status, 200, "{c1}");
    let v1 = c1["ruvdllm"]["model_version"].as_u64().unwrap();
    assert_eq!(Some(v1), first["version"].as_u64());

    // Round 2 opens with the aggregate of round 1: a different adapter is served.
    gate.allow(1);
    let second = wait_served(api_addr, 2).await;
    assert_ne!(second["adapter"], first["adapter"]);
    assert!(second["version"].as_u64().unwrap() > v1);
    let (status, c2) = http(api_addr, "POST", "/v1/completions", req).await;
    assert_eq!(status, 200, "{c2}");
    assert!(c2["ruvdllm"]["model_version"].as_u64().unwrap() > v1);

    // DGR over the (empty) local banks is an opt-in field; an invalid DGR option is a 400.
    let dgr = r#"{"model":"ruvdllm","prompt":"ab","max_tokens":8,"steps":8,"seed":1,"dgr":true}"#;
    let (status, c3) = http(api_addr, "POST", "/v1/completions", dgr).await;
    assert_eq!(status, 200, "{c3}");
    assert_eq!(c3["ruvdllm"]["dgr_applied"], 0);
    let bad = r#"{"model":"ruvdllm","prompt":"ab","max_tokens":8,"dgr":{"top_k":0}}"#;
    let (status, e) = http(api_addr, "POST", "/v1/completions", bad).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["param"], "dgr");

    gate.allow(u64::MAX);
    stop_tx.send(true).unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    api.await.unwrap().unwrap();
    if let Some(f) = follower {
        f.await.unwrap();
    }
    running.shutdown().await.unwrap();
}
