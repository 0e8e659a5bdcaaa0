//! `coordinator run`, `coordinator validate-config`, `coordinator certs …` and `coordinator keygen`.

use std::path::PathBuf;

use anyhow::Context;

use crate::certs::{self, Layout};
use crate::config::{File, Overrides, Settings, Transport};

/// Where the config comes from, plus overrides.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// coordinator.toml
    #[arg(long, env = "RUVDLLM_CONFIG")]
    pub config: PathBuf,
    #[command(flatten)]
    pub overrides: Overrides,
}

impl ConfigArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut f = File::load(&self.config)
            .with_context(|| format!("reading {}", self.config.display()))?;
        f.apply(&self.overrides);
        f.validate()
            .with_context(|| format!("validating {}", self.config.display()))
    }
}

/// `coordinator certs …`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum CertsCmd {
    /// Create the CA and the server certificate in DIR.
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// DNS names or IP addresses nodes use to reach the coordinator.
        #[arg(long = "server-name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        server_names: Vec<String>,
    },
    /// Issue a node certificate (subject CN = NODE) into DIR/nodes/.
    Issue {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        node: String,
    },
    /// Revoke NODE: append it to DIR/revoked.txt (takes effect without a restart).
    Revoke {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        node: String,
    },
}

pub fn certs(cmd: CertsCmd) -> anyhow::Result<()> {
    match cmd {
        CertsCmd::Init { dir, server_names } => {
            certs::init(&Layout::new(&dir), &server_names)?;
            tracing::info!(dir = %dir.display(), "CA and server certificate created");
        }
        CertsCmd::Issue { dir, node } => {
            let (c, k) = certs::issue(&Layout::new(&dir), &node)?;
            tracing::info!(cert = %c.display(), key = %k.display(), "node certificate issued");
        }
        CertsCmd::Revoke { dir, node } => {
            certs::revoke(&Layout::new(&dir).revocation_list(), &node)?;
            tracing::info!(%node, "revoked");
        }
    }
    Ok(())
}

/// `coordinator keygen`
#[derive(clap::Args, Debug, Clone)]
pub struct KeygenArgs {
    /// Where to write the key pair (protobuf-encoded libp2p key, mode 0600); never overwritten.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let kp = ruvdllm_proto::p2p::generate_keypair(&args.out)
        .with_context(|| format!("generating a key pair at {}", args.out.display()))?;
    tracing::info!(out = %args.out.display(), "coordinator key pair written; its peer id:");
    // The one line of output a script captures.
    println!("{}", ruvdllm_proto::p2p::peer_id(&kp));
    Ok(())
}

pub fn validate(args: ConfigArgs) -> anyhow::Result<()> {
    let s = args.settings()?;
    let transport = match &s.transport {
        Transport::Grpc => format!("grpc on {}", s.listen),
        Transport::Libp2p(p) => format!("libp2p on {}/p2p/{}", p.listen, p.peer_id),
    };
    tracing::info!(
        %transport,
        tensors = s.initial_adapter.tensors.len(),
        values = s.initial_adapter.numel(),
        min_nodes = s.round.min_nodes,
        quorum = s.round.quorum,
        server_optimizer = %s.round.server_opt,
        central_dp = %s.round.central_dp.map_or("off".into(), |d| format!(
            "clip {} z {} over {} nodes",
            d.clip, d.noise_multiplier, d.expected_nodes
        )),
        "config is valid"
    );
    Ok(())
}

pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(crate::daemon::run(settings))?;
    Ok(())
}
