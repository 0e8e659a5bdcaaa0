//! `node` — the RuvDLLM node: pretraining, evaluation, generation, conversion.

use clap::Parser;

// Training and inference allocate and free many large tensors per step; glibc's malloc serves each
// with a fresh mmap (page faults, sys time), mimalloc reuses them: a `tiny` pretraining step
// (16 × 64 tokens, release) takes 0.55 s instead of 0.98 s on the 2-core machine.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // hnsw_rs logs every index drop at info; keep it for RUST_LOG=hnsw_rs=info.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hnsw_rs=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = ruvdllm_node::cli::Cli::parse();
    ruvdllm_node::cli::run(cli)
}
