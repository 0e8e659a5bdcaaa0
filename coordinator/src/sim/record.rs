//! Turning what one round left behind — the nodes' events and the coordinator's close report —
//! into a [`RoundRecord`] row.
//!
//! A node counts as *accepted* when the coordinator took its upload and at least one band group
//! used it; every refusal (at upload, by reject code) and every per-band rejection by the
//! aggregation (`coarse:norm-bound`, `domain:zero-weight`, …) is counted by reason.

use std::collections::BTreeMap;
use std::time::Instant;

use super::cluster::node_id;
use super::events::{Bytes, NodeEvents};
use super::report::{BandScreen, Latency, NodeRound, Quality, RoundRecord};
use crate::service::ClosedRound;

/// Short category of an aggregation rejection message (`RejectReason`'s display form).
pub fn reason_kind(why: &str) -> &'static str {
    if why.starts_with("norm") {
        "norm-bound"
    } else if why.starts_with("cosine") {
        "cosine"
    } else if why.starts_with("duplicate") {
        "duplicate"
    } else if why.starts_with("not selected") {
        "not-selected"
    } else if why.starts_with("zero weight") {
        "zero-weight"
    } else if why.starts_with("non-finite") {
        "non-finite"
    } else {
        "other"
    }
}

/// One node as the record builder sees it.
pub struct NodeView {
    /// The node's index (`node-{index:02}`).
    pub node: usize,
    pub events: NodeEvents,
    /// Socket counters when the previous round ended.
    pub before: Bytes,
    pub attacker: bool,
}

fn secs(later: Option<Instant>, earlier: Instant) -> f64 {
    later.map_or(0.0, |t| t.saturating_duration_since(earlier).as_secs_f64())
}

/// Builds round `round`'s row from the nodes that took part; `start` is when its announcement
/// was released.
pub fn build(
    round: u64,
    start: Instant,
    nodes: &[NodeView],
    closed: &ClosedRound,
    quality: Quality,
) -> RoundRecord {
    let mut by_node: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for g in &closed.report.groups {
        for (node, why) in &g.rejected {
            by_node
                .entry(node.clone())
                .or_default()
                .push((g.group.clone(), why.clone()));
        }
    }
    let used_somewhere = |id: &str| {
        closed.report.nodes.iter().any(|n| n == id)
            && closed
                .report
                .groups
                .iter()
                .any(|g| !g.rejected.iter().any(|(n, _)| n == id) && g.used > 0)
    };
    let mut rejected_by_reason: BTreeMap<String, usize> = BTreeMap::new();
    let mut rows = Vec::with_capacity(nodes.len());
    for v in nodes {
        let id = node_id(v.node);
        let e = &v.events;
        let refusal = e.outcome.clone().flatten();
        if let Some(code) = &refusal {
            *rejected_by_reason.entry(code.clone()).or_default() += 1;
        }
        let rejections: Vec<String> = by_node
            .get(&id)
            .map(|r| {
                r.iter()
                    .map(|(g, why)| {
                        *rejected_by_reason
                            .entry(format!("{g}:{}", reason_kind(why)))
                            .or_default() += 1;
                        format!("{g}: {why}")
                    })
                    .collect()
            })
            .unwrap_or_default();
        let screening = closed
            .report
            .groups
            .iter()
            .flat_map(|g| {
                g.screen
                    .iter()
                    .filter(|s| s.node == id)
                    .map(|s| BandScreen {
                        group: g.group.clone(),
                        norm: s.norm,
                        cosine: s.cosine,
                        weight: s.weight,
                    })
            })
            .collect();
        let accepted = e.outcome.is_some()
            && refusal.is_none()
            && closed.report.failed.is_none()
            && used_somewhere(&id);
        rows.push(NodeRound {
            node: id,
            socket_up: e.bytes_at_done.up.saturating_sub(v.before.up),
            socket_down: e.bytes_at_done.down.saturating_sub(v.before.down),
            codec_up: e.codec_up,
            codec_down: e.codec_down,
            accepted,
            reason: refusal,
            rejections,
            train_loss: e.train_loss.is_finite().then_some(e.train_loss),
            attacker: v.attacker,
            screening,
        });
    }
    let fetched = nodes.iter().filter_map(|v| v.events.fetched_at).max();
    let trained = nodes.iter().filter_map(|v| v.events.train_end).max();
    let done = nodes.iter().filter_map(|v| v.events.done_at).max();
    let aggregate = closed.aggregate;
    let agg_start = closed
        .closed_at
        .checked_sub(aggregate)
        .unwrap_or(closed.closed_at);
    let end = done.map_or(closed.closed_at, |d| d.max(closed.closed_at));
    let latency = Latency {
        distribute_s: secs(fetched, start),
        train_s: trained.map_or(0.0, |t| secs(Some(t), fetched.unwrap_or(start))),
        upload_s: trained.map_or(0.0, |t| secs(Some(agg_start), t)),
        aggregate_s: aggregate.as_secs_f64(),
        total_s: secs(Some(end), start),
    };
    let mut notes: Vec<String> = closed
        .report
        .groups
        .iter()
        .filter_map(|g| {
            g.fallback.as_ref().map(|f| match g.held {
                true => format!("{}: held at the previous global ({f})", g.group),
                false => format!("{}: fell back to {} ({f})", g.group, g.rule),
            })
        })
        .collect();
    if let Some(f) = &closed.report.failed {
        notes.push(format!("aggregation refused, global unchanged: {f}"));
    }
    RoundRecord {
        round,
        latency,
        accepted: rows.iter().filter(|r| r.accepted).count(),
        rejected: rows.iter().filter(|r| !r.accepted).count(),
        nodes: rows,
        rejected_by_reason,
        aggregation_notes: notes,
        quality,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use ruvdllm::delta::Delta;

    use super::*;
    use crate::round::{CloseReport, GroupSummary, Screen};

    #[test]
    fn rows_count_refusals_and_band_rejections() {
        let start = Instant::now();
        let closed = ClosedRound {
            report: CloseReport {
                round: 1,
                nodes: vec![node_id(0), node_id(1)],
                opened_at_ms: 0,
                closed_at_ms: 1,
                groups: vec![GroupSummary {
                    group: "domain".into(),
                    rule: "fedavg".into(),
                    fallback: None,
                    held: false,
                    used: 1,
                    rejected: vec![(node_id(1), "norm 2.0e0 > bound 1.0e0".into())],
                    screen: vec![
                        Screen {
                            node: node_id(0),
                            norm: Some(1.0),
                            cosine: Some(0.25),
                            weight: Some(1.0),
                        },
                        Screen {
                            node: node_id(1),
                            norm: Some(2.0),
                            cosine: None,
                            weight: None,
                        },
                    ],
                }],
                failed: None,
                selected: None,
            },
            aggregate: Duration::from_millis(5),
            global: Arc::new(Delta::new(vec![]).unwrap()),
            closed_at: start + Duration::from_millis(50),
        };
        let ev = |node, up, outcome: Option<Option<String>>| NodeView {
            node,
            events: NodeEvents {
                fetched_at: Some(start + Duration::from_millis(10)),
                train_end: Some(start + Duration::from_millis(30)),
                done_at: Some(start + Duration::from_millis(60)),
                outcome,
                bytes_at_done: Bytes { up, down: 9 },
                ..NodeEvents::default()
            },
            before: Bytes { up: 1, down: 1 },
            attacker: false,
        };
        let nodes = vec![
            ev(0, 11, Some(None)),
            ev(1, 21, Some(None)),
            ev(2, 5, Some(Some("stale-round".into()))),
        ];
        let q = Quality {
            heldout_loss: 1.0,
            ppl_bound: 2.0,
            exact_match_correct: 0,
            exact_match_total: 1,
        };
        let r = build(1, start, &nodes, &closed, q);
        assert_eq!((r.accepted, r.rejected), (1, 2));
        assert_eq!(r.nodes[0].socket_up, 10);
        assert_eq!(r.nodes[1].rejections.len(), 1);
        assert_eq!(r.nodes[0].screening.len(), 1);
        assert_eq!(r.nodes[0].screening[0].group, "domain");
        assert_eq!(r.nodes[0].screening[0].cosine, Some(0.25));
        assert_eq!(r.nodes[1].screening[0].norm, Some(2.0));
        assert!(r.nodes[2].screening.is_empty());
        assert_eq!(r.rejected_by_reason["domain:norm-bound"], 1);
        assert_eq!(r.rejected_by_reason["stale-round"], 1);
        assert!((r.latency.distribute_s - 0.010).abs() < 1e-9);
        assert!((r.latency.train_s - 0.020).abs() < 1e-9);
        assert!((r.latency.upload_s - 0.015).abs() < 1e-9);
        assert!((r.latency.total_s - 0.060).abs() < 1e-9);
        assert_eq!(reason_kind("zero weight"), "zero-weight");
    }
}
