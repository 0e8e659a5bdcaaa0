//! Which peers may use the server, and under which name. The file is plain text an operator edits
//! by hand: one peer id per line, optionally followed by the node's name, `#` starting a comment:
//!
//! ```text
//! # coordinator allowlist
//! 12D3KooWQ...  node-3
//! 12D3KooWX...            # name defaults to the peer id
//! ```
//!
//! The name is the node's identity everywhere above the transport (logs, metrics, round state),
//! so two peers may not share one, and names are restricted to characters that are safe in a
//! Prometheus label and a log line.

use std::collections::HashMap;
use std::str::FromStr;

use libp2p::PeerId;

use super::error::AllowlistError;

const MAX_NAME_LEN: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    names: HashMap<PeerId, String>,
}

impl Allowlist {
    /// Parses the allowlist text format (see the module docs).
    pub fn parse(text: &str) -> Result<Self, AllowlistError> {
        let mut names = HashMap::new();
        let mut taken: HashMap<String, PeerId> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("");
            let fields: Vec<&str> = content.split_whitespace().collect();
            let (token, name) = match fields.as_slice() {
                [] => continue,
                [id] => (*id, None),
                [id, name] => (*id, Some(*name)),
                more => {
                    return Err(AllowlistError::TooManyFields {
                        line,
                        found: more.len(),
                    });
                }
            };
            let peer = PeerId::from_str(token).map_err(|e| AllowlistError::BadPeerId {
                line,
                token: token.to_string(),
                reason: e.to_string(),
            })?;
            let name = match name {
                Some(n) if valid_name(n) => n.to_string(),
                Some(n) => {
                    return Err(AllowlistError::BadName {
                        line,
                        name: n.to_string(),
                    });
                }
                None => peer.to_string(),
            };
            if names.contains_key(&peer) {
                return Err(AllowlistError::DuplicatePeer {
                    line,
                    peer: peer.to_string(),
                });
            }
            if taken.insert(name.clone(), peer).is_some() {
                return Err(AllowlistError::DuplicateName { line, name });
            }
            names.insert(peer, name);
        }
        Ok(Self { names })
    }

    /// The node name of `peer`, or `None` if it is not allowed.
    pub fn name(&self, peer: &PeerId) -> Option<&str> {
        self.names.get(peer).map(String::as_str)
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.names.contains_key(peer)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &str)> {
        self.names.iter().map(|(p, n)| (p, n.as_str()))
    }
}

impl FromStr for Allowlist {
    type Err = AllowlistError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    #[test]
    fn parses_names_comments_and_defaults() {
        let (a, b) = (peer(), peer());
        let text = format!("# header\n\n{a} node-1  # first\n   {b}\n");
        let list = Allowlist::parse(&text).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list.name(&a), Some("node-1"));
        assert_eq!(list.name(&b), Some(b.to_string().as_str()));
        assert!(!list.contains(&peer()));
    }

    #[test]
    fn empty_and_comment_only_files_allow_nobody() {
        assert!(Allowlist::parse("").unwrap().is_empty());
        assert!(Allowlist::parse("# nobody yet\n\n").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let a = peer();
        let err = Allowlist::parse(&format!("{a} n1\nnot-a-peer n2\n")).unwrap_err();
        assert!(
            matches!(err, AllowlistError::BadPeerId { line: 2, .. }),
            "{err}"
        );
        let err = Allowlist::parse(&format!("{a} n1 extra\n")).unwrap_err();
        assert!(matches!(
            err,
            AllowlistError::TooManyFields { line: 1, found: 3 }
        ));
        let err = Allowlist::parse(&format!("{a} n1\n{a} n2\n")).unwrap_err();
        assert!(matches!(err, AllowlistError::DuplicatePeer { line: 2, .. }));
        let err = Allowlist::parse(&format!("{a} same\n{} same\n", peer())).unwrap_err();
        assert!(matches!(err, AllowlistError::DuplicateName { line: 2, .. }));
        let err = Allowlist::parse(&format!("{a} bad{{name}}\n")).unwrap_err();
        assert!(matches!(err, AllowlistError::BadName { line: 1, .. }));
    }
}
