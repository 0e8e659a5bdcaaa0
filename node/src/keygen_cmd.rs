//! `node keygen --out FILE`: creates the node's libp2p identity (an ed25519 key pair, owner-only
//! permissions) and prints its peer id, the line an operator adds to the coordinator's allowlist.
//! It never overwrites an existing key: that would silently change who the node is.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ruvdllm_proto::p2p;

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the key pair (protobuf-encoded libp2p key, mode 0600).
    #[arg(long)]
    pub out: PathBuf,
    /// Optional node name to print on the allowlist line.
    #[arg(long)]
    pub name: Option<String>,
}

pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let keypair = p2p::generate_keypair(&args.out)
        .with_context(|| format!("generating a key pair at {}", args.out.display()))?;
    let line = allowlist_line(&p2p::peer_id(&keypair), args.name.as_deref());
    eprintln!(
        "wrote {}; add this line to the coordinator's allowlist:",
        args.out.display()
    );
    println!("{line}");
    Ok(())
}

fn allowlist_line(peer: &p2p::PeerId, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{peer} {n}"),
        None => peer.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_loadable_key_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("node.key");
        run(KeygenArgs {
            out: out.clone(),
            name: Some("node-3".into()),
        })
        .unwrap();
        let kp = p2p::load_keypair(&out).unwrap();
        let line = allowlist_line(&p2p::peer_id(&kp), Some("node-3"));
        let list = p2p::Allowlist::parse(&line).unwrap();
        assert_eq!(list.name(&p2p::peer_id(&kp)), Some("node-3"));
        assert!(run(KeygenArgs { out, name: None }).is_err());
    }
}
