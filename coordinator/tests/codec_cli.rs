//! The `codec` subcommands driven through the library: encode a safetensors delta, inspect and
//! decode the payload, and check what comes back.

use std::collections::HashMap;

use ruvdllm::delta::{Delta, NamedTensor};
use ruvdllm::delta_io::{self, StoreDtype};
use ruvdllm_coordinator::codec_cmd::{CodecCmd, run_to};

fn delta() -> Delta {
    let t = |name: &str, rows: usize, seed: f32| {
        let data = (0..rows * 4)
            .map(|i| ((i as f32 + seed) * 0.37).sin() * 1e-3)
            .collect();
        NamedTensor::new(name, vec![rows, 4], data).unwrap()
    };
    Delta::new(vec![
        t(
            "talora.coarse.base_model.model.q_proj.lora_B.weight",
            32,
            0.0,
        ),
        t("talora.fine.base_model.model.v_proj.lora_B.weight", 16, 1.0),
    ])
    .unwrap()
}

#[test]
fn encode_inspect_decode_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("delta.safetensors");
    let payload = dir.path().join("delta.rvdc");
    let output = dir.path().join("back.safetensors");
    let original = delta();
    delta_io::save(&original, &input, StoreDtype::F32, &HashMap::new()).unwrap();

    let mut out = Vec::new();
    run_to(
        CodecCmd::Encode {
            input: input.clone(),
            output: payload.clone(),
            mode: "int8+topk:0.5".parse().unwrap(),
            level: 3,
        },
        &mut out,
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&out).contains("2 tensors, 192 values"));

    let mut out = Vec::new();
    run_to(
        CodecCmd::Inspect {
            input: payload.clone(),
        },
        &mut out,
    )
    .unwrap();
    let table = String::from_utf8(out).unwrap();
    assert!(table.contains("| talora.coarse.base_model.model.q_proj.lora_B.weight | [32, 4] | int8+topk:0.5000 | 128 | 64 |"), "{table}");
    assert!(table.contains("**total** (2 tensors)"));

    run_to(
        CodecCmd::Decode {
            input: payload.clone(),
            output: output.clone(),
        },
        &mut Vec::new(),
    )
    .unwrap();
    let (back, _) = delta_io::load(&output).unwrap();
    let back = original.aligned(&back).unwrap();
    for (t, b) in original.tensors.iter().zip(&back.tensors) {
        let bounds = ruvdllm::codec::tensor_error_bounds(&"int8+topk:0.5".parse().unwrap(), t);
        for ((x, y), bound) in t.data.iter().zip(&b.data).zip(bounds) {
            assert!((x - y).abs() <= bound);
        }
    }
}

#[test]
fn corrupt_payloads_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.rvdc");
    std::fs::write(&bad, b"RVDC garbage").unwrap();
    let err = run_to(
        CodecCmd::Decode {
            input: bad.clone(),
            output: dir.path().join("x.safetensors"),
        },
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("decoding"), "{err:#}");
    assert!(run_to(CodecCmd::Inspect { input: bad }, &mut Vec::new()).is_err());
    assert!(
        run_to(
            CodecCmd::Inspect {
                input: dir.path().join("missing")
            },
            &mut Vec::new()
        )
        .is_err()
    );
    assert!(!dir.path().join("x.safetensors").exists());
}
