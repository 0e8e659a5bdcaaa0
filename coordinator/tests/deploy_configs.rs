//! The example `deploy/config/coordinator.toml` passes `coordinator validate-config` (run as the
//! built binary) once the files it names exist, and a broken variant is refused naming the field.

use std::path::Path;
use std::process::Command;

use ruvdllm::delta::{Delta, NamedTensor};
use ruvdllm_coordinator::certs::{self, Layout};

fn validate(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(["validate-config", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn example_coordinator_config_validates() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/coordinator.toml");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&example).unwrap();
    let config = dir.path().join("coordinator.toml");
    std::fs::write(&config, &text).unwrap();
    certs::init(
        &Layout::new(dir.path().join("certs")),
        &["localhost".into()],
    )
    .unwrap();
    let adapter = Delta::new(vec![
        NamedTensor::new("talora.coarse.q.lora_B.weight", vec![4, 2], vec![0.0; 8]).unwrap(),
    ])
    .unwrap();
    ruvdllm::delta_io::save(
        &adapter,
        &dir.path().join("initial_adapter.safetensors"),
        ruvdllm::delta_io::StoreDtype::F32,
        &Default::default(),
    )
    .unwrap();
    let out = validate(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(&config, text.replace("quorum = 3", "quorum = 1")).unwrap();
    let out = validate(&config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("round.quorum"), "{err}");
}
