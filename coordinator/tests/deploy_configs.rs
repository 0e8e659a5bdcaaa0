//! Every example `deploy/config/coordinator*.toml` (gRPC and libp2p) passes `coordinator
//! validate-config` (run as the built binary) once the files it names exist, and broken variants
//! are refused naming the field.

use std::path::Path;
use std::process::Command;

use ruvdllm::delta::{Delta, NamedTensor};
use ruvdllm_coordinator::certs::{self, Layout};
use ruvdllm_proto::p2p;

fn validate(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(["validate-config", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

/// Everything the example configs name: certificates, the initial adapter, the libp2p key pair
/// and an allowlist.
fn prepare(dir: &Path) {
    certs::init(&Layout::new(dir.join("certs")), &["localhost".into()]).unwrap();
    let adapter = Delta::new(vec![
        NamedTensor::new("talora.coarse.q.lora_B.weight", vec![4, 2], vec![0.0; 8]).unwrap(),
    ])
    .unwrap();
    ruvdllm::delta_io::save(
        &adapter,
        &dir.join("initial_adapter.safetensors"),
        ruvdllm::delta_io::StoreDtype::F32,
        &Default::default(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    p2p::generate_keypair(&dir.join("keys/coordinator.key")).unwrap();
    let node = p2p::peer_id(&p2p::Keypair::generate_ed25519());
    std::fs::write(dir.join("allowlist.txt"), format!("{node} node-0\n")).unwrap();
}

#[test]
fn example_coordinator_configs_validate() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config");
    let mut examples: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("coordinator") && name.ends_with(".toml")
        })
        .collect();
    examples.sort();
    assert_eq!(examples.len(), 2, "{examples:?}");
    // (example, text replaced, replacement, field named in the refusal)
    let broken = [
        (
            "coordinator.toml",
            "quorum = 3",
            "quorum = 1",
            "round.quorum",
        ),
        (
            "coordinator-libp2p.toml",
            "listen = \"/ip4/0.0.0.0/tcp/7444\"",
            "listen = \"/ip4/0.0.0.0/udp/7444\"",
            "libp2p.listen",
        ),
        (
            "coordinator-libp2p.toml",
            "key = \"keys/coordinator.key\"",
            "key = \"keys/missing.key\"",
            "libp2p.key",
        ),
    ];
    for example in examples {
        let name = example.file_name().unwrap().to_string_lossy().to_string();
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let text = std::fs::read_to_string(&example).unwrap();
        let config = dir.path().join("coordinator.toml");
        std::fs::write(&config, &text).unwrap();
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
