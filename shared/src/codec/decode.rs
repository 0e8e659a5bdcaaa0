//! The bounded decoder.
//!
//! Order of checks, so that nothing is allocated on a size the sender merely claimed:
//! payload length against the limit → header (magic, version, reserved fields) → declared lengths
//! against the actual length (truncation, trailing bytes) → checksum → table of contents, each
//! tensor's declared sizes verified with checked arithmetic against each other and the limits →
//! (optionally) the expected layout → only then, per tensor, a zstd stream decode capped at the
//! declared section size plus one byte, index and value decoding, and a finiteness check.

use std::collections::{HashMap, HashSet};

use super::error::Error;
use super::quant::{Groups, decode_plane, plane_len, scale_count};
use super::shuffle::unshuffle;
use super::sparse::decode_indices;
use super::wire::{DENSE, Entry, HEADER_LEN, Header, MAX_NDIM, Reader};
use crate::delta::{Delta, DeltaError, NamedTensor};

/// Caps applied to every payload before anything is allocated for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted payload (the encoded bytes).
    pub max_payload_bytes: u64,
    /// Largest decoded size: both the f32 output (4 bytes per value) and the decompressed sections.
    pub max_decoded_bytes: u64,
    /// Largest total number of values over all tensors.
    pub max_values: u64,
    pub max_tensors: u32,
    pub max_name_len: usize,
    /// At most the format's own cap of 8.
    pub max_ndim: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 256 << 20,
            max_decoded_bytes: 256 << 20,
            max_values: 64 << 20,
            max_tensors: 65_536,
            max_name_len: 1024,
            max_ndim: MAX_NDIM,
        }
    }
}

impl Limits {
    /// Limits that admit exactly a delta of this size (used to decode one's own payloads).
    pub(crate) fn fitting(delta: &Delta, payload_len: usize) -> Self {
        let values = delta.numel() as u64;
        Self {
            max_payload_bytes: payload_len as u64,
            max_decoded_bytes: values
                .saturating_mul(4)
                .saturating_add(payload_len as u64)
                .saturating_add(1 << 20),
            max_values: values,
            max_tensors: u32::try_from(delta.tensors.len()).unwrap_or(u32::MAX),
            max_name_len: delta
                .tensors
                .iter()
                .map(|t| t.name.len())
                .max()
                .unwrap_or(0),
            max_ndim: MAX_NDIM,
        }
    }
}

/// A payload whose header, checksum and table of contents have been verified.
pub(crate) struct Parsed<'a> {
    pub entries: Vec<Entry>,
    pub sections: Vec<&'a [u8]>,
    pub payload_len: u64,
}

fn limit(what: &'static str, declared: u64, limit: u64) -> Result<(), Error> {
    if declared > limit {
        Err(Error::LimitExceeded {
            what,
            declared,
            limit,
        })
    } else {
        Ok(())
    }
}

fn invalid(entry: &Entry, reason: &'static str) -> Error {
    Error::InvalidHeader {
        tensor: entry.name.clone(),
        reason,
    }
}

/// Checks one entry's declared sizes against each other; returns its value count.
fn check_entry(e: &Entry) -> Result<u64, Error> {
    let numel = e
        .numel()
        .ok_or_else(|| invalid(e, "shape product overflows"))?;
    if e.sparsity == DENSE {
        if e.stored != numel {
            return Err(invalid(
                e,
                "dense tensor stores a different number of values",
            ));
        }
        if e.index_len != 0 {
            return Err(invalid(e, "dense tensor has an index stream"));
        }
    } else {
        if e.stored > numel {
            return Err(invalid(e, "more stored values than the tensor holds"));
        }
        // Each varint takes 1..=10 bytes.
        if e.index_len < e.stored || e.index_len > e.stored.saturating_mul(10) {
            return Err(invalid(
                e,
                "index stream length does not fit the stored count",
            ));
        }
    }
    if e.shuffled && e.values.float_width().is_none_or(|w| w < 2) {
        return Err(invalid(e, "shuffle flag on a single-byte encoding"));
    }
    let row = e.shape.last().copied().unwrap_or(1);
    let scales = scale_count(e.values, e.stored, numel, row);
    let expected = plane_len(e.values, e.stored)
        .and_then(|p| p.checked_add(scales.checked_mul(4)?))
        .and_then(|p| p.checked_add(e.index_len))
        .ok_or_else(|| invalid(e, "section size overflows"))?;
    if expected != e.raw_len {
        return Err(Error::SizeMismatch {
            tensor: e.name.clone(),
            what: "the header's counts",
            declared: e.raw_len,
            actual: expected,
        });
    }
    Ok(numel)
}

/// Verifies everything except the section contents.
pub(crate) fn parse<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Parsed<'a>, Error> {
    let payload_len = bytes.len() as u64;
    limit("payload bytes", payload_len, limits.max_payload_bytes)?;
    let mut r = Reader::new(bytes);
    let header = Header::read(&mut r)?;
    limit(
        "tensor count",
        header.tensor_count.into(),
        limits.max_tensors.into(),
    )?;
    let declared = (HEADER_LEN as u64)
        .checked_add(header.toc_len.into())
        .and_then(|n| n.checked_add(header.body_len))
        .ok_or(Error::LimitExceeded {
            what: "declared payload length",
            declared: u64::MAX,
            limit: limits.max_payload_bytes,
        })?;
    if declared > payload_len {
        return Err(Error::Truncated {
            what: "payload",
            needed: declared,
            available: payload_len,
        });
    }
    if declared < payload_len {
        return Err(Error::TrailingBytes {
            declared,
            extra: payload_len - declared,
        });
    }
    let rest = bytes.get(HEADER_LEN..).unwrap_or(&[]);
    let actual = crc32fast::hash(rest);
    if actual != header.crc32 {
        return Err(Error::Checksum {
            expected: header.crc32,
            actual,
        });
    }
    let toc = r.bytes(header.toc_len as usize, "table of contents")?;
    let mut body = Reader::new(r.bytes(r.remaining(), "body")?);
    let mut toc_r = Reader::new(toc);
    // An entry takes at least 39 bytes, so the count is also bounded by the toc's real length.
    let count = header.tensor_count as usize;
    let mut entries = Vec::with_capacity(count.min(toc.len() / 39));
    let mut sections = Vec::with_capacity(count.min(toc.len() / 39));
    let mut names = HashSet::new();
    let (mut values, mut raw_total) = (0u64, 0u64);
    for index in 0..count {
        let e = Entry::read(&mut toc_r, index, limits.max_name_len, limits.max_ndim)?;
        if !names.insert(e.name.clone()) {
            return Err(Error::DuplicateName { name: e.name });
        }
        let numel = check_entry(&e)?;
        values = values.saturating_add(numel);
        raw_total = raw_total.saturating_add(e.raw_len);
        limit("total values", values, limits.max_values)?;
        limit(
            "decoded bytes",
            values.saturating_mul(4),
            limits.max_decoded_bytes,
        )?;
        limit("decompressed bytes", raw_total, limits.max_decoded_bytes)?;
        let len = usize::try_from(e.comp_len).unwrap_or(usize::MAX);
        sections.push(body.bytes(len, "tensor section")?);
        entries.push(e);
    }
    if toc_r.remaining() != 0 {
        return Err(Error::SizeMismatch {
            tensor: String::new(),
            what: "the table of contents' entries",
            declared: header.toc_len.into(),
            actual: (toc.len() - toc_r.remaining()) as u64,
        });
    }
    if body.remaining() != 0 {
        return Err(Error::SizeMismatch {
            tensor: String::new(),
            what: "the sum of section lengths",
            declared: header.body_len,
            actual: header.body_len - body.remaining() as u64,
        });
    }
    Ok(Parsed {
        entries,
        sections,
        payload_len,
    })
}

/// zstd window cap for the decoder: encoder levels 1..=19 never exceed 2^23.
const WINDOW_LOG_MAX: u32 = 24;

/// Decompresses one section, refusing to produce more than `raw_len` bytes.
fn decompress(e: &Entry, section: &[u8]) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let zerr = |reason: String| Error::Decompress {
        tensor: e.name.clone(),
        reason,
    };
    match zstd::zstd_safe::find_frame_compressed_size(section) {
        Ok(n) if n == section.len() => {}
        Ok(n) => {
            return Err(zerr(format!(
                "frame is {n} bytes, section is {}",
                section.len()
            )));
        }
        Err(code) => return Err(zerr(zstd::zstd_safe::get_error_name(code).to_string())),
    }
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(section)
        && size != e.raw_len
    {
        return Err(Error::SizeMismatch {
            tensor: e.name.clone(),
            what: "the zstd frame header",
            declared: e.raw_len,
            actual: size,
        });
    }
    let mut dec = zstd::stream::read::Decoder::with_buffer(section)
        .map_err(|err| zerr(err.to_string()))?
        .single_frame();
    dec.window_log_max(WINDOW_LOG_MAX)
        .map_err(|err| zerr(err.to_string()))?;
    // raw_len was checked against the limits, so this capacity is bounded.
    let mut out = Vec::with_capacity(usize::try_from(e.raw_len).unwrap_or(0));
    dec.take(e.raw_len.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|err| zerr(err.to_string()))?;
    if out.len() as u64 != e.raw_len {
        return Err(Error::SizeMismatch {
            tensor: e.name.clone(),
            what: "the decompressed section",
            declared: e.raw_len,
            actual: out.len() as u64,
        });
    }
    Ok(out)
}

fn to_usize(e: &Entry, v: u64) -> Result<usize, Error> {
    usize::try_from(v).map_err(|_| invalid(e, "size exceeds the address space"))
}

/// Decodes one verified entry.
fn decode_tensor(e: &Entry, section: &[u8]) -> Result<NamedTensor, Error> {
    let raw = decompress(e, section)?;
    let numel = to_usize(e, e.numel().unwrap_or(u64::MAX))?;
    let stored = to_usize(e, e.stored)?;
    let shape = e
        .shape
        .iter()
        .map(|&d| to_usize(e, d))
        .collect::<Result<Vec<_>, _>>()?;
    let index_len = to_usize(e, e.index_len)?;
    let (index_bytes, rest) = raw
        .split_at_checked(index_len)
        .ok_or_else(|| invalid(e, "section shorter than its index stream"))?;
    let indices = if e.sparsity == DENSE {
        None
    } else {
        Some(
            decode_indices(index_bytes, stored, numel as u64).map_err(|f| Error::InvalidIndex {
                tensor: e.name.clone(),
                entry: f.entry,
                reason: f.reason,
            })?,
        )
    };
    let groups = Groups::new(
        e.values,
        stored,
        numel,
        shape.last().copied().unwrap_or(1),
        indices.as_deref(),
    );
    let (scale_bytes, plane) = rest
        .split_at_checked(groups.count() * 4)
        .ok_or_else(|| invalid(e, "section shorter than its scales"))?;
    let scales: Vec<f32> = scale_bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let plane = match e.values.float_width() {
        Some(w) if e.shuffled => unshuffle(plane, w),
        _ => plane.to_vec(),
    };
    let mut vals = vec![0f32; stored];
    decode_plane(e.values, &scales, &plane, &groups, &mut vals, &e.name)?;
    let data = match indices {
        None => vals,
        Some(idx) => {
            let mut dense = vec![0f32; numel];
            for (&i, v) in idx.iter().zip(vals) {
                if let Some(slot) = dense.get_mut(i) {
                    *slot = v;
                }
            }
            dense
        }
    };
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            tensor: e.name.clone(),
            index: i as u64,
        });
    }
    NamedTensor::new(e.name.clone(), shape, data).map_err(Error::Layout)
}

fn check_layout(entries: &[Entry], expected: &[(String, Vec<usize>)]) -> Result<(), Error> {
    let want: HashMap<&str, &[usize]> = expected
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_slice()))
        .collect();
    for e in entries {
        let Some(shape) = want.get(e.name.as_str()) else {
            return Err(DeltaError::Unexpected(e.name.clone()).into());
        };
        if shape.len() != e.shape.len() || shape.iter().zip(&e.shape).any(|(&a, &b)| a as u64 != b)
        {
            return Err(DeltaError::LayoutMismatch {
                name: e.name.clone(),
                expected: shape.to_vec(),
                got: e
                    .shape
                    .iter()
                    .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
                    .collect(),
            }
            .into());
        }
    }
    let have: HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    if let Some((missing, _)) = expected.iter().find(|(n, _)| !have.contains(n.as_str())) {
        return Err(DeltaError::Missing(missing.clone()).into());
    }
    Ok(())
}

fn decode_parsed(p: Parsed<'_>) -> Result<Delta, Error> {
    let tensors = p
        .entries
        .iter()
        .zip(&p.sections)
        .map(|(e, s)| decode_tensor(e, s))
        .collect::<Result<Vec<_>, _>>()?;
    tracing::debug!(
        tensors = tensors.len(),
        bytes = p.payload_len,
        "decoded delta"
    );
    // Names were checked unique while parsing.
    Ok(Delta { tensors })
}

/// Decodes a payload within `limits`. Malformed or hostile input gets a typed [`Error`]; nothing is
/// allocated beyond what the limits admit.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Delta, Error> {
    decode_parsed(parse(bytes, limits)?)
}

/// [`decode`], also requiring exactly the tensors of `expected` (names and shapes, any order);
/// the layout is checked from the table of contents, before any section is decompressed.
pub fn decode_expecting(
    bytes: &[u8],
    limits: &Limits,
    expected: &[(String, Vec<usize>)],
) -> Result<Delta, Error> {
    let p = parse(bytes, limits)?;
    check_layout(&p.entries, expected)?;
    decode_parsed(p)
}
