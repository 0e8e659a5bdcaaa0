//! What a payload does to the values: a value encoding, optionally after top-k sparsification.
//!
//! Modes are chosen on command lines and in configs, so they have a short textual form that
//! parses and prints back identically: `f32`, `f16`, `bf16`, `int8`, `int8-row`, `int4`, any of
//! them followed by `+topk:<fraction>`, and `topk:<fraction>` for f32 values. Each value encoding
//! also has a one-byte wire code, kept here so that the names and the codes cannot drift apart.

use std::fmt;
use std::str::FromStr;

/// Block length of the per-block scaled integer encodings (`int8`, `int4`).
pub const BLOCK: usize = 64;

/// How each stored value is represented on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Values {
    /// Exact IEEE single precision.
    F32,
    /// IEEE half precision (round to nearest even); |x| must stay within ±65504.
    F16,
    /// bfloat16 (f32's exponent, 8-bit significand; round to nearest even).
    Bf16,
    /// Signed 8-bit with one f32 absmax scale per block of [`BLOCK`] stored values.
    Int8Block,
    /// Signed 8-bit with one f32 absmax scale per row (the innermost dimension).
    Int8Row,
    /// Signed 4-bit, two per byte, one f32 absmax scale per block of [`BLOCK`] stored values.
    Int4Block,
}

impl Values {
    pub const ALL: [Values; 6] = [
        Values::F32,
        Values::F16,
        Values::Bf16,
        Values::Int8Block,
        Values::Int8Row,
        Values::Int4Block,
    ];

    /// The textual name used in modes.
    pub fn name(self) -> &'static str {
        match self {
            Values::F32 => "f32",
            Values::F16 => "f16",
            Values::Bf16 => "bf16",
            Values::Int8Block => "int8",
            Values::Int8Row => "int8-row",
            Values::Int4Block => "int4",
        }
    }

    /// The one-byte code written in each tensor's header.
    pub fn code(self) -> u8 {
        match self {
            Values::F32 => 0,
            Values::F16 => 1,
            Values::Bf16 => 2,
            Values::Int8Block => 3,
            Values::Int8Row => 4,
            Values::Int4Block => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<Values> {
        Values::ALL.into_iter().find(|v| v.code() == code)
    }

    /// Bytes per value of the float encodings (1 for int8; int4 is packed separately).
    pub(crate) fn float_width(self) -> Option<usize> {
        match self {
            Values::F32 => Some(4),
            Values::F16 | Values::Bf16 => Some(2),
            _ => None,
        }
    }

    /// The largest integer level of the scaled encodings (`absmax` maps to it).
    pub(crate) fn int_levels(self) -> Option<f32> {
        match self {
            Values::Int8Block | Values::Int8Row => Some(127.0),
            Values::Int4Block => Some(7.0),
            _ => None,
        }
    }
}

impl fmt::Display for Values {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A complete codec mode: value encoding plus optional top-k sparsification.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mode {
    pub values: Values,
    /// Fraction of each tensor's values kept (largest |x| first), in (0, 1]; `None` = dense.
    pub topk: Option<f64>,
}

impl Mode {
    pub const fn dense(values: Values) -> Self {
        Self { values, topk: None }
    }

    /// A mode with top-k sparsification; `fraction` must lie in (0, 1].
    pub fn sparse(values: Values, fraction: f64) -> Result<Self, ModeParseError> {
        check_fraction(fraction, &fraction.to_string())?;
        Ok(Self {
            values,
            topk: Some(fraction),
        })
    }

    /// Values kept out of `numel` under this mode: ⌈fraction · numel⌉, at least 1 when numel > 0.
    pub fn kept(&self, numel: usize) -> usize {
        match self.topk {
            None => numel,
            Some(f) => {
                let k = (f * numel as f64).ceil();
                // `f` is in (0, 1], so k is in [0, numel]; the clamp guards float edge cases.
                let k = if k.is_finite() && k >= 0.0 {
                    k as usize
                } else {
                    numel
                };
                k.clamp(numel.min(1), numel)
            }
        }
    }
}

impl Default for Mode {
    fn default() -> Self {
        Mode::dense(Values::F32)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.values, self.topk) {
            (v, None) => write!(f, "{v}"),
            (Values::F32, Some(k)) => write!(f, "topk:{k}"),
            (v, Some(k)) => write!(f, "{v}+topk:{k}"),
        }
    }
}

/// Why a mode string did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModeParseError {
    #[error(
        "unknown value encoding `{found}` (expected one of f32, f16, bf16, int8, int8-row, int4)"
    )]
    UnknownValues { found: String },
    #[error("unknown mode component `{found}` (expected `topk:<fraction>`)")]
    UnknownComponent { found: String },
    #[error("top-k fraction `{found}` is not a number")]
    BadFraction { found: String },
    #[error("top-k fraction {found} must be in (0, 1]")]
    FractionRange { found: String },
    #[error("empty mode string")]
    Empty,
}

fn check_fraction(f: f64, text: &str) -> Result<(), ModeParseError> {
    if f.is_finite() && f > 0.0 && f <= 1.0 {
        Ok(())
    } else {
        Err(ModeParseError::FractionRange {
            found: text.to_string(),
        })
    }
}

fn parse_topk(part: &str) -> Result<f64, ModeParseError> {
    let Some(text) = part.strip_prefix("topk:") else {
        return Err(ModeParseError::UnknownComponent {
            found: part.to_string(),
        });
    };
    let f: f64 = text.parse().map_err(|_| ModeParseError::BadFraction {
        found: text.to_string(),
    })?;
    check_fraction(f, text)?;
    Ok(f)
}

impl FromStr for Mode {
    type Err = ModeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ModeParseError::Empty);
        }
        if s.starts_with("topk:") {
            return Ok(Mode {
                values: Values::F32,
                topk: Some(parse_topk(s)?),
            });
        }
        let (head, tail) = match s.split_once('+') {
            Some((h, t)) => (h, Some(t)),
            None => (s, None),
        };
        let values = Values::ALL
            .into_iter()
            .find(|v| v.name() == head)
            .ok_or_else(|| ModeParseError::UnknownValues {
                found: head.to_string(),
            })?;
        let topk = tail.map(parse_topk).transpose()?;
        Ok(Mode { values, topk })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_round_trips_through_text() {
        for v in Values::ALL {
            for topk in [None, Some(0.1), Some(0.05), Some(1.0), Some(0.001)] {
                let m = Mode { values: v, topk };
                let text = m.to_string();
                assert_eq!(text.parse::<Mode>().unwrap(), m, "{text}");
                assert_eq!(text.parse::<Mode>().unwrap().to_string(), text);
            }
            assert_eq!(Values::from_code(v.code()), Some(v));
        }
        assert_eq!(Values::from_code(6), None);
    }

    #[test]
    fn documented_spellings() {
        let m: Mode = "int8+topk:0.1".parse().unwrap();
        assert_eq!(m, Mode::sparse(Values::Int8Block, 0.1).unwrap());
        let m: Mode = "topk:0.1".parse().unwrap();
        assert_eq!(m.values, Values::F32);
        assert_eq!(m.to_string(), "topk:0.1");
        assert_eq!(
            "f32+topk:0.1".parse::<Mode>().unwrap().to_string(),
            "topk:0.1"
        );
        assert_eq!(
            "int8-row".parse::<Mode>().unwrap(),
            Mode::dense(Values::Int8Row)
        );
        assert_eq!("f16+topk:0.05".parse::<Mode>().unwrap().topk, Some(0.05));
    }

    #[test]
    fn clear_parse_errors() {
        assert_eq!("".parse::<Mode>(), Err(ModeParseError::Empty));
        assert!(matches!(
            "int9".parse::<Mode>(),
            Err(ModeParseError::UnknownValues { found }) if found == "int9"
        ));
        assert!(matches!(
            "int8+topx:0.1".parse::<Mode>(),
            Err(ModeParseError::UnknownComponent { .. })
        ));
        assert!(matches!(
            "topk:abc".parse::<Mode>(),
            Err(ModeParseError::BadFraction { .. })
        ));
        for bad in [
            "topk:0",
            "topk:1.5",
            "topk:-0.1",
            "topk:NaN",
            "int4+topk:inf",
        ] {
            assert!(
                matches!(
                    bad.parse::<Mode>(),
                    Err(ModeParseError::FractionRange { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn kept_counts() {
        let m = Mode::sparse(Values::F32, 0.1).unwrap();
        assert_eq!(m.kept(0), 0);
        assert_eq!(m.kept(1), 1);
        assert_eq!(m.kept(10), 1);
        assert_eq!(m.kept(11), 2);
        assert_eq!(m.kept(1000), 100);
        assert_eq!(Mode::dense(Values::F16).kept(7), 7);
        assert_eq!(Mode::sparse(Values::F32, 1.0).unwrap().kept(7), 7);
    }
}
