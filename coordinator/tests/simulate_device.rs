//! `simulate --device`: a GPU in a build without the `cuda` feature is refused with the rebuild
//! instruction before anything is written; a bad spelling is a usage error.

#![cfg(feature = "sim")]

use std::process::Command;

fn simulate(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .arg("simulate")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the coordinator binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_refused_before_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sim-out");
    let (code, stderr) = simulate(&["--device", "cuda", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--features cuda"), "{stderr}");
    assert!(
        !out.exists(),
        "a refused run must not create {}",
        out.display()
    );
}

#[test]
fn bad_device_spelling_is_a_usage_error() {
    let (code, stderr) = simulate(&["--device", "cuda0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("expected cpu, cuda or cuda:N"), "{stderr}");
}
