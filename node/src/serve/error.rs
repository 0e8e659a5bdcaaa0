//! Every way a request can fail, as one typed enum rendered in OpenAI's error shape.
//!
//! OpenAI clients parse `{"error": {"message", "type", "param", "code"}}` and branch on the HTTP
//! status (retrying 429 with back-off, surfacing 400 messages), so every failure — malformed JSON,
//! an option the sampler rejects, an unknown route, a full server — goes through [`ApiError`] and
//! leaves in that shape. This is the one place that maps domain errors to HTTP.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ruvdllm::sampler;
use serde::Serialize;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or asks for something unsupported or over a limit.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    #[error("the model `{model}` does not exist")]
    ModelNotFound { model: String },
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("the request body is larger than the {limit}-byte limit")]
    BodyTooLarge { limit: usize },
    #[error("the request body could not be read: {reason}")]
    BadBody { status: StatusCode, reason: String },
    #[error("the server is already running {max_concurrent} generations; retry later")]
    Busy { max_concurrent: usize },
    #[error("generation failed: {message}")]
    Internal { message: String },
}

/// The JSON body of an error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 about one request field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }

    /// A 400 for a value above a server limit.
    pub fn over_limit(param: &str, got: impl std::fmt::Display, max: usize) -> Self {
        ApiError::InvalidRequest {
            message: format!("`{param}` is {got}, more than this server's limit of {max}"),
            param: Some(param.to_string()),
            code: Some("limit_exceeded"),
        }
    }

    /// A 400 for a feature this server does not implement.
    pub fn unsupported(param: &str, what: &str) -> Self {
        ApiError::InvalidRequest {
            message: format!("`{param}`: {what} is not supported by this server"),
            param: Some(param.to_string()),
            code: Some("unsupported_parameter"),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::ModelNotFound { .. } | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody { status, .. } => *status,
            ApiError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (kind, param, code) = match self {
            ApiError::InvalidRequest { param, code, .. } => {
                ("invalid_request_error", param.clone(), *code)
            }
            ApiError::ModelNotFound { .. } => (
                "invalid_request_error",
                Some("model".to_string()),
                Some("model_not_found"),
            ),
            ApiError::NotFound { .. } => ("invalid_request_error", None, Some("unknown_url")),
            ApiError::MethodNotAllowed { .. } => {
                ("invalid_request_error", None, Some("method_not_allowed"))
            }
            ApiError::BodyTooLarge { .. } => {
                ("invalid_request_error", None, Some("request_too_large"))
            }
            ApiError::BadBody { .. } => ("invalid_request_error", None, None),
            ApiError::Busy { .. } => ("requests", None, Some("rate_limit_exceeded")),
            ApiError::Internal { .. } => ("server_error", None, None),
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind,
                param,
                code,
            },
        }
    }

    /// Maps a sampler error: bad options and prompts are the client's (400, with the API field
    /// that caused it), a failing model is ours (500).
    pub fn from_sampler(e: &sampler::Error) -> Self {
        use sampler::Error as E;
        let param = match e {
            E::InvalidOption { option, .. } | E::Inapplicable { option, .. } => {
                Some(api_param(option))
            }
            E::BlockLength { .. } => Some("block_length"),
            E::Steps { .. } => Some("steps"),
            E::TooLarge { what, .. } => Some(api_param(what)),
            E::EmptyRequest
            | E::EmptyPrompt { .. }
            | E::TokenOutOfVocab { .. }
            | E::MaskInPrompt { .. } => Some("prompt"),
            E::SpecialOutOfVocab { .. }
            | E::LogitsShape { .. }
            | E::NonFiniteLogits { .. }
            | E::NoCandidateToken { .. }
            | E::HiddenShape { .. }
            | E::Dgr(_)
            | E::Model(_) => None,
        };
        match param {
            Some(param) => ApiError::InvalidRequest {
                message: e.to_string(),
                param: Some(param.to_string()),
                code: None,
            },
            None => ApiError::Internal {
                message: e.to_string(),
            },
        }
    }
}

/// The API field behind a sampler option name.
fn api_param(option: &str) -> &'static str {
    match option {
        "gen_length" => "max_tokens",
        "cfg_scale" => "cfg",
        "refresh_every" => "cache_refresh",
        "logits_eos_inf" => "no_eos",
        "confidence_eos_eot_inf" => "eos_last",
        "temperature" => "temperature",
        "threshold" => "threshold",
        "steps" => "steps",
        "top_p" => "top_p",
        "top_k" => "top_k",
        "alg_temp" => "alg_temp",
        "eps" => "eps",
        o if o.starts_with("dgr") => "dgr",
        _ => "options",
    }
}

/// An OpenAI-shaped JSON response with `status`.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut resp = (status, bytes).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "serializing a response failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request rejected");
        }
        json_response(status, &self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_statuses() {
        let e = ApiError::over_limit("max_tokens", 999, 64);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let v = serde_json::to_value(e.body()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "max_tokens");
        assert_eq!(v["error"]["code"], "limit_exceeded");
        assert!(v["error"]["message"].as_str().unwrap().contains("999"));

        let busy = ApiError::Busy { max_concurrent: 1 };
        assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
        let v = serde_json::to_value(busy.body()).unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn sampler_errors_map_to_api_fields() {
        let e = ApiError::from_sampler(&sampler::Error::InvalidOption {
            option: "gen_length",
            reason: "0 is not in range".into(),
        });
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.body().error.param.as_deref(), Some("max_tokens"));
        let e = ApiError::from_sampler(&sampler::Error::NonFiniteLogits {
            row: 0,
            position: 3,
        });
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.body().error.kind, "server_error");
    }
}
