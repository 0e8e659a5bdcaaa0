//! `coordinator aggregate` through the library, on temporary safetensors files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ruvdllm::aggregate::{CosineReference, Rule};
use ruvdllm::delta::{Delta, NamedTensor};
use ruvdllm::delta_io::{self, StoreDtype};
use ruvdllm_coordinator::aggregate_cmd::{AggregateArgs, run_to};

fn write(
    dir: &Path,
    name: &str,
    tensors: &[(&str, Vec<usize>, f32)],
    meta: &[(&str, &str)],
) -> PathBuf {
    let delta = Delta::new(
        tensors
            .iter()
            .map(|(n, shape, v)| {
                let len = shape.iter().product();
                NamedTensor::new(*n, shape.clone(), vec![*v; len]).unwrap()
            })
            .collect(),
    )
    .unwrap();
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let p = dir.join(name);
    delta_io::save(&delta, &p, StoreDtype::F32, &meta).unwrap();
    p
}

fn args(inputs: Vec<PathBuf>, out: PathBuf, rule: Rule, f: usize) -> AggregateArgs {
    AggregateArgs {
        rule,
        f,
        trim: None,
        m: None,
        bands: false,
        norm_bound: None,
        duplicate_bound: None,
        cosine_threshold: None,
        cosine_reference: CosineReference::Previous,
        previous: None,
        fallback: None,
        inputs,
        out,
    }
}

const PEFT_A: &str = "base_model.model.layers.0.q_proj.lora_B.weight";
const PEFT_B: &str = "base_model.model.layers.0.v_proj.lora_B.weight";

#[test]
fn aggregates_peft_files_and_reports_every_input() {
    let dir = tempfile::tempdir().unwrap();
    let values = [1.0f32, 2.0, 3.0, 4.0, 500.0];
    let inputs: Vec<PathBuf> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            write(
                dir.path(),
                &format!("n{i}.safetensors"),
                &[(PEFT_A, vec![4, 2], *v), (PEFT_B, vec![3, 2], -v)],
                &[],
            )
        })
        .collect();
    let out = dir.path().join("agg.safetensors");
    let mut a = args(inputs.clone(), out.clone(), Rule::Krum, 1);
    let mut report = Vec::new();
    run_to(&a, &mut report).unwrap();
    let text = String::from_utf8(report).unwrap();
    assert!(text.contains("rule krum"), "{text}");
    assert_eq!(
        text.matches("rejected: not selected by krum").count(),
        4,
        "{text}"
    );
    let (agg, meta) = delta_io::load(&out).unwrap();
    assert_eq!(meta["rule"], "krum");
    let v = agg.get(PEFT_A).unwrap().data[0];
    assert!((1.0..=4.0).contains(&v), "Krum picked an honest input: {v}");

    // Median of 1..4, 500 is 3; the norm bound rejects the outlier first, leaving 2.5.
    a.rule = Rule::Median;
    a.norm_bound = Some(100.0);
    let mut report = Vec::new();
    run_to(&a, &mut report).unwrap();
    let text = String::from_utf8(report).unwrap();
    assert!(text.contains("rejected: norm"), "{text}");
    let (agg, _) = delta_io::load(&out).unwrap();
    assert_eq!(agg.get(PEFT_A).unwrap().data, vec![2.5; 8]);
    assert_eq!(agg.get(PEFT_B).unwrap().data, vec![-2.5; 6]);

    // Bulyan needs n >= 4f+3 = 7: refuses, or falls back to the median and says so.
    a.rule = Rule::Bulyan;
    a.norm_bound = None;
    let err = run_to(&a, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("bulyan refuses"), "{err}");
    a.fallback = Some(Rule::Median);
    let mut report = Vec::new();
    run_to(&a, &mut report).unwrap();
    let text = String::from_utf8(report).unwrap();
    assert!(text.contains("fallback: bulyan refused"), "{text}");
}

#[test]
fn mismatched_layout_names_tensor_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.safetensors",
        &[(PEFT_A, vec![4, 2], 1.0)],
        &[],
    );
    let b = write(
        dir.path(),
        "b.safetensors",
        &[(PEFT_A, vec![2, 4], 1.0)],
        &[],
    );
    let out = dir.path().join("o.safetensors");
    let err = run_to(
        &args(vec![a, b], out.clone(), Rule::Median, 0),
        &mut Vec::new(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("b.safetensors") && msg.contains(PEFT_A),
        "{msg}"
    );
    assert!(!out.exists());
}

#[test]
fn bands_use_daf_with_file_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let coarse = "talora.coarse.base_model.model.layers.0.q_proj.lora_B.weight";
    let domain = "talora.domain.base_model.model.layers.0.q_proj.lora_B.weight";
    let specs = [(1.0f32, "1.0"), (2.0, "1.0"), (3.0, "-1.0"), (4.0, "1.0")];
    let inputs: Vec<PathBuf> = specs
        .iter()
        .enumerate()
        .map(|(i, (v, impr))| {
            let id = format!("node-{i}");
            write(
                dir.path(),
                &format!("{i}.safetensors"),
                &[(coarse, vec![2, 2], *v), (domain, vec![2, 2], *v)],
                &[
                    ("node_id", id.as_str()),
                    ("samples", "10"),
                    ("improvement.domain", impr),
                ],
            )
        })
        .collect();
    let out = dir.path().join("o.safetensors");
    let mut a = args(inputs, out.clone(), Rule::TrimmedMean, 1);
    a.bands = true;
    let mut report = Vec::new();
    run_to(&a, &mut report).unwrap();
    let text = String::from_utf8(report).unwrap();
    assert!(
        text.contains("group coarse") && text.contains("group domain"),
        "{text}"
    );
    assert!(
        text.contains("node-2") && text.contains("rejected: zero weight"),
        "{text}"
    );
    let (agg, _) = delta_io::load(&out).unwrap();
    // Coarse: trimmed mean of 1..4 with k = 1 -> 2.5. Domain: node-2 has weight 0 -> (1+2+4)/3.
    assert_eq!(agg.get(coarse).unwrap().data, vec![2.5; 4]);
    let d = agg.get(domain).unwrap().data[0];
    assert!((d - 7.0 / 3.0).abs() < 1e-6, "{d}");
}

#[test]
fn cosine_prefilter_against_the_previous_global() {
    let dir = tempfile::tempdir().unwrap();
    // Two inputs along the previous global, one against it.
    let inputs: Vec<PathBuf> = [1.0f32, 2.0, -3.0]
        .iter()
        .enumerate()
        .map(|(i, v)| {
            write(
                dir.path(),
                &format!("n{i}.safetensors"),
                &[(PEFT_A, vec![4, 2], *v), (PEFT_B, vec![3, 2], *v)],
                &[],
            )
        })
        .collect();
    // The previous global lists its tensors in the other order: it is aligned by name.
    let previous = write(
        dir.path(),
        "prev.safetensors",
        &[(PEFT_B, vec![3, 2], 0.5), (PEFT_A, vec![4, 2], 0.5)],
        &[],
    );
    let out = dir.path().join("agg.safetensors");
    let mut a = args(inputs, out.clone(), Rule::FedAvg, 0);
    a.cosine_threshold = Some(0.0);
    a.previous = Some(previous);
    let mut report = Vec::new();
    run_to(&a, &mut report).unwrap();
    let text = String::from_utf8(report).unwrap();
    assert_eq!(text.matches("rejected").count(), 1, "{text}");
    let (agg, _) = delta_io::load(&out).unwrap();
    // Equal sample weights over the two kept inputs: (1 + 2) / 2.
    assert!(agg.tensors.iter().all(|t| t.data.iter().all(|&x| x == 1.5)));
    // A previous global of another layout is refused with both file names.
    let odd = write(
        dir.path(),
        "odd.safetensors",
        &[(PEFT_A, vec![2, 2], 0.5)],
        &[],
    );
    a.previous = Some(odd);
    let e = run_to(&a, &mut Vec::new()).unwrap_err();
    assert!(format!("{e:#}").contains("odd.safetensors"), "{e:#}");
    // The median reference needs no previous global: the median of (1, 2, −3) is 1, so the
    // input against it is refused the same way.
    let mut m = args(
        a.inputs.clone(),
        dir.path().join("median.safetensors"),
        Rule::FedAvg,
        0,
    );
    m.cosine_threshold = Some(0.0);
    assert!(
        run_to(&m, &mut Vec::new()).is_err(),
        "previous reference without --previous"
    );
    m.cosine_reference = CosineReference::Median;
    let mut report = Vec::new();
    run_to(&m, &mut report).unwrap();
    let text = String::from_utf8(report).unwrap();
    assert_eq!(text.matches("rejected").count(), 1, "{text}");
    let (agg, _) = delta_io::load(&m.out).unwrap();
    assert!(agg.tensors.iter().all(|t| t.data.iter().all(|&x| x == 1.5)));
}
