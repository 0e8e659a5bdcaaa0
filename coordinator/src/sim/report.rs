//! What a simulation records: one [`RoundRecord`] per round with every figure the round table
//! prints, written as `report.json` next to the plots. Byte counts come in pairs — counted at the
//! socket by the transport and counted by the codec (payload bytes) — so framing and TLS overhead
//! are visible rather than hidden.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Held-out quality of one global adapter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// The SFT diffusion loss on the held-out split (fixed noise seed). A diverged model's NaN
    /// is written as JSON `null` and read back as NaN.
    #[serde(deserialize_with = "nan_from_null")]
    pub heldout_loss: f64,
    /// LLaDA's Monte-Carlo perplexity bound on the held-out split.
    #[serde(deserialize_with = "nan_from_null")]
    pub ppl_bound: f64,
    pub exact_match_correct: usize,
    pub exact_match_total: usize,
}

/// serde_json writes a non-finite f64 as `null`; this reads `null` back as NaN.
fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Quality {
    pub fn exact_match(&self) -> f64 {
        if self.exact_match_total == 0 {
            0.0
        } else {
            self.exact_match_correct as f64 / self.exact_match_total as f64
        }
    }
}

/// Wall time of one round, split into consecutive phases (seconds). Round r starts when its
/// announcement is released to the nodes; the phases are envelopes over all nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// From the last node holding the global adapter until the last node finished training.
    pub train_s: f64,
    /// From the last node finishing training until the coordinator held every update.
    pub upload_s: f64,
    /// Aggregation inside the coordinator (closing the round: rules, new global, checkpoint).
    pub aggregate_s: f64,
    /// From the round's announcement until every node had downloaded the global adapter it
    /// trains from.
    pub distribute_s: f64,
    /// The whole round: announcement until the round was closed and every node had its answer.
    pub total_s: f64,
}

/// One node's part in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRound {
    pub node: String,
    /// Bytes the node sent / received on its connection during the round, counted at the socket.
    pub socket_up: u64,
    pub socket_down: u64,
    /// The encoded payload sizes the codec produced / the node downloaded.
    pub codec_up: u64,
    pub codec_down: u64,
    pub accepted: bool,
    /// Why the coordinator refused the update (`None` when accepted).
    pub reason: Option<String>,
    /// Per band group, what the aggregation rejected of this update (`domain: zero weight`, …).
    #[serde(default)]
    pub rejections: Vec<String>,
    /// Mean local training loss of the round (`None` for an attacker, which does not train).
    #[serde(default)]
    pub train_loss: Option<f64>,
    pub attacker: bool,
    /// Per band group, what the aggregation measured of this update (norm, cosine to the
    /// pre-filter's reference, weight): the figures the pre-filters and rules decided on.
    #[serde(default)]
    pub screening: Vec<BandScreen>,
}

/// One band group's figures for one node's update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandScreen {
    pub group: String,
    pub norm: Option<f64>,
    pub cosine: Option<f64>,
    pub weight: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u64,
    pub latency: Latency,
    pub nodes: Vec<NodeRound>,
    pub accepted: usize,
    pub rejected: usize,
    /// Refusals counted by reason.
    pub rejected_by_reason: BTreeMap<String, usize>,
    /// Fallbacks or notes the aggregation recorded.
    pub aggregation_notes: Vec<String>,
    pub quality: Quality,
}

impl RoundRecord {
    pub fn socket_up_total(&self) -> u64 {
        self.nodes.iter().map(|n| n.socket_up).sum()
    }
    pub fn socket_down_total(&self) -> u64 {
        self.nodes.iter().map(|n| n.socket_down).sum()
    }
}

/// Whole-run byte totals at the socket, from both ends of the connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SocketTotals {
    /// Per node: every byte its client sent / received over the whole run.
    pub node_up: Vec<u64>,
    pub node_down: Vec<u64>,
    /// Per node: the bytes after its last round (closing the connections, the announcement of
    /// the round that was never run).
    pub tail_up: Vec<u64>,
    pub tail_down: Vec<u64>,
    /// The coordinator's own socket counters (every node connection).
    pub coordinator_read: u64,
    pub coordinator_written: u64,
}

/// A TLS 1.3 close_notify alert on the wire: the 5-byte record header, the 2-byte alert and its
/// content-type byte, and the 16-byte AEAD tag.
pub const TLS13_CLOSE_NOTIFY_BYTES: u64 = 24;

impl SocketTotals {
    /// Bytes the nodes sent that the coordinator never read. Everything a node sends during the
    /// run is read; only its connection's last record, the TLS close_notify, can go unread: when
    /// the client's HTTP/2 GOAWAY reaches the server in an earlier read than the close_notify,
    /// the server finishes the connection on the GOAWAY and drops the socket. So this is zero or
    /// whole close_notify records, at most one per node.
    pub fn unread_up(&self) -> u64 {
        self.node_up
            .iter()
            .sum::<u64>()
            .saturating_sub(self.coordinator_read)
    }

    /// Whether the two ends agree up to unread close_notify records (see [`Self::unread_up`]).
    pub fn ends_agree(&self) -> bool {
        let unread = self.unread_up();
        self.coordinator_read <= self.node_up.iter().sum::<u64>()
            && unread.is_multiple_of(TLS13_CLOSE_NOTIFY_BYTES)
            && unread / TLS13_CLOSE_NOTIFY_BYTES <= self.node_up.len() as u64
            && self.node_down.iter().sum::<u64>() <= self.coordinator_written
    }
}

/// The whole run: configuration, the base's quality before round 1, every round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The resolved configuration (every default filled in).
    pub config: serde_json::Value,
    pub seed: u64,
    pub base: Quality,
    pub rounds: Vec<RoundRecord>,
    pub wall_s: f64,
    /// Socket totals (in-process nodes only: node processes count nothing for us).
    #[serde(default)]
    pub sockets: Option<SocketTotals>,
    /// The centralized baseline (`--centralized`): same training on the union of the data.
    #[serde(default)]
    pub centralized: Option<Quality>,
    /// ε of the DP guarantee (local, or central with `--dp-central`) after the last round
    /// (`--dp-clip` with `--dp-noise` > 0).
    #[serde(default)]
    pub dp_epsilon: Option<f64>,
    /// The command that recomputes the last round's held-out figures from its saved adapter.
    #[serde(default)]
    pub reproduce: String,
    /// What each node trained on: sample counts, by domain (how skewed `--partition` made it).
    #[serde(default)]
    pub data: Vec<NodeData>,
}

/// One node's local data, counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeData {
    pub node: String,
    pub train: usize,
    pub validation: usize,
    /// Training samples per domain (`text` for samples without one).
    pub domains: BTreeMap<String, usize>,
}

impl NodeData {
    pub fn new(node: String, d: &ruvdllm_node::daemon::local_data::LocalData) -> Self {
        let mut domains = BTreeMap::new();
        for s in &d.train {
            *domains
                .entry(s.domain.map_or("text", |d| d.name()).to_string())
                .or_insert(0) += 1;
        }
        Self {
            node,
            train: d.train.len(),
            validation: d.validation.len(),
            domains,
        }
    }

    /// `node-03 64 (arithmetic 40, facts 24)`.
    pub fn line(&self) -> String {
        let parts: Vec<String> = self
            .domains
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!("{} {} ({})", self.node, self.train, parts.join(", "))
    }
}

impl Report {
    /// Relative fall of the held-out loss from the base to the last round (0.1 = 10 %).
    pub fn loss_improvement(&self) -> f64 {
        match self.rounds.last() {
            Some(last) if self.base.heldout_loss > 0.0 => {
                (self.base.heldout_loss - last.quality.heldout_loss) / self.base.heldout_loss
            }
            _ => 0.0,
        }
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        ruvdllm::fsutil::write_atomic(path, &json)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Ok(serde_json::from_slice(&text)?)
    }
}

/// Formats a byte count the way the round table prints it (kB / MB, decimal).
pub fn bytes(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.2} MB", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} kB", n as f64 / 1e3)
    } else {
        format!("{n} B")
    }
}

/// The round table's header and one row per round.
pub fn table_header() -> String {
    format!(
        "{:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>10} {:>10} {:>10} {:>8} {:>9} {:>8} {:>7}",
        "round",
        "total s",
        "train",
        "upload",
        "aggr",
        "distr",
        "up/node",
        "codec/node",
        "down/node",
        "acc/rej",
        "heldout",
        "ppl≤",
        "EM"
    )
}

pub fn table_row(r: &RoundRecord) -> String {
    let n = r.nodes.len().max(1) as u64;
    let codec_up: u64 = r.nodes.iter().map(|x| x.codec_up).sum();
    let mut row = format!(
        "{:>5} {:>7.2} {:>7.2} {:>7.2} {:>7.3} {:>7.2} {:>10} {:>10} {:>10} {:>8} {:>9.4} {:>8.3} {:>6.1}%",
        r.round,
        r.latency.total_s,
        r.latency.train_s,
        r.latency.upload_s,
        r.latency.aggregate_s,
        r.latency.distribute_s,
        bytes(r.socket_up_total() / n),
        bytes(codec_up / n),
        bytes(r.socket_down_total() / n),
        format!("{}/{}", r.accepted, r.rejected),
        r.quality.heldout_loss,
        r.quality.ppl_bound,
        100.0 * r.quality.exact_match(),
    );
    if !r.rejected_by_reason.is_empty() {
        let reasons: Vec<String> = r
            .rejected_by_reason
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        row.push_str(&format!("  rejected: {}", reasons.join(", ")));
    }
    // A refused round, a held band or a fallback: say so in the row, not only in report.json.
    for note in &r.aggregation_notes {
        row.push_str(&format!("  [{note}]"));
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(round: u64, loss: f64) -> RoundRecord {
        RoundRecord {
            round,
            latency: Latency {
                total_s: 1.0,
                ..Default::default()
            },
            nodes: vec![NodeRound {
                node: "node-0".into(),
                socket_up: 2_500,
                socket_down: 1_200_000,
                codec_up: 2_000,
                codec_down: 1_100_000,
                accepted: false,
                reason: Some("non-finite".into()),
                rejections: vec![],
                screening: vec![],
                train_loss: Some(0.5),
                attacker: true,
            }],
            accepted: 0,
            rejected: 1,
            rejected_by_reason: [("non-finite".to_string(), 1)].into_iter().collect(),
            aggregation_notes: vec![],
            quality: Quality {
                heldout_loss: loss,
                ppl_bound: 2.0,
                exact_match_correct: 1,
                exact_match_total: 4,
            },
        }
    }

    #[test]
    fn json_round_trip_and_improvement() {
        let report = Report {
            config: serde_json::json!({"nodes": 1}),
            seed: 7,
            base: Quality {
                heldout_loss: 1.0,
                ppl_bound: 3.0,
                exact_match_correct: 0,
                exact_match_total: 4,
            },
            rounds: vec![record(1, 0.9), {
                // An attacker does not train: no training loss.
                let mut r = record(2, 0.8);
                r.nodes[0].train_loss = None;
                r
            }],
            wall_s: 3.0,
            sockets: None,
            centralized: None,
            dp_epsilon: None,
            reproduce: String::new(),
            data: vec![NodeData::new(
                "node-00".into(),
                &ruvdllm_node::daemon::local_data::LocalData {
                    train: vec![
                        ruvdllm::data::Sample {
                            domain: Some(ruvdllm::data::Domain::Facts),
                            prompt: "p".into(),
                            answer: "a".into(),
                        },
                        ruvdllm::data::Sample {
                            domain: None,
                            prompt: String::new(),
                            answer: "t".into(),
                        },
                    ],
                    validation: vec![],
                },
            )],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        report.write(&path).unwrap();
        let back = Report::read(&path).unwrap();
        assert_eq!(back.rounds, report.rounds);
        assert_eq!(back.data, report.data);
        assert_eq!(report.data[0].line(), "node-00 2 (facts 1, text 1)");
        assert!((back.loss_improvement() - 0.2).abs() < 1e-12);
        let row = table_row(&back.rounds[0]);
        assert!(row.contains("2.5 kB") && row.contains("1.20 MB") && row.contains("25.0%"));
        assert!(row.contains("non-finite×1"), "{row}");
        assert!(!row.contains('['), "{row}");
        let mut refused = back.rounds[0].clone();
        refused
            .aggregation_notes
            .push("aggregation refused, global unchanged: group `domain`: …".into());
        let row = table_row(&refused);
        assert!(
            row.ends_with("  [aggregation refused, global unchanged: group `domain`: …]"),
            "{row}"
        );
        // A diverged round (NaN loss) is written and read back too.
        let mut diverged = report.clone();
        diverged.rounds[1].quality.heldout_loss = f64::NAN;
        diverged.write(&path).unwrap();
        let back = Report::read(&path).unwrap();
        assert!(back.rounds[1].quality.heldout_loss.is_nan());
    }
}
