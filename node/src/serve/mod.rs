//! The OpenAI-style generation API a node serves to its local clients.
//!
//! `GET /v1/models` lists the one served model; `POST /v1/completions` generates by masked
//! diffusion, with the sampler's options as extension fields; `POST /v1/chat/completions` does the
//! same for a conversation rendered with the model's own chat template (instruct checkpoints). With `stream: true` the response is
//! server-sent events whose `choices[].text` are the newly committed *left-to-right* text — so a
//! plain OpenAI client concatenating deltas gets exactly the final completion — while the
//! extension field `ruvdllm.canvas` carries each step's whole denoising canvas for clients that
//! want to watch diffusion happen.
//!
//! The module is a library so the node daemon mounts the same [`router`] next to its other
//! routes and tests serve it on `127.0.0.1:0`; `node serve` is a thin binary around [`run`]. The
//! pieces, one per file: limits ([`Config`]), the swappable model ([`ModelHandle`]), shared state
//! and admission ([`State`]), request validation, the per-step text tracker, the blocking
//! generation worker, the SSE body, the routes, and the error mapping ([`ApiError`]).

mod banks;
mod chat;
mod config;
mod error;
mod model_handle;
mod request;
mod response;
mod routes;
mod sse;
mod state;
mod text;
mod worker;

use std::future::Future;

pub use banks::{BanksError, LocalBanks};
pub use config::{Config, ConfigError};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use model_handle::{HandleError, ModelHandle, NO_CHAT_TEMPLATE, Snapshot};
pub use request::{CompletionRequest, Job, Prompt};
pub use response::{
    CardInfo, ChatChoice, ChatChunk, ChatChunkChoice, ChatCompletion, ChatDelta, ChatMessage,
    Choice, Chunk, Completion, DgrTouch, ModelCard, ModelList, RunInfo, StepInfo, Usage,
};
pub use routes::router;
pub use state::{State, Stats};
pub use text::{FinishReason, TextTracker};

/// Serves the completion API on `listener` until `shutdown` resolves, then lets requests in
/// flight finish (graceful shutdown).
pub async fn run(
    listener: tokio::net::TcpListener,
    state: State,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        model = state.handle().id(),
        max_concurrent = state.config().max_concurrent,
        max_tokens = state.config().max_tokens,
        "serving the completion API"
    );
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("completion API stopped");
    Ok(())
}
