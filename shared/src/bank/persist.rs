//! Saving a bank to a folder and loading it back after a restart.
//!
//! Layout of the folder:
//!
//! * `patterns-<generation>.safetensors` — three tensors over the patterns in id order:
//!   `keys` F32 `[n, 64]`, `values` I8 `[n, V]` and `scales` F32 `[n, S]`, where each pattern's
//!   row is, per layer and per target (q then v), A's values then Bᵀ's values (row-major) and A's
//!   two row scales then Bᵀ's two. Safetensors keeps the int8 payload as it is in memory and is
//!   readable by any safetensors tool.
//! * `bank.json` — format tag, band, config, layout, the id counter, the data file's name and per
//!   pattern its id, success and last use.
//!
//! Both files are written with [`crate::fsutil::write_atomic`]; the data file first under a new
//! generation name, then `bank.json`, whose rename is the commit point: a crash leaves the old
//! `bank.json` pointing at the old, untouched data file. Older generations are deleted afterwards.
//! Loading checks every size against the layout before allocating, and rebuilds the HNSW graph
//! from the keys (the graph is derived data; rebuilding 10K keys takes well under a second in a
//! release build).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::aggregate::daf::Band;

use super::config::Config;
use super::error::{Error, Result};
use super::key::KEY_DIM;
use super::matrix::Layout;
use super::pattern::{Pattern, QLowRank};
use super::quant::QMatrix;
use super::store::Bank;
use super::truncate::PATTERN_RANK;

const FORMAT: &str = "ruvdllm-bank-v1";
const META: &str = "bank.json";

#[derive(Serialize, Deserialize)]
struct Entry {
    id: u64,
    success: f32,
    last_use: u64,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format: String,
    band: String,
    config: Config,
    layout: Option<Layout>,
    next_id: u64,
    generation: u64,
    data_file: String,
    entries: Vec<Entry>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl ToString) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// `(values, scales)` per pattern, or `None` on overflow.
fn widths(layout: &Layout) -> Option<(usize, usize)> {
    let (mut v, mut s) = (0usize, 0usize);
    for l in &layout.layers {
        for (out, inp) in l {
            v = v.checked_add(
                PATTERN_RANK
                    .checked_mul(*inp)?
                    .checked_add(out.checked_mul(PATTERN_RANK)?)?,
            )?;
            s = s.checked_add(2 * PATTERN_RANK)?;
        }
    }
    Some((v, s))
}

fn view<'a>(path: &Path, dtype: Dtype, shape: Vec<usize>, buf: &'a [u8]) -> Result<TensorView<'a>> {
    TensorView::new(dtype, shape, buf).map_err(|e| corrupt(path, e))
}

fn read_meta(dir: &Path) -> Result<Meta> {
    let path = dir.join(META);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| corrupt(&path, e))?;
    if meta.format != FORMAT {
        return Err(corrupt(
            &path,
            format!("format `{}`, expected `{FORMAT}`", meta.format),
        ));
    }
    Ok(meta)
}

impl Bank {
    /// Writes the bank into `dir` (created if missing).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let generation = read_meta(dir).map(|m| m.generation + 1).unwrap_or(0);
        let data_file = format!("patterns-{generation}.safetensors");
        let patterns = self.patterns();
        let n = patterns.len();
        let (vw, sw) = self.layout().and_then(widths).unwrap_or((0, 0));
        let mut keys = Vec::with_capacity(n * KEY_DIM * 4);
        let mut values = Vec::with_capacity(n * vw);
        let mut scales = Vec::with_capacity(n * sw * 4);
        for p in &patterns {
            keys.extend(p.key().iter().flat_map(|v| v.to_le_bytes()));
            for pair in p.layers().iter().flatten() {
                values.extend(
                    pair.a
                        .values()
                        .iter()
                        .chain(pair.bt.values())
                        .map(|v| *v as u8),
                );
                scales.extend(
                    pair.a
                        .scales()
                        .iter()
                        .chain(pair.bt.scales())
                        .flat_map(|v| v.to_le_bytes()),
                );
            }
        }
        let data_path = dir.join(&data_file);
        let views = vec![
            (
                "keys".to_string(),
                view(&data_path, Dtype::F32, vec![n, KEY_DIM], &keys)?,
            ),
            (
                "values".to_string(),
                view(&data_path, Dtype::I8, vec![n, vw], &values)?,
            ),
            (
                "scales".to_string(),
                view(&data_path, Dtype::F32, vec![n, sw], &scales)?,
            ),
        ];
        let bytes = safetensors::serialize(views, None).map_err(|e| corrupt(&data_path, e))?;
        crate::fsutil::write_atomic(&data_path, &bytes).map_err(io(&data_path))?;
        let meta = Meta {
            format: FORMAT.to_string(),
            band: self.band().name().to_string(),
            config: self.config().clone(),
            layout: self.layout().cloned(),
            next_id: self.next_id(),
            generation,
            data_file: data_file.clone(),
            entries: patterns
                .iter()
                .map(|p| Entry {
                    id: p.id,
                    success: p.success,
                    last_use: p.last_use,
                })
                .collect(),
        };
        let meta_path = dir.join(META);
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| corrupt(&meta_path, e))?;
        crate::fsutil::write_atomic(&meta_path, &json).map_err(io(&meta_path))?;
        // Older generations are garbage now.
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("patterns-")
                    && name.ends_with(".safetensors")
                    && name != data_file
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// Loads a bank written by [`Bank::save`].
    pub fn load(dir: &Path) -> Result<Bank> {
        let meta = read_meta(dir)?;
        let meta_path = dir.join(META);
        let band: Band = meta.band.parse().map_err(|e| corrupt(&meta_path, e))?;
        if meta.data_file.contains(['/', '\\']) || meta.data_file.starts_with('.') {
            return Err(corrupt(
                &meta_path,
                "data file name must be a plain file name",
            ));
        }
        let data_path: PathBuf = dir.join(&meta.data_file);
        let bytes = std::fs::read(&data_path).map_err(io(&data_path))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(&data_path, e))?;
        let n = meta.entries.len();
        let (vw, sw) = match &meta.layout {
            Some(l) => widths(l).ok_or_else(|| corrupt(&meta_path, "layout sizes overflow"))?,
            None if n == 0 => (0, 0),
            None => return Err(corrupt(&meta_path, "patterns without a layout")),
        };
        let tensor = |name: &str, dtype: Dtype, width: usize| -> Result<Vec<u8>> {
            let t = st.tensor(name).map_err(|e| corrupt(&data_path, e))?;
            if t.dtype() != dtype || t.shape() != [n, width] {
                return Err(corrupt(
                    &data_path,
                    format!(
                        "tensor `{name}` is {:?} {:?}, expected {dtype:?} [{n}, {width}]",
                        t.dtype(),
                        t.shape()
                    ),
                ));
            }
            Ok(t.data().to_vec())
        };
        let f32s = |b: Vec<u8>| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let keys = f32s(tensor("keys", Dtype::F32, KEY_DIM)?);
        let values = tensor("values", Dtype::I8, vw)?;
        let scales = f32s(tensor("scales", Dtype::F32, sw)?);
        let mut bank = Bank::new(band, meta.config.clone())?;
        let mut patterns = Vec::with_capacity(n);
        let mut ids = HashMap::with_capacity(n);
        for (i, e) in meta.entries.iter().enumerate() {
            if ids.insert(e.id, i).is_some() {
                return Err(corrupt(
                    &meta_path,
                    format!("pattern {} listed twice", e.id),
                ));
            }
            let mut vo = i * vw;
            let mut so = i * sw;
            let mut layers = Vec::new();
            for l in meta.layout.iter().flat_map(|l| &l.layers) {
                let mut pair = |(out, inp): (usize, usize)| -> Result<QLowRank> {
                    let mut take = |rows: usize, cols: usize| -> Result<QMatrix> {
                        let v: Vec<i8> = values[vo..vo + rows * cols]
                            .iter()
                            .map(|b| *b as i8)
                            .collect();
                        let s = scales[so..so + rows].to_vec();
                        vo += rows * cols;
                        so += rows;
                        QMatrix::from_parts(rows, cols, v, s)
                    };
                    Ok(QLowRank {
                        a: take(PATTERN_RANK, inp)?,
                        bt: take(PATTERN_RANK, out)?,
                    })
                };
                layers.push([pair(l[0])?, pair(l[1])?]);
            }
            let p = Pattern::from_parts(
                e.id,
                band,
                keys[i * KEY_DIM..(i + 1) * KEY_DIM].to_vec(),
                e.success,
                e.last_use,
                layers,
            )
            .map_err(|err| corrupt(&data_path, format!("pattern {}: {err}", e.id)))?;
            patterns.push(p);
        }
        bank.insert_many(patterns)?;
        bank.set_next_id(meta.next_id);
        Ok(bank)
    }
}
