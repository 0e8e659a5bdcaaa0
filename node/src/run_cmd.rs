//! `node run` and `node validate-config`.
//!
//! `run` needs a [`LocalTrainer`] for the configured `[data]`. The
//! TALoRA trainer lives on the adapter branch and is wired in [`trainer_for`] when it lands; until
//! then `node run` validates everything, then refuses with a clear error instead of training with
//! something that is not the real objective.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::{DataSource, File, Overrides, Settings};
use crate::daemon::grpc_client::GrpcClient;
use crate::daemon::{LocalTrainer, Runtime};

/// Where the config comes from, plus overrides.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// node.toml
    #[arg(long, env = "RUVDLLM_CONFIG")]
    pub config: PathBuf,
    #[command(flatten)]
    pub overrides: Overrides,
}

impl ConfigArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut f = File::load(&self.config)
            .with_context(|| format!("reading {}", self.config.display()))?;
        f.apply(&self.overrides);
        f.validate()
            .with_context(|| format!("validating {}", self.config.display()))
    }
}

pub fn validate(args: ConfigArgs) -> anyhow::Result<()> {
    let s = args.settings()?;
    tracing::info!(node_id = %s.runtime.node_id, coordinator = %s.target.addr, data = ?s.data, "config is valid");
    Ok(())
}

/// The trainer for a data source.
pub fn trainer_for(data: &DataSource) -> anyhow::Result<Box<dyn LocalTrainer>> {
    anyhow::bail!(
        "no TALoRA trainer in this build (data {data:?}): the local trainer arrives with the \
         adapter module; the daemon runtime accepts any `LocalTrainer`"
    )
}

pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let trainer = trainer_for(&settings.data)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let client = GrpcClient::new(&settings.target, settings.runtime.max_adapter_bytes)?;
        let runtime = Runtime::new(client, trainer, settings.runtime);
        runtime.run(termination()).await?;
        anyhow::Ok(())
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
