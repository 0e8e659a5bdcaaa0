//! Command-line surface of `coordinator`.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "coordinator",
    version,
    about = "RuvDLLM coordinator: robust aggregation of TALoRA deltas"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Aggregate deltas or adapters (safetensors) offline with a robust rule.
    Aggregate(crate::aggregate_cmd::AggregateArgs),
    /// Encode, decode or inspect the delta wire format.
    #[command(subcommand)]
    Codec(crate::codec_cmd::CodecCmd),
    /// Run the coordinator daemon (gRPC with mutual TLS or libp2p, /metrics) until SIGTERM.
    Run(crate::run_cmd::ConfigArgs),
    /// Check a coordinator.toml (and the files it names) without starting anything.
    ValidateConfig(crate::run_cmd::ConfigArgs),
    /// Create the coordinator's libp2p key pair (ed25519) and print its peer id, which nodes put
    /// in their config as `libp2p.coordinator_peer_id`.
    Keygen(crate::run_cmd::KeygenArgs),
    /// Manage the federation's certificates.
    #[command(subcommand)]
    Certs(crate::run_cmd::CertsCmd),
    /// Simulate federated rounds: the coordinator and N nodes on this machine over real
    /// loopback sockets (gRPC+mTLS or libp2p), with a round table, report.json and SVG plots.
    #[cfg(feature = "sim")]
    Simulate(Box<crate::sim::SimArgs>),
    /// Run one node daemon (`node run`'s code; used by `simulate --processes`).
    #[cfg(feature = "sim")]
    #[command(hide = true)]
    SimNode(ruvdllm_node::run_cmd::ConfigArgs),
}

impl Cli {
    /// The log filter used when `RUST_LOG` is unset: the daemons log at `info`; `simulate` prints
    /// its own round table, so its eleven in-process daemons only log warnings and errors.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            #[cfg(feature = "sim")]
            Command::Simulate(_) => "warn",
            _ => "info",
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Aggregate(args) => crate::aggregate_cmd::run(args),
        Command::Codec(cmd) => crate::codec_cmd::run(cmd),
        Command::Run(args) => crate::run_cmd::run(args),
        Command::ValidateConfig(args) => crate::run_cmd::validate(args),
        Command::Certs(cmd) => crate::run_cmd::certs(cmd),
        Command::Keygen(args) => crate::run_cmd::keygen(args),
        #[cfg(feature = "sim")]
        Command::Simulate(args) => crate::sim::cmd::command(*args),
        #[cfg(feature = "sim")]
        Command::SimNode(args) => ruvdllm_node::run_cmd::run(args),
    }
}
