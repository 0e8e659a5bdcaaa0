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
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Aggregate(args) => crate::aggregate_cmd::run(args),
        Command::Codec(cmd) => crate::codec_cmd::run(cmd),
    }
}
