//! Round latency and bandwidth at the 7B shape: N simulated nodes (no training) fetch the global
//! TALoRA adapter and submit codec-encoded 7B-shaped deltas (3,670,016 B values) to a real
//! coordinator over real sockets on 127.0.0.1 — gRPC + mutual TLS, or libp2p (Noise + yamux,
//! allowlisted peer ids).
//!
//! Shared by the criterion bench (coordinator in-process) and `round_report` (coordinator in a
//! child process, so its CPU time and peak RSS are its own). Each node is a real
//! `ruvdllm_node` client of the chosen transport with its socket bytes counted; per round a node reads
//! the announcement from its round stream, downloads the announced global adapter, and uploads
//! a payload that is distinct per node and round (the coordinator refuses replays). The round
//! ends when a separate watcher connection sees the next round announced — the coordinator has
//! then received every update, aggregated (DAF defaults), checkpointed and published the new
//! global.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ruvdllm::codec::{self, EncodeOptions, Mode};
use ruvdllm::delta::Delta;
use ruvdllm_coordinator::certs::{self, Layout};
pub use ruvdllm_coordinator::config::TransportKind;
use ruvdllm_coordinator::config::{File, Libp2pSection, RoundSection, Tls};
use ruvdllm_node::daemon::any_client::{AnyClient, ClientTarget, P2pTarget, SocketBytes};
use ruvdllm_node::daemon::client::AnnouncementStream;
use ruvdllm_node::daemon::grpc_client::Target;
use ruvdllm_node::daemon::{ClientError, CoordinatorClient};
use ruvdllm_proto::p2p;
use ruvdllm_proto::{UpdateHeader, sha256_hex};
use tokio_stream::StreamExt;

/// The base-model hash every simulated node presents.
pub const BASE: &str = "7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b";
/// Largest payload or adapter accepted.
pub const MAX_BYTES: u64 = 64 << 20;

/// Node id `i`.
pub fn node_id(i: usize) -> String {
    format!("bench-{i:03}")
}

/// The libp2p key pair file of identity `id`.
fn key_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("keys").join(format!("{id}.key"))
}

/// Node ids plus the watcher.
fn identities(nodes: usize) -> Vec<String> {
    (0..nodes)
        .map(node_id)
        .chain(std::iter::once("watcher".to_string()))
        .collect()
}

/// A PKI, libp2p keys and allowlist, and a coordinator config for `nodes` nodes in `dir`,
/// serving `transport` on `listen` (`127.0.0.1:<port>`, port 0 for any).
pub fn prepare(
    dir: &Path,
    nodes: usize,
    listen: &str,
    transport: TransportKind,
) -> anyhow::Result<(Layout, File)> {
    let socket: std::net::SocketAddr = listen.parse().context("listen address")?;
    std::fs::create_dir_all(dir.join("keys"))?;
    p2p::generate_keypair(&key_path(dir, "coordinator"))?;
    let mut allowlist = String::new();
    for id in identities(nodes) {
        let kp = p2p::generate_keypair(&key_path(dir, &id))?;
        allowlist.push_str(&format!("{} {id}\n", p2p::peer_id(&kp)));
    }
    std::fs::write(dir.join("allowlist.txt"), allowlist)?;
    let pki = Layout::new(dir.join("certs"));
    certs::init(&pki, &["localhost".into()])?;
    for i in 0..nodes {
        certs::issue(&pki, &node_id(i))?;
    }
    // One extra identity for the watcher connection.
    certs::issue(&pki, "watcher")?;
    let initial = dir.join("initial.safetensors");
    let zero = zero_like(&crate::talora_7b_delta(0, false));
    ruvdllm::delta_io::save(
        &zero,
        &initial,
        ruvdllm::delta_io::StoreDtype::F32,
        &Default::default(),
    )?;
    let file = File {
        listen: listen.into(),
        metrics_listen: String::new(),
        state_dir: dir.join("state"),
        initial_adapter: initial,
        zero_initial_adapter: true,
        base_model_hash: BASE.into(),
        run_seed: 7,
        tls: Tls {
            ca_cert: pki.ca_cert(),
            cert: pki.server_cert(),
            key: pki.server_key(),
            revocation_list: pki.revocation_list(),
        },
        round: RoundSection {
            min_nodes: 3,
            quorum: nodes,
            duration_ms: 600_000,
            max_payload_bytes: MAX_BYTES,
            ..RoundSection::default()
        },
        aggregation: Default::default(),
        privacy: Default::default(),
        transport,
        libp2p: Libp2pSection {
            listen: format!("/ip4/{}/tcp/{}", socket.ip(), socket.port()),
            key: key_path(dir, "coordinator"),
            allowlist: dir.join("allowlist.txt"),
            poll_wait_ms: 20_000,
        },
    };
    Ok((pki, file))
}

fn zero_like(d: &Delta) -> Delta {
    let mut z = d.clone();
    z.tensors
        .iter_mut()
        .for_each(|t| t.data.iter_mut().for_each(|v| *v = 0.0));
    z
}

/// One simulated node: a counted client and its round stream.
pub struct Node {
    pub client: AnyClient,
    pub counters: SocketBytes,
    stream: Option<AnnouncementStream>,
}

/// Where the coordinator of a prepared configuration listens.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub dir: PathBuf,
    pub pki: Layout,
    pub transport: TransportKind,
    /// `127.0.0.1:<port>` as bound.
    pub addr: std::net::SocketAddr,
}

impl Endpoint {
    fn target(&self, id: &str) -> anyhow::Result<ClientTarget> {
        Ok(match self.transport {
            TransportKind::Grpc => ClientTarget::Grpc(Target {
                addr: self.addr.to_string(),
                server_name: "localhost".into(),
                ca_cert: self.pki.ca_cert(),
                cert: self.pki.node_cert(id),
                key: self.pki.node_key(id),
            }),
            TransportKind::Libp2p => {
                let coordinator = p2p::load_keypair(&key_path(&self.dir, "coordinator"))?;
                let addr = format!(
                    "/ip4/{}/tcp/{}/p2p/{}",
                    self.addr.ip(),
                    self.addr.port(),
                    p2p::peer_id(&coordinator)
                );
                ClientTarget::Libp2p(P2pTarget {
                    coordinator: addr.parse().context("coordinator multiaddr")?,
                    key: key_path(&self.dir, id),
                })
            }
        })
    }
}

/// Registered nodes and the watcher, connected to `addr`.
pub struct Fleet {
    pub nodes: Vec<Node>,
    watcher: AnnouncementStream,
}

impl Fleet {
    pub async fn connect(at: &Endpoint, n: usize) -> anyhow::Result<Self> {
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let (client, counters) = AnyClient::counted(&at.target(&node_id(i))?, MAX_BYTES)?;
            client.register(&node_id(i), BASE).await?;
            let stream = client.watch_rounds().await?;
            nodes.push(Node {
                client,
                counters,
                stream: Some(stream),
            });
        }
        let w = AnyClient::connect(&at.target("watcher")?, MAX_BYTES)?;
        let watcher = w.watch_rounds().await?;
        Ok(Self { nodes, watcher })
    }

    /// Total bytes the nodes sent and received so far.
    pub fn bytes(&self) -> (u64, u64) {
        self.nodes.iter().fold((0, 0), |(u, d), n| {
            (u + n.counters.sent(), d + n.counters.received())
        })
    }
}

/// Distinct payloads for `n` nodes in `round`: the same 7B-shaped base delta with one value
/// changed per node and round, encoded with `mode`.
pub fn payloads(base: &Delta, mode: &Mode, n: usize, round: u64) -> anyhow::Result<Vec<Vec<u8>>> {
    use rayon::prelude::*;
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut d = base.clone();
            d.tensors[0].data[0] = 1e-2 * (1.0 + i as f32 + 1000.0 * round as f32);
            Ok(codec::encode(&d, &EncodeOptions::new(*mode))?)
        })
        .collect()
}

/// What one round cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundCost {
    pub latency: Duration,
    /// Mean bytes per node at the socket.
    pub up_per_node: f64,
    pub down_per_node: f64,
    /// Mean encoded payload bytes per node.
    pub payload_per_node: f64,
}

async fn next_round(s: &mut AnnouncementStream, round: u64) -> anyhow::Result<String> {
    loop {
        let a = s
            .next()
            .await
            .context("round stream ended")?
            .map_err(|e: ClientError| anyhow::anyhow!("{e}"))?;
        if a.round == round {
            return Ok(a.global_hash);
        }
        anyhow::ensure!(
            a.round < round,
            "round {} announced, expected {round}",
            a.round
        );
    }
}

/// Runs round `round`: every node fetches the global and submits its payload.
pub async fn round(
    fleet: &mut Fleet,
    round: u64,
    payloads: Vec<Vec<u8>>,
) -> anyhow::Result<RoundCost> {
    let n = fleet.nodes.len();
    let payload_per_node = payloads.iter().map(Vec::len).sum::<usize>() as f64 / n.max(1) as f64;
    let (up0, down0) = fleet.bytes();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (node, payload)) in fleet.nodes.iter_mut().zip(payloads).enumerate() {
        let client = node.client.clone();
        let mut stream = node.stream.take().context("node stream in use")?;
        tasks.spawn(async move {
            let r: anyhow::Result<()> = async {
                let hash = next_round(&mut stream, round).await?;
                let global = client.fetch_adapter(&hash).await?;
                anyhow::ensure!(sha256_hex(&global) == hash, "global adapter hash mismatch");
                drop(global);
                let header = UpdateHeader {
                    round,
                    samples: 100,
                    band_metrics: BTreeMap::from([
                        ("coarse".to_string(), 0.1),
                        ("domain".to_string(), 0.1),
                        ("fine".to_string(), 0.1),
                    ]),
                    payload_size: payload.len() as u64,
                    payload_sha256: sha256_hex(&payload),
                };
                client.submit_update(header, Arc::new(payload)).await?;
                Ok(())
            }
            .await;
            (i, stream, r)
        });
    }
    while let Some(j) = tasks.join_next().await {
        let (i, stream, r) = j.context("node task")?;
        fleet.nodes[i].stream = Some(stream);
        r.with_context(|| format!("{} in round {round}", node_id(i)))?;
    }
    next_round(&mut fleet.watcher, round + 1).await?;
    let latency = start.elapsed();
    let (up1, down1) = fleet.bytes();
    Ok(RoundCost {
        latency,
        up_per_node: (up1 - up0) as f64 / n as f64,
        down_per_node: (down1 - down0) as f64 / n as f64,
        payload_per_node,
    })
}

/// A temporary folder for one configuration.
pub fn workdir(tag: &str) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::Builder::new().prefix(tag).tempdir()?;
    let path = dir.path().to_path_buf();
    Ok((dir, path))
}
