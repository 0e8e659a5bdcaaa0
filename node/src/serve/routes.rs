//! The HTTP routes: `/v1/models`, `/v1/completions`, `/v1/chat/completions`, `/health`, and JSON
//! errors for the rest.
//!
//! A completion request goes parse → model check → validation → admission, so a bad request is
//! answered 400/404 even when the server is full, and only a valid one can be refused with 429.
//! The generation itself runs on a blocking thread; the handler (non-streaming) or the response
//! body (streaming) owns the cancel guard, so a client that disconnects stops its generation.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State as AxState};
use axum::http::{Method, StatusCode, Uri};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::mpsc;

use super::chat;
use super::error::{ApiError, json_response};
use super::request;
use super::response::{CardInfo, ChatCompletion, Meta, ModelCard, ModelList};
use super::sse::{CancelOnDrop, EventStream};
use super::state::{Outcome, State, Stats};
use super::worker::{self, Ended, Sink, Work};

/// The completion API as an axum router, ready to serve or to nest in a larger daemon.
pub fn router(state: State) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn card(state: &State) -> ModelCard {
    let snap = state.handle.snapshot();
    ModelCard {
        id: state.handle.id().to_string(),
        object: "model",
        created: state.handle.created(),
        owned_by: "ruvdllm",
        ruvdllm: CardInfo {
            version: snap.version,
            adapter: snap.label,
            patterns: state.banks.as_ref().map(|b| b.read().len()),
        },
    }
}

async fn list_models(AxState(state): AxState<State>) -> Response {
    let list = ModelList {
        object: "list",
        data: vec![card(&state)],
    };
    json_response(StatusCode::OK, &list)
}

async fn get_model(AxState(state): AxState<State>, Path(model): Path<String>) -> Response {
    if model == state.handle.id() {
        json_response(StatusCode::OK, &card(&state))
    } else {
        ApiError::ModelNotFound { model }.into_response()
    }
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    model: String,
    model_version: u64,
    stats: Stats,
}

async fn health(AxState(state): AxState<State>) -> Response {
    let stats = *state.stats().borrow();
    let health = Health {
        status: "ok",
        model: state.handle.id().to_string(),
        model_version: state.handle.snapshot().version,
        stats,
    };
    json_response(StatusCode::OK, &health)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn completions(
    AxState(state): AxState<State>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match completion(state, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BodyTooLarge { limit }
    } else {
        ApiError::BadBody {
            status,
            reason: rejection.body_text(),
        }
    }
}

fn outcome(result: &Result<Ended, ApiError>) -> Outcome {
    match result {
        Ok(Ended::Done(_)) => Outcome::Completed,
        Ok(Ended::Cancelled) => Outcome::Cancelled,
        Err(_) => Outcome::Failed,
    }
}

fn log_end(id: &str, result: &Result<Ended, ApiError>) {
    match result {
        Ok(Ended::Done(c)) => tracing::info!(
            id,
            steps = c.ruvdllm.steps,
            nfe = c.ruvdllm.nfe,
            completion_tokens = c.usage.completion_tokens,
            "completion done"
        ),
        Ok(Ended::Cancelled) => tracing::info!(id, "completion cancelled (client gone)"),
        Err(e) => tracing::warn!(id, error = %e, "completion failed"),
    }
}

async fn chat_completions(
    AxState(state): AxState<State>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = match body.map_err(|r| body_error(r, state.config.max_body_bytes)) {
        Ok(body) => match chat::parse(&body, state.handle.chat_template()) {
            Ok(req) => generate(state, req).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn completion(
    state: State,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| body_error(r, state.config.max_body_bytes))?;
    let req = request::parse(&body)?;
    generate(state, req).await
}

/// Runs a parsed completion or chat request: model check, validation, admission, generation.
async fn generate(state: State, req: request::CompletionRequest) -> Result<Response, ApiError> {
    let handle = state.handle.clone();
    if req.model != handle.id() {
        return Err(ApiError::ModelNotFound { model: req.model });
    }
    let snapshot = handle.snapshot();
    let max_seq_len = snapshot.model.config().max_seq_len;
    let job = req.into_job(
        &state.config,
        handle.tokenizer().as_ref(),
        handle.specials(),
        max_seq_len,
    )?;
    if job.options.dgr.is_some() && state.banks.is_none() {
        return Err(ApiError::InvalidRequest {
            message: "this server has no pattern banks: DGR is not available".into(),
            param: Some("dgr".into()),
            code: None,
        });
    }
    let mut admission = state.try_admit().ok_or(ApiError::Busy {
        max_concurrent: state.config.max_concurrent,
    })?;
    let (id, created) = state.new_id(if job.chat { "chatcmpl" } else { "cmpl" });
    tracing::info!(
        id,
        rows = job.rows(),
        max_tokens = job.options.gen_length,
        steps = job.options.steps,
        rule = job.options.rule.name(),
        stream = job.stream,
        "completion started"
    );
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(Arc::clone(&cancel));
    let stream = job.stream;
    let chat = job.chat;
    let work = Work {
        snapshot,
        tokenizer: Arc::clone(handle.tokenizer()),
        specials: handle.specials(),
        job,
        meta: Meta {
            id: id.clone(),
            created,
            model: handle.id().to_string(),
        },
        cancel,
        banks: state.banks.clone(),
    };

    if !stream {
        let task = tokio::task::spawn_blocking(move || {
            let result = worker::run(work, None);
            log_end(&id, &result);
            admission.set_outcome(outcome(&result));
            result
        });
        let result = task.await.map_err(|e| ApiError::Internal {
            message: format!("the generation task failed: {e}"),
        })?;
        drop(guard);
        return match result? {
            Ended::Done(completion) if chat => Ok(json_response(
                StatusCode::OK,
                &ChatCompletion::from(completion),
            )),
            Ended::Done(completion) => Ok(json_response(StatusCode::OK, &completion)),
            Ended::Cancelled => Err(ApiError::Internal {
                message: "the generation was cancelled".into(),
            }),
        };
    }

    let (tx, mut rx) = mpsc::channel(state.config.stream_buffer);
    let sink = Sink {
        tx,
        runtime: tokio::runtime::Handle::current(),
        stall_timeout: state.config.stall_timeout,
    };
    let task = tokio::task::spawn_blocking(move || {
        let result = worker::run(work, Some(&sink));
        log_end(&id, &result);
        admission.set_outcome(outcome(&result));
        result
    });
    // Wait for the first event: an invalid option fails before any, and is still a plain error.
    match rx.recv().await {
        Some(first) => {
            let events = EventStream::new(first, rx, guard);
            Ok(Sse::new(events)
                .keep_alive(KeepAlive::default())
                .into_response())
        }
        None => match task.await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(ApiError::Internal {
                message: "the generation ended without producing any event".into(),
            }),
            Err(e) => Err(ApiError::Internal {
                message: format!("the generation task failed: {e}"),
            }),
        },
    }
}
