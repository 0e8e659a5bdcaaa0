//! Shared fixture for the daemon tests: a PKI in a temp folder, a small TALoRA-shaped initial
//! adapter, a coordinator config, and a raw `ruvdllm.v1` client with a node certificate.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ruvdllm::aggregate::daf::{DafConfig, aggregate_band_refs};
use ruvdllm::aggregate::{ServerOptimizer, ServerState};
use ruvdllm::codec::{self, EncodeOptions, Mode, Values};
use ruvdllm::delta::{Delta, NamedTensor};
use ruvdllm_coordinator::certs::{self, Layout};
use ruvdllm_coordinator::config::{File, RoundSection, Tls};
use ruvdllm_coordinator::round::AcceptedMeta;
use ruvdllm_coordinator::round::close::{daf_inputs, daf_refs};
use ruvdllm_proto::pb::coordinator_client::CoordinatorClient;
use ruvdllm_proto::{REJECT_METADATA_KEY, RejectKind, UpdateHeader, pb, sha256_hex};
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub const BASE: &str = "1111111111111111111111111111111111111111111111111111111111111111";

pub fn layout_delta(v: f32) -> Delta {
    Delta::new(vec![
        NamedTensor::new(
            "talora.coarse.l0.q.lora_B.weight",
            vec![4, 2],
            (0..8).map(|i| v + i as f32 * 0.25).collect(),
        )
        .unwrap(),
        NamedTensor::new(
            "talora.domain.l0.q.lora_B.weight",
            vec![4, 1],
            (0..4).map(|i| v * (i as f32 - 1.5)).collect(),
        )
        .unwrap(),
        NamedTensor::new(
            "talora.fine.l0.q.lora_B.weight",
            vec![2, 1],
            vec![-v, v * 0.5],
        )
        .unwrap(),
    ])
    .unwrap()
}

/// Certificates, initial adapter and a config under one temp folder.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub pki: Layout,
}

impl Fixture {
    pub fn new(nodes: &[&str]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let pki = Layout::new(dir.path().join("certs"));
        certs::init(&pki, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        for n in nodes {
            certs::issue(&pki, n).unwrap();
        }
        ruvdllm::delta_io::save(
            &layout_delta(9.0),
            &dir.path().join("initial.safetensors"),
            ruvdllm::delta_io::StoreDtype::F32,
            &Default::default(),
        )
        .unwrap();
        Self { dir, pki }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self, min_nodes: usize, quorum: usize, duration_ms: u64) -> File {
        File {
            listen: "127.0.0.1:0".into(),
            metrics_listen: "127.0.0.1:0".into(),
            state_dir: self.path().join("state"),
            initial_adapter: self.path().join("initial.safetensors"),
            zero_initial_adapter: true,
            base_model_hash: BASE.into(),
            run_seed: 42,
            tls: Tls {
                ca_cert: self.pki.ca_cert(),
                cert: self.pki.server_cert(),
                key: self.pki.server_key(),
                revocation_list: self.pki.revocation_list(),
            },
            round: RoundSection {
                min_nodes,
                quorum,
                duration_ms,
                max_payload_bytes: 4096,
                ..RoundSection::default()
            },
            aggregation: Default::default(),
            privacy: Default::default(),
            ..File::default()
        }
    }

    /// Writes the config as TOML (for the process tests) and returns its path.
    pub fn write_config(&self, f: &File) -> PathBuf {
        let p = self.path().join("coordinator.toml");
        std::fs::write(&p, toml::to_string(f).unwrap()).unwrap();
        p
    }

    pub fn tls(&self, node: Option<&str>) -> ClientTlsConfig {
        let ca = std::fs::read(self.pki.ca_cert()).unwrap();
        let mut tls = ClientTlsConfig::new()
            .domain_name("localhost")
            .ca_certificate(Certificate::from_pem(ca));
        if let Some(n) = node {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(self.pki.node_cert(n)).unwrap(),
                std::fs::read(self.pki.node_key(n)).unwrap(),
            ));
        }
        tls
    }
}

pub async fn connect(
    addr: std::net::SocketAddr,
    tls: ClientTlsConfig,
) -> CoordinatorClient<Channel> {
    let ch = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy();
    CoordinatorClient::new(ch)
}

pub fn reject_kind(s: &tonic::Status) -> Option<RejectKind> {
    s.metadata()
        .get(REJECT_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

pub async fn register(
    c: &mut CoordinatorClient<Channel>,
    node: &str,
    hash: &str,
) -> Result<u64, tonic::Status> {
    c.register(pb::RegisterRequest {
        node_id: node.into(),
        base_model_hash: hash.into(),
    })
    .await
    .map(|r| r.into_inner().current_round)
}

/// One node's update for a round, as the tests send it.
#[derive(Clone)]
pub struct Update {
    pub node: String,
    pub samples: u64,
    pub metrics: BTreeMap<String, f64>,
    pub payload: Vec<u8>,
}

impl Update {
    pub fn new(node: &str, delta: &Delta) -> Self {
        let payload =
            codec::encode(delta, &EncodeOptions::new(Mode::dense(Values::Int8Block))).unwrap();
        Self::raw(node, payload)
    }

    pub fn raw(node: &str, payload: Vec<u8>) -> Self {
        Self {
            node: node.into(),
            samples: 10 + node.len() as u64,
            metrics: BTreeMap::from([("domain".into(), 0.5), ("coarse".into(), 0.1)]),
            payload,
        }
    }

    pub fn header(&self, round: u64) -> UpdateHeader {
        UpdateHeader {
            round,
            samples: self.samples,
            band_metrics: self.metrics.clone(),
            payload_size: self.payload.len() as u64,
            payload_sha256: sha256_hex(&self.payload),
        }
    }

    /// The messages of a submission with `chunk` bytes per chunk.
    pub fn messages(&self, round: u64, chunk: usize) -> Vec<pb::SubmitMessage> {
        let mut v = vec![pb::SubmitMessage {
            kind: Some(pb::submit_message::Kind::Header(self.header(round).into())),
        }];
        v.extend(
            ruvdllm_proto::split(&self.payload, chunk)
                .into_iter()
                .map(|c| pb::SubmitMessage {
                    kind: Some(pb::submit_message::Kind::Chunk(c)),
                }),
        );
        v
    }

    /// The decoded delta the coordinator will aggregate.
    pub fn decoded(&self) -> Delta {
        codec::decode(&self.payload, &codec::Limits::default()).unwrap()
    }
}

pub async fn submit(
    c: &mut CoordinatorClient<Channel>,
    u: &Update,
    round: u64,
) -> Result<u32, tonic::Status> {
    c.submit_update(tokio_stream::iter(u.messages(round, 100)))
        .await
        .map(|r| r.into_inner().accepted)
}

/// Waits (bounded) for an announcement of round `round` or later.
pub async fn wait_round(c: &mut CoordinatorClient<Channel>, round: u64) -> pb::RoundAnnouncement {
    let fut = async {
        let mut s = c
            .watch_rounds(pb::WatchRoundsRequest {})
            .await
            .unwrap()
            .into_inner();
        while let Some(a) = s.next().await {
            let a = a.unwrap();
            if a.round >= round {
                return a;
            }
        }
        panic!("round stream ended before round {round}");
    };
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("round announced in time")
}

/// The global adapter with this hash, fetched and decoded.
pub async fn fetch_global(c: &mut CoordinatorClient<Channel>, hash: &str) -> Delta {
    let mut s = c
        .fetch_adapter(pb::FetchAdapterRequest { hash: hash.into() })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(ch) = s.next().await {
        bytes.extend_from_slice(&ch.unwrap().data);
    }
    assert_eq!(sha256_hex(&bytes), hash);
    codec::decode(&bytes, &codec::Limits::default()).unwrap()
}

/// `global + DAF(updates)` computed offline, the way the coordinator must.
pub fn offline_round(global: &Delta, updates: &[&Update]) -> Delta {
    offline_step(
        global,
        updates,
        &ServerOptimizer::default(),
        1,
        &mut ServerState::default(),
    )
}

/// [`offline_round`] for round `round` with a server optimizer whose moments `state` carries.
pub fn offline_step(
    global: &Delta,
    updates: &[&Update],
    opt: &ServerOptimizer,
    round: u64,
    state: &mut ServerState,
) -> Delta {
    let metas: Vec<AcceptedMeta> = updates
        .iter()
        .map(|u| AcceptedMeta {
            node: u.node.clone(),
            samples: u.samples,
            band_metrics: u.metrics.clone(),
            payload_sha256: String::new(),
            payload_len: 0,
            accepted_at_ms: 0,
        })
        .collect();
    let deltas: Vec<Delta> = updates
        .iter()
        .map(|u| global.aligned(&u.decoded()).unwrap())
        .collect();
    let pairs: Vec<(&AcceptedMeta, &Delta)> = metas.iter().zip(&deltas).collect();
    let out = aggregate_band_refs(
        &daf_refs(&daf_inputs(&pairs)),
        Some(global),
        &DafConfig::new(0),
    )
    .unwrap();
    opt.step(round, global, &out.delta, state).unwrap()
}

/// A syntactically valid f32 payload that carries a NaN (the encoder refuses to make one).
pub fn nan_payload(delta: &Delta) -> Vec<u8> {
    let mut toc = Vec::new();
    let mut body = Vec::new();
    for (i, t) in delta.tensors.iter().enumerate() {
        let mut plane = Vec::new();
        for (j, v) in t.data.iter().enumerate() {
            let v = if i == 0 && j == 0 { f32::NAN } else { *v };
            plane.extend_from_slice(&v.to_le_bytes());
        }
        let frame = zstd::encode_all(plane.as_slice(), 3).unwrap();
        toc.extend_from_slice(&(t.name.len() as u16).to_le_bytes());
        toc.extend_from_slice(t.name.as_bytes());
        toc.push(t.shape.len() as u8);
        for d in &t.shape {
            toc.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        toc.extend_from_slice(&[0, 0, 0, 0]);
        toc.extend_from_slice(&(t.numel() as u64).to_le_bytes());
        toc.extend_from_slice(&0u64.to_le_bytes());
        toc.extend_from_slice(&(plane.len() as u64).to_le_bytes());
        toc.extend_from_slice(&(frame.len() as u64).to_le_bytes());
        body.extend_from_slice(&frame);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&toc);
    h.update(&body);
    let mut out = Vec::new();
    out.extend_from_slice(b"RVDC");
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(delta.tensors.len() as u32).to_le_bytes());
    out.extend_from_slice(&(toc.len() as u32).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&toc);
    out.extend_from_slice(&body);
    out
}

/// `GET /metrics` over plain HTTP/1.1.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
