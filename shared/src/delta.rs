//! A set of named f32 tensors: the in-memory form of a LoRA/TALoRA delta or adapter.
//!
//! This is the common currency of the federation core. The codec encodes and decodes it, the
//! aggregation rules see it flattened (tensor order is the order of `tensors`), and the model side
//! converts adapters to and from it. It deliberately does not depend on candle.

use std::collections::BTreeMap;

/// One named dense tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl NamedTensor {
    pub fn new(
        name: impl Into<String>,
        shape: Vec<usize>,
        data: Vec<f32>,
    ) -> Result<Self, DeltaError> {
        let name = name.into();
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(DeltaError::ShapeMismatch {
                name,
                shape,
                len: data.len(),
            });
        }
        Ok(Self { name, shape, data })
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// An ordered set of named tensors with unique names.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delta {
    pub tensors: Vec<NamedTensor>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeltaError {
    #[error("tensor `{name}`: shape {shape:?} does not hold {len} values")]
    ShapeMismatch {
        name: String,
        shape: Vec<usize>,
        len: usize,
    },
    #[error("tensor `{0}` appears twice")]
    DuplicateName(String),
    #[error("tensor `{name}`: expected shape {expected:?}, got {got:?}")]
    LayoutMismatch {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("tensor `{0}` is missing")]
    Missing(String),
    #[error("tensor `{0}` is not expected here")]
    Unexpected(String),
    #[error("flat vector has {got} values, layout needs {expected}")]
    FlatLength { expected: usize, got: usize },
}

impl Delta {
    pub fn new(tensors: Vec<NamedTensor>) -> Result<Self, DeltaError> {
        let mut seen = std::collections::HashSet::new();
        for t in &tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(DeltaError::DuplicateName(t.name.clone()));
            }
        }
        Ok(Self { tensors })
    }

    /// Total number of values.
    pub fn numel(&self) -> usize {
        self.tensors.iter().map(|t| t.numel()).sum()
    }

    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// `(name, shape)` pairs in order: two deltas with equal layouts can be aggregated.
    pub fn layout(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect()
    }

    /// Checks that `other` has exactly this delta's tensor names and shapes (order-insensitive),
    /// naming the first mismatch.
    pub fn check_same_layout(&self, other: &Delta) -> Result<(), DeltaError> {
        let mine: BTreeMap<&str, &[usize]> = self
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()))
            .collect();
        let theirs: BTreeMap<&str, &[usize]> = other
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()))
            .collect();
        for (name, shape) in &mine {
            match theirs.get(name) {
                None => return Err(DeltaError::Missing((*name).to_string())),
                Some(s) if s != shape => {
                    return Err(DeltaError::LayoutMismatch {
                        name: (*name).to_string(),
                        expected: shape.to_vec(),
                        got: s.to_vec(),
                    });
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = theirs.keys().find(|k| !mine.contains_key(*k)) {
            return Err(DeltaError::Unexpected((*extra).to_string()));
        }
        Ok(())
    }

    /// Reorders `other`'s tensors to this delta's order (after [`Self::check_same_layout`]).
    pub fn aligned(&self, other: &Delta) -> Result<Delta, DeltaError> {
        self.check_same_layout(other)?;
        let tensors = self
            .tensors
            .iter()
            .map(|t| {
                other
                    .get(&t.name)
                    .cloned()
                    .ok_or_else(|| DeltaError::Missing(t.name.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Delta { tensors })
    }

    /// All values concatenated in tensor order.
    pub fn flatten(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.numel());
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
        }
        out
    }

    /// A delta with this layout holding `flat` (the inverse of [`Self::flatten`]).
    pub fn with_flat(&self, flat: &[f32]) -> Result<Delta, DeltaError> {
        if flat.len() != self.numel() {
            return Err(DeltaError::FlatLength {
                expected: self.numel(),
                got: flat.len(),
            });
        }
        let mut off = 0;
        let tensors = self
            .tensors
            .iter()
            .map(|t| {
                let n = t.numel();
                let data = flat[off..off + n].to_vec();
                off += n;
                NamedTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    data,
                }
            })
            .collect();
        Ok(Delta { tensors })
    }

    /// Keeps only the tensors whose name satisfies `keep`, in order.
    pub fn filter(&self, keep: impl Fn(&str) -> bool) -> Delta {
        Delta {
            tensors: self
                .tensors
                .iter()
                .filter(|t| keep(&t.name))
                .cloned()
                .collect(),
        }
    }

    /// L2 norm over all values, accumulated in f64.
    pub fn l2_norm(&self) -> f64 {
        self.tensors
            .iter()
            .flat_map(|t| t.data.iter())
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt()
    }

    /// True when every value is finite.
    pub fn all_finite(&self) -> bool {
        self.tensors
            .iter()
            .all(|t| t.data.iter().all(|v| v.is_finite()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(names: &[(&str, Vec<usize>)]) -> Delta {
        Delta::new(
            names
                .iter()
                .map(|(n, s)| {
                    let len = s.iter().product();
                    NamedTensor::new(*n, s.clone(), (0..len).map(|i| i as f32).collect()).unwrap()
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn flatten_roundtrip_and_layout_checks() {
        let a = d(&[("x", vec![2, 3]), ("y", vec![4])]);
        let flat = a.flatten();
        assert_eq!(flat.len(), 10);
        assert_eq!(a.with_flat(&flat).unwrap(), a);
        let b = d(&[("y", vec![4]), ("x", vec![2, 3])]);
        assert_eq!(a.aligned(&b).unwrap(), a);
        let c = d(&[("x", vec![3, 2]), ("y", vec![4])]);
        assert!(matches!(
            a.check_same_layout(&c),
            Err(DeltaError::LayoutMismatch { .. })
        ));
        let e = d(&[("x", vec![2, 3])]);
        assert_eq!(
            a.check_same_layout(&e),
            Err(DeltaError::Missing("y".into()))
        );
        assert_eq!(
            e.check_same_layout(&a),
            Err(DeltaError::Unexpected("y".into()))
        );
        assert!(NamedTensor::new("z", vec![2, 2], vec![0.0; 3]).is_err());
        assert!(Delta::new(vec![a.tensors[0].clone(), a.tensors[0].clone()]).is_err());
    }
}
