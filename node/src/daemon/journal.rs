//! The node's round journal: one JSON line per finished round, appended by the runtime when
//! `journal = "…"` is set in `node.toml`.
//!
//! A line says when the global adapter arrived, when training ran and with what loss, the encoded
//! sizes down and up, how the coordinator answered, and the client's socket counters (TLS and
//! HTTP/2 or libp2p framing included) when the round ended — what an operator wants to see per
//! round, and what `coordinator simulate --processes` reads to fill the per-node columns it cannot
//! observe inside another process. Times are Unix milliseconds. Each line is written with one
//! `write` and flushed, so a reader sees whole lines; a reader that meets a line still being
//! written (no newline yet) ignores it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One finished round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub round: u64,
    /// The global adapter was fetched and verified.
    pub fetched_ms: u64,
    pub train_start_ms: u64,
    pub train_end_ms: u64,
    /// First upload attempt.
    pub submit_start_ms: u64,
    /// The coordinator answered (accepted, duplicate or refused).
    pub done_ms: u64,
    /// Encoded size of the global adapter fetched.
    pub codec_down: u64,
    /// Encoded size of the update uploaded.
    pub codec_up: u64,
    /// Mean training loss of the round's last steps, when the trainer reports one.
    pub train_loss: Option<f64>,
    /// Whether the coordinator holds the update.
    pub submitted: bool,
    /// The coordinator's reason when it refused the update.
    pub refusal: Option<String>,
    /// The client's socket counters (whole run) when the round ended, when counted.
    pub socket_up: Option<u64>,
    pub socket_down: Option<u64>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Appends entries to a JSON-lines file.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// A journal at `path` (created on the first append; its folder must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line.
    pub fn append(&self, entry: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(&line)?;
        f.flush()
    }

    /// Every complete line of the journal at `path` (none if it does not exist yet). A line
    /// that does not parse is an error naming its number.
    pub fn read(path: &Path) -> Result<Vec<Entry>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_a_partial_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rounds.jsonl");
        assert!(Journal::read(&path).unwrap().is_empty());
        let j = Journal::new(&path);
        let a = Entry {
            round: 1,
            fetched_ms: 10,
            train_loss: Some(0.5),
            submitted: true,
            socket_up: Some(1234),
            socket_down: Some(99),
            ..Entry::default()
        };
        let b = Entry {
            round: 2,
            refusal: Some("norm bound".into()),
            ..Entry::default()
        };
        j.append(&a).unwrap();
        j.append(&b).unwrap();
        assert_eq!(Journal::read(&path).unwrap(), vec![a.clone(), b.clone()]);
        // A writer caught mid-line: the partial line is not read.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"round\":3,").unwrap();
        assert_eq!(Journal::read(&path).unwrap(), vec![a, b]);
        // A corrupt complete line is an error naming it.
        f.write_all(b"oops\n").unwrap();
        let err = Journal::read(&path).unwrap_err();
        assert!(err.contains("line 3"), "{err}");
    }
}
