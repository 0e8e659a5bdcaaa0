//! `POST /v1/completions` bodies: the wire struct and its validation into a [`Job`].
//!
//! The wire struct accepts OpenAI's fields plus the sampler's options as extension fields named
//! like `node generate`'s flags (`steps`, `block_length`, `rule`, `threshold`, `cache`, …), and
//! nothing else: an unknown field is a 400 naming it, so a typo never silently falls back to a
//! default. OpenAI fields this server cannot honour (logprobs, penalties, logit bias, suffix,
//! `best_of ≠ n`) are accepted only at their neutral values and are a 400 otherwise.
//! [`CompletionRequest::into_job`] applies the server's limits, tokenizes the prompts and
//! resolves every default, so the worker receives nothing it still has to check.

use ruvdllm::sampler::{Alpha, CacheMode, DreamAlg, Options, Remasking, Rule};
use ruvdllm::tokenizer::Tokenizer;
use ruvdllm::tokens::SpecialTokens;
use serde::Deserialize;
use serde_json::Value;

use super::config::Config;
use super::error::ApiError;

/// Most stop sequences a request may give (OpenAI's limit).
pub const MAX_STOP: usize = 4;
/// Longest stop sequence in bytes.
pub const MAX_STOP_BYTES: usize = 256;
/// Block length used when a request names none and `max_tokens` is a multiple of it.
pub const DEFAULT_BLOCK_LENGTH: usize = 32;

/// The sampler family (`rule` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleName {
    Llada,
    Dream,
    Mdlm,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The `dgr` field: on/off or explicit options.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DgrField {
    On(bool),
    Options(ruvdllm::sampler::DgrOptions),
}

/// A completion request as it arrives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    pub model: String,
    /// A string or an array of strings (a batch).
    pub prompt: Value,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<u64>,
    pub seed: Option<u64>,
    /// `null`, a string or up to four strings.
    pub stop: Option<Value>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub echo: Option<bool>,
    pub logprobs: Option<u64>,
    pub best_of: Option<u64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    pub suffix: Option<String>,
    pub user: Option<String>,
    // Extension fields: the sampler's options, named like `node generate`'s flags.
    pub steps: Option<u64>,
    pub block_length: Option<u64>,
    pub rule: Option<RuleName>,
    pub remasking: Option<Remasking>,
    pub alg: Option<DreamAlg>,
    pub alg_temp: Option<f64>,
    pub eps: Option<f64>,
    pub schedule: Option<Alpha>,
    pub top_k: Option<u64>,
    #[serde(alias = "cfg_scale")]
    pub cfg: Option<f64>,
    pub threshold: Option<f64>,
    pub cache: Option<CacheMode>,
    /// DGR over the node's banks: `true` (defaults), `false`, or DGR options
    /// (`threshold`, `max_positions`, `top_k`, `measure`).
    pub dgr: Option<DgrField>,
    #[serde(alias = "refresh_every")]
    pub cache_refresh: Option<u64>,
    #[serde(alias = "logits_eos_inf")]
    pub no_eos: Option<bool>,
    #[serde(alias = "confidence_eos_eot_inf")]
    pub eos_last: Option<bool>,
    pub early_stop: Option<bool>,
    /// Set for chat completions: the prompt is a rendered chat template, tokenized as it is (the
    /// template writes BOS itself, as `transformers`' `apply_chat_template` assumes), and the
    /// response takes the chat shapes.
    #[serde(skip)]
    pub chat: bool,
}

/// One prompt, as text and as the ids the canvas starts with (BOS first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub text: String,
    pub ids: Vec<u32>,
}

/// A validated request, ready to generate.
#[derive(Debug, Clone)]
pub struct Job {
    pub prompts: Vec<Prompt>,
    /// Completions per prompt; row `p * n + j` is prompt `p`'s `j`-th, with seed `seed + row`.
    pub n: usize,
    pub options: Options,
    pub seed: u64,
    pub stop: Vec<String>,
    pub echo: bool,
    pub stream: bool,
    pub include_usage: bool,
    /// A chat completion (`/v1/chat/completions`): chat-shaped responses.
    pub chat: bool,
}

impl Job {
    pub fn rows(&self) -> usize {
        self.prompts.len() * self.n
    }
}

/// Parses a request body; a wrong type names the field it was found in.
pub fn parse(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let req: CompletionRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // `.` is the body itself and `?` a position serde could not name (e.g. truncated input).
        let param = (path != "." && !path.contains('?')).then_some(path);
        ApiError::InvalidRequest {
            message: format!("invalid JSON body: {}", e.inner()),
            param,
            code: None,
        }
    })?;
    de.end().map_err(|e| ApiError::InvalidRequest {
        message: format!("invalid JSON body: {e}"),
        param: None,
        code: None,
    })?;
    Ok(req)
}

fn neutral<T: PartialEq>(
    param: &str,
    value: Option<T>,
    neutral: T,
    what: &str,
) -> Result<(), ApiError> {
    match value {
        Some(v) if v != neutral => Err(ApiError::unsupported(param, what)),
        _ => Ok(()),
    }
}

fn to_usize(param: &str, v: u64) -> Result<usize, ApiError> {
    usize::try_from(v).map_err(|_| ApiError::invalid(param, format!("`{param}` {v} is too large")))
}

fn prompt_texts(prompt: Value, max_rows: usize) -> Result<Vec<String>, ApiError> {
    match prompt {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ApiError::invalid("prompt", "`prompt` is an empty array"));
            }
            if items.len() > max_rows {
                return Err(ApiError::over_limit(
                    "prompt",
                    format!("{} prompts", items.len()),
                    max_rows,
                ));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s),
                    Value::Number(_) | Value::Array(_) => Err(ApiError::unsupported(
                        "prompt",
                        "a prompt given as token ids",
                    )),
                    other => Err(ApiError::invalid(
                        "prompt",
                        format!("`prompt[{i}]` must be a string, got {}", type_name(&other)),
                    )),
                })
                .collect()
        }
        other => Err(ApiError::invalid(
            "prompt",
            format!(
                "`prompt` must be a string or an array of strings, got {}",
                type_name(&other)
            ),
        )),
    }
}

fn stop_list(stop: Option<Value>) -> Result<Vec<String>, ApiError> {
    let list = match stop {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(ApiError::invalid(
                    "stop",
                    format!("stop sequences must be strings, got {}", type_name(&other)),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ApiError::invalid(
                "stop",
                format!(
                    "`stop` must be a string or an array of strings, got {}",
                    type_name(&other)
                ),
            ));
        }
    };
    if list.len() > MAX_STOP {
        return Err(ApiError::over_limit(
            "stop",
            format!("{} sequences", list.len()),
            MAX_STOP,
        ));
    }
    for s in &list {
        if s.is_empty() {
            return Err(ApiError::invalid("stop", "a stop sequence is empty"));
        }
        if s.len() > MAX_STOP_BYTES {
            return Err(ApiError::over_limit(
                "stop",
                format!("{} bytes", s.len()),
                MAX_STOP_BYTES,
            ));
        }
    }
    Ok(list)
}

/// A JSON value's kind, for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Rejects a rule-specific field given with another rule.
fn only_with<T>(
    param: &str,
    value: &Option<T>,
    rule: RuleName,
    wanted: RuleName,
) -> Result<(), ApiError> {
    if value.is_some() && rule != wanted {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` applies to rule {wanted:?}, not {rule:?}").to_lowercase(),
        ));
    }
    Ok(())
}

impl CompletionRequest {
    /// Applies `limits`, tokenizes the prompts and resolves every default. `max_seq_len` is the
    /// served model's context (prompt + generation must fit).
    pub fn into_job(
        self,
        limits: &Config,
        tokenizer: &dyn Tokenizer,
        specials: SpecialTokens,
        max_seq_len: usize,
    ) -> Result<Job, ApiError> {
        neutral("logprobs", self.logprobs.map(|_| 1), 0, "logprobs")?;
        neutral(
            "presence_penalty",
            self.presence_penalty,
            0.0,
            "a presence penalty",
        )?;
        neutral(
            "frequency_penalty",
            self.frequency_penalty,
            0.0,
            "a frequency penalty",
        )?;
        neutral("suffix", self.suffix.as_deref(), "", "a suffix (insertion)")?;
        if self.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(ApiError::unsupported("logit_bias", "a logit bias"));
        }
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(ApiError::invalid(
                "stream_options",
                "`stream_options` is only allowed when `stream` is true",
            ));
        }

        let n = to_usize("n", self.n.unwrap_or(1))?;
        if n == 0 {
            return Err(ApiError::invalid("n", "`n` must be at least 1"));
        }
        if self.best_of.is_some_and(|b| b != n as u64) {
            return Err(ApiError::unsupported("best_of", "`best_of` other than `n`"));
        }
        let texts = prompt_texts(self.prompt, limits.max_rows)?;
        let rows = texts.len().saturating_mul(n);
        if rows > limits.max_rows {
            return Err(ApiError::over_limit(
                "n",
                format!("{rows} rows (prompts × n)"),
                limits.max_rows,
            ));
        }

        let gen_length = match self.max_tokens {
            None => limits.default_max_tokens,
            Some(0) => {
                return Err(ApiError::invalid(
                    "max_tokens",
                    "`max_tokens` must be at least 1",
                ));
            }
            Some(m) if m > limits.max_tokens as u64 => {
                return Err(ApiError::over_limit("max_tokens", m, limits.max_tokens));
            }
            Some(m) => to_usize("max_tokens", m)?,
        };
        let steps = match self.steps {
            None => gen_length,
            Some(s) if s > limits.max_steps as u64 => {
                return Err(ApiError::over_limit("steps", s, limits.max_steps));
            }
            Some(s) => to_usize("steps", s)?,
        };
        let block_length = match self.block_length {
            None if gen_length.is_multiple_of(DEFAULT_BLOCK_LENGTH) => DEFAULT_BLOCK_LENGTH,
            None => gen_length,
            Some(b) => to_usize("block_length", b)?,
        };

        let rule_name = self.rule.unwrap_or(RuleName::Llada);
        only_with("remasking", &self.remasking, rule_name, RuleName::Llada)?;
        only_with("alg", &self.alg, rule_name, RuleName::Dream)?;
        only_with("alg_temp", &self.alg_temp, rule_name, RuleName::Dream)?;
        only_with("eps", &self.eps, rule_name, RuleName::Dream)?;
        only_with("top_k", &self.top_k, rule_name, RuleName::Dream)?;
        only_with("schedule", &self.schedule, rule_name, RuleName::Mdlm)?;
        // top_p = 1 is OpenAI's default and means "no filter" under every rule.
        let top_p = self.top_p.filter(|&p| p != 1.0);
        only_with("top_p", &top_p, rule_name, RuleName::Dream)?;
        let rule = match rule_name {
            RuleName::Llada => Rule::Llada {
                remasking: self.remasking.unwrap_or_default(),
            },
            RuleName::Dream => Rule::Dream {
                alg: self.alg.unwrap_or_default(),
                alg_temp: self.alg_temp.unwrap_or(0.0),
                top_p,
                top_k: self.top_k.map(|k| to_usize("top_k", k)).transpose()?,
                eps: self.eps.unwrap_or(1e-3),
            },
            RuleName::Mdlm => Rule::Mdlm {
                schedule: self.schedule.unwrap_or_default(),
            },
        };
        let options = Options {
            gen_length,
            block_length,
            steps: Some(steps),
            temperature: self.temperature.unwrap_or(0.0),
            cfg_scale: self.cfg.unwrap_or(0.0),
            rule,
            logits_eos_inf: self.no_eos.unwrap_or(false),
            confidence_eos_eot_inf: self.eos_last.unwrap_or(false),
            threshold: self.threshold,
            cache: self.cache.unwrap_or_default(),
            refresh_every: self
                .cache_refresh
                .map(|r| to_usize("cache_refresh", r))
                .transpose()?,
            early_stop: self.early_stop.unwrap_or(true),
            shift_logits: None,
            dgr: match self.dgr {
                None | Some(DgrField::On(false)) => None,
                Some(DgrField::On(true)) => Some(ruvdllm::sampler::DgrOptions::default()),
                Some(DgrField::Options(o)) => {
                    o.validate().map_err(|e| ApiError::from_sampler(&e))?;
                    Some(o)
                }
            },
        };

        let stop = stop_list(self.stop)?;
        let mut prompts = Vec::with_capacity(texts.len());
        for text in texts {
            let encoded = tokenizer.try_encode(&text).map_err(|e| {
                ApiError::invalid("prompt", format!("the prompt cannot be tokenized: {e}"))
            })?;
            let bos = if self.chat { None } else { Some(specials.bos) };
            let len = encoded.len() + usize::from(bos.is_some());
            if len > limits.max_prompt_tokens {
                return Err(ApiError::over_limit(
                    "prompt",
                    format!("{len} tokens"),
                    limits.max_prompt_tokens,
                ));
            }
            if len + gen_length > max_seq_len {
                return Err(ApiError::InvalidRequest {
                    message: format!(
                        "the prompt ({len} tokens) plus max_tokens ({gen_length}) exceed the model's context of {max_seq_len} tokens"
                    ),
                    param: Some("max_tokens".into()),
                    code: Some("context_length_exceeded"),
                });
            }
            let ids = bos.into_iter().chain(encoded).collect();
            prompts.push(Prompt { text, ids });
        }
        Ok(Job {
            prompts,
            n,
            options,
            seed: self.seed.unwrap_or_else(rand::random),
            stop,
            echo: self.echo.unwrap_or(false),
            stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            chat: self.chat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruvdllm::tokenizer::ByteTokenizer;

    fn job(body: &str) -> Result<Job, ApiError> {
        parse(body.as_bytes())?.into_job(
            &Config::default(),
            &ByteTokenizer,
            SpecialTokens::BYTE,
            512,
        )
    }

    fn param(e: ApiError) -> Option<String> {
        e.body().error.param
    }

    #[test]
    fn defaults_resolve_like_the_cli() {
        let j = job(r#"{"model": "m", "prompt": "hi", "seed": 7}"#).unwrap();
        assert_eq!(
            j.prompts,
            vec![Prompt {
                text: "hi".into(),
                ids: vec![257, 104, 105]
            }]
        );
        assert_eq!((j.n, j.seed, j.stream, j.echo), (1, 7, false, false));
        assert_eq!(j.options.gen_length, 64);
        assert_eq!(j.options.block_length, 32);
        assert_eq!(j.options.steps, Some(64));
        assert_eq!(j.options.rule, Rule::default());
        assert!(j.options.early_stop);
        let j = job(r#"{"model": "m", "prompt": ["a", "b"], "max_tokens": 8, "n": 2}"#).unwrap();
        assert_eq!(
            (j.rows(), j.options.block_length, j.options.steps),
            (4, 8, Some(8))
        );
    }

    #[test]
    fn extension_fields_reach_the_options() {
        let j = job(
            r#"{"model": "m", "prompt": "x", "max_tokens": 16, "steps": 8, "block_length": 8,
                "rule": "dream", "alg": "topk_margin", "top_p": 0.9, "top_k": 5, "threshold": 0.8,
                "cache": "dual", "cache_refresh": 2, "cfg": 0.5, "no_eos": true, "early_stop": false,
                "stop": ["\n", "."], "stream": true, "stream_options": {"include_usage": true}}"#,
        )
        .unwrap();
        let o = &j.options;
        assert_eq!((o.gen_length, o.block_length, o.steps), (16, 8, Some(8)));
        assert_eq!(
            o.rule,
            Rule::Dream {
                alg: DreamAlg::TopkMargin,
                alg_temp: 0.0,
                top_p: Some(0.9),
                top_k: Some(5),
                eps: 1e-3
            }
        );
        assert_eq!(
            (o.threshold, o.cache, o.refresh_every),
            (Some(0.8), CacheMode::Dual, Some(2))
        );
        assert_eq!(
            (o.cfg_scale, o.logits_eos_inf, o.early_stop),
            (0.5, true, false)
        );
        assert_eq!(j.stop, vec!["\n".to_string(), ".".to_string()]);
        assert!(j.stream && j.include_usage);
    }

    #[test]
    fn malformed_bodies_name_the_field() {
        assert_eq!(
            param(job(r#"{"model": "m", "prompt": "x", "max_tokens": "8"}"#).unwrap_err())
                .as_deref(),
            Some("max_tokens")
        );
        assert!(
            job(r#"{"model": "m", "prompt": "x", "max_tokenz": 8}"#)
                .unwrap_err()
                .to_string()
                .contains("max_tokenz")
        );
        assert_eq!(param(job(r#"{"model": "m""#).unwrap_err()), None);
        assert!(job(r#"{"model": "m", "prompt": "x"} trailing"#).is_err());
        assert!(
            job(r#"{"prompt": "x"}"#)
                .unwrap_err()
                .to_string()
                .contains("model")
        );
        assert_eq!(
            param(job(r#"{"model": "m", "prompt": 3}"#).unwrap_err()).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            param(job(r#"{"model": "m", "prompt": [1, 2]}"#).unwrap_err()).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            param(job(r#"{"model": "m", "prompt": []}"#).unwrap_err()).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            param(job(r#"{"model": "m", "prompt": "x", "stop": [""]}"#).unwrap_err()).as_deref(),
            Some("stop")
        );
        assert_eq!(
            param(
                job(r#"{"model": "m", "prompt": "x", "stop": ["a","b","c","d","e"]}"#).unwrap_err()
            )
            .as_deref(),
            Some("stop")
        );
    }

    #[test]
    fn limits_and_unsupported_fields_are_400s() {
        let cases = [
            (
                r#"{"model": "m", "prompt": "x", "max_tokens": 257}"#,
                "max_tokens",
            ),
            (
                r#"{"model": "m", "prompt": "x", "max_tokens": 0}"#,
                "max_tokens",
            ),
            (r#"{"model": "m", "prompt": "x", "steps": 5000}"#, "steps"),
            (r#"{"model": "m", "prompt": "x", "n": 9}"#, "n"),
            (r#"{"model": "m", "prompt": "x", "n": 0}"#, "n"),
            (
                r#"{"model": "m", "prompt": "x", "logprobs": 2}"#,
                "logprobs",
            ),
            (
                r#"{"model": "m", "prompt": "x", "presence_penalty": 0.5}"#,
                "presence_penalty",
            ),
            (r#"{"model": "m", "prompt": "x", "best_of": 3}"#, "best_of"),
            (
                r#"{"model": "m", "prompt": "x", "logit_bias": {"50": 1}}"#,
                "logit_bias",
            ),
            (
                r#"{"model": "m", "prompt": "x", "suffix": "end"}"#,
                "suffix",
            ),
            (r#"{"model": "m", "prompt": "x", "top_p": 0.5}"#, "top_p"),
            (r#"{"model": "m", "prompt": "x", "alg": "origin"}"#, "alg"),
            (
                r#"{"model": "m", "prompt": "x", "rule": "mdlm", "remasking": "random"}"#,
                "remasking",
            ),
            (
                r#"{"model": "m", "prompt": "x", "stream_options": {"include_usage": true}}"#,
                "stream_options",
            ),
        ];
        for (body, want) in cases {
            let e = job(body).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(param(e).as_deref(), Some(want), "{body}");
        }
        let long = format!(r#"{{"model": "m", "prompt": "{}"}}"#, "a".repeat(1024));
        assert_eq!(param(job(&long).unwrap_err()).as_deref(), Some("prompt"));
        let ctx = format!(
            r#"{{"model": "m", "prompt": "{}", "max_tokens": 256}}"#,
            "a".repeat(300)
        );
        let e = job(&ctx).unwrap_err();
        assert_eq!(e.body().error.code, Some("context_length_exceeded"));
        // Neutral values of unsupported features are accepted.
        job(r#"{"model": "m", "prompt": "x", "top_p": 1, "logprobs": null, "presence_penalty": 0, "best_of": 1, "logit_bias": {}, "user": "u"}"#).unwrap();
    }
}
