//! Every example `deploy/config/node*.toml` (gRPC and libp2p) passes `node validate-config` (run
//! as the built binary) once the files it names exist, and broken variants are refused naming the
//! field.

use std::path::Path;
use std::process::Command;

use ruvdllm_coordinator::certs::{self, Layout};
use ruvdllm_proto::p2p;

fn validate(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_node"))
        .args(["validate-config", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn example_node_configs_validate() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config");
    let mut examples: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("node") && name.ends_with(".toml")
        })
        .collect();
    examples.sort();
    assert_eq!(examples.len(), 2, "{examples:?}");
    // (example, text replaced, replacement, field named in the refusal)
    let broken = [
        (
            "node.toml",
            "domain = \"arithmetic\"",
            "domain = \"poetry\"",
            "data.domain",
        ),
        (
            "node-libp2p.toml",
            "coordinator_peer_id = \"12D3KooW",
            "coordinator_peer_id = \"x12D3KooW",
            "libp2p.coordinator_peer_id",
        ),
        (
            "node-libp2p.toml",
            "heartbeat_secs = 10",
            "heartbeat_secs = 0",
            "heartbeat_secs",
        ),
    ];
    for example in examples {
        let name = example.file_name().unwrap().to_string_lossy().to_string();
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(&example).unwrap();
        let config = dir.path().join("node.toml");
        std::fs::write(&config, &text).unwrap();
        let pki = Layout::new(dir.path().join("certs"));
        certs::init(&pki, &["coordinator".into()]).unwrap();
        certs::issue(&pki, "node-0").unwrap();
        std::fs::copy(pki.node_cert("node-0"), dir.path().join("certs/node.crt")).unwrap();
        std::fs::copy(pki.node_key("node-0"), dir.path().join("certs/node.key")).unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        p2p::generate_keypair(&dir.path().join("keys/node.key")).unwrap();
        let out = validate(&config);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (file, from, to, field) in broken.iter().filter(|b| b.0 == name) {
            assert!(text.contains(from), "{file} lacks {from}");
            std::fs::write(&config, text.replace(from, to)).unwrap();
            let out = validate(&config);
            assert!(!out.status.success(), "{file}: {to} accepted");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(field), "{file}: {err}");
        }
    }
}
