//! Pre-filters that run before any rule, in a fixed order:
//!
//! 1. non-finite rejection (always on: no rule can compute on NaN/∞, and one NaN would poison
//!    every mean);
//! 2. norm bound — reject ‖x‖ > bound, the bound either absolute or a multiple of the median
//!    norm of the finite inputs (cheap, stops scaling attacks before distance-based rules see them);
//! 3. near duplicates (optional) — reject every input whose cosine to another finite,
//!    norm-bounded input exceeds a bound close to 1. Colluding nodes that send one vector (or
//!    one vector plus a little noise) are alike in a way honest nodes with their own data never
//!    are — FoolsGold's observation about Sybils (Fung et al. 2020) as a hard filter. Late in
//!    training honest updates are nearly orthogonal while a colluders' −c × mean is short enough
//!    to pass a norm bound and, against a median, a cosine near 0: this is the test that still
//!    separates them. Both members of a pair go (an attacker copying an honest update costs that
//!    update, never more);
//! 4. cosine to a reference — reject cos < threshold. The reference is the previous global
//!    (skipped when there is none or it is the zero vector, as in round 1), or, with
//!    [`CosineReference::Median`], the coordinate-wise median of this round's inputs that passed
//!    1–3: a direction at most f < n/2 attackers cannot turn around, available from round 1, so
//!    a sign-flipped or inner-product-manipulated update is refused before the rule averages it;
//!    or [`CosineReference::Both`] (an input must pass against each reference there is);
//! 5. optional bucketing (Karimireddy et al. 2022): the survivors are shuffled with a seeded RNG
//!    and averaged in buckets of s, and the rule runs on the bucket means. This reduces the
//!    variance the rule sees under heterogeneous data at the price of more Byzantine buckets.
//!
//! Every input gets a report line with its norm and cosine whatever happens to it.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::error::AggregateError;
use super::kernels;
use super::report::{InputReport, RejectReason, Status};

/// The norm pre-filter's bound.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormBound {
    Absolute(f64),
    /// This multiple of the median norm of the finite inputs (scale-free).
    MedianMultiple(f64),
}

/// What the cosine pre-filter compares each input with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CosineReference {
    /// The previous global delta (the filter is skipped while it is absent or zero).
    #[default]
    Previous,
    /// The coordinate-wise median of the round's finite, norm-bounded inputs.
    Median,
    /// Both: an input must reach the threshold against the median and, once there is one,
    /// against the previous global (the reported cosine is the lower of the two).
    Both,
}

impl CosineReference {
    pub const ALL: [CosineReference; 3] = [Self::Previous, Self::Median, Self::Both];

    /// The spelling in configs and on the command line (also the serde name).
    pub fn name(self) -> &'static str {
        match self {
            Self::Previous => "previous",
            Self::Median => "median",
            Self::Both => "both",
        }
    }
}

impl std::fmt::Display for CosineReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CosineReference {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("`{s}` (expected previous, median or both)"))
    }
}

/// Pre-filter settings; `Default` is non-finite rejection only.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Prefilter {
    /// Reject inputs with ‖x‖ above this bound.
    pub norm_bound: Option<NormBound>,
    /// Reject inputs whose cosine to another input is above this bound (near duplicates). Costs
    /// n(n − 1)/2 cosines per band, where the other filters cost n.
    pub duplicate_bound: Option<f64>,
    /// Reject inputs whose cosine to [`Prefilter::cosine_reference`] is below this threshold.
    pub cosine_threshold: Option<f64>,
    /// What the cosine is measured against (default: the previous global).
    pub cosine_reference: CosineReference,
    /// Average the survivors in random buckets of this size before the rule.
    pub bucket_size: Option<usize>,
    /// Seed of the bucketing shuffle.
    pub seed: u64,
}

impl Prefilter {
    pub(crate) fn validate(&self) -> Result<(), AggregateError> {
        if let Some(NormBound::Absolute(b) | NormBound::MedianMultiple(b)) = self.norm_bound
            && !(b.is_finite() && b > 0.0)
        {
            return Err(AggregateError::InvalidFilter {
                param: "norm_bound",
                value: b.to_string(),
                reason: "must be finite and > 0",
            });
        }
        if let Some(c) = self.cosine_threshold
            && !(-1.0..=1.0).contains(&c)
        {
            return Err(AggregateError::InvalidFilter {
                param: "cosine_threshold",
                value: c.to_string(),
                reason: "must lie in [-1, 1]",
            });
        }
        if let Some(d) = self.duplicate_bound
            && !(d > 0.0 && d <= 1.0)
        {
            return Err(AggregateError::InvalidFilter {
                param: "duplicate_bound",
                value: d.to_string(),
                reason: "must lie in (0, 1]",
            });
        }
        if self.bucket_size == Some(0) {
            return Err(AggregateError::InvalidFilter {
                param: "bucket_size",
                value: "0".into(),
                reason: "must be >= 1",
            });
        }
        Ok(())
    }

    /// Screens the inputs; returns one report per input and the indices that passed.
    pub(crate) fn screen(
        &self,
        rows: &[&[f32]],
        node_ids: &[&str],
        previous: Option<&[f32]>,
    ) -> (Vec<InputReport>, Vec<usize>) {
        let prev = previous.filter(|p| p.iter().any(|v| *v != 0.0));
        let norms: Vec<Option<f64>> = rows
            .iter()
            .map(|r| {
                // One pass: the f64 sum of squares is finite exactly when every value is.
                let sq = kernels::norm_sq(r);
                sq.is_finite().then(|| sq.sqrt())
            })
            .collect();
        let bound = self.norm_bound.map(|nb| match nb {
            NormBound::Absolute(b) => b,
            NormBound::MedianMultiple(k) => {
                let mut finite: Vec<f64> = norms.iter().flatten().copied().collect();
                finite.sort_by(f64::total_cmp);
                let m = match finite.len() {
                    0 => 0.0,
                    l if l % 2 == 1 => finite[l / 2],
                    l => 0.5 * (finite[l / 2 - 1] + finite[l / 2]),
                };
                k * m
            }
        });
        let in_bound = |i: usize| norms[i].is_some_and(|n| bound.is_none_or(|b| n <= b));
        // Near duplicates among the finite, norm-bounded inputs: the first other input each one
        // is too alike (the highest index pair first found is reported).
        let duplicate: Vec<Option<(usize, f64)>> = match self.duplicate_bound {
            None => vec![None; rows.len()],
            Some(limit) => {
                let mut dup = vec![None; rows.len()];
                for i in (0..rows.len()).filter(|&i| in_bound(i)) {
                    for j in (i + 1..rows.len()).filter(|&j| in_bound(j)) {
                        if let Some(c) = kernels::cosine(rows[i], rows[j])
                            && c > limit
                        {
                            dup[i].get_or_insert((j, c));
                            dup[j].get_or_insert((i, c));
                        }
                    }
                }
                dup
            }
        };
        let median = match (self.cosine_reference, self.cosine_threshold) {
            (CosineReference::Median | CosineReference::Both, Some(_)) => {
                let within: Vec<&[f32]> = (0..rows.len())
                    .filter(|&i| in_bound(i) && duplicate[i].is_none())
                    .map(|i| rows[i])
                    .collect();
                (!within.is_empty())
                    .then(|| super::coordinate::median(&within, 0).ok())
                    .flatten()
                    .map(|out| out.aggregate)
                    .filter(|m| m.iter().any(|v| *v != 0.0))
            }
            _ => None,
        };
        let prev = match self.cosine_reference {
            CosineReference::Median => None,
            CosineReference::Previous | CosineReference::Both => prev,
        };
        let references: Vec<&[f32]> = median.as_deref().into_iter().chain(prev).collect();
        let mut kept = Vec::with_capacity(rows.len());
        let reports = rows
            .iter()
            .zip(node_ids)
            .enumerate()
            .map(|(index, (row, id))| {
                let mut rep = InputReport {
                    index,
                    node_id: (*id).to_string(),
                    norm: None,
                    cosine: None,
                    score: None,
                    weight: None,
                    bucket: None,
                    status: Status::Used,
                };
                let Some(norm) = norms[index] else {
                    rep.status = Status::Rejected(RejectReason::NonFinite);
                    return rep;
                };
                rep.norm = Some(norm);
                if let Some(bound) = bound
                    && norm > bound
                {
                    rep.status = Status::Rejected(RejectReason::NormAboveBound { norm, bound });
                    return rep;
                }
                if let (Some((other, cosine)), Some(bound)) =
                    (duplicate[index], self.duplicate_bound)
                {
                    rep.status = Status::Rejected(RejectReason::NearDuplicate {
                        other,
                        cosine,
                        bound,
                    });
                    return rep;
                }
                if let Some(threshold) = self.cosine_threshold
                    && !references.is_empty()
                {
                    // The lowest cosine over the references decides (and is reported).
                    rep.cosine = references
                        .iter()
                        .map(|p| kernels::cosine(row, p))
                        .try_fold(f64::INFINITY, |m, c| c.map(|c| m.min(c)));
                    if let Some(cosine) = rep.cosine
                        && cosine < threshold
                    {
                        rep.status =
                            Status::Rejected(RejectReason::CosineBelow { cosine, threshold });
                        return rep;
                    }
                }
                kept.push(index);
                rep
            })
            .collect();
        (reports, kept)
    }

    /// Groups the surviving indices: singletons, or seeded random buckets of `bucket_size` (the
    /// last bucket may be smaller). Members within a bucket are listed in index order.
    pub(crate) fn groups(&self, kept: &[usize]) -> Vec<Vec<usize>> {
        match self.bucket_size {
            None | Some(0) | Some(1) => kept.iter().map(|&i| vec![i]).collect(),
            Some(s) => {
                let mut order = kept.to_vec();
                order.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed));
                order
                    .chunks(s)
                    .map(|c| {
                        let mut b = c.to_vec();
                        b.sort_unstable();
                        b
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screens_in_order_and_reports_every_input() {
        let v: Vec<Vec<f32>> = vec![
            vec![1.0, 0.0],
            vec![f32::NAN, 0.0],
            vec![30.0, 0.0],
            vec![-1.0, 0.0],
            vec![0.5, 0.5],
        ];
        let rows: Vec<&[f32]> = v.iter().map(|r| r.as_slice()).collect();
        let ids = ["a", "b", "c", "d", "e"];
        let pf = Prefilter {
            norm_bound: Some(NormBound::Absolute(10.0)),
            cosine_threshold: Some(0.0),
            ..Default::default()
        };
        let (rep, kept) = pf.screen(&rows, &ids, Some(&[1.0, 0.0]));
        assert_eq!(kept, vec![0, 4]);
        assert_eq!(rep[1].status, Status::Rejected(RejectReason::NonFinite));
        assert!(matches!(
            rep[2].status,
            Status::Rejected(RejectReason::NormAboveBound { .. })
        ));
        assert!(matches!(
            rep[3].status,
            Status::Rejected(RejectReason::CosineBelow { .. })
        ));
        assert!((rep[4].cosine.unwrap() - 0.5f64.sqrt()).abs() < 1e-9);
        // A zero previous global disables the cosine filter.
        let (_, kept) = pf.screen(&rows, &ids, Some(&[0.0, 0.0]));
        assert_eq!(kept, vec![0, 3, 4]);
        // Relative bound: median finite norm is 1, so 3x rejects only the norm-30 input.
        let rel = Prefilter {
            norm_bound: Some(NormBound::MedianMultiple(3.0)),
            ..Default::default()
        };
        let (_, kept) = rel.screen(&rows, &ids, None);
        assert_eq!(kept, vec![0, 3, 4]);
    }

    #[test]
    fn near_duplicates_are_refused_in_pairs_and_leave_the_median() {
        // Four near-orthogonal honest updates and three colluders sending −4 × their mean (one
        // with a little noise): norm-bounded, and a median with them in it is no reference.
        let mut v: Vec<Vec<f32>> = (0..4)
            .map(|i| (0..8).map(|k| if k == i { 1.0 } else { 0.05 }).collect())
            .collect();
        let mean: Vec<f32> = (0..8)
            .map(|k| v.iter().map(|r| r[k]).sum::<f32>() / 4.0)
            .collect();
        for a in 0..3 {
            v.push(
                mean.iter()
                    .enumerate()
                    .map(|(k, x)| -4.0 * x + if a == 2 && k == 7 { 0.01 } else { 0.0 })
                    .collect(),
            );
        }
        let rows: Vec<&[f32]> = v.iter().map(|r| r.as_slice()).collect();
        let ids = ["h0", "h1", "h2", "h3", "a0", "a1", "a2"];
        let pf = Prefilter {
            norm_bound: Some(NormBound::MedianMultiple(3.0)),
            duplicate_bound: Some(0.99),
            cosine_threshold: Some(0.0),
            cosine_reference: CosineReference::Median,
            ..Default::default()
        };
        let (rep, kept) = pf.screen(&rows, &ids, None);
        assert_eq!(kept, vec![0, 1, 2, 3]);
        for r in &rep[4..] {
            match &r.status {
                Status::Rejected(RejectReason::NearDuplicate { other, cosine, .. }) => {
                    assert!((4..7).contains(other) && *cosine > 0.99, "{r:?}");
                }
                s => panic!("{s:?}"),
            }
        }
        // Honest inputs alone have no duplicates: nothing changes without colluders.
        let (_, kept) = pf.screen(&rows[..4], &ids[..4], None);
        assert_eq!(kept, vec![0, 1, 2, 3]);
        let bad = Prefilter {
            duplicate_bound: Some(1.5),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn median_reference_refuses_flipped_updates_from_round_one() {
        // Six honest updates around (1, 1, 0) with different third coordinates (non-IID), three
        // attackers at −4 × their mean, one enormous update the norm bound removes first.
        let mut v: Vec<Vec<f32>> = (0..6)
            .map(|i| {
                vec![
                    1.0 + 0.1 * i as f32,
                    1.0 - 0.05 * i as f32,
                    (i as f32 - 2.5) * 0.6,
                ]
            })
            .collect();
        let mean: Vec<f32> = (0..3)
            .map(|k| v.iter().map(|r| r[k]).sum::<f32>() / 6.0)
            .collect();
        for _ in 0..3 {
            v.push(mean.iter().map(|x| -4.0 * x).collect());
        }
        v.push(vec![1e6, 1e6, 1e6]);
        let rows: Vec<&[f32]> = v.iter().map(|r| r.as_slice()).collect();
        let ids: Vec<String> = (0..rows.len()).map(|i| format!("n{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let pf = Prefilter {
            norm_bound: Some(NormBound::MedianMultiple(3.0)),
            cosine_threshold: Some(0.0),
            cosine_reference: CosineReference::Median,
            ..Default::default()
        };
        // No previous global (round 1): the median reference still applies.
        let (rep, kept) = pf.screen(&rows, &ids, None);
        assert_eq!(kept, (0..6).collect::<Vec<_>>());
        for r in &rep[6..9] {
            assert!(
                matches!(r.status, Status::Rejected(RejectReason::CosineBelow { .. })),
                "{r:?}"
            );
        }
        assert!(matches!(
            rep[9].status,
            Status::Rejected(RejectReason::NormAboveBound { .. })
        ));
        // The previous-global reference lets everything within the bound through in round 1.
        let prev = Prefilter {
            cosine_reference: CosineReference::Previous,
            ..pf.clone()
        };
        let (_, kept) = prev.screen(&rows, &ids, None);
        assert_eq!(kept, (0..9).collect::<Vec<_>>());
        // Both: the median alone while there is no previous global; then every reference must
        // agree — a previous global pointing away from the honest updates refuses them too (and
        // the attackers stay refused by the median).
        let both = Prefilter {
            cosine_reference: CosineReference::Both,
            ..pf.clone()
        };
        assert_eq!(both.screen(&rows, &ids, None).1, (0..6).collect::<Vec<_>>());
        let (rep, kept) = both.screen(&rows, &ids, Some(&[-1.0, -1.0, 0.0]));
        assert!(kept.is_empty(), "{kept:?}");
        assert!(rep[..9].iter().all(|r| r.cosine.unwrap() < 0.0));
        let (_, kept) = both.screen(&rows, &ids, Some(&[1.0, 1.0, 0.0]));
        assert_eq!(kept, (0..6).collect::<Vec<_>>());
        for r in CosineReference::ALL {
            assert_eq!(r.name().parse(), Ok(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.name());
        }
        assert_eq!("median".parse(), Ok(CosineReference::Median));
        assert!("mean".parse::<CosineReference>().is_err());
    }

    #[test]
    fn buckets_are_seeded_partitions() {
        let pf = Prefilter {
            bucket_size: Some(3),
            seed: 7,
            ..Default::default()
        };
        let kept: Vec<usize> = (0..10).collect();
        let g = pf.groups(&kept);
        assert_eq!(g, pf.groups(&kept));
        assert_eq!(g.len(), 4);
        let mut all: Vec<usize> = g.concat();
        all.sort_unstable();
        assert_eq!(all, kept);
        assert!(
            Prefilter {
                bucket_size: Some(0),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
