//! The allowlist as a file that can change under a running server. Adding or removing a node must
//! not need a restart, so the server calls `refresh` on every new connection, every request and on
//! a timer; it re-reads the file only when its modification stamp (mtime, size, inode) moved, so
//! the common case is one `stat`. A file that stops parsing keeps the last good list in force
//! (and is reported), so a typo does not lock every node out mid-round.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::allowlist::Allowlist;
use super::error::AllowlistError;

/// An allowlist larger than this is not a hand-edited list of nodes.
const MAX_ALLOWLIST_FILE: u64 = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

#[derive(Debug)]
pub struct AllowlistFile {
    path: PathBuf,
    stamp: Stamp,
    current: Arc<Allowlist>,
}

/// What a `refresh` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    Unchanged,
    Reloaded,
}

impl AllowlistFile {
    /// Reads and parses `path`; a missing or malformed file is an error here (start-up).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, AllowlistError> {
        let path = path.into();
        let stamp = stamp(&path)?;
        let current = Arc::new(read(&path)?);
        Ok(Self {
            path,
            stamp,
            current,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The list in force.
    pub fn current(&self) -> Arc<Allowlist> {
        Arc::clone(&self.current)
    }

    /// Re-reads the file if its stamp changed. On error the previous list stays in force and the
    /// error is returned for the caller to report; the stamp is remembered so a broken file is
    /// reported once per change, not on every request.
    pub fn refresh(&mut self) -> Result<Refresh, AllowlistError> {
        let now = stamp(&self.path)?;
        if now == self.stamp {
            return Ok(Refresh::Unchanged);
        }
        self.stamp = now;
        let list = read(&self.path)?;
        self.current = Arc::new(list);
        Ok(Refresh::Reloaded)
    }
}

fn stamp(path: &Path) -> Result<Stamp, AllowlistError> {
    let meta = std::fs::metadata(path).map_err(|source| AllowlistError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

fn read(path: &Path) -> Result<Allowlist, AllowlistError> {
    use std::io::Read;
    let io = |source| AllowlistError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_ALLOWLIST_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_ALLOWLIST_FILE {
        return Err(AllowlistError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            max: MAX_ALLOWLIST_FILE,
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| AllowlistError::NotText {
        path: path.to_path_buf(),
    })?;
    Allowlist::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> libp2p::PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    #[test]
    fn reloads_on_change_and_keeps_last_good_list_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allow.txt");
        let (a, b) = (peer(), peer());
        std::fs::write(&path, format!("{a} a\n")).unwrap();
        let mut file = AllowlistFile::open(&path).unwrap();
        assert!(file.current().contains(&a));
        assert_eq!(file.refresh().unwrap(), Refresh::Unchanged);

        std::fs::write(&path, format!("{a} a\n{b} b\n")).unwrap();
        assert_eq!(file.refresh().unwrap(), Refresh::Reloaded);
        assert_eq!(file.current().name(&b), Some("b"));

        std::fs::write(&path, "garbage here and more\n").unwrap();
        assert!(file.refresh().is_err());
        assert!(file.current().contains(&b), "last good list stays");
        assert_eq!(file.refresh().unwrap(), Refresh::Unchanged);

        std::fs::write(&path, format!("{b} b\n")).unwrap();
        assert_eq!(file.refresh().unwrap(), Refresh::Reloaded);
        assert!(!file.current().contains(&a));
    }

    #[test]
    fn open_fails_on_missing_or_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allow.txt");
        assert!(matches!(
            AllowlistFile::open(&path),
            Err(AllowlistError::Io { .. })
        ));
        std::fs::write(&path, [0xffu8, 0xfe, 0x00]).unwrap();
        assert!(matches!(
            AllowlistFile::open(&path),
            Err(AllowlistError::NotText { .. })
        ));
    }
}
