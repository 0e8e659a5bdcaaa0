//! `node serve`: the OpenAI-style completion API over HTTP (see [`crate::serve`]).
//!
//! Loads the model once, then hands a listener, the shared state and a shutdown future to
//! [`crate::serve::run`]; Ctrl-C or SIGTERM stops accepting connections and lets the requests in
//! flight finish.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::serve::{self, Config, ModelHandle, State};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[command(flatten)]
    pub base: crate::model_arg::ModelArgs,
    /// A Jinja chat template for `/v1/chat/completions` instead of the checkpoint's own (rendered
    /// like `transformers`' `apply_chat_template`, with the checkpoint's special-token strings).
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Model id clients must name (default: the folder or file name).
    #[arg(long)]
    pub model_id: Option<String>,
    /// Generations running at once; more get 429.
    #[arg(long, default_value_t = Config::default().max_concurrent)]
    pub max_concurrent: usize,
    /// Largest `max_tokens` a request may ask for.
    #[arg(long, default_value_t = Config::default().max_tokens)]
    pub max_tokens: usize,
    /// `max_tokens` of a request that names none.
    #[arg(long, default_value_t = Config::default().default_max_tokens)]
    pub default_max_tokens: usize,
    /// Longest prompt in tokens (BOS included).
    #[arg(long, default_value_t = Config::default().max_prompt_tokens)]
    pub max_prompt_tokens: usize,
    /// Most denoising steps a request may ask for.
    #[arg(long, default_value_t = Config::default().max_steps)]
    pub max_steps: usize,
    /// Most rows (prompts × n) per request.
    #[arg(long, default_value_t = Config::default().max_rows)]
    pub max_rows: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = Config::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Seconds a streaming client may read nothing before its generation is cancelled.
    #[arg(long, default_value_t = Config::default().stall_timeout.as_secs())]
    pub stall_timeout_s: u64,
}

impl ServeArgs {
    pub fn config(&self) -> Config {
        Config {
            max_tokens: self.max_tokens,
            default_max_tokens: self.default_max_tokens.min(self.max_tokens),
            max_prompt_tokens: self.max_prompt_tokens,
            max_steps: self.max_steps,
            max_rows: self.max_rows,
            max_concurrent: self.max_concurrent,
            max_body_bytes: self.max_body_bytes,
            stream_buffer: Config::default().stream_buffer,
            stall_timeout: Duration::from_secs(self.stall_timeout_s),
        }
    }
}

/// The id a model is served under when none is given: its folder or file name.
fn default_id(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "ruvdllm".to_string())
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config();
    config.validate().context("invalid serve limits")?;
    let path = args.base.path();
    let (mut loaded, tok, adapters) = args.base.load()?;
    tracing::info!(model = %path.display(), kind = %loaded.kind, adapters = %adapters.trim_start_matches(" + "), "model loaded");
    let id = args.model_id.clone().unwrap_or_else(|| default_id(&path));
    let chat = crate::model_arg::chat_template(&mut loaded, args.chat_template.as_deref())?;
    match &chat {
        Ok(_) => tracing::info!("chat completions use the model's chat template"),
        Err(why) => tracing::info!(%why, "no chat completions"),
    }
    let handle = ModelHandle::from_loaded(id, loaded, tok).context("serving the model")?;
    match chat {
        Ok(t) => handle.set_chat_template(t),
        Err(why) => handle.set_chat_unavailable(why),
    }
    let state = State::new(handle, config).context("invalid serve limits")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        serve::run(listener, state, shutdown_signal())
            .await
            .context("serving")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_come_from_the_path() {
        assert_eq!(default_id(Path::new("/a/b/tiny")), "tiny");
        assert_eq!(default_id(Path::new("m/llada.gguf")), "llada");
        assert_eq!(default_id(Path::new("/")), "ruvdllm");
    }
}
