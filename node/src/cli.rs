//! Command-line surface of `node`.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "node",
    version,
    about = "RuvDLLM node: pretrain, evaluate and run a masked-diffusion LM"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a preset from scratch on the built-in pretraining split (or corpus files).
    Pretrain(crate::pretrain_cmd::PretrainArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Pretrain(args) => crate::pretrain_cmd::run(args),
    }
}
