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
use crate::daemon::journal::Journal;
use crate::daemon::local_data;
use crate::daemon::serving::follow_global;
use crate::daemon::{Runtime, TaloraTrainer};
use crate::serve::{LocalBanks, ModelHandle, State};

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

/// What the daemon builds from its model load: the trainer, plus the tokenizer and chat template
/// its `[serve]` API needs (one load for both).
pub struct Loaded {
    pub trainer: TaloraTrainer,
    pub tokenizer: Box<dyn ruvdllm::tokenizer::Tokenizer>,
    /// The chat template, or why there is none.
    pub chat: Result<ruvdllm::tokenizer::ChatTemplate, String>,
}

/// The TALoRA trainer for validated settings: loads the model and the node's data.
pub fn trainer_for(settings: &Settings) -> anyhow::Result<Loaded> {
    let (mut loaded, tok) = crate::model_arg::load_on(settings.model.as_deref(), settings.device)?;
    let chat = crate::model_arg::chat_template(&mut loaded, None)?;
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
    let trainer = TaloraTrainer::new(
        Arc::new(loaded.model),
        t.spec.clone(),
        examples,
        validation,
        t.options.clone(),
        t.seed,
    )?;
    let trainer = match settings.privacy {
        Some(dp) => {
            tracing::info!(
                clip = dp.clip,
                noise_multiplier = dp.noise_multiplier,
                delta = dp.delta,
                seeded = dp.seed.is_some(),
                "local DP on: every update is clipped and noised before it leaves"
            );
            trainer.with_privacy(dp)
        }
        None => trainer,
    };
    Ok(Loaded {
        trainer,
        tokenizer: tok,
        chat,
    })
}

pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let Loaded {
        mut trainer,
        tokenizer,
        chat,
    } = trainer_for(&settings)?;
    let base = trainer.model().clone();
    let banks = Arc::new(
        LocalBanks::open(
            settings.banks_dir.clone(),
            base.config().d_model,
            settings.key_seed,
        )
        .context("opening the pattern banks")?,
    );
    trainer = trainer.with_banks(banks.clone());
    let spec = settings.train.spec.clone();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let (client, socket) =
            AnyClient::counted(&settings.transport, settings.runtime.max_adapter_bytes)?;
        let mut runtime = Runtime::new(client, trainer, settings.runtime);
        if let Some(path) = &settings.journal {
            runtime = runtime.with_journal(Journal::new(path), Some(socket));
        }
        let api = match settings.serve_listen {
            Some(addr) => {
                let tok: Arc<dyn ruvdllm::tokenizer::Tokenizer> = Arc::from(tokenizer);
                let handle = ModelHandle::new(settings.serve_id.clone(), base.clone(), tok)?;
                match chat {
                    Ok(t) => handle.set_chat_template(t),
                    Err(why) => handle.set_chat_unavailable(why),
                }
                let state = State::new(handle.clone(), settings.serve.clone())?.with_banks(banks);
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the API on {addr}"))?;
                tokio::spawn(follow_global(runtime.global(), handle, base, spec));
                Some(tokio::spawn(crate::serve::run(
                    listener,
                    state,
                    termination(),
                )))
            }
            None => None,
        };
        runtime.run(termination()).await?;
        if let Some(api) = api {
            api.await.context("API task")??;
        }
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
