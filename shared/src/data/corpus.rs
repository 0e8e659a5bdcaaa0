//! External text as training samples: `corpus::load(paths, max_len)`.
//!
//! Users who bring their own text (a node's private documents) get it cut into chunks of at most
//! `max_len` bytes, split at line boundaries where possible so a chunk rarely starts mid-sentence.
//! A line longer than `max_len` is cut at the last whitespace that fits, else at a UTF-8 character
//! boundary. Files are decoded lossily (invalid UTF-8 becomes U+FFFD) and are size-limited, so a
//! stray binary or a huge file gives a typed error instead of exhausting memory.

use std::io::Read;
use std::path::Path;

use super::{Error, Sample};

/// Largest file the loader accepts.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Smallest allowed chunk length (one UTF-8 character always fits).
pub const MIN_CHUNK_BYTES: usize = 4;

/// Reads `paths` in order and cuts their text into samples of at most `max_len` bytes
/// (`prompt` empty, `answer` = the chunk, `domain` = `None`). Blank chunks are dropped.
pub fn load<P: AsRef<Path>>(paths: &[P], max_len: usize) -> Result<Vec<Sample>, Error> {
    if max_len < MIN_CHUNK_BYTES {
        return Err(Error::InvalidMaxLen {
            max_len,
            min: MIN_CHUNK_BYTES,
        });
    }
    let mut samples = Vec::new();
    for path in paths {
        let text = read_text(path.as_ref())?;
        let chunks = chunk(&text, max_len);
        tracing::debug!(path = %path.as_ref().display(), chunks = chunks.len(), "corpus file loaded");
        samples.extend(chunks.into_iter().map(|answer| Sample {
            domain: None,
            prompt: String::new(),
            answer,
        }));
    }
    Ok(samples)
}

fn read_text(path: &Path) -> Result<String, Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    // Read one byte past the limit so an oversized file is detected without trusting metadata.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::FileTooLarge {
            path: path.to_path_buf(),
            bytes: bytes.len() as u64,
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Cuts `text` into chunks of at most `max_len` bytes (`max_len >= MIN_CHUNK_BYTES`).
pub(crate) fn chunk(text: &str, max_len: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        if !current.trim().is_empty() {
            chunks.push(std::mem::take(current));
        } else {
            current.clear();
        }
    };
    for line in text.split_inclusive('\n') {
        if current.len() + line.len() > max_len {
            flush(&mut current);
        }
        let mut rest = line;
        while rest.len() > max_len {
            let cut = cut_point(rest, max_len);
            let (head, tail) = rest.split_at(cut);
            current.push_str(head);
            flush(&mut current);
            rest = tail;
        }
        current.push_str(rest);
    }
    flush(&mut current);
    chunks
}

/// Where to cut a too-long line: after the last whitespace within `max_len`, else at the last
/// character boundary within it (never 0, since `max_len` holds at least one character).
fn cut_point(line: &str, max_len: usize) -> usize {
    let mut boundary = max_len;
    while !line.is_char_boundary(boundary) {
        boundary -= 1;
    }
    match line[..boundary].rfind(char::is_whitespace) {
        Some(i) if i > 0 => {
            let ws_len = line[i..].chars().next().map_or(1, char::len_utf8);
            i + ws_len
        }
        _ => boundary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_lines_and_length() {
        let text = "alpha beta\ngamma\ndelta epsilon zeta eta theta iota kappa\n\n\nomega";
        let chunks = chunk(text, 16);
        assert!(chunks.iter().all(|c| c.len() <= 16), "{chunks:?}");
        assert_eq!(chunks.concat().replace('\n', ""), text.replace('\n', ""));
        assert_eq!(chunks[0], "alpha beta\n");
        assert!(chunks.iter().all(|c| !c.trim().is_empty()));
    }

    #[test]
    fn long_lines_cut_at_whitespace_or_char_boundary() {
        let chunks = chunk("ééééééééé", 5);
        assert!(chunks.iter().all(|c| c.len() <= 5 && !c.is_empty()));
        assert_eq!(chunks.concat(), "ééééééééé");
        let chunks = chunk("one two three four", 9);
        assert_eq!(chunks, vec!["one two ", "three ", "four"]);
    }

    #[test]
    fn load_reads_files_lossily_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("a.txt");
        std::fs::write(&good, b"hello\nworld \xff\n").unwrap();
        let samples = load(&[&good], 64).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].answer, "hello\nworld \u{fffd}\n");
        assert!(samples[0].prompt.is_empty() && samples[0].domain.is_none());

        let missing = dir.path().join("missing.txt");
        match load(&[&good, &missing], 64) {
            Err(Error::Read { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected a read error, got {other:?}"),
        }
        assert!(matches!(
            load(&[&good], 2),
            Err(Error::InvalidMaxLen { max_len: 2, .. })
        ));
    }
}
