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
    /// Generate text by masked diffusion from a prompt.
    Generate(crate::generate_cmd::GenerateArgs),
    /// Held-out loss, perplexity bound and exact match.
    Eval(crate::eval_cmd::EvalArgs),
    /// Convert a checkpoint to a llama.cpp-layout GGUF file.
    Convert(crate::convert_cmd::ConvertArgs),
    /// Run the node daemon: join the coordinator's rounds until SIGTERM.
    Run(crate::run_cmd::ConfigArgs),
    /// Check a node.toml (and the files it names) without connecting.
    ValidateConfig(crate::run_cmd::ConfigArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Pretrain(args) => crate::pretrain_cmd::run(args),
        Command::Generate(args) => crate::generate_cmd::run(args),
        Command::Eval(args) => crate::eval_cmd::run(args),
        Command::Convert(args) => crate::convert_cmd::run(args),
        Command::Run(args) => crate::run_cmd::run(args),
        Command::ValidateConfig(args) => crate::run_cmd::validate(args),
    }
}
