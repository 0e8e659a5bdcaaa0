//! Setting up one simulated federation: the output folder, a fresh PKI, the coordinator's
//! settings, and each node's identity and data.
//!
//! Everything lives under `--out`: `certs/` (a new CA, the server certificate for `localhost`,
//! one certificate per node), `state/` (the coordinator's durable state), `adapters/` (the
//! global adapter of every round) and, with `--processes`, `nodes/<id>/node.toml`. Those folders
//! are recreated on every run so a simulation never resumes a previous one by accident.
//!
//! Data: with the built-in split, node i trains on domain `i mod 5`, shard `i div 5` of the nodes
//! sharing that domain — ten nodes give two disjoint shards per domain. With `--corpus`, one file
//! per node when the counts match, otherwise every file's chunks dealt round-robin to the nodes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ruvdllm::adapter::{Shape, Spec, Talora};
use ruvdllm::data::{self, Domain, Sample, Split};
use ruvdllm_node::daemon::grpc_client::Target;
use ruvdllm_node::daemon::local_data::{self, DataSource, LocalData};

use crate::certs::{self, Layout};
use crate::config::{Settings, Tls};
use crate::round;

/// Folders of one run.
#[derive(Debug, Clone)]
pub struct OutDir {
    pub root: PathBuf,
}

impl OutDir {
    /// Creates `root` and fresh `certs/ state/ adapters/ nodes/` inside it.
    pub fn create(root: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        // Absolute, so generated node configs do not depend on the working directory.
        let root = root
            .canonicalize()
            .with_context(|| format!("resolving {}", root.display()))?;
        let d = Self { root };
        for sub in [d.certs(), d.state(), d.adapters(), d.nodes()] {
            if sub.exists() {
                std::fs::remove_dir_all(&sub)
                    .with_context(|| format!("clearing {}", sub.display()))?;
            }
            std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        Ok(d)
    }

    pub fn certs(&self) -> PathBuf {
        self.root.join("certs")
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }
    pub fn adapters(&self) -> PathBuf {
        self.root.join("adapters")
    }
    pub fn nodes(&self) -> PathBuf {
        self.root.join("nodes")
    }
    /// The saved global adapter after round `round` (round 0: the initial adapter).
    pub fn adapter(&self, round: u64) -> PathBuf {
        self.adapters().join(format!("round-{round:03}"))
    }
    pub fn report(&self) -> PathBuf {
        self.root.join("report.json")
    }
}

/// The id of node `i`.
pub fn node_id(i: usize) -> String {
    format!("node-{i:02}")
}

/// Makes the CA, the server certificate (`localhost`) and one certificate per node.
pub fn pki(out: &OutDir, nodes: usize) -> anyhow::Result<Layout> {
    let layout = Layout::new(out.certs());
    certs::init(&layout, &["localhost".to_string()]).context("creating the CA")?;
    for i in 0..nodes {
        certs::issue(&layout, &node_id(i)).context("issuing node certificates")?;
    }
    Ok(layout)
}

/// The gRPC target of node `i`.
pub fn target(pki: &Layout, addr: SocketAddr, i: usize) -> Target {
    let id = node_id(i);
    Target {
        addr: addr.to_string(),
        server_name: "localhost".into(),
        ca_cert: pki.ca_cert(),
        cert: pki.node_cert(&id),
        key: pki.node_key(&id),
    }
}

/// The initial (all-zero B) global adapter of the run.
pub fn initial_adapter(spec: &Spec, run_seed: u64, shape: Shape) -> anyhow::Result<Talora> {
    Ok(Talora::new(spec.clone(), run_seed, shape)?)
}

/// Coordinator settings: listen on an ephemeral loopback port, every node needed for quorum.
pub fn coordinator_settings(
    out: &OutDir,
    pki: &Layout,
    initial: &Talora,
    base_model_hash: &str,
    nodes: usize,
    daf: ruvdllm::aggregate::daf::DafConfig,
    round_timeout_ms: u64,
) -> Settings {
    Settings {
        transport: crate::config::Transport::Grpc,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen: None,
        state_dir: out.state(),
        initial_adapter: initial.to_delta(),
        tls: Tls {
            ca_cert: pki.ca_cert(),
            cert: pki.server_cert(),
            key: pki.server_key(),
            revocation_list: pki.revocation_list(),
        },
        round: round::Config {
            min_nodes: 3,
            quorum: nodes,
            round_ms: round_timeout_ms,
            base_model_hash: base_model_hash.to_string(),
            run_seed: initial.run_seed(),
            max_payload_bytes: 256 << 20,
            daf,
        },
    }
}

/// The built-in data source of node `i` of `n`.
pub fn builtin_source(i: usize, n: usize) -> DataSource {
    let k = Domain::ALL.len();
    let d = i % k;
    DataSource::Builtin {
        domain: Domain::ALL[d],
        split: Split::Finetune,
        shard: i / k,
        shards: (n - 1 - d) / k + 1,
    }
}

/// Every node's data. `max_len` bounds corpus chunks (bytes).
pub fn node_data(
    n: usize,
    samples: usize,
    validation: usize,
    corpus: &[PathBuf],
    max_len: usize,
) -> anyhow::Result<Vec<LocalData>> {
    if corpus.is_empty() {
        return (0..n)
            .map(|i| {
                local_data::load(&builtin_source(i, n), samples, validation, max_len)
                    .with_context(|| format!("data of {}", node_id(i)))
            })
            .collect();
    }
    if corpus.len() == n {
        return corpus
            .iter()
            .enumerate()
            .map(|(i, p)| {
                local_data::load(
                    &DataSource::Corpus(vec![p.clone()]),
                    samples,
                    validation,
                    max_len,
                )
                .with_context(|| format!("data of {} ({})", node_id(i), p.display()))
            })
            .collect();
    }
    let chunks = data::corpus::load(corpus, max_len).context("reading --corpus")?;
    let mut per: Vec<Vec<Sample>> = vec![Vec::new(); n];
    for (k, c) in chunks.into_iter().enumerate() {
        per[k % n].push(c);
    }
    per.into_iter()
        .enumerate()
        .map(|(i, mut all)| {
            anyhow::ensure!(
                all.len() >= 2,
                "{} gets {} corpus chunk(s); need at least 2 per node",
                node_id(i),
                all.len()
            );
            let keep = (all.len() / 10).clamp(1, validation);
            let val = all.split_off(all.len() - keep);
            all.truncate(samples);
            Ok(LocalData {
                train: all,
                validation: val,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_nodes_cover_five_domains_twice() {
        let sources: Vec<DataSource> = (0..10).map(|i| builtin_source(i, 10)).collect();
        for d in Domain::ALL {
            let shards: Vec<(usize, usize)> = sources
                .iter()
                .filter_map(|s| match s {
                    DataSource::Builtin {
                        domain,
                        shard,
                        shards,
                        ..
                    } if *domain == d => Some((*shard, *shards)),
                    _ => None,
                })
                .collect();
            assert_eq!(shards, vec![(0, 2), (1, 2)], "{d}");
        }
        assert_eq!(
            builtin_source(2, 3),
            DataSource::Builtin {
                domain: Domain::ALL[2],
                split: Split::Finetune,
                shard: 0,
                shards: 1
            }
        );
        let data = node_data(10, 8, 2, &[], 38).unwrap();
        assert!(data[0].train.iter().all(|s| !data[5].train.contains(s)));
    }

    #[test]
    fn a_corpus_is_split_across_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.txt");
        let text: String = (0..40).map(|i| format!("sentence {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let data = node_data(3, 100, 2, std::slice::from_ref(&p), 12).unwrap();
        assert_eq!(data.len(), 3);
        assert!(
            data.iter()
                .all(|d| !d.train.is_empty() && !d.validation.is_empty())
        );
        assert!(node_data(30, 100, 2, &[p], 12).is_err());
    }
}
