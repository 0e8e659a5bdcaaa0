//! What an aggregation did to each input: the round report's raw material.
//!
//! A robust rule that silently drops inputs is impossible to audit, so every result lists every
//! input — used, down-weighted or rejected — with the reason and the numbers behind the decision
//! (its norm, cosine to the previous global, Krum score, effective weight, bucket).

use std::fmt;

use super::Rule;

/// Why an input did not contribute.
#[derive(Debug, Clone, PartialEq)]
pub enum RejectReason {
    /// Some value was NaN or infinite.
    NonFinite,
    /// ‖x‖ exceeded the configured norm bound.
    NormAboveBound { norm: f64, bound: f64 },
    /// Cosine to the previous global fell below the threshold.
    CosineBelow { cosine: f64, threshold: f64 },
    /// It nearly duplicates another input (`other`, an index): their cosine exceeds the bound.
    NearDuplicate {
        other: usize,
        cosine: f64,
        bound: f64,
    },
    /// A selection rule (Krum, Multi-Krum, Bulyan) did not pick it.
    NotSelected { rule: Rule },
    /// Its aggregation weight was zero (e.g. no held-out improvement in a quality-weighted mean).
    ZeroWeight,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NonFinite => write!(f, "non-finite values"),
            Self::NormAboveBound { norm, bound } => {
                write!(f, "norm {norm:.4e} > bound {bound:.4e}")
            }
            Self::CosineBelow { cosine, threshold } => {
                write!(f, "cosine {cosine:.4} < threshold {threshold:.4}")
            }
            Self::NearDuplicate {
                other,
                cosine,
                bound,
            } => write!(
                f,
                "duplicate of input {other}: cosine {cosine:.4} > bound {bound:.4}"
            ),
            Self::NotSelected { rule } => write!(f, "not selected by {rule}"),
            Self::ZeroWeight => write!(f, "zero weight"),
        }
    }
}

/// The fate of one input.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Used,
    /// Contributed with less than its nominal weight (capped weight, clipped by centered clipping).
    DownWeighted,
    Rejected(RejectReason),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Used => write!(f, "used"),
            Self::DownWeighted => write!(f, "down-weighted"),
            Self::Rejected(r) => write!(f, "rejected: {r}"),
        }
    }
}

/// One input's line in the report.
#[derive(Debug, Clone, PartialEq)]
pub struct InputReport {
    pub index: usize,
    pub node_id: String,
    /// L2 norm (None when the input had non-finite values).
    pub norm: Option<f64>,
    /// Cosine to the previous global, when that pre-filter ran.
    pub cosine: Option<f64>,
    /// Krum score (sum of squared distances to the n−f−2 nearest), for the Krum family.
    pub score: Option<f64>,
    /// Effective share of the aggregate where the rule is a weighted mean (sums to 1 over used
    /// inputs); for centered clipping the final clip factor.
    pub weight: Option<f64>,
    /// Bucket index when bucketing ran.
    pub bucket: Option<usize>,
    pub status: Status,
}

/// A configured rule that refused and the fallback that ran instead.
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackUsed {
    pub configured: Rule,
    pub reason: String,
}

/// The result of one aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub aggregate: Vec<f32>,
    /// The rule that actually produced `aggregate`.
    pub rule: Rule,
    /// Set when the configured rule refused and its fallback ran, or (with `held`) why no rule ran.
    pub fallback: Option<FallbackUsed>,
    /// No rule ran: the aggregate is zero, so the group keeps its previous global (a DAF
    /// quality-weighted band when no kept update reports an improvement).
    pub held: bool,
    pub inputs: Vec<InputReport>,
}

impl Outcome {
    /// Indices of the inputs that contributed (used or down-weighted).
    pub fn used(&self) -> Vec<usize> {
        self.inputs
            .iter()
            .filter(|r| !matches!(r.status, Status::Rejected(_)))
            .map(|r| r.index)
            .collect()
    }
}

/// Per-input result of a rule, before pre-filter and bucket bookkeeping is merged in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mark {
    pub status: Status,
    pub score: Option<f64>,
    pub weight: Option<f64>,
}

impl Mark {
    pub fn used() -> Self {
        Self {
            status: Status::Used,
            score: None,
            weight: None,
        }
    }

    pub fn weighted(weight: f64) -> Self {
        Self {
            status: Status::Used,
            score: None,
            weight: Some(weight),
        }
    }
}

/// What a rule returns: the aggregate and one mark per row it saw.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RuleOutput {
    pub aggregate: Vec<f32>,
    pub marks: Vec<Mark>,
}
