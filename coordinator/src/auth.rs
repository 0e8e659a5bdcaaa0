//! Who is calling: the node id from the client certificate, and whether it is revoked.
//!
//! Identity is the subject CN of the certificate the client presented in the mutual-TLS handshake
//! (the CA only signs certificates made by `coordinator certs issue`). Revocation is a plain file
//! of node ids; [`RevocationList`] checks its modification time and size on every request and
//! re-reads it when either changed, so `coordinator certs revoke NODE` takes effect on the next
//! request without a restart.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

/// An authenticated caller, as every transport hands it to the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub node_id: String,
}

/// Identity problems.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no client certificate presented")]
    NoCertificate,
    #[error("client certificate does not parse: {0}")]
    BadCertificate(String),
    #[error("client certificate has no subject common name")]
    NoCommonName,
    #[error(
        "node id {id:?} is invalid: 1-64 characters of A-Z a-z 0-9 . _ - , not starting with '.'"
    )]
    BadNodeId { id: String },
}

/// Node ids name files and metric labels: 1–64 of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn check_node_id(id: &str) -> Result<(), AuthError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(AuthError::BadNodeId {
            id: id.chars().take(80).collect(),
        })
    }
}

/// The node id (subject CN) of a DER certificate.
pub fn node_id_from_der(der: &[u8]) -> Result<String, AuthError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| AuthError::BadCertificate(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or(AuthError::NoCommonName)?
        .as_str()
        .map_err(|e| AuthError::BadCertificate(e.to_string()))?
        .to_string();
    check_node_id(&cn)?;
    Ok(cn)
}

#[derive(Debug, Default)]
struct Cached {
    stamp: Option<(SystemTime, u64)>,
    nodes: BTreeSet<String>,
}

/// The revocation list file, re-read whenever it changes.
#[derive(Debug)]
pub struct RevocationList {
    path: PathBuf,
    cache: Mutex<Cached>,
}

impl RevocationList {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache: Mutex::new(Cached::default()),
        }
    }

    /// The revoked node ids now (a missing file means none; an unreadable one keeps the last
    /// list and logs, so a transient error never un-revokes anyone).
    pub fn current(&self) -> BTreeSet<String> {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp != c.stamp {
            match stamp {
                None => c.nodes.clear(),
                Some(_) => match std::fs::read_to_string(&self.path) {
                    Ok(text) => {
                        c.nodes = text
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(String::from)
                            .collect();
                    }
                    Err(e) => {
                        tracing::error!(path = %self.path.display(), error = %e, "reading revocation list");
                        return c.nodes.clone();
                    }
                },
            }
            c.stamp = stamp;
        }
        c.nodes.clone()
    }

    pub fn is_revoked(&self, node: &str) -> bool {
        self.current().contains(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        assert!(check_node_id("node-1.a_b").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_node_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn revocation_file_is_reread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("revoked.txt");
        let list = RevocationList::new(&p);
        assert!(!list.is_revoked("a"));
        std::fs::write(&p, "# comment\na\n").unwrap();
        assert!(list.is_revoked("a"));
        std::fs::write(&p, "a\nbb\n").unwrap();
        assert!(list.is_revoked("bb"));
        std::fs::remove_file(&p).unwrap();
        assert!(!list.is_revoked("a"));
    }
}
