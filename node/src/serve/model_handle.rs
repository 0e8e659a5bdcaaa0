//! The model a server generates with, shared by every request and swappable between them.
//!
//! A node keeps adapting its model (new TALoRA weights after each federated round) while it
//! serves. [`ModelHandle`] is a cheap clone around one `Arc`: each request takes a
//! [`ModelHandle::snapshot`] when it starts and keeps that `Arc<Model>` to the end, so
//! [`ModelHandle::replace`] never disturbs a generation in flight; the next request simply sees
//! the new model. The tokenizer, the special tokens and the public model id never change —
//! a replacement must share the vocabulary, which `replace` checks.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ruvdllm::model::{LoadedModel, Model};
use ruvdllm::tokenizer::{ChatTemplate, Tokenizer};
use ruvdllm::tokens::SpecialTokens;

/// Why a model cannot be served (or swapped in).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandleError {
    #[error("the tokenizer has {tokenizer} ids but the model's vocabulary is {model}")]
    Vocab { tokenizer: usize, model: usize },
    #[error("the replacement model's {what} is {new}, the served model's is {old}")]
    Mismatch {
        what: &'static str,
        old: String,
        new: String,
    },
    #[error("the model id must be 1 to 256 printable characters, got {id:?}")]
    BadId { id: String },
}

/// The model generation runs on, as of the moment a request starts.
#[derive(Clone)]
pub struct Snapshot {
    pub model: Arc<Model>,
    /// How many times the model was replaced before this snapshot (0 = the one loaded at start).
    pub version: u64,
    /// What the weights are, as told to [`ModelHandle::replace_labeled`].
    pub label: Option<String>,
}

struct Current {
    model: Arc<Model>,
    version: u64,
    label: Option<String>,
}

struct Inner {
    id: String,
    created: u64,
    tokenizer: Arc<dyn Tokenizer>,
    specials: SpecialTokens,
    current: RwLock<Current>,
    /// The chat template of `/v1/chat/completions`, or why there is none.
    chat: RwLock<Result<ChatTemplate, String>>,
}

/// Why a model without a template cannot chat.
pub const NO_CHAT_TEMPLATE: &str = "the model has no chat template (a base model: no \
     chat_template.jinja or tokenizer_config.json `chat_template` beside it, none in its GGUF \
     metadata); give one with --chat-template FILE, or use plain completions";

/// A served model: the swappable weights plus everything that stays fixed.
#[derive(Clone)]
pub struct ModelHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ModelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelHandle")
            .field("id", &self.inner.id)
            .field("version", &self.snapshot().version)
            .finish_non_exhaustive()
    }
}

impl ModelHandle {
    /// Serves `model` under `id` with `tokenizer`; the special tokens come from the model's config.
    pub fn new(
        id: impl Into<String>,
        model: Arc<Model>,
        tokenizer: Arc<dyn Tokenizer>,
    ) -> Result<Self, HandleError> {
        let id = id.into();
        if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
            return Err(HandleError::BadId { id });
        }
        let vocab = model.config().vocab_size;
        if tokenizer.vocab_size() > vocab {
            return Err(HandleError::Vocab {
                tokenizer: tokenizer.vocab_size(),
                model: vocab,
            });
        }
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(ModelHandle {
            inner: Arc::new(Inner {
                id,
                created,
                tokenizer,
                specials: model.config().specials,
                current: RwLock::new(Current {
                    model,
                    version: 0,
                    label: None,
                }),
                chat: RwLock::new(Err(NO_CHAT_TEMPLATE.to_string())),
            }),
        })
    }

    /// Serves a model as [`ruvdllm::model::load`] returned it.
    pub fn from_loaded(
        id: impl Into<String>,
        loaded: LoadedModel,
        tokenizer: Box<dyn Tokenizer>,
    ) -> Result<Self, HandleError> {
        let handle = Self::new(id, Arc::new(loaded.model), Arc::from(tokenizer))?;
        match loaded.chat_template {
            Some(Ok(t)) => handle.set_chat_template(t),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the checkpoint's chat template is unusable");
                handle.set_chat_unavailable(format!(
                    "the served model's chat template is unusable: {e}"
                ));
            }
            None => {}
        }
        Ok(handle)
    }

    /// Uses `template` for chat completions from now on.
    pub fn set_chat_template(&self, template: ChatTemplate) {
        *self
            .inner
            .chat
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Ok(template);
    }

    /// Chat completions are refused with `reason`.
    pub fn set_chat_unavailable(&self, reason: String) {
        *self
            .inner
            .chat
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Err(reason);
    }

    /// The chat template, or why chat is not available.
    pub fn chat_template(&self) -> Result<ChatTemplate, String> {
        self.inner
            .chat
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The public model id (`model` in requests and responses).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Unix time at which the handle was created (`created` in `/v1/models`).
    pub fn created(&self) -> u64 {
        self.inner.created
    }

    pub fn tokenizer(&self) -> &Arc<dyn Tokenizer> {
        &self.inner.tokenizer
    }

    pub fn specials(&self) -> SpecialTokens {
        self.inner.specials
    }

    /// The model to run a request on; it stays valid however often the handle is replaced.
    pub fn snapshot(&self) -> Snapshot {
        let cur = self
            .inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Snapshot {
            model: Arc::clone(&cur.model),
            version: cur.version,
            label: cur.label.clone(),
        }
    }

    /// Swaps in `model` for every request that starts from now on; requests already running keep
    /// the model they started with. Returns the new version number.
    pub fn replace(&self, model: Arc<Model>) -> Result<u64, HandleError> {
        self.replace_labeled(model, None)
    }

    /// [`Self::replace`], recording what the new weights are (shown in `/v1/models`).
    pub fn replace_labeled(
        &self,
        model: Arc<Model>,
        label: Option<String>,
    ) -> Result<u64, HandleError> {
        let mut cur = self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let (old, new) = (cur.model.config(), model.config());
        if old.vocab_size != new.vocab_size {
            return Err(HandleError::Mismatch {
                what: "vocabulary size",
                old: old.vocab_size.to_string(),
                new: new.vocab_size.to_string(),
            });
        }
        if old.specials != new.specials {
            return Err(HandleError::Mismatch {
                what: "special tokens",
                old: format!("{:?}", old.specials),
                new: format!("{:?}", new.specials),
            });
        }
        cur.model = model;
        cur.version += 1;
        cur.label = label;
        tracing::info!(model = %self.inner.id, version = cur.version, label = ?cur.label, "served model replaced");
        Ok(cur.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruvdllm::candle_core::Device;
    use ruvdllm::candle_nn::VarMap;
    use ruvdllm::model::{Config, checkpoint};
    use ruvdllm::tokenizer::ByteTokenizer;

    fn model(vocab_size: usize) -> Arc<Model> {
        let cfg = Config {
            vocab_size,
            d_model: 32,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 2,
            head_dim: 16,
            mlp_hidden: 64,
            max_seq_len: 64,
            ..Config::tiny()
        };
        Arc::new(checkpoint::trainable(&VarMap::new(), &cfg, &Device::Cpu).unwrap())
    }

    /// The byte tokenizer claiming a larger vocabulary than the model has.
    struct Wide;

    impl Tokenizer for Wide {
        fn encode(&self, text: &str) -> Vec<u32> {
            ByteTokenizer.encode(text)
        }
        fn decode(&self, ids: &[u32]) -> String {
            ByteTokenizer.decode(ids)
        }
        fn vocab_size(&self) -> usize {
            1000
        }
        fn specials(&self) -> SpecialTokens {
            ByteTokenizer.specials()
        }
        fn token_str(&self, id: u32) -> String {
            ByteTokenizer.token_str(id)
        }
    }

    #[test]
    fn replace_leaves_running_snapshots_alone() {
        let first = model(260);
        let h = ModelHandle::new("m", Arc::clone(&first), Arc::new(ByteTokenizer)).unwrap();
        let in_flight = h.snapshot();
        let clone = h.clone();
        let second = model(260);
        assert_eq!(clone.replace(Arc::clone(&second)).unwrap(), 1);
        assert!(Arc::ptr_eq(&in_flight.model, &first));
        assert_eq!(in_flight.version, 0);
        let now = h.snapshot();
        assert!(Arc::ptr_eq(&now.model, &second));
        assert_eq!(now.version, 1);
    }

    #[test]
    fn mismatched_models_and_ids_are_refused() {
        let h = ModelHandle::new("m", model(260), Arc::new(ByteTokenizer)).unwrap();
        assert!(matches!(
            h.replace(model(300)),
            Err(HandleError::Mismatch {
                what: "vocabulary size",
                ..
            })
        ));
        assert_eq!(h.snapshot().version, 0);
        assert_eq!(
            ModelHandle::new("m", model(260), Arc::new(Wide)).unwrap_err(),
            HandleError::Vocab {
                tokenizer: 1000,
                model: 260
            }
        );
        assert!(matches!(
            ModelHandle::new("", model(260), Arc::new(ByteTokenizer)),
            Err(HandleError::BadId { .. })
        ));
    }
}
