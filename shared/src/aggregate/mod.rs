//! Byzantine-robust aggregation of flattened deltas (DESIGN §6).
//!
//! The coordinator sees n flattened B-matrix deltas per round. [`aggregate`] runs the
//! [`Prefilter`]s, then one [`Rule`] (FedAvg, median, trimmed mean, Krum, Multi-Krum, Bulyan,
//! geometric median, centered clipping), and returns an [`Outcome`]: the aggregate plus one report
//! line per input saying whether it was used, down-weighted or rejected, and why.
//!
//! Every sum is accumulated in f64. A rule whose condition on n and f fails refuses with
//! [`AggregateError::Condition`]; only when a fallback is configured does another rule run, and the
//! outcome records that it did — there is never a silent different computation. [`daf`] applies
//! this per TALoRA band.

mod centered_clip;
mod config;
mod coordinate;
pub mod daf;
mod error;
mod geomed;
mod kernels;
mod krum;
mod mean;
mod network;
mod prefilter;
mod report;
pub mod server_opt;

pub use config::{Params, Rule, RuleConfig, WeightCap};
pub use error::{AggregateError, ParseNameError};
pub use prefilter::{CosineReference, NormBound, Prefilter};
pub use report::{FallbackUsed, InputReport, Outcome, RejectReason, Status};
pub use server_opt::{ServerOptSpec, ServerOptimizer, ServerState};

use report::RuleOutput;

/// One input to an aggregation: a flattened delta and who sent it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub node_id: &'a str,
    pub values: &'a [f32],
    /// Nominal weight: the sample count for FedAvg, the held-out improvement for a quality-weighted
    /// mean. Rules that are not weighted means ignore it.
    pub weight: f64,
}

impl<'a> Input<'a> {
    /// One input per row, named by `ids`, all with weight 1 (unweighted rules, tests, benches).
    pub fn equal(ids: &'a [String], rows: &'a [Vec<f32>]) -> Vec<Input<'a>> {
        ids.iter()
            .zip(rows)
            .map(|(id, r)| Input {
                node_id: id,
                values: r,
                weight: 1.0,
            })
            .collect()
    }
}

/// Runs one rule (no fallback) over already-screened rows.
fn apply(
    rule: Rule,
    p: &Params,
    rows: &[&[f32]],
    weights: &[f64],
    previous: Option<&[f32]>,
) -> Result<RuleOutput, AggregateError> {
    match rule {
        Rule::FedAvg => mean::weighted(rule, rows, weights, p.weight_cap),
        Rule::Median => coordinate::median(rows, p.f),
        Rule::TrimmedMean => coordinate::trimmed_mean(rows, p.trim.unwrap_or(p.f), p.f),
        Rule::Krum => krum::krum(rows, p.f),
        Rule::MultiKrum => krum::multi_krum(rows, p.f, p.m),
        Rule::Bulyan => krum::bulyan(rows, p.f),
        Rule::GeoMedian => geomed::geomedian(rows, p.f, p.geomed_iters, p.geomed_nu),
        Rule::CenteredClip => {
            centered_clip::centered_clip(rows, previous, p.f, p.cc_tau, p.cc_iters)
        }
    }
}

/// Runs the configured rule, or its fallback when (and only when) the rule's n/f condition fails.
fn apply_with_fallback(
    cfg: &RuleConfig,
    rows: &[&[f32]],
    weights: &[f64],
    previous: Option<&[f32]>,
) -> Result<(RuleOutput, Rule, Option<FallbackUsed>), AggregateError> {
    match apply(cfg.rule, &cfg.params, rows, weights, previous) {
        Ok(out) => Ok((out, cfg.rule, None)),
        Err(first @ AggregateError::Condition { .. }) => {
            let Some(fb) = cfg.fallback else {
                return Err(first);
            };
            tracing::warn!(rule = %cfg.rule, fallback = %fb, reason = %first, "rule refused; running fallback");
            match apply(fb, &cfg.params, rows, weights, previous) {
                Ok(out) => Ok((
                    out,
                    fb,
                    Some(FallbackUsed {
                        configured: cfg.rule,
                        reason: first.to_string(),
                    }),
                )),
                Err(second) => Err(AggregateError::FallbackFailed {
                    rule: cfg.rule,
                    fallback: fb,
                    first: Box::new(first),
                    second: Box::new(second),
                }),
            }
        }
        Err(e) => Err(e),
    }
}

/// Aggregates `inputs` (all of equal length) with `cfg` after the pre-filters.
///
/// `previous` is the last global delta: the cosine pre-filter compares against it and centered
/// clipping starts from it.
pub fn aggregate(
    inputs: &[Input<'_>],
    previous: Option<&[f32]>,
    cfg: &RuleConfig,
    filters: &Prefilter,
) -> Result<Outcome, AggregateError> {
    let first = inputs.first().ok_or(AggregateError::NoInputs)?;
    let d = first.values.len();
    for (index, inp) in inputs.iter().enumerate() {
        if inp.values.len() != d {
            return Err(AggregateError::LengthMismatch {
                index,
                expected: d,
                got: inp.values.len(),
            });
        }
    }
    if let Some(p) = previous
        && p.len() != d
    {
        return Err(AggregateError::PreviousLength {
            expected: d,
            got: p.len(),
        });
    }
    filters.validate()?;

    let rows: Vec<&[f32]> = inputs.iter().map(|i| i.values).collect();
    let ids: Vec<&str> = inputs.iter().map(|i| i.node_id).collect();
    let (mut reports, kept) = filters.screen(&rows, &ids, previous);
    if kept.is_empty() {
        return Err(AggregateError::AllRejected { n: inputs.len() });
    }
    let groups = filters.groups(&kept);
    let bucketed = groups.iter().any(|g| g.len() > 1);
    let bucket_means: Vec<Vec<f32>> = if bucketed {
        groups
            .iter()
            .map(|g| {
                let members: Vec<&[f32]> = g.iter().map(|&i| rows[i]).collect();
                kernels::mean(&members)
            })
            .collect()
    } else {
        Vec::new()
    };
    let group_rows: Vec<&[f32]> = if bucketed {
        bucket_means.iter().map(|v| v.as_slice()).collect()
    } else {
        groups.iter().map(|g| rows[g[0]]).collect()
    };
    let group_weights: Vec<f64> = groups
        .iter()
        .map(|g| g.iter().map(|&i| inputs[i].weight).sum())
        .collect();

    let (out, rule, fallback) = apply_with_fallback(cfg, &group_rows, &group_weights, previous)
        .map_err(|e| match e {
            // Say when the pre-filters are why the rule saw too few inputs.
            AggregateError::Condition { .. } | AggregateError::FallbackFailed { .. }
                if kept.len() < inputs.len() =>
            {
                AggregateError::Screened {
                    kept: kept.len(),
                    n: inputs.len(),
                    source: Box::new(e),
                }
            }
            e => e,
        })?;
    for (b, (g, mark)) in groups.iter().zip(&out.marks).enumerate() {
        for &i in g {
            let r = &mut reports[i];
            r.status = mark.status.clone();
            r.score = mark.score;
            r.weight = mark.weight;
            r.bucket = bucketed.then_some(b);
        }
    }
    tracing::debug!(%rule, n = inputs.len(), used = kept.len(), "aggregated");
    Ok(Outcome {
        aggregate: out.aggregate,
        rule,
        fallback,
        held: false,
        inputs: reports,
    })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_reference;
