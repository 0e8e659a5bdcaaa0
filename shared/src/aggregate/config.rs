//! Rule names and parameters: the knobs a coordinator config or the CLI sets.
//!
//! Defaults are defined once here. Parameters that only some rules read live in one flat struct so
//! a fallback rule can reuse the same numbers without a second config section.

use std::fmt;
use std::str::FromStr;

use super::error::ParseNameError;

/// An aggregation rule over flattened deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    #[serde(rename = "fedavg")]
    FedAvg,
    Median,
    TrimmedMean,
    Krum,
    MultiKrum,
    Bulyan,
    #[serde(rename = "geomedian")]
    GeoMedian,
    CenteredClip,
}

impl Rule {
    pub const ALL: [Rule; 8] = [
        Rule::FedAvg,
        Rule::Median,
        Rule::TrimmedMean,
        Rule::Krum,
        Rule::MultiKrum,
        Rule::Bulyan,
        Rule::GeoMedian,
        Rule::CenteredClip,
    ];

    /// The rule's spelling on the command line and in configs (also its serde name).
    pub fn name(self) -> &'static str {
        match self {
            Rule::FedAvg => "fedavg",
            Rule::Median => "median",
            Rule::TrimmedMean => "trimmed-mean",
            Rule::Krum => "krum",
            Rule::MultiKrum => "multi-krum",
            Rule::Bulyan => "bulyan",
            Rule::GeoMedian => "geomedian",
            Rule::CenteredClip => "centered-clip",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Rule {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rule::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| ParseNameError {
                kind: "aggregation rule",
                got: s.to_string(),
                expected: "fedavg, median, trimmed-mean, krum, multi-krum, bulyan, geomedian, \
                           centered-clip",
            })
    }
}

/// How raw per-input weights (sample counts, held-out improvements) are capped so that no single
/// node can buy influence by over-reporting.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightCap {
    None,
    /// No weight above this value.
    Absolute(f64),
    /// No weight above this multiple of the median positive weight.
    MedianMultiple(f64),
}

/// Parameters read by the rules (each rule reads the ones it needs).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Params {
    /// Assumed number of Byzantine inputs.
    pub f: usize,
    /// Trimmed mean: values dropped per side per coordinate (default: `f`).
    pub trim: Option<usize>,
    /// Multi-Krum: number of best-scored inputs averaged (default: n − f).
    pub m: Option<usize>,
    /// Geometric median: maximum Weiszfeld iterations.
    pub geomed_iters: usize,
    /// Geometric median: smoothing ν (distances are floored at ν).
    pub geomed_nu: f64,
    /// Centered clipping: clip radius τ around the current centre.
    pub cc_tau: f64,
    /// Centered clipping: number of clipping iterations L.
    pub cc_iters: usize,
    /// FedAvg / quality-weighted mean: cap on the per-input weights.
    pub weight_cap: WeightCap,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            f: 0,
            trim: None,
            m: None,
            geomed_iters: 8,
            geomed_nu: 1e-6,
            cc_tau: 1.0,
            cc_iters: 3,
            weight_cap: WeightCap::MedianMultiple(2.0),
        }
    }
}

/// A rule, its parameters and an optional fallback run (and recorded) when the rule's condition
/// on n and f fails.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RuleConfig {
    pub rule: Rule,
    pub params: Params,
    pub fallback: Option<Rule>,
}

impl RuleConfig {
    pub fn new(rule: Rule) -> Self {
        Self {
            rule,
            params: Params::default(),
            fallback: None,
        }
    }

    pub fn with_f(mut self, f: usize) -> Self {
        self.params.f = f;
        self
    }

    pub fn with_fallback(mut self, fallback: Rule) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// The fewest inputs (after the pre-filters) this configuration aggregates: the rule's
    /// condition on n and f (median, geometric median, centered clipping n ≥ 2f+1; trimmed mean
    /// n > 2k; Krum, Multi-Krum n ≥ 2f+3 and Multi-Krum's m ≤ n − f; Bulyan n ≥ 4f+3; FedAvg 1),
    /// or the fallback's when that is lower.
    pub fn min_inputs(&self) -> usize {
        let own = min_inputs(self.rule, &self.params);
        self.fallback
            .map_or(own, |fb| own.min(min_inputs(fb, &self.params)))
    }
}

fn min_inputs(rule: Rule, p: &Params) -> usize {
    let f = p.f;
    match rule {
        Rule::FedAvg => 1,
        Rule::Median | Rule::GeoMedian | Rule::CenteredClip => 2 * f + 1,
        Rule::TrimmedMean => 2 * p.trim.unwrap_or(f) + 1,
        Rule::Krum => 2 * f + 3,
        Rule::MultiKrum => (2 * f + 3).max(p.m.map_or(0, |m| m + f)),
        Rule::Bulyan => 4 * f + 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_roundtrip() {
        for r in Rule::ALL {
            assert_eq!(r.name().parse::<Rule>().unwrap(), r);
        }
        for r in Rule::ALL {
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                r.name(),
                "serde name of {r:?}"
            );
        }
        let e = "krumm".parse::<Rule>().unwrap_err();
        assert_eq!(e.got, "krumm");
    }
}
