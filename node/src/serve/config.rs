//! The server's limits: everything that bounds what one client can make the node do.
//!
//! A generation costs `steps` forwards over a `prompt + max_tokens` canvas for every row of the
//! batch, so each of those numbers has a ceiling here, and so do the body size, the number of
//! generations running at once and how long a stalled streaming client may hold one. Defaults
//! are defined once in [`Config::default`]; [`Config::validate`] rejects a configuration that
//! could not serve anything.

use std::time::Duration;

/// A configuration that cannot serve.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("serve limit `{field}` must be at least {min}, got {got}")]
    TooSmall {
        field: &'static str,
        got: u64,
        min: u64,
    },
    #[error("serve limit `default_max_tokens` ({default}) exceeds `max_tokens` ({max})")]
    DefaultAboveMax { default: usize, max: usize },
    #[error(
        "serve limit `max_steps` ({max_steps}) is below `max_tokens` ({max_tokens}): a request's default is one step per token"
    )]
    StepsBelowTokens { max_steps: usize, max_tokens: usize },
}

/// Limits and defaults of the completion API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest `max_tokens` (the sampler's `gen_length`) a request may ask for.
    pub max_tokens: usize,
    /// `max_tokens` of a request that names none.
    pub default_max_tokens: usize,
    /// Longest prompt in tokens, BOS included.
    pub max_prompt_tokens: usize,
    /// Most denoising steps a request may ask for.
    pub max_steps: usize,
    /// Most rows in one request (prompts × `n`).
    pub max_rows: usize,
    /// Generations running at once; one more gets 429.
    pub max_concurrent: usize,
    /// Largest request body in bytes; a larger one gets 413.
    pub max_body_bytes: usize,
    /// Step events buffered between a generation and its streaming client.
    pub stream_buffer: usize,
    /// How long a generation waits on a streaming client that reads nothing before it gives up.
    pub stall_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_tokens: 256,
            default_max_tokens: 64,
            max_prompt_tokens: 1024,
            max_steps: 1024,
            max_rows: 8,
            max_concurrent: 2,
            max_body_bytes: 1 << 20,
            stream_buffer: 16,
            stall_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Checks that every limit admits at least one request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least_one = [
            ("max_tokens", self.max_tokens),
            ("default_max_tokens", self.default_max_tokens),
            ("max_prompt_tokens", self.max_prompt_tokens),
            ("max_steps", self.max_steps),
            ("max_rows", self.max_rows),
            ("max_concurrent", self.max_concurrent),
            ("max_body_bytes", self.max_body_bytes),
            ("stream_buffer", self.stream_buffer),
        ];
        for (field, got) in at_least_one {
            if got < 1 {
                return Err(ConfigError::TooSmall {
                    field,
                    got: got as u64,
                    min: 1,
                });
            }
        }
        if self.stall_timeout.is_zero() {
            return Err(ConfigError::TooSmall {
                field: "stall_timeout_ms",
                got: 0,
                min: 1,
            });
        }
        if self.default_max_tokens > self.max_tokens {
            return Err(ConfigError::DefaultAboveMax {
                default: self.default_max_tokens,
                max: self.max_tokens,
            });
        }
        if self.max_steps < self.max_tokens {
            return Err(ConfigError::StepsBelowTokens {
                max_steps: self.max_steps,
                max_tokens: self.max_tokens,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn unusable_limits_are_rejected() {
        let c = Config {
            max_concurrent: 0,
            ..Config::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::TooSmall {
                field: "max_concurrent",
                got: 0,
                min: 1
            })
        );
        let c = Config {
            max_tokens: 8,
            default_max_tokens: 64,
            ..Config::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::DefaultAboveMax {
                default: 64,
                max: 8
            })
        );
        let c = Config {
            stall_timeout: Duration::ZERO,
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TooSmall {
                field: "stall_timeout_ms",
                ..
            })
        ));
    }
}
