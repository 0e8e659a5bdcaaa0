//! A node's libp2p identity on disk: an ed25519 key pair, protobuf-encoded the way libp2p encodes
//! key pairs, in a file only its owner can read. The peer id derived from it is what an operator
//! puts on the coordinator's allowlist, so losing or overwriting the file changes who the node is:
//! `generate_keypair` refuses to overwrite, and the write is atomic (temp file, fsync, rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use libp2p::identity::Keypair;

use super::error::KeyError;

/// A protobuf-encoded ed25519 key pair is 68 bytes; anything far larger is not a key file.
const MAX_KEY_FILE: u64 = 4096;

/// Creates a new ed25519 key pair and writes it to `path` (mode 0600 on Unix). Fails with
/// `KeyError::Exists` if the file is already there.
pub fn generate_keypair(path: &Path) -> Result<Keypair, KeyError> {
    if path.exists() {
        return Err(KeyError::Exists {
            path: path.to_path_buf(),
        });
    }
    let keypair = Keypair::generate_ed25519();
    write_keypair(path, &keypair)?;
    Ok(keypair)
}

/// Writes `keypair` to `path` atomically with owner-only permissions, replacing any old file.
pub fn write_keypair(path: &Path, keypair: &Keypair) -> Result<(), KeyError> {
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| KeyError::Encode {
            reason: e.to_string(),
        })?;
    write_private_atomic(path, &bytes).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an ed25519 key pair written by `generate_keypair`.
pub fn load_keypair(path: &Path) -> Result<Keypair, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_KEY_FILE {
        return Err(KeyError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            max: MAX_KEY_FILE,
        });
    }
    warn_if_readable_by_others(path, &meta);
    let bytes = std::fs::read(path).map_err(io)?;
    let keypair = Keypair::from_protobuf_encoding(&bytes).map_err(|e| KeyError::Decode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if keypair.clone().try_into_ed25519().is_err() {
        return Err(KeyError::NotEd25519 {
            path: path.to_path_buf(),
            kind: format!("{:?}", keypair.key_type()),
        });
    }
    Ok(keypair)
}

/// The peer id of a key pair, as printed for allowlists (`12D3KooW...`).
pub fn peer_id(keypair: &Keypair) -> PeerId {
    keypair.public().to_peer_id()
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "key file is readable by group or others");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path, _meta: &std::fs::Metadata) {}

fn write_private_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_peer_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let kp = generate_keypair(&path).unwrap();
        let loaded = load_keypair(&path).unwrap();
        assert_eq!(peer_id(&kp), peer_id(&loaded));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let first = generate_keypair(&path).unwrap();
        assert!(matches!(
            generate_keypair(&path),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(peer_id(&load_keypair(&path).unwrap()), peer_id(&first));
    }

    #[test]
    fn bad_files_get_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.key");
        assert!(matches!(load_keypair(&missing), Err(KeyError::Io { .. })));
        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, b"not a key at all").unwrap();
        assert!(matches!(
            load_keypair(&garbage),
            Err(KeyError::Decode { .. })
        ));
        let huge = dir.path().join("huge.key");
        std::fs::write(&huge, vec![0u8; 10_000]).unwrap();
        assert!(matches!(
            load_keypair(&huge),
            Err(KeyError::TooLarge { .. })
        ));
    }
}
