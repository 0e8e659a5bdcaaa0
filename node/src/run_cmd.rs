//! `node run` and `node validate-config`.
//!
//! `run` loads the base model (`base_model`, else the committed tiny base) at f32, assembles the
//! node's `[data]` (training samples plus a local validation set) and trains each round with the
//! TALoRA trainer ([`TaloraTrainer`]) configured by `[train]`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::config::{File, Overrides, Settings};
use crate::daemon::any_client::AnyClient;
use crate::daemon::local_data;
use crate::daemon::{Runtime, TaloraTrainer};

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
    tracing::info!(node_id = %s.runtime.node_id, coordinator = %s.transport.describe(), data = ?s.data, "config is valid");
    Ok(())
}

/// The TALoRA trainer for validated settings: loads the model and the node's data.
pub fn trainer_for(settings: &Settings) -> anyhow::Result<TaloraTrainer> {
    let (loaded, tok) = crate::model_arg::load(settings.model.as_deref())?;
    let t = &settings.train;
    // Room for BOS and at least one EOS in a packed row.
    let max_len = t.options.seq_len.saturating_sub(2);
    let data = local_data::load(
        &settings.data,
        settings.samples,
        settings.validation,
        max_len,
    )
    .context("assembling the node's data")?;
    tracing::info!(
        model = %crate::model_arg::resolve(settings.model.as_deref()).display(),
        data = ?settings.data,
        train = data.train.len(),
        validation = data.validation.len(),
        steps = t.options.steps,
        "local TALoRA trainer ready"
    );
    let examples = ruvdllm::eval::examples(&data.train, tok.as_ref());
    let validation = ruvdllm::eval::examples(&data.validation, tok.as_ref());
    Ok(TaloraTrainer::new(
        Arc::new(loaded.model),
        t.spec.clone(),
        examples,
        validation,
        t.options.clone(),
        t.seed,
    )?)
}

pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let trainer = trainer_for(&settings)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let client = AnyClient::connect(&settings.transport, settings.runtime.max_adapter_bytes)?;
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
