//! Command-line surface of `node`.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "node",
    version,
    about = "RuvDLLM node: pretrain, fine-tune, evaluate, run and serve a masked-diffusion LM"
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
    /// Chat with an instruct checkpoint in the terminal (multi-turn, its own chat template).
    Chat(crate::chat_cmd::ChatArgs),
    /// Held-out loss, perplexity bound and exact match.
    Eval(crate::eval_cmd::EvalArgs),
    /// Convert a checkpoint to a llama.cpp-layout GGUF file.
    Convert(crate::convert_cmd::ConvertArgs),
    /// Serve the OpenAI-style completion API over HTTP.
    Serve(crate::serve_cmd::ServeArgs),
    /// Fine-tune a TALoRA adapter (B only, A frozen from the run seed) on one built-in domain.
    Finetune(crate::finetune_cmd::FinetuneArgs),
    /// Turn a stored global adapter (the coordinator's `global/round-N.safetensors`, B only) into
    /// a TALoRA folder with A derived from the run seed.
    Export(crate::export_cmd::ExportArgs),
    /// Fill (`insert`) and look into (`inspect`) a node's pattern banks.
    Banks(crate::banks_cmd::BanksArgs),
    /// Print the SHA-256 of a run's frozen A matrices (cross-process determinism checks).
    #[command(hide = true)]
    FrozenADigest(crate::frozen_a_cmd::FrozenAArgs),
    /// Create the node's libp2p key pair and print the peer id for the coordinator's allowlist.
    Keygen(crate::keygen_cmd::KeygenArgs),
    /// Run the node daemon: join the coordinator's rounds until SIGTERM.
    Run(crate::run_cmd::ConfigArgs),
    /// Check a node.toml (and the files it names) without connecting.
    ValidateConfig(crate::run_cmd::ConfigArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Pretrain(args) => crate::pretrain_cmd::run(args),
        Command::Generate(args) => crate::generate_cmd::run(args),
        Command::Chat(args) => crate::chat_cmd::run(args),
        Command::Eval(args) => crate::eval_cmd::run(args),
        Command::Convert(args) => crate::convert_cmd::run(args),
        Command::Serve(args) => crate::serve_cmd::run(args),
        Command::Finetune(args) => crate::finetune_cmd::run(args),
        Command::Export(args) => crate::export_cmd::run(args),
        Command::Banks(args) => crate::banks_cmd::run(args),
        Command::FrozenADigest(args) => crate::frozen_a_cmd::run(args),
        Command::Keygen(args) => crate::keygen_cmd::run(args),
        Command::Run(args) => crate::run_cmd::run(args),
        Command::ValidateConfig(args) => crate::run_cmd::validate(args),
    }
}
