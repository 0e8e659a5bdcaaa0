//! Hostile payloads: every malformed input gets a typed error, never a panic or a large
//! allocation. Payloads are built here byte by byte from the documented format (module docs of
//! `ruvdllm::codec`), independently of the encoder, so the tests also pin the wire format.

use proptest::prelude::*;
use ruvdllm::codec::{self, EncodeOptions, Error, HEADER_LEN, Limits, Mode};
use ruvdllm::delta::{Delta, DeltaError, NamedTensor};

/// One hand-made tensor entry and its (uncompressed) section.
#[derive(Clone)]
struct Raw {
    name: String,
    shape: Vec<u64>,
    values: u8,
    sparsity: u8,
    shuffled: u8,
    stored: u64,
    index_len: u64,
    /// Declared raw length; `None` = the section's real length.
    raw_len: Option<u64>,
    section: Vec<u8>,
    /// A replacement zstd frame (for bombs).
    frame: Option<Vec<u8>>,
}

fn dense_f32(name: &str, shape: Vec<u64>, data: &[f32]) -> Raw {
    Raw {
        name: name.into(),
        shape,
        values: 0,
        sparsity: 0,
        shuffled: 0,
        stored: data.len() as u64,
        index_len: 0,
        raw_len: None,
        section: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        frame: None,
    }
}

fn build(tensors: &[Raw]) -> Vec<u8> {
    let mut toc = Vec::new();
    let mut body = Vec::new();
    for t in tensors {
        let frame = t
            .frame
            .clone()
            .unwrap_or_else(|| zstd::bulk::compress(&t.section, 3).unwrap());
        toc.extend_from_slice(&(t.name.len() as u16).to_le_bytes());
        toc.extend_from_slice(t.name.as_bytes());
        toc.push(t.shape.len() as u8);
        for d in &t.shape {
            toc.extend_from_slice(&d.to_le_bytes());
        }
        toc.extend_from_slice(&[t.values, t.sparsity, t.shuffled, 0]);
        toc.extend_from_slice(&t.stored.to_le_bytes());
        toc.extend_from_slice(&t.index_len.to_le_bytes());
        toc.extend_from_slice(&t.raw_len.unwrap_or(t.section.len() as u64).to_le_bytes());
        toc.extend_from_slice(&(frame.len() as u64).to_le_bytes());
        body.extend_from_slice(&frame);
    }
    let mut out = b"RVDC".to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
    out.extend_from_slice(&(toc.len() as u32).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&toc);
    h.update(&body);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&toc);
    out.extend_from_slice(&body);
    out
}

/// Recomputes the checksum after a deliberate edit, so the edit reaches the later checks.
fn fix_crc(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[HEADER_LEN..]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
}

fn small_delta() -> Delta {
    Delta::new(vec![
        NamedTensor::new("a", vec![2, 3], vec![0.5, -1.0, 0.25, 0.0, 2.0, -3.0]).unwrap(),
        NamedTensor::new("b", vec![70], (0..70).map(|i| i as f32 * 0.01).collect()).unwrap(),
    ])
    .unwrap()
}

fn decode(bytes: &[u8]) -> Result<Delta, Error> {
    codec::decode(bytes, &Limits::default())
}

#[test]
fn the_hand_built_format_matches_the_encoder() {
    let d = Delta::new(vec![
        NamedTensor::new("w", vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap(),
    ])
    .unwrap();
    let ours = build(&[dense_f32("w", vec![2, 2], &[1.0, 2.0, 3.0, 4.0])]);
    assert_eq!(decode(&ours).unwrap(), d);
    let theirs = codec::encode(
        &d,
        &EncodeOptions {
            shuffle: codec::Shuffle::Never,
            ..EncodeOptions::default()
        },
    )
    .unwrap();
    // Same header fields (magic, version, flags, count, toc length) and the same table of
    // contents up to each section's compressed length (zstd framing may differ).
    assert_eq!(ours[..16], theirs[..16]);
    let toc_until_comp_len = 2 + 1 + 1 + 16 + 4 + 24;
    assert_eq!(
        ours[HEADER_LEN..HEADER_LEN + toc_until_comp_len],
        theirs[HEADER_LEN..HEADER_LEN + toc_until_comp_len]
    );
    assert_eq!(decode(&theirs).unwrap(), d);
}

#[test]
fn every_truncation_is_a_typed_truncation() {
    for mode in ["f32", "int4+topk:0.3", "int8-row"] {
        let bytes =
            codec::encode(&small_delta(), &EncodeOptions::new(mode.parse().unwrap())).unwrap();
        for cut in 0..bytes.len() {
            let err = decode(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, Error::Truncated { .. }),
                "{mode} cut {cut}: {err:?}"
            );
            assert!(codec::inspect(&bytes[..cut]).is_err());
        }
    }
}

#[test]
fn trailing_garbage_bad_magic_and_versions() {
    let mut bytes = codec::encode(&small_delta(), &EncodeOptions::default()).unwrap();
    let good = bytes.clone();
    bytes.extend_from_slice(b"xyz");
    assert_eq!(
        decode(&bytes),
        Err(Error::TrailingBytes {
            declared: good.len() as u64,
            extra: 3
        })
    );
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(decode(&bad), Err(Error::BadMagic { found }) if &found == b"XVDC"));
    let mut bad = good.clone();
    bad[4] = 2;
    assert_eq!(
        decode(&bad),
        Err(Error::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    );
    let mut bad = good.clone();
    bad[6] = 1;
    assert!(matches!(
        decode(&bad),
        Err(Error::Reserved { field: "flags", .. })
    ));
    assert!(matches!(decode(b""), Err(Error::Truncated { .. })));
}

#[test]
fn every_flipped_byte_is_refused_and_after_the_header_it_is_the_checksum() {
    let bytes = codec::encode(
        &small_delta(),
        &EncodeOptions::new("int8+topk:0.5".parse().unwrap()),
    )
    .unwrap();
    for pos in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x10;
        let err = decode(&bad).unwrap_err();
        if pos >= HEADER_LEN || (24..28).contains(&pos) {
            assert!(matches!(err, Error::Checksum { .. }), "byte {pos}: {err:?}");
        }
    }
}

#[test]
fn size_lying_headers_are_refused_before_allocation() {
    // A tensor declaring 2^40 values: refused by the value limit, nothing allocated.
    let mut t = dense_f32("huge", vec![1 << 40], &[1.0]);
    t.stored = 1 << 40;
    t.raw_len = Some(4 << 40);
    assert!(matches!(
        decode(&build(&[t])),
        Err(Error::LimitExceeded {
            what: "total values",
            ..
        })
    ));
    // A shape whose product overflows u64.
    let mut t = dense_f32("overflow", vec![u64::MAX, 3], &[1.0]);
    t.stored = 1;
    assert!(matches!(
        decode(&build(&[t])),
        Err(Error::InvalidHeader { .. })
    ));
    // A raw length that disagrees with the counts.
    let mut t = dense_f32("x", vec![4], &[1.0, 2.0, 3.0, 4.0]);
    t.raw_len = Some(20);
    assert!(matches!(
        decode(&build(&[t])),
        Err(Error::SizeMismatch {
            what: "the header's counts",
            declared: 20,
            actual: 16,
            ..
        })
    ));
    // Dense with the wrong stored count, top-k storing more than the tensor holds.
    let mut t = dense_f32("x", vec![5], &[1.0, 2.0, 3.0, 4.0]);
    t.raw_len = Some(16);
    assert!(matches!(
        decode(&build(&[t])),
        Err(Error::InvalidHeader { .. })
    ));
    let mut t = dense_f32("x", vec![2], &[1.0, 2.0, 3.0]);
    t.sparsity = 1;
    t.index_len = 3;
    t.section = [vec![0, 0, 0], t.section].concat();
    assert!(matches!(
        decode(&build(&[t])),
        Err(Error::InvalidHeader { .. })
    ));
    // A tensor count far beyond the entries present.
    let mut bytes = build(&[dense_f32("x", vec![1], &[1.0])]);
    bytes[8..12].copy_from_slice(&1_000u32.to_le_bytes());
    fix_crc(&mut bytes);
    assert!(matches!(decode(&bytes), Err(Error::Truncated { .. })));
    bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    fix_crc(&mut bytes);
    assert!(matches!(
        decode(&bytes),
        Err(Error::LimitExceeded {
            what: "tensor count",
            ..
        })
    ));
    // A body length beyond the payload.
    let mut bytes = build(&[dense_f32("x", vec![1], &[1.0])]);
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        decode(&bytes),
        Err(Error::LimitExceeded { .. } | Error::Truncated { .. })
    ));
}

#[test]
fn zstd_bombs_are_capped() {
    // A frame that declares (and holds) 16 MiB for a section declared as 16 bytes.
    let zeros = vec![0u8; 16 << 20];
    let mut t = dense_f32("bomb", vec![4], &[1.0, 2.0, 3.0, 4.0]);
    t.frame = Some(zstd::bulk::compress(&zeros, 3).unwrap());
    assert!(matches!(
        decode(&build(&[t.clone()])),
        Err(Error::SizeMismatch { declared: 16, actual, .. }) if actual == 16 << 20
    ));
    // The same without a content size in the frame header: the stream decoder stops at 17 bytes.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_contentsize(false).unwrap();
    std::io::Write::write_all(&mut enc, &zeros).unwrap();
    t.frame = Some(enc.finish().unwrap());
    assert!(matches!(
        decode(&build(&[t.clone()])),
        Err(Error::SizeMismatch {
            what: "the decompressed section",
            declared: 16,
            actual: 17,
            ..
        })
    ));
    // A huge declared section is refused by the limits before decompression.
    let limits = Limits {
        max_decoded_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut t = dense_f32("big", vec![1 << 19], &[]);
    t.stored = 1 << 19;
    t.raw_len = Some(4 << 19);
    t.frame = Some(zstd::bulk::compress(&zeros, 3).unwrap());
    assert!(matches!(
        codec::decode(&build(&[t]), &limits),
        Err(Error::LimitExceeded {
            what: "decoded bytes",
            ..
        })
    ));
    // Garbage instead of a frame, and two frames in one section.
    let mut t = dense_f32("x", vec![1], &[1.0]);
    t.frame = Some(vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert!(matches!(
        decode(&build(&[t.clone()])),
        Err(Error::Decompress { .. })
    ));
    let f = zstd::bulk::compress(&1f32.to_le_bytes(), 3).unwrap();
    t.frame = Some([f.clone(), f].concat());
    assert!(matches!(
        decode(&build(&[t])),
        Err(Error::Decompress { .. })
    ));
}

#[test]
fn non_finite_values_are_refused_naming_the_tensor() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let t = dense_f32("bad.weight", vec![3], &[1.0, bad, 2.0]);
        assert_eq!(
            decode(&build(&[dense_f32("ok", vec![1], &[0.0]), t])),
            Err(Error::NonFinite {
                tensor: "bad.weight".into(),
                index: 1
            })
        );
        let d = Delta::new(vec![
            NamedTensor::new("in", vec![2], vec![0.0, bad]).unwrap(),
        ])
        .unwrap();
        assert!(matches!(
            codec::encode(&d, &EncodeOptions::default()),
            Err(Error::NonFinite { index: 1, .. })
        ));
    }
    // int8 with an infinite scale: q · scale overflows.
    let mut t = dense_f32("scaled", vec![2], &[]);
    t.values = 3;
    t.section = [f32::MAX.to_le_bytes().to_vec(), vec![127u8, 0]].concat();
    t.raw_len = None;
    t.stored = 2;
    assert!(matches!(
        decode(&build(&[t])),
        Err(Error::NonFinite { index: 0, .. })
    ));
    // f16 overflow at encode time is a range error, not a silent infinity.
    let d = Delta::new(vec![NamedTensor::new("w", vec![1], vec![1e6]).unwrap()]).unwrap();
    assert!(matches!(
        codec::encode(&d, &EncodeOptions::new("f16".parse().unwrap())),
        Err(Error::OutOfRange { mode: "f16", .. })
    ));
}

#[test]
fn bad_indices_codes_and_names() {
    // Index 5 in a tensor of 4.
    let mut t = dense_f32("idx", vec![4], &[1.0]);
    t.sparsity = 1;
    t.index_len = 1;
    t.section = [vec![5u8], 1f32.to_le_bytes().to_vec()].concat();
    assert!(matches!(
        decode(&build(&[t.clone()])),
        Err(Error::InvalidIndex {
            entry: 0,
            reason: "index beyond the tensor",
            ..
        })
    ));
    t.section[0] = 3;
    assert_eq!(
        decode(&build(&[t.clone()])).unwrap().tensors[0].data,
        vec![0.0, 0.0, 0.0, 1.0]
    );
    t.values = 9;
    assert!(matches!(
        decode(&build(&[t.clone()])),
        Err(Error::UnknownCode { code: 9, .. })
    ));
    t.values = 3;
    t.shuffled = 1;
    assert!(matches!(
        decode(&build(&[t])),
        Err(Error::InvalidHeader { .. })
    ));
    let a = dense_f32("same", vec![1], &[1.0]);
    assert!(matches!(
        decode(&build(&[a.clone(), a.clone()])),
        Err(Error::DuplicateName { name }) if name == "same"
    ));
    let mut bytes = build(std::slice::from_ref(&a));
    bytes[HEADER_LEN + 2] = 0xff;
    fix_crc(&mut bytes);
    assert_eq!(decode(&bytes), Err(Error::NameUtf8 { index: 0 }));
}

#[test]
fn limits_are_enforced() {
    let d = small_delta();
    let bytes = codec::encode(&d, &EncodeOptions::default()).unwrap();
    let check = |limits: Limits, what: &str| {
        let err = codec::decode(&bytes, &limits).unwrap_err();
        assert!(
            matches!(&err, Error::LimitExceeded { what: w, .. } if *w == what),
            "{what}: {err:?}"
        );
    };
    check(
        Limits {
            max_payload_bytes: 10,
            ..Limits::default()
        },
        "payload bytes",
    );
    check(
        Limits {
            max_tensors: 1,
            ..Limits::default()
        },
        "tensor count",
    );
    check(
        Limits {
            max_values: 75,
            ..Limits::default()
        },
        "total values",
    );
    check(
        Limits {
            max_name_len: 0,
            ..Limits::default()
        },
        "name length",
    );
    check(
        Limits {
            max_ndim: 1,
            ..Limits::default()
        },
        "ndim",
    );
    // Nine dimensions exceed the format's cap at encode time and at decode time.
    let nine = Delta::new(vec![NamedTensor::new("n", vec![1; 9], vec![1.0]).unwrap()]).unwrap();
    assert!(matches!(
        codec::encode(&nine, &EncodeOptions::default()),
        Err(Error::TooManyDims { ndim: 9, .. })
    ));
    let t = dense_f32("n", vec![1; 9], &[1.0]);
    assert!(matches!(
        decode(&build(&[t])),
        Err(Error::LimitExceeded { what: "ndim", .. })
    ));
    let opts = EncodeOptions {
        level: 22,
        ..EncodeOptions::default()
    };
    assert_eq!(
        codec::encode(&d, &opts),
        Err(Error::InvalidLevel { level: 22 })
    );
}

#[test]
fn wrong_shapes_against_the_expected_layout() {
    let d = small_delta();
    let bytes = codec::encode(&d, &EncodeOptions::default()).unwrap();
    let limits = Limits::default();
    let layout = |a: Vec<usize>| vec![("a".to_string(), a), ("b".to_string(), vec![70])];
    assert_eq!(
        codec::decode_expecting(&bytes, &limits, &layout(vec![3, 2])),
        Err(Error::Layout(DeltaError::LayoutMismatch {
            name: "a".into(),
            expected: vec![3, 2],
            got: vec![2, 3]
        }))
    );
    let mut more = layout(vec![2, 3]);
    more.push(("c".into(), vec![1]));
    assert_eq!(
        codec::decode_expecting(&bytes, &limits, &more),
        Err(Error::Layout(DeltaError::Missing("c".into())))
    );
    assert_eq!(
        codec::decode_expecting(&bytes, &limits, &more[1..]),
        Err(Error::Layout(DeltaError::Unexpected("a".into())))
    );
    assert_eq!(
        codec::decode_expecting(&bytes, &limits, &layout(vec![2, 3])).unwrap(),
        d
    );
}

fn mode_strategy() -> impl Strategy<Value = Mode> {
    prop::sample::select(vec![
        "f32",
        "bf16",
        "int8",
        "int8-row+topk:0.3",
        "int4+topk:0.5",
        "f16",
    ])
    .prop_map(|m| m.parse().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
        let _ = codec::inspect(&bytes);
        let mut framed = b"RVDC\x01\x00\x00\x00".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = decode(&framed);
    }

    /// Mutations with a repaired checksum reach the table-of-contents and section checks.
    #[test]
    fn mutated_payloads_with_valid_checksums_never_panic(
        mode in mode_strategy(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = codec::encode(&small_delta(), &codec::EncodeOptions::new(mode)).unwrap();
        for (at, v) in edits {
            let i = at.index(bytes.len() - HEADER_LEN) + HEADER_LEN;
            bytes[i] = v;
        }
        fix_crc(&mut bytes);
        if let Ok(d) = decode(&bytes) {
            prop_assert!(d.all_finite());
        }
    }
}
