//! Reading and writing [`Delta`]s as safetensors files (the on-disk form of adapters and deltas).
//!
//! Float tensors of any width (F64, F32, F16, BF16) load as f32; other dtypes are refused with the
//! tensor's name. Files are written as F32 (exact) or F16 (half the size). Metadata (the
//! `__metadata__` string map) is preserved both ways.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::delta::{Delta, DeltaError, NamedTensor};

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {reason}")]
    Format { path: String, reason: String },
    #[error("{path}: tensor `{name}` has dtype {dtype}, expected a float dtype")]
    Dtype {
        path: String,
        name: String,
        dtype: String,
    },
    #[error("{path}: {source}")]
    Delta { path: String, source: DeltaError },
}

/// Width of the values written by [`save`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDtype {
    F32,
    F16,
}

/// Reads every tensor of a safetensors file (sorted by name for a stable order) and its metadata.
pub fn load(path: &Path) -> Result<(Delta, HashMap<String, String>), IoError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| IoError::Io {
        path: p.clone(),
        source,
    })?;
    load_bytes(&bytes).map_err(|e| match e {
        IoError::Format { reason, .. } => IoError::Format {
            path: p.clone(),
            reason,
        },
        IoError::Dtype { name, dtype, .. } => IoError::Dtype {
            path: p.clone(),
            name,
            dtype,
        },
        IoError::Delta { source, .. } => IoError::Delta {
            path: p.clone(),
            source,
        },
        other => other,
    })
}

/// [`load`] from memory.
pub fn load_bytes(bytes: &[u8]) -> Result<(Delta, HashMap<String, String>), IoError> {
    let fmt = |reason: String| IoError::Format {
        path: "<memory>".into(),
        reason,
    };
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| fmt(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| fmt(e.to_string()))?;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let view = st.tensor(&name).map_err(|e| fmt(e.to_string()))?;
        let data = to_f32(&view).ok_or_else(|| IoError::Dtype {
            path: "<memory>".into(),
            name: name.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        let t = NamedTensor::new(name, view.shape().to_vec(), data).map_err(|source| {
            IoError::Delta {
                path: "<memory>".into(),
                source,
            }
        })?;
        tensors.push(t);
    }
    let delta = Delta::new(tensors).map_err(|source| IoError::Delta {
        path: "<memory>".into(),
        source,
    })?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    Ok((delta, metadata))
}

fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let b = view.data();
    Some(match view.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Serializes a delta to safetensors bytes.
pub fn save_bytes(
    delta: &Delta,
    dtype: StoreDtype,
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>, IoError> {
    let fmt = |reason: String| IoError::Format {
        path: "<memory>".into(),
        reason,
    };
    let buffers: Vec<Vec<u8>> = delta
        .tensors
        .iter()
        .map(|t| match dtype {
            StoreDtype::F32 => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StoreDtype::F16 => t
                .data
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        })
        .collect();
    let st_dtype = match dtype {
        StoreDtype::F32 => Dtype::F32,
        StoreDtype::F16 => Dtype::F16,
    };
    let views = delta
        .tensors
        .iter()
        .zip(&buffers)
        .map(|(t, buf)| {
            TensorView::new(st_dtype, t.shape.clone(), buf)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| fmt(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta = if metadata.is_empty() {
        None
    } else {
        Some(metadata.clone())
    };
    safetensors::serialize(views, meta).map_err(|e| fmt(e.to_string()))
}

/// Writes a delta atomically (temporary file in the same folder, fsync, rename).
pub fn save(
    delta: &Delta,
    path: &Path,
    dtype: StoreDtype,
    metadata: &HashMap<String, String>,
) -> Result<(), IoError> {
    let bytes = save_bytes(delta, dtype, metadata)?;
    crate::fsutil::write_atomic(path, &bytes).map_err(|source| IoError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_f32_and_f16_with_metadata() {
        let delta = Delta::new(vec![
            NamedTensor::new("b", vec![2, 2], vec![1.0, -2.0, 0.5, 3.25]).unwrap(),
            NamedTensor::new("a", vec![3], vec![0.1, 0.2, 0.3]).unwrap(),
        ])
        .unwrap();
        let meta = HashMap::from([("k".to_string(), "v".to_string())]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.safetensors");
        save(&delta, &p, StoreDtype::F32, &meta).unwrap();
        let (back, m) = load(&p).unwrap();
        assert_eq!(m, meta);
        // Loading sorts by name.
        assert_eq!(back.tensors[0].name, "a");
        assert_eq!(delta.aligned(&back).unwrap(), delta);
        let bytes = save_bytes(&delta, StoreDtype::F16, &HashMap::new()).unwrap();
        let (half, _) = load_bytes(&bytes).unwrap();
        let half = delta.aligned(&half).unwrap();
        for (x, y) in delta.flatten().iter().zip(half.flatten()) {
            assert!((x - y).abs() <= x.abs() * 1e-3);
        }
        assert!(matches!(
            load_bytes(b"garbage"),
            Err(IoError::Format { .. })
        ));
    }
}
