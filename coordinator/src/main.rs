//! `coordinator` — the RuvDLLM coordinator's command-line entry point.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = ruvdllm_coordinator::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| cli.default_log_filter().into()),
        )
        .with_writer(std::io::stderr)
        .init();
    ruvdllm_coordinator::cli::run(cli)
}
