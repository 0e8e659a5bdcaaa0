//! DAF: band-aware aggregation of TALoRA deltas (DESIGN §6).
//!
//! A TALoRA delta carries three adapters, one per denoising band (`talora.coarse.…`,
//! `talora.domain.…`, `talora.fine.…`). The bands learn different things — coarse structure is
//! shared by every node, domain knowledge is what federation is for, fine detail is noisy — so each
//! band is aggregated separately with its own rule. Defaults:
//!
//! * coarse — trimmed mean;
//! * domain — quality-weighted mean *after* the norm (3× median norm) and cosine (≥ 0 to the
//!   previous global) pre-filter; weights are each node's reported held-out improvement for the
//!   band, capped at 2× the median positive weight so that no node can buy influence. Non-positive
//!   or missing improvements get the configurable floor, 0 by default: a node whose update did not
//!   help on held-out data is reported as rejected for zero weight. If no update that passed the
//!   pre-filter reports an improvement (so the weighted rule refuses), the band *holds*: its
//!   aggregate is zero (the band keeps its previous global), every input is reported rejected
//!   (zero weight, or its pre-filter reason) and the outcome's `fallback` says why, while the
//!   other bands still aggregate. The band never guesses a direction nobody measured, and one
//!   band's silence does not throw away the round's other bands;
//! * fine — trimmed mean.
//!
//! Any band whose pre-filters reject every input holds the same way (each input keeps its
//! pre-filter reason), instead of refusing the whole round.
//!
//! Tensors without a band prefix (a plain PEFT adapter) form one more group with the `other`
//! config (trimmed mean by default). All inputs must share the first input's tensor names and
//! shapes; the output delta has that layout.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::error::{AggregateError, ParseNameError};
use super::{
    FallbackUsed, Input, NormBound, Outcome, Prefilter, RejectReason, Rule, RuleConfig, Status,
    WeightCap, aggregate,
};
use crate::delta::{Delta, NamedTensor};

/// One of TALoRA's three denoising bands — the one type for aggregation (DAF groups), adapters
/// (`crate::adapter::band` adds the time ranges and the cross-fade) and pattern banks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    Coarse,
    Domain,
    Fine,
}

impl Band {
    /// Every band, in the fixed order used by weights, ranks and files.
    pub const ALL: [Band; 3] = [Band::Coarse, Band::Domain, Band::Fine];

    pub fn name(self) -> &'static str {
        match self {
            Band::Coarse => "coarse",
            Band::Domain => "domain",
            Band::Fine => "fine",
        }
    }

    /// Position in [`Band::ALL`].
    pub fn index(self) -> usize {
        match self {
            Band::Coarse => 0,
            Band::Domain => 1,
            Band::Fine => 2,
        }
    }
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Band {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Band::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| ParseNameError {
                kind: "band",
                got: s.to_string(),
                expected: "coarse, domain, fine",
            })
    }
}

/// The aggregation group a tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Band(Band),
    /// Tensors without a `talora.<band>.` prefix.
    Other,
}

impl Group {
    /// The group of a tensor name: `talora.<band>.<rest>` → that band, anything else → Other.
    pub fn of(name: &str) -> Group {
        name.strip_prefix("talora.")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(band, _)| band.parse().ok())
            .map_or(Group::Other, Group::Band)
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Group::Band(b) => f.write_str(b.name()),
            Group::Other => f.write_str("other"),
        }
    }
}

/// Where a group's per-input weights come from.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightSource {
    /// The node's sample count (FedAvg).
    Samples,
    /// Every node the same weight (what central DP needs: the others are self-reported).
    Uniform,
    /// The node's held-out improvement for the band; values ≤ 0 (or missing) become `floor`.
    Improvement { floor: f64 },
}

/// How one group is aggregated.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupConfig {
    pub rule: RuleConfig,
    pub weights: WeightSource,
    pub prefilter: Prefilter,
}

impl GroupConfig {
    /// `rule` with sample-count weights and no pre-filter beyond non-finite rejection.
    pub fn plain(rule: Rule, f: usize) -> Self {
        Self {
            rule: RuleConfig::new(rule).with_f(f),
            weights: WeightSource::Samples,
            prefilter: Prefilter::default(),
        }
    }

    /// The domain-band default: quality-weighted mean after the norm/cosine pre-filter.
    pub fn quality_weighted(f: usize) -> Self {
        let mut rule = RuleConfig::new(Rule::FedAvg).with_f(f);
        rule.params.weight_cap = WeightCap::MedianMultiple(2.0);
        Self {
            rule,
            weights: WeightSource::Improvement { floor: 0.0 },
            prefilter: Prefilter {
                norm_bound: Some(NormBound::MedianMultiple(3.0)),
                cosine_threshold: Some(0.0),
                ..Prefilter::default()
            },
        }
    }
}

/// Per-group configs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DafConfig {
    pub coarse: GroupConfig,
    pub domain: GroupConfig,
    pub fine: GroupConfig,
    pub other: GroupConfig,
}

impl DafConfig {
    /// The DESIGN §6 defaults for an assumed `f` Byzantine nodes.
    pub fn new(f: usize) -> Self {
        Self {
            coarse: GroupConfig::plain(Rule::TrimmedMean, f),
            domain: GroupConfig::quality_weighted(f),
            fine: GroupConfig::plain(Rule::TrimmedMean, f),
            other: GroupConfig::plain(Rule::TrimmedMean, f),
        }
    }

    pub fn group(&self, g: Group) -> &GroupConfig {
        match g {
            Group::Band(Band::Coarse) => &self.coarse,
            Group::Band(Band::Domain) => &self.domain,
            Group::Band(Band::Fine) => &self.fine,
            Group::Other => &self.other,
        }
    }
}

impl Default for DafConfig {
    fn default() -> Self {
        Self::new(0)
    }
}

/// What a node reports beside its delta.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Meta {
    pub node_id: String,
    pub samples: f64,
    /// Held-out loss improvement per band (positive = better).
    pub improvement: BTreeMap<Band, f64>,
}

/// One node's submission.
#[derive(Debug, Clone, PartialEq)]
pub struct DafInput {
    pub delta: Delta,
    pub meta: Meta,
}

/// One group's result.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupReport {
    pub group: Group,
    pub tensors: usize,
    pub outcome: Outcome,
}

/// The aggregated delta and a report per group (in group order).
#[derive(Debug, Clone, PartialEq)]
pub struct DafOutcome {
    pub delta: Delta,
    pub groups: Vec<GroupReport>,
}

fn flatten_group(delta: &Delta, names: &[&str], numel: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(numel);
    for name in names {
        if let Some(t) = delta.get(name) {
            out.extend_from_slice(&t.data);
        }
    }
    out
}

/// Aggregates each group of tensors with its own config.
pub fn aggregate_bands(
    inputs: &[DafInput],
    previous: Option<&Delta>,
    cfg: &DafConfig,
) -> Result<DafOutcome, AggregateError> {
    let refs: Vec<DafRef<'_>> = inputs
        .iter()
        .map(|i| DafRef {
            delta: &i.delta,
            meta: &i.meta,
        })
        .collect();
    aggregate_band_refs(&refs, previous, cfg)
}

/// One node's submission, borrowed: what a coordinator that keeps its accepted updates passes to
/// [`aggregate_band_refs`] so the round's updates are not copied once more to be aggregated (at
/// 7B shapes each copy is 14.7 MB per node).
#[derive(Debug, Clone, Copy)]
pub struct DafRef<'a> {
    pub delta: &'a Delta,
    pub meta: &'a Meta,
}

/// [`aggregate_bands`] over borrowed inputs.
pub fn aggregate_band_refs(
    inputs: &[DafRef<'_>],
    previous: Option<&Delta>,
    cfg: &DafConfig,
) -> Result<DafOutcome, AggregateError> {
    let reference = inputs.first().ok_or(AggregateError::NoInputs)?.delta;
    for (index, inp) in inputs.iter().enumerate() {
        reference
            .check_same_layout(inp.delta)
            .map_err(|source| AggregateError::Layout {
                index,
                node_id: inp.meta.node_id.clone(),
                source,
            })?;
    }
    if let Some(p) = previous {
        reference
            .check_same_layout(p)
            .map_err(|source| AggregateError::Layout {
                index: usize::MAX,
                node_id: "<previous global>".into(),
                source,
            })?;
    }
    let mut groups: BTreeMap<Group, Vec<&NamedTensor>> = BTreeMap::new();
    for t in &reference.tensors {
        groups.entry(Group::of(&t.name)).or_default().push(t);
    }
    let mut results: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut reports = Vec::with_capacity(groups.len());
    for (group, tensors) in groups {
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        let numel: usize = tensors.iter().map(|t| t.numel()).sum();
        let gcfg = cfg.group(group);
        let flats: Vec<Vec<f32>> = inputs
            .iter()
            .map(|i| flatten_group(i.delta, &names, numel))
            .collect();
        let prev = previous.map(|p| flatten_group(p, &names, numel));
        let weights: Vec<f64> = inputs
            .iter()
            .map(|i| match (gcfg.weights, group) {
                (WeightSource::Samples, _) => i.meta.samples,
                (WeightSource::Uniform, _) => 1.0,
                (WeightSource::Improvement { floor }, Group::Band(b)) => i
                    .meta
                    .improvement
                    .get(&b)
                    .copied()
                    .filter(|v| *v > 0.0)
                    .unwrap_or(floor),
                (WeightSource::Improvement { floor }, Group::Other) => floor,
            })
            .collect();
        let agg_inputs: Vec<Input<'_>> = inputs
            .iter()
            .zip(&flats)
            .zip(&weights)
            .map(|((i, v), &w)| Input {
                node_id: &i.meta.node_id,
                values: v,
                weight: w,
            })
            .collect();
        let outcome = match aggregate(&agg_inputs, prev.as_deref(), &gcfg.rule, &gcfg.prefilter) {
            Ok(outcome) => outcome,
            Err(e) => {
                // A weighted rule refuses when no kept input has weight; a quality-weighted band
                // then holds. A band whose pre-filters reject every input holds too. The screen
                // runs again only on these rare paths.
                let cause = match (&e, gcfg.weights) {
                    (AggregateError::BadWeights { .. }, WeightSource::Improvement { .. }) => {
                        Some(Hold::NoImprovement)
                    }
                    (AggregateError::AllRejected { .. }, _) => Some(Hold::AllRejected),
                    _ => None,
                };
                let held = cause.and_then(|c| hold(c, &agg_inputs, prev.as_deref(), gcfg, numel));
                held.ok_or_else(|| AggregateError::Group {
                    group: group.to_string(),
                    source: Box::new(e),
                })?
            }
        };
        let mut off = 0;
        for t in &tensors {
            let n = t.numel();
            results.insert(t.name.clone(), outcome.aggregate[off..off + n].to_vec());
            off += n;
        }
        reports.push(GroupReport {
            group,
            tensors: tensors.len(),
            outcome,
        });
    }
    let tensors = reference
        .tensors
        .iter()
        .map(|t| NamedTensor {
            name: t.name.clone(),
            shape: t.shape.clone(),
            data: results.remove(&t.name).unwrap_or_default(),
        })
        .collect();
    Ok(DafOutcome {
        delta: Delta { tensors },
        groups: reports,
    })
}

/// Why a group holds.
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// A quality-weighted rule refused: the pre-filter kept inputs, none with a positive weight.
    NoImprovement,
    /// The pre-filters rejected every input.
    AllRejected,
}

/// The hold of a group whose rule refused for `cause`: `Some` (a zero aggregate, the band keeps
/// its previous global; every input reported rejected — zero weight, or its pre-filter reason)
/// when a second screen confirms the cause; `None` otherwise (the refusal stands).
fn hold(
    cause: Hold,
    inputs: &[Input<'_>],
    previous: Option<&[f32]>,
    gcfg: &GroupConfig,
    numel: usize,
) -> Option<Outcome> {
    gcfg.prefilter.validate().ok()?;
    let rows: Vec<&[f32]> = inputs.iter().map(|i| i.values).collect();
    let ids: Vec<&str> = inputs.iter().map(|i| i.node_id).collect();
    let (mut reports, kept) = gcfg.prefilter.screen(&rows, &ids, previous);
    let reason = match cause {
        Hold::NoImprovement => {
            if kept.is_empty() || kept.iter().any(|&i| inputs[i].weight > 0.0) {
                return None;
            }
            for &i in &kept {
                reports[i].status = Status::Rejected(RejectReason::ZeroWeight);
                reports[i].weight = Some(0.0);
            }
            format!(
                "none of the {} updates the pre-filter kept reports a held-out improvement",
                kept.len()
            )
        }
        Hold::AllRejected => {
            if !kept.is_empty() {
                return None;
            }
            format!("the pre-filters rejected all {} updates", inputs.len())
        }
    };
    tracing::info!(n = inputs.len(), kept = kept.len(), %reason, "the group holds");
    Some(Outcome {
        aggregate: vec![0.0; numel],
        rule: gcfg.rule.rule,
        fallback: Some(FallbackUsed {
            configured: gcfg.rule.rule,
            reason: format!("{reason}; the band keeps its previous global"),
        }),
        held: true,
        inputs: reports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{RejectReason, Status};

    fn delta(v: f32) -> Delta {
        Delta::new(vec![
            NamedTensor::new("talora.coarse.q.lora_B.weight", vec![2], vec![v, v]).unwrap(),
            NamedTensor::new("talora.domain.q.lora_B.weight", vec![2], vec![v, -v]).unwrap(),
            NamedTensor::new("talora.fine.q.lora_B.weight", vec![1], vec![v]).unwrap(),
            NamedTensor::new("base_model.model.x.lora_B.weight", vec![1], vec![v]).unwrap(),
        ])
        .unwrap()
    }

    fn input(id: &str, v: f32, domain_impr: f64) -> DafInput {
        DafInput {
            delta: delta(v),
            meta: Meta {
                node_id: id.into(),
                samples: 10.0,
                improvement: BTreeMap::from([(Band::Domain, domain_impr)]),
            },
        }
    }

    #[test]
    fn groups_by_prefix() {
        assert_eq!(Group::of("talora.coarse.a.b"), Group::Band(Band::Coarse));
        assert_eq!(Group::of("talora.fine.x"), Group::Band(Band::Fine));
        assert_eq!(Group::of("talora.mid.x"), Group::Other);
        assert_eq!(Group::of("base_model.model.q.lora_B.weight"), Group::Other);
        assert_eq!(Group::of("talora.domain"), Group::Other);
    }

    #[test]
    fn per_band_rules_and_quality_weights() {
        let inputs = vec![
            input("a", 1.0, 1.0),
            input("b", 2.0, 1.0),
            input("c", 3.0, -0.5),
            input("d", 4.0, 100.0),
            input("e", 100.0, 1.0),
        ];
        let out = aggregate_bands(&inputs, None, &DafConfig::new(1)).unwrap();
        assert_eq!(out.groups.len(), 4);
        // Coarse: trimmed mean (k = f = 1) of 1,2,3,4,100 = 3.
        assert_eq!(out.delta.tensors[0].data, vec![3.0, 3.0]);
        assert_eq!(out.delta.tensors[2].data, vec![3.0]);
        assert_eq!(out.delta.tensors[3].data, vec![3.0]);
        // Domain: e's norm (100√2) is above 3x the median norm and is rejected; c has weight 0;
        // d's claimed 100 is capped at 2x the median (1) = 2. Mean = (1 + 2 + 2*4) / 4 = 2.75.
        let dom = &out.groups[1];
        assert_eq!(dom.group, Group::Band(Band::Domain));
        assert_eq!(out.delta.tensors[1].data, vec![2.75, -2.75]);
        let st: Vec<&Status> = dom.outcome.inputs.iter().map(|r| &r.status).collect();
        assert_eq!(*st[2], Status::Rejected(RejectReason::ZeroWeight));
        assert_eq!(*st[3], Status::DownWeighted);
        assert!(matches!(
            st[4],
            Status::Rejected(RejectReason::NormAboveBound { .. })
        ));
    }

    #[test]
    fn domain_band_holds_when_no_kept_update_improved() {
        // e improved but its norm is above the bound; the kept a..d report no improvement.
        let inputs = vec![
            input("a", 1.0, 0.0),
            input("b", 2.0, -1.0),
            input("c", 3.0, -0.5),
            input("d", 4.0, 0.0),
            input("e", 100.0, 1.0),
        ];
        let out = aggregate_bands(&inputs, None, &DafConfig::new(1)).unwrap();
        // The other bands still aggregate (trimmed mean = 3) ...
        assert_eq!(out.delta.tensors[0].data, vec![3.0, 3.0]);
        assert_eq!(out.delta.tensors[2].data, vec![3.0]);
        // ... while the domain band keeps its previous global: a zero update.
        assert_eq!(out.delta.tensors[1].data, vec![0.0, 0.0]);
        let dom = &out.groups[1];
        assert_eq!(dom.group, Group::Band(Band::Domain));
        let why = &dom
            .outcome
            .fallback
            .as_ref()
            .expect("the hold is reported")
            .reason;
        assert!(why.contains("none of the 4 updates"), "{why}");
        assert!(dom.outcome.held);
        assert!(dom.outcome.used().is_empty());
        let st: Vec<&Status> = dom.outcome.inputs.iter().map(|r| &r.status).collect();
        for s in &st[..4] {
            assert_eq!(**s, Status::Rejected(RejectReason::ZeroWeight));
        }
        assert!(matches!(
            st[4],
            Status::Rejected(RejectReason::NormAboveBound { .. })
        ));
        // One kept improvement is enough for the rule to run as usual.
        let mut inputs = inputs;
        inputs[1] = input("b", 2.0, 0.5);
        let out = aggregate_bands(&inputs, None, &DafConfig::new(1)).unwrap();
        assert_eq!(out.delta.tensors[1].data, vec![2.0, -2.0]);
        assert!(out.groups[1].outcome.fallback.is_none());
        assert!(!out.groups[1].outcome.held);
    }

    #[test]
    fn band_holds_when_its_prefilter_rejects_every_input() {
        // Every domain update points against the previous global (cosine −1 < 0).
        let previous = delta(1.0);
        let inputs = vec![
            input("a", -1.0, 0.5),
            input("b", -2.0, 0.5),
            input("c", -3.0, 0.5),
        ];
        let out = aggregate_bands(&inputs, Some(&previous), &DafConfig::new(0)).unwrap();
        // The other bands aggregate (f = 0: the plain mean) ...
        assert_eq!(out.delta.tensors[0].data, vec![-2.0, -2.0]);
        assert_eq!(out.delta.tensors[2].data, vec![-2.0]);
        // ... the domain band holds, each input keeping its cosine reason.
        assert_eq!(out.delta.tensors[1].data, vec![0.0, 0.0]);
        let dom = &out.groups[1].outcome;
        assert!(dom.held);
        let why = &dom.fallback.as_ref().expect("the hold is reported").reason;
        assert!(why.contains("rejected all 3 updates"), "{why}");
        for r in &dom.inputs {
            assert!(
                matches!(r.status, Status::Rejected(RejectReason::CosineBelow { .. })),
                "{:?}",
                r.status
            );
        }
        // One input along the global is enough for the rule to run as usual.
        let mut inputs = inputs;
        inputs[0] = input("a", 1.0, 0.5);
        let out = aggregate_bands(&inputs, Some(&previous), &DafConfig::new(0)).unwrap();
        assert!(!out.groups[1].outcome.held);
        assert_eq!(out.delta.tensors[1].data, vec![1.0, -1.0]);
    }

    #[test]
    fn a_rule_starved_by_the_prefilter_refuses_the_round_and_says_so() {
        // Median with f = 1 needs 3 updates. The domain pre-filter's cosine (≥ 0 to the previous
        // global) drops two of the four, so the domain band's median sees 2 < 3 and refuses the
        // round (DESIGN §6; a configured fallback is the way to keep going), naming the band and
        // what the pre-filters kept.
        let previous = delta(1.0);
        let inputs = vec![
            input("a", 1.0, 0.5),
            input("b", 2.0, 0.5),
            input("c", -3.0, 0.5),
            input("d", -4.0, 0.5),
        ];
        let mut cfg = DafConfig::new(1);
        cfg.coarse = GroupConfig::plain(Rule::Median, 1);
        cfg.fine = GroupConfig::plain(Rule::Median, 1);
        cfg.domain.rule = RuleConfig::new(Rule::Median).with_f(1);
        let err = aggregate_bands(&inputs, Some(&previous), &cfg).unwrap_err();
        let why = err.to_string();
        assert!(why.starts_with("group `domain`"), "{why}");
        assert!(why.contains("kept 2 of 4 inputs"), "{why}");
        assert!(why.contains("median refuses n = 2, f = 1"), "{why}");
        // A fallback keeps the band going over what the pre-filters kept, and says why.
        cfg.domain.rule.fallback = Some(Rule::FedAvg);
        let out = aggregate_bands(&inputs, Some(&previous), &cfg).unwrap();
        let dom = &out.groups[1].outcome;
        assert_eq!(dom.rule, Rule::FedAvg);
        assert!(!dom.held);
        assert!(dom.fallback.as_ref().unwrap().reason.contains("n = 2"));
        assert_eq!(out.delta.tensors[1].data, vec![1.5, -1.5]);
        // Too few updates for the rule without any screening: the plain refusal.
        cfg.domain.rule.fallback = None;
        let err = aggregate_bands(&inputs[..2], Some(&previous), &cfg).unwrap_err();
        assert!(!err.to_string().contains("pre-filters"), "{err}");
        assert!(err.to_string().contains("median refuses n = 2"), "{err}");
    }

    #[test]
    fn sample_weighted_groups_never_hold() {
        let mut inputs = vec![input("a", 1.0, 0.0), input("b", 2.0, 0.0)];
        for i in &mut inputs {
            i.meta.samples = 0.0;
        }
        let mut cfg = DafConfig::new(0);
        cfg.coarse = GroupConfig::plain(Rule::FedAvg, 0);
        let err = aggregate_bands(&inputs, None, &cfg).unwrap_err();
        assert!(err.to_string().contains("group `coarse`"), "{err}");
    }

    #[test]
    fn layout_mismatch_names_the_input() {
        let mut bad = input("bad", 1.0, 1.0);
        bad.delta.tensors.pop();
        let inputs = vec![input("a", 1.0, 1.0), bad];
        let err = aggregate_bands(&inputs, None, &DafConfig::new(0)).unwrap_err();
        assert!(
            matches!(err, AggregateError::Layout { index: 1, .. }),
            "{err}"
        );
    }
}
