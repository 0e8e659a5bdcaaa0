//! The example `deploy/config/node.toml` passes `node validate-config` (run as the built binary)
//! once its certificate files exist, and a broken variant is refused naming the field.

use std::path::Path;
use std::process::Command;

use ruvdllm_coordinator::certs::{self, Layout};

fn validate(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_node"))
        .args(["validate-config", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn example_node_config_validates() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/node.toml");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&example).unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, &text).unwrap();
    let pki = Layout::new(dir.path().join("certs"));
    certs::init(&pki, &["coordinator".into()]).unwrap();
    certs::issue(&pki, "node-0").unwrap();
    std::fs::copy(pki.node_cert("node-0"), dir.path().join("certs/node.crt")).unwrap();
    std::fs::copy(pki.node_key("node-0"), dir.path().join("certs/node.key")).unwrap();
    let out = validate(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(
        &config,
        text.replace("domain = \"arithmetic\"", "domain = \"poetry\""),
    )
    .unwrap();
    let out = validate(&config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data.domain"), "{err}");
}
