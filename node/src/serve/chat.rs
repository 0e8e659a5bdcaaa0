//! `POST /v1/chat/completions`: OpenAI's chat request, rendered with the served model's chat
//! template into a prompt, then the completion pipeline.
//!
//! The body is a completion body with `messages` instead of `prompt` (and
//! `max_completion_tokens` as another name for `max_tokens`); every sampler extension field of
//! `/v1/completions` works the same. The messages are rendered exactly as `transformers`'
//! `apply_chat_template(messages, add_generation_prompt=True)` renders them
//! ([`ruvdllm::tokenizer::ChatTemplate`]) and tokenized without adding BOS, as `transformers` does.
//! Message `content` is a string, `null`, or a list of text parts (joined with newlines). What a
//! masked-diffusion text model cannot honour is refused by name: tools and tool calls, image or
//! audio parts, JSON response formats, log-probabilities, and the completion-only fields.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::request::{self, CompletionRequest, type_name};
use ruvdllm::tokenizer::ChatTemplate;

/// Roles a message may have (OpenAI's, `developer` included; templates decide what they accept).
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];
/// Completion-only fields, refused so a client learns it called the wrong endpoint.
const COMPLETION_ONLY: [&str; 4] = ["prompt", "echo", "suffix", "best_of"];
/// Most messages a request may carry.
pub const MAX_MESSAGES: usize = 1024;

/// A message's `content` as one string: text parts joined with newlines; other parts refused.
fn content_text(i: usize, content: &Value) -> Result<Value, ApiError> {
    let param = format!("messages[{i}].content");
    match content {
        Value::String(_) | Value::Null => Ok(content.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    (Some("text"), _) => {
                        return Err(ApiError::invalid(
                            param,
                            format!("content part {j} has type `text` but no string `text`"),
                        ));
                    }
                    (Some(other), _) => {
                        return Err(ApiError::unsupported(
                            &param,
                            &format!("a content part of type `{other}` (this model reads text)"),
                        ));
                    }
                    (None, _) => {
                        return Err(ApiError::invalid(
                            param,
                            format!("content part {j} has no string `type`"),
                        ));
                    }
                }
            }
            Ok(Value::String(texts.join("\n")))
        }
        other => Err(ApiError::invalid(
            param,
            format!(
                "`content` must be a string, null or a list of parts, got {}",
                type_name(other)
            ),
        )),
    }
}

/// The messages, checked and with their content flattened to text.
fn messages(value: Option<Value>) -> Result<Vec<Value>, ApiError> {
    let list = match value {
        Some(Value::Array(list)) => list,
        None => return Err(ApiError::invalid("messages", "`messages` is required")),
        Some(other) => {
            return Err(ApiError::invalid(
                "messages",
                format!("`messages` must be an array, got {}", type_name(&other)),
            ));
        }
    };
    if list.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` is empty"));
    }
    if list.len() > MAX_MESSAGES {
        return Err(ApiError::over_limit(
            "messages",
            format!("{} messages", list.len()),
            MAX_MESSAGES,
        ));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let Value::Object(mut m) = m else {
                return Err(ApiError::invalid(
                    format!("messages[{i}]"),
                    format!("a message must be an object, got {}", type_name(&m)),
                ));
            };
            match m.get("role") {
                Some(Value::String(r)) if ROLES.contains(&r.as_str()) => {}
                Some(Value::String(r)) => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].role"),
                        format!("unknown role `{r}` (expected one of {})", ROLES.join(", ")),
                    ));
                }
                _ => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].role"),
                        "a message needs a string `role`",
                    ));
                }
            }
            if m.contains_key("tool_calls") || m.contains_key("function_call") {
                return Err(ApiError::unsupported(
                    &format!("messages[{i}].tool_calls"),
                    "tool calls",
                ));
            }
            let content = m.get("content").cloned().unwrap_or(Value::Null);
            m.insert("content".into(), content_text(i, &content)?);
            Ok(Value::Object(m))
        })
        .collect()
}

/// Removes `key`, refusing any value but the neutral ones.
fn neutral(
    body: &mut Map<String, Value>,
    key: &str,
    is_neutral: impl Fn(&Value) -> bool,
    what: &str,
) -> Result<(), ApiError> {
    match body.remove(key) {
        Some(v) if !v.is_null() && !is_neutral(&v) => Err(ApiError::unsupported(key, what)),
        _ => Ok(()),
    }
}

/// Parses a chat body and renders its messages with `template` (`Err` when the served model has
/// none: its reason). The result is a completion request for the same generation.
pub fn parse(
    body: &[u8],
    template: Result<ChatTemplate, String>,
) -> Result<CompletionRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequest {
        message: format!("invalid JSON body: {e}"),
        param: None,
        code: None,
    })?;
    let Value::Object(mut body) = value else {
        return Err(ApiError::invalid(
            "body",
            format!("the body must be a JSON object, got {}", type_name(&value)),
        ));
    };
    for key in COMPLETION_ONLY {
        if body.contains_key(key) {
            return Err(ApiError::invalid(
                key,
                format!("`{key}` is a /v1/completions field, not a chat completion field"),
            ));
        }
    }
    let msgs = messages(body.remove("messages"))?;
    neutral(
        &mut body,
        "tools",
        |v| v.as_array().is_some_and(Vec::is_empty),
        "tools (tool calling)",
    )?;
    neutral(
        &mut body,
        "tool_choice",
        |v| v.as_str() == Some("none"),
        "a tool choice other than `none`",
    )?;
    neutral(
        &mut body,
        "parallel_tool_calls",
        |v| v.is_boolean(),
        "`parallel_tool_calls` other than a boolean",
    )?;
    neutral(
        &mut body,
        "response_format",
        |v| v.get("type").and_then(Value::as_str) == Some("text"),
        "a response format other than text",
    )?;
    neutral(
        &mut body,
        "logprobs",
        |v| v.as_bool() == Some(false),
        "logprobs",
    )?;
    neutral(
        &mut body,
        "top_logprobs",
        |v| v.as_u64() == Some(0),
        "top_logprobs",
    )?;
    if let Some(m) = body.remove("max_completion_tokens") {
        match body.get("max_tokens") {
            Some(t) if *t != m => {
                return Err(ApiError::invalid(
                    "max_completion_tokens",
                    "`max_completion_tokens` and `max_tokens` differ",
                ));
            }
            _ => {
                body.insert("max_tokens".into(), m);
            }
        }
    }
    let template = template.map_err(|reason| ApiError::InvalidRequest {
        message: reason,
        param: Some("messages".into()),
        code: Some("chat_template_unavailable"),
    })?;
    let prompt = template
        .render(&msgs, None, true)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    body.insert("prompt".into(), Value::String(prompt));
    let bytes = serde_json::to_vec(&Value::Object(body)).map_err(|e| ApiError::Internal {
        message: format!("re-encoding the chat request: {e}"),
    })?;
    let mut req = request::parse(&bytes)?;
    req.chat = true;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Result<ChatTemplate, String> {
        let vars = serde_json::json!({"bos_token": "<s>"});
        Ok(ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
            vars.as_object().unwrap().clone(),
        )
        .unwrap())
    }

    fn parsed(body: &str) -> Result<CompletionRequest, ApiError> {
        parse(body.as_bytes(), template())
    }

    fn param(e: ApiError) -> Option<String> {
        e.body().error.param
    }

    #[test]
    fn messages_render_into_the_prompt() {
        let r = parsed(
            r#"{"model": "m", "messages": [{"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
                "max_completion_tokens": 8, "steps": 4, "tool_choice": "none", "logprobs": false}"#,
        )
        .unwrap();
        assert!(r.chat);
        assert_eq!(r.prompt, "<s>[system]be brief[user]a\nb[assistant]");
        assert_eq!(r.max_tokens, Some(8));
        assert_eq!(r.steps, Some(4));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let cases = [
            (r#"{"model": "m"}"#, "messages"),
            (r#"{"model": "m", "messages": []}"#, "messages"),
            (r#"{"model": "m", "messages": "hi"}"#, "messages"),
            (r#"{"model": "m", "messages": [3]}"#, "messages[0]"),
            (
                r#"{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model": "m", "messages": [{"content": "x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": 5}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "assistant", "tool_calls": []}]}"#,
                "messages[0].tool_calls",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}"#,
                "tools",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}"#,
                "response_format",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true}"#,
                "logprobs",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "prompt": "x"}"#,
                "prompt",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "echo": true}"#,
                "echo",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4, "max_completion_tokens": 5}"#,
                "max_completion_tokens",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stepz": 4}"#,
                ".",
            ),
        ];
        for (body, want) in cases {
            let e = parsed(body).expect_err(body);
            let got = param(e);
            if want == "." {
                // An unknown field: the completion parser names it in the message.
                continue;
            }
            assert_eq!(got.as_deref(), Some(want), "{body}");
        }
    }

    #[test]
    fn a_model_without_a_template_is_a_clear_400() {
        let e = parse(
            br#"{"model": "m", "messages": [{"role": "user", "content": "x"}]}"#,
            Err("no template here".into()),
        )
        .unwrap_err();
        let body = e.body();
        assert_eq!(body.error.message, "no template here");
        assert_eq!(body.error.code, Some("chat_template_unavailable"));
    }

    #[test]
    fn a_template_exception_is_a_400_on_messages() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}",
            Map::new(),
        )
        .unwrap();
        let e = parse(
            br#"{"model": "m", "messages": [{"role": "assistant", "content": "x"}]}"#,
            Ok(t),
        )
        .unwrap_err();
        assert!(e.to_string().contains("user first"), "{e}");
        assert_eq!(param(e).as_deref(), Some("messages"));
    }
}
