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
    /// Run the coordinator daemon (gRPC with mutual TLS, /metrics) until SIGTERM.
    Run(crate::run_cmd::ConfigArgs),
    /// Check a coordinator.toml (and the files it names) without starting anything.
    ValidateConfig(crate::run_cmd::ConfigArgs),
    /// Manage the federation's certificates.
    #[command(subcommand)]
    Certs(crate::run_cmd::CertsCmd),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Aggregate(args) => crate::aggregate_cmd::run(args),
        Command::Codec(cmd) => crate::codec_cmd::run(cmd),
        Command::Run(args) => crate::run_cmd::run(args),
        Command::ValidateConfig(args) => crate::run_cmd::validate(args),
        Command::Certs(cmd) => crate::run_cmd::certs(cmd),
    }
}
