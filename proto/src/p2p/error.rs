//! Errors of the libp2p transport, one enum per area: key files, allowlist files, and the
//! transport itself (which wraps the other two). Every failure a peer, a file or a caller can cause
//! ends here as a value with the facts needed to act on it, never as a panic.

use std::path::PathBuf;
use std::time::Duration;

/// Reading or writing an ed25519 key pair file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} already exists; refusing to overwrite a node identity")]
    Exists { path: PathBuf },
    #[error("key file {path} is {size} bytes, more than the {max} a key pair can take")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("key file {path} is not a protobuf-encoded libp2p key pair: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("key file {path} holds a {kind} key; only ed25519 is accepted")]
    NotEd25519 { path: PathBuf, kind: String },
    #[error("cannot encode the key pair: {reason}")]
    Encode { reason: String },
}

/// Reading or parsing an allowlist file.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    #[error("allowlist {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("allowlist {path} is {size} bytes, more than the {max} allowed")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("allowlist {path} is not UTF-8 text")]
    NotText { path: PathBuf },
    #[error("allowlist line {line}: {token:?} is not a peer id: {reason}")]
    BadPeerId {
        line: usize,
        token: String,
        reason: String,
    },
    #[error("allowlist line {line}: name {name:?} must be 1-64 characters of [A-Za-z0-9._-]")]
    BadName { line: usize, name: String },
    #[error("allowlist line {line}: expected `<peer-id> [name]`, found {found} fields")]
    TooManyFields { line: usize, found: usize },
    #[error("allowlist line {line}: peer {peer} is listed twice")]
    DuplicatePeer { line: usize, peer: String },
    #[error("allowlist line {line}: name {name:?} is used by two peers")]
    DuplicateName { line: usize, name: String },
}

/// The transport: setup, configuration and per-request failures.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Allowlist(#[from] AllowlistError),
    #[error("invalid p2p config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("address {addr}: {reason}")]
    InvalidAddress { addr: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("transport setup failed: {reason}")]
    Transport { reason: String },
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { size: usize, max: usize },
    #[error("no connection to {peer} within {waited:?} (last error: {last_error})")]
    NotConnected {
        peer: String,
        waited: Duration,
        last_error: String,
    },
    #[error("too many requests in flight ({limit}); try again later")]
    TooManyRequests { limit: usize },
    #[error("request timed out")]
    Timeout,
    #[error("connection closed before the response arrived")]
    ConnectionClosed,
    #[error("the server refused this peer: it is not on the allowlist")]
    Unauthorized,
    #[error("the server is busy: {reason}")]
    Busy { reason: String },
    #[error("the server's handler failed: {message}")]
    Remote { message: String },
    #[error("stream failed: {reason}")]
    Stream { reason: String },
    #[error("the p2p actor has shut down")]
    Shutdown,
}
