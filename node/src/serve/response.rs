//! Response bodies in OpenAI's shapes, plus the `ruvdllm` extension objects.
//!
//! Only what OpenAI's completion API defines plus one extension field per object, so an ordinary
//! OpenAI client parses every body; diffusion-specific detail (the seed and forwards of a
//! completion, the canvas of a streamed step) lives under `ruvdllm`, which such clients ignore.

use serde::Serialize;

use super::text::FinishReason;

/// What every completion object and chunk of one request shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `cmpl-…`, unique per request.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    pub text: String,
    pub index: usize,
    /// Always `null`: log-probabilities are not supported.
    pub logprobs: Option<()>,
    pub finish_reason: Option<FinishReason>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Prompt tokens over all rows, BOS included.
    pub prompt_tokens: usize,
    /// Generated tokens behind the returned texts (up to EOS or the stop sequence).
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// `ruvdllm` in a completion: how the diffusion run went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// Seed of row 0; row `i` used `seed + i`.
    pub seed: u64,
    pub steps: usize,
    /// Model forwards.
    pub nfe: usize,
    pub rule: &'static str,
    /// Version of the served model (how often it was replaced before this request started).
    pub model_version: u64,
    /// DGR: (row, position) deltas applied over the generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dgr_applied: Option<usize>,
}

/// `POST /v1/completions` without `stream`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
    pub ruvdllm: RunInfo,
}

/// `ruvdllm` in a streamed chunk: one row's canvas after a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepInfo {
    /// Step index over the whole generation.
    pub step: usize,
    /// The whole generation region, one display form per position, masks as `░`.
    pub canvas: String,
    /// Positions (from the start of generation) committed by this step.
    pub committed: Vec<usize>,
    /// Fraction of the current block still masked when the step ran.
    pub t: f64,
    /// DGR: the positions whose retrieved delta this step's forward applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dgr: Vec<DgrTouch>,
}

/// One position DGR applied a delta at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DgrTouch {
    pub position: usize,
    pub band: &'static str,
    pub patterns: Vec<u64>,
}

/// One server-sent event of a streamed completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ruvdllm: Option<StepInfo>,
}

pub const TEXT_COMPLETION: &str = "text_completion";
pub const CHAT_COMPLETION: &str = "chat.completion";
pub const CHAT_COMPLETION_CHUNK: &str = "chat.completion.chunk";

/// The assistant's reply in a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ChatMessage,
    /// Always `null`: log-probabilities are not supported.
    pub logprobs: Option<()>,
    pub finish_reason: Option<FinishReason>,
}

/// `POST /v1/chat/completions` without `stream`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    pub ruvdllm: RunInfo,
}

impl From<Completion> for ChatCompletion {
    fn from(c: Completion) -> Self {
        ChatCompletion {
            id: c.id,
            object: CHAT_COMPLETION,
            created: c.created,
            model: c.model,
            choices: c
                .choices
                .into_iter()
                .map(|ch| ChatChoice {
                    index: ch.index,
                    message: ChatMessage {
                        role: "assistant",
                        content: ch.text,
                    },
                    logprobs: None,
                    finish_reason: ch.finish_reason,
                })
                .collect(),
            usage: c.usage,
            ruvdllm: c.ruvdllm,
        }
    }
}

/// What a streamed chat chunk adds to one choice: the role in the choice's first chunk, then
/// text; the last chunk of a choice carries only its `finish_reason`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: ChatDelta,
    pub logprobs: Option<()>,
    pub finish_reason: Option<FinishReason>,
}

/// One server-sent event of a streamed chat completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ruvdllm: Option<StepInfo>,
}

impl ChatChunk {
    /// The chat form of a completion chunk; `role_sent[i]` tracks which choices already had
    /// their first chunk (and so their role).
    pub fn from_chunk(c: &Chunk, role_sent: &mut [bool]) -> Self {
        ChatChunk {
            id: c.id.clone(),
            object: CHAT_COMPLETION_CHUNK,
            created: c.created,
            model: c.model.clone(),
            choices: c
                .choices
                .iter()
                .map(|ch| {
                    let first = role_sent.get(ch.index).is_some_and(|s| !s);
                    if let Some(s) = role_sent.get_mut(ch.index) {
                        *s = true;
                    }
                    ChatChunkChoice {
                        index: ch.index,
                        delta: ChatDelta {
                            role: first.then_some("assistant"),
                            content: (first || !ch.text.is_empty()).then(|| ch.text.clone()),
                        },
                        logprobs: None,
                        finish_reason: ch.finish_reason,
                    }
                })
                .collect(),
            usage: c.usage,
            ruvdllm: c.ruvdllm.clone(),
        }
    }
}

impl Chunk {
    pub fn new(meta: &Meta, choices: Vec<Choice>) -> Self {
        Chunk {
            id: meta.id.clone(),
            object: TEXT_COMPLETION,
            created: meta.created,
            model: meta.model.clone(),
            choices,
            usage: None,
            ruvdllm: None,
        }
    }
}

/// An entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// What is being served right now.
    pub ruvdllm: CardInfo,
}

/// The served weights behind a model id: they change when the daemon swaps in a new global.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardInfo {
    /// How often the model was replaced.
    pub version: u64,
    /// The label of the current weights (e.g. the global adapter's round and hash).
    pub adapter: Option<String>,
    /// Patterns in the local banks (`None`: DGR is not served).
    pub patterns: Option<usize>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_shape_omits_absent_extensions() {
        let meta = Meta {
            id: "cmpl-1".into(),
            created: 5,
            model: "tiny".into(),
        };
        let mut c = Chunk::new(
            &meta,
            vec![Choice {
                text: "hi".into(),
                index: 0,
                logprobs: None,
                finish_reason: Some(FinishReason::Length),
            }],
        );
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert!(v["choices"][0]["logprobs"].is_null());
        assert!(v.get("usage").is_none() && v.get("ruvdllm").is_none());
        c.ruvdllm = Some(StepInfo {
            step: 2,
            canvas: "h░".into(),
            committed: vec![0],
            t: 1.0,
            dgr: Vec::new(),
        });
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["ruvdllm"]["step"], 2);
        assert_eq!(v["ruvdllm"]["canvas"], "h░");
        assert!(v["ruvdllm"].get("dgr").is_none(), "no DGR, no field");
    }
}
