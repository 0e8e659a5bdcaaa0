//! Closing a round: per-band robust aggregation of the accepted updates and the new global.
//!
//! Inputs are ordered by node id before aggregating, so the result does not depend on arrival
//! order (or on whether the coordinator restarted mid-round); an offline
//! [`ruvdllm::aggregate::daf::aggregate_bands`] over the same deltas in the same order, with the pre-round global as the
//! previous global of the cosine pre-filter, followed by the server optimizer's step (with the
//! moments of the rounds before), gives the same global bit for bit.

use std::collections::BTreeMap;

use ruvdllm::aggregate::daf::{Band, DafConfig, DafRef, Group, Meta, aggregate_band_refs};
use ruvdllm::aggregate::{ServerOptimizer, ServerState};
use ruvdllm::delta::Delta;

use super::dp::CentralDp;
use super::state::AcceptedMeta;

/// What one band group did at close.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSummary {
    pub group: String,
    /// The rule that actually ran.
    pub rule: String,
    /// Set when the configured rule refused and its fallback ran, or (with `held`) why no rule ran.
    pub fallback: Option<String>,
    /// The band kept its previous global (no rule ran; `fallback` says why).
    pub held: bool,
    pub used: usize,
    pub rejected: Vec<(String, String)>,
    /// Every input's screening figures, in input order.
    pub screen: Vec<Screen>,
}

/// What the aggregation measured of one input in one band group.
#[derive(Debug, Clone, PartialEq)]
pub struct Screen {
    pub node: String,
    /// L2 norm (`None` for non-finite values).
    pub norm: Option<f64>,
    /// Cosine to the pre-filter's reference, when that filter ran (the lower one for two).
    pub cosine: Option<f64>,
    /// Effective share of the aggregate, where the rule reports one.
    pub weight: Option<f64>,
}

/// The record of one closed round.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseReport {
    pub round: u64,
    pub nodes: Vec<String>,
    pub opened_at_ms: u64,
    pub closed_at_ms: u64,
    pub groups: Vec<GroupSummary>,
    /// Set when aggregation refused and the global adapter was left unchanged.
    pub failed: Option<String>,
    /// Client sampling: the nodes drawn for this round (`None`: every registered node).
    pub selected: Option<Vec<String>>,
}

/// The DAF inputs of a round in node-id order (what an offline replay must use too).
pub fn daf_inputs<'a>(inputs: &[(&AcceptedMeta, &'a Delta)]) -> Vec<(Meta, &'a Delta)> {
    let mut sorted: Vec<&(&AcceptedMeta, &Delta)> = inputs.iter().collect();
    sorted.sort_by(|a, b| a.0.node.cmp(&b.0.node));
    sorted
        .into_iter()
        .map(|&(m, d)| {
            (
                Meta {
                    node_id: m.node.clone(),
                    samples: m.samples as f64,
                    improvement: band_improvements(&m.band_metrics),
                },
                d,
            )
        })
        .collect()
}

/// Borrowed DAF inputs over [`daf_inputs`]' result.
pub fn daf_refs<'a>(metas: &'a [(Meta, &'a Delta)]) -> Vec<DafRef<'a>> {
    metas
        .iter()
        .map(|(meta, delta)| DafRef { delta, meta })
        .collect()
}

/// Band metrics by band; names that are not bands are ignored.
pub fn band_improvements(metrics: &BTreeMap<String, f64>) -> BTreeMap<Band, f64> {
    metrics
        .iter()
        .filter_map(|(k, v)| k.parse::<Band>().ok().map(|b| (b, *v)))
        .collect()
}

/// `global + delta` (same layout, any order), summed in f64 and rounded once: the default server
/// optimizer's step, the f32 sum exactly.
pub fn apply(global: &Delta, delta: &Delta) -> Result<Delta, ruvdllm::delta::DeltaError> {
    ServerOptimizer::default().step(1, global, delta, &mut ServerState::default())
}

/// Aggregates a round's updates and moves the global along the aggregate with the server
/// optimizer (whose moments `server` carries from round to round; unchanged when the round is
/// refused). Returns the new global (None when aggregation refused) and the report.
#[allow(clippy::too_many_arguments)]
pub fn close_round(
    round: u64,
    global: &Delta,
    inputs: &[(&AcceptedMeta, &Delta)],
    cfg: &DafConfig,
    dp: Option<&CentralDp>,
    opt: &ServerOptimizer,
    server: &mut ServerState,
    opened_at_ms: u64,
    now_ms: u64,
) -> (Option<Delta>, CloseReport) {
    // Central DP clips every update before the aggregation sees it (a failure refuses the
    // round below).
    let clipped = dp
        .map(|dp| dp.clip_all(&inputs.iter().map(|(_, d)| *d).collect::<Vec<_>>()))
        .transpose();
    let inputs: Vec<(&AcceptedMeta, &Delta)> = match &clipped {
        Ok(Some(c)) => inputs.iter().zip(c).map(|((m, _), d)| (*m, d)).collect(),
        _ => inputs.to_vec(),
    };
    let metas = daf_inputs(&inputs);
    let daf = daf_refs(&metas);
    let nodes: Vec<String> = daf.iter().map(|d| d.meta.node_id.clone()).collect();
    let mut report = CloseReport {
        round,
        nodes,
        opened_at_ms,
        closed_at_ms: now_ms,
        groups: Vec::new(),
        failed: None,
        selected: None,
    };
    // The pre-round global is the "previous global" of the cosine pre-filter (an all-zero global,
    // as before round 1's aggregation, disables it).
    let previous = match daf.first().map(|d| d.delta.aligned(global)) {
        Some(Err(e)) => Err(e.to_string()),
        Some(Ok(p)) => Ok(Some(p)),
        None => Ok(None),
    };
    let result = clipped
        .as_ref()
        .map_err(String::clone)
        .and(previous)
        .and_then(|previous| {
            aggregate_band_refs(&daf, previous.as_ref(), cfg).map_err(|e| e.to_string())
        })
        .and_then(|mut out| {
            if let Some(dp) = dp {
                // Σ clipped / m plus the noise: each band's uniform mean times the number of
                // updates it used (those the pre-filters kept), over m.
                let used: BTreeMap<Group, usize> = out
                    .groups
                    .iter()
                    .map(|g| (g.group, g.outcome.used().len()))
                    .collect();
                out.delta = dp.privatize_mean(round, &out.delta, |name| {
                    used.get(&Group::of(name)).copied().unwrap_or(0)
                })?;
            }
            // A band the aggregation held keeps its previous global, moments included.
            let held: Vec<Group> = out
                .groups
                .iter()
                .filter(|g| g.outcome.held)
                .map(|g| g.group)
                .collect();
            let g = opt
                .step_holding(round, global, &out.delta, server, &|name| {
                    held.contains(&Group::of(name))
                })
                .map_err(|e| e.to_string())?;
            Ok((g, out))
        });
    match result {
        Ok((g, out)) => {
            report.groups = out
                .groups
                .iter()
                .map(|gr| GroupSummary {
                    group: gr.group.to_string(),
                    rule: gr.outcome.rule.to_string(),
                    fallback: gr.outcome.fallback.as_ref().map(|f| f.reason.clone()),
                    held: gr.outcome.held,
                    used: gr.outcome.used().len(),
                    rejected: gr
                        .outcome
                        .inputs
                        .iter()
                        .filter_map(|r| match &r.status {
                            ruvdllm::aggregate::Status::Rejected(why) => {
                                Some((r.node_id.clone(), why.to_string()))
                            }
                            _ => None,
                        })
                        .collect(),
                    screen: gr
                        .outcome
                        .inputs
                        .iter()
                        .map(|r| Screen {
                            node: r.node_id.clone(),
                            norm: r.norm,
                            cosine: r.cosine,
                            weight: r.weight,
                        })
                        .collect(),
                })
                .collect();
            tracing::info!(round, nodes = report.nodes.len(), "round aggregated");
            (Some(g), report)
        }
        Err(e) => {
            tracing::error!(round, error = %e, "aggregation refused; global adapter unchanged");
            report.failed = Some(e);
            (None, report)
        }
    }
}
