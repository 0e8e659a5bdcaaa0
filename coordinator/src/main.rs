//! `coordinator` — the RuvDLLM coordinator's command-line entry point.

use clap::Parser;

// Simulations train ten nodes in-process: many large tensors per step, which glibc's malloc serves
// with fresh mmaps (page faults, sys time); mimalloc reuses them (1.8x faster training steps).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
