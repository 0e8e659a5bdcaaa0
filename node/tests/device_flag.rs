//! `--device`: the CPU runs, a bad spelling is a usage error, and a GPU in a build without the
//! `cuda` feature is refused with the rebuild instruction (never silently run on the CPU).

use std::process::Command;

fn node(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_node"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the node binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const EVAL: [&str; 9] = [
    "eval",
    "--domain",
    "arithmetic",
    "--n",
    "2",
    "--mc",
    "1",
    "--no-generate",
    "--device",
];

#[test]
fn cpu_runs_and_bad_spellings_are_usage_errors() {
    let (code, stdout, stderr) = node(&[&EVAL[..], &["cpu"]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("| arithmetic |"), "{stdout}");

    let (code, _, stderr) = node(&[&EVAL[..], &["tpu"]].concat());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("expected cpu, cuda or cuda:N"), "{stderr}");
    let (code, _, stderr) = node(&[&EVAL[..], &["cuda:first"]].concat());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("ordinal"), "{stderr}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_refused_with_the_rebuild_instruction() {
    for cmd in [
        &[&EVAL[..], &["cuda"]].concat()[..],
        &["generate", "--prompt", "1+1=", "--device", "cuda:1"],
        &[
            "pretrain",
            "--out",
            "unused-dir",
            "--steps",
            "1",
            "--device",
            "cuda",
        ],
    ] {
        let (code, _, stderr) = node(cmd);
        assert_eq!(code, 1, "{cmd:?}: {stderr}");
        assert!(
            stderr.contains("built without CUDA support") && stderr.contains("--features cuda"),
            "{cmd:?}: {stderr}"
        );
    }
    assert!(!std::path::Path::new("unused-dir").exists());
}
