//! Tunables of the transport, shared by the server and the client actor. Every queue, message and
//! wait has a bound here; `validate` refuses values that would make a bound meaningless (zero
//! sizes, zero timeouts) before any socket is opened.

use std::time::Duration;

use super::error::P2pError;

/// Largest accepted `max_message_size`: the wire length prefix is a u32, and a single message
/// larger than this is a chunking bug in the caller.
pub const MAX_MESSAGE_SIZE_LIMIT: usize = 1 << 30;

#[derive(Debug, Clone)]
pub struct Config {
    /// Largest request or response body, in bytes; larger ones are refused before any allocation.
    pub max_message_size: usize,
    /// How long a request may take end to end once sent; long-polls need this above their wait.
    pub request_timeout: Duration,
    /// Server: handler tasks running at once (more are answered "busy"). Client: requests queued
    /// or in flight at once (more get `TooManyRequests`).
    pub max_concurrent_requests: usize,
    /// A connection with no request in flight is closed after this long.
    pub idle_connection_timeout: Duration,
    /// TCP connect plus Noise and yamux negotiation must finish within this.
    pub handshake_timeout: Duration,
    /// Server: how often the allowlist file's modification time is checked.
    pub allowlist_poll_interval: Duration,
    /// Client: how long a request waits for a connection before failing with `NotConnected`.
    pub connect_timeout: Duration,
    /// Client: first redial delay after a lost connection or a failed dial.
    pub backoff_initial: Duration,
    /// Client: the redial delay doubles up to this.
    pub backoff_max: Duration,
    /// Server: on shutdown, running handlers get this long to answer before they are dropped.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_size: 8 << 20,
            request_timeout: Duration::from_secs(120),
            max_concurrent_requests: 256,
            idle_connection_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(10),
            allowlist_poll_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), P2pError> {
        let bad = |field: &'static str, reason: &str| {
            Err(P2pError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if self.max_message_size == 0 || self.max_message_size > MAX_MESSAGE_SIZE_LIMIT {
            return bad("max_message_size", "must be between 1 byte and 1 GiB");
        }
        if self.max_concurrent_requests == 0 {
            return bad("max_concurrent_requests", "must be at least 1");
        }
        let durations = [
            ("request_timeout", self.request_timeout),
            ("idle_connection_timeout", self.idle_connection_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("allowlist_poll_interval", self.allowlist_poll_interval),
            ("connect_timeout", self.connect_timeout),
            ("backoff_initial", self.backoff_initial),
            ("backoff_max", self.backoff_max),
        ];
        for (field, d) in durations {
            if d.is_zero() {
                return bad(field, "must be greater than zero");
            }
        }
        if self.backoff_max < self.backoff_initial {
            return bad("backoff_max", "must be at least backoff_initial");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn zero_values_are_refused() {
        let c = Config {
            max_message_size: 0,
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(P2pError::InvalidConfig {
                field: "max_message_size",
                ..
            })
        ));
        let c = Config {
            request_timeout: Duration::ZERO,
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(P2pError::InvalidConfig {
                field: "request_timeout",
                ..
            })
        ));
        let c = Config {
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(1),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
