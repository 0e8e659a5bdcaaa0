//! Top-k sparsification and the index stream.
//!
//! Keeping the largest-magnitude fraction of a delta and sending the rest next round (error
//! feedback, Stich et al. 2018) is where most of the bandwidth saving comes from. Kept indices are
//! sorted and sent as LEB128 varints of the gaps minus one, so a 10 % selection costs about one byte
//! per index and the decoder gets strictly increasing, in-range indices by construction — it only
//! has to check the upper bound and that the stream has exactly the declared length.

use super::wire::{get_varint, put_varint};

/// Indices of the `k` largest |x| (ties to the lower index), in ascending order.
pub fn select_topk(data: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(data.len());
    if k == data.len() {
        return (0..data.len()).collect();
    }
    let mut idx: Vec<usize> = (0..data.len()).collect();
    if k > 0 {
        let cmp = |a: &usize, b: &usize| {
            let (xa, xb) = (data[*a].abs(), data[*b].abs());
            xb.total_cmp(&xa).then(a.cmp(b))
        };
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// Gap-minus-one varint coding of strictly increasing indices.
pub fn encode_indices(indices: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(indices.len() + indices.len() / 4);
    let mut next = 0u64;
    for &i in indices {
        let i = i as u64;
        put_varint(&mut out, i - next);
        next = i + 1;
    }
    out
}

/// Why an index stream was refused (the caller adds the tensor name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexFault {
    pub entry: u64,
    pub reason: &'static str,
}

/// Decodes exactly `count` indices from `buf`, each below `numel`, consuming all of `buf`.
/// The caller guarantees `count <= buf.len()` (each varint takes at least a byte), which bounds
/// the allocation by the section's size.
pub fn decode_indices(buf: &[u8], count: usize, numel: u64) -> Result<Vec<usize>, IndexFault> {
    let mut out = Vec::with_capacity(count.min(buf.len()));
    let mut pos = 0usize;
    let mut next = 0u64;
    for entry in 0..count as u64 {
        let gap = get_varint(buf, &mut pos).ok_or(IndexFault {
            entry,
            reason: "varint cut off or over 64 bits",
        })?;
        let i = next.checked_add(gap).ok_or(IndexFault {
            entry,
            reason: "index overflows",
        })?;
        if i >= numel {
            return Err(IndexFault {
                entry,
                reason: "index beyond the tensor",
            });
        }
        let i = usize::try_from(i).map_err(|_| IndexFault {
            entry,
            reason: "index exceeds the address space",
        })?;
        out.push(i);
        next = i as u64 + 1;
    }
    if pos != buf.len() {
        return Err(IndexFault {
            entry: count as u64,
            reason: "bytes left after the last index",
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_largest_magnitudes_with_low_index_ties() {
        let d = [0.1, -5.0, 3.0, -3.0, 0.0, 5.0];
        assert_eq!(select_topk(&d, 2), vec![1, 5]);
        assert_eq!(select_topk(&d, 3), vec![1, 2, 5]);
        assert_eq!(select_topk(&d, 0), Vec::<usize>::new());
        assert_eq!(select_topk(&d, 10), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn index_stream_round_trip_and_faults() {
        let idx = vec![0, 1, 5, 200, 100_000];
        let buf = encode_indices(&idx);
        assert_eq!(decode_indices(&buf, idx.len(), 100_001), Ok(idx.clone()));
        assert_eq!(
            decode_indices(&buf, idx.len(), 100_000).unwrap_err().reason,
            "index beyond the tensor"
        );
        assert_eq!(decode_indices(&buf, 4, 100_001).unwrap_err().entry, 4);
        assert_eq!(
            decode_indices(&buf[..buf.len() - 1], 5, 100_001)
                .unwrap_err()
                .entry,
            4
        );
        let huge = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x7f,
        ];
        assert!(decode_indices(&huge, 2, u64::MAX).is_err());
    }
}
