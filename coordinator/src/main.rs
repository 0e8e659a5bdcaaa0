//! `coordinator` — the RuvDLLM coordinator's command-line entry point.

use clap::Parser;

// The system allocator, unlike `node` (mimalloc): measured on the 2-core machine, glibc gave the
// faster rounds here — the default `simulate` 91.5 s vs 108 s, and a 100-node round of
// `round_report` 7–9 s vs 15–22 s in round 1.

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
