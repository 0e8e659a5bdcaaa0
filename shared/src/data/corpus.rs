//! External data as training samples: `corpus::load(paths, max_len)`.
//!
//! Users who bring their own text (a node's private documents) get it cut into chunks of at most
//! `max_len` bytes, split at line boundaries where possible so a chunk rarely starts mid-sentence.
//! A line longer than `max_len` is cut at the last whitespace that fits, else at a UTF-8 character
//! boundary. Files are decoded lossily (invalid UTF-8 becomes U+FFFD) and are size-limited, so a
//! stray binary or a huge file gives a typed error instead of exhausting memory.
//!
//! A file whose name ends in `.jsonl` holds supervised samples instead, one JSON object per line
//! (the prompt/completion layout of OpenAI's and most SFT datasets):
//!
//! ```text
//! {"prompt": "The capital of Varonia is", "completion": " Teskel."}
//! {"prompt": "12+7=", "answer": "19", "domain": "arithmetic"}
//! {"text": "a plain document, trained on whole"}
//! ```
//!
//! `completion` (or `answer`) is what the model learns to produce; `prompt` (optional, empty when
//! absent) stays clean during SFT; `text` alone is a sample with an empty prompt; `domain`
//! (optional) names a built-in domain and is what `data::partition` treats as the label. Other
//! keys (`id`, metadata) are ignored; blank lines are skipped. A sample is kept whole (training
//! truncates rows to the sequence length), and a line that is not such an object is refused with
//! its file and line number.

use std::io::Read;
use std::path::Path;

use super::{Error, Sample};

/// Largest file the loader accepts.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Smallest allowed chunk length (one UTF-8 character always fits).
pub const MIN_CHUNK_BYTES: usize = 4;

/// Reads `paths` in order: text files are cut into samples of at most `max_len` bytes (`prompt`
/// empty, `answer` = the chunk, `domain` = `None`; blank chunks dropped), `.jsonl` files give one
/// sample per line (see the module docs).
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
        if is_jsonl(path.as_ref()) {
            let before = samples.len();
            parse_jsonl(path.as_ref(), &text, &mut samples)?;
            tracing::debug!(path = %path.as_ref().display(), samples = samples.len() - before, "JSONL samples loaded");
            continue;
        }
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

/// Writes `samples` as a JSONL sample file that [`load`] reads back exactly (prompt, answer as
/// `answer`, domain when set).
pub fn write_jsonl(path: &Path, samples: &[Sample]) -> std::io::Result<()> {
    let mut text = String::new();
    for s in samples {
        let line = serde_json::to_string(s).map_err(std::io::Error::other)?;
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(path, text)
}

/// Whether `path` names a JSON-lines sample file (by its extension, case-insensitively).
pub fn is_jsonl(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
}

/// One JSONL line as written by users: the keys we read; others are ignored.
#[derive(serde::Deserialize)]
struct Line {
    prompt: Option<String>,
    completion: Option<String>,
    answer: Option<String>,
    text: Option<String>,
    domain: Option<String>,
}

fn parse_jsonl(path: &Path, text: &str, out: &mut Vec<Sample>) -> Result<(), Error> {
    let bad = |line: usize, reason: String| Error::BadSample {
        path: path.to_path_buf(),
        line,
        reason,
    };
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(raw).map_err(|e| bad(line_no, e.to_string()))?;
        let target = [
            ("completion", &l.completion),
            ("answer", &l.answer),
            ("text", &l.text),
        ];
        let given: Vec<_> = target.iter().filter(|(_, v)| v.is_some()).collect();
        let (key, answer) =
            match given.as_slice() {
                [(key, Some(v))] => (*key, v.clone()),
                [] => return Err(bad(
                    line_no,
                    "no `completion`, `answer` or `text` (what the model should learn to produce)"
                        .into(),
                )),
                more => {
                    let keys: Vec<_> = more.iter().map(|(k, _)| format!("`{k}`")).collect();
                    return Err(bad(
                        line_no,
                        format!("{} given; use one", keys.join(" and ")),
                    ));
                }
            };
        if key == "text" && l.prompt.is_some() {
            return Err(bad(
                line_no,
                "`text` is a whole document; with a `prompt`, name the target `completion`".into(),
            ));
        }
        if answer.trim().is_empty() {
            return Err(bad(line_no, format!("`{key}` is empty")));
        }
        let domain = match l.domain {
            None => None,
            Some(d) => Some(
                d.parse::<super::Domain>()
                    .map_err(|e| bad(line_no, e.to_string()))?,
            ),
        };
        out.push(Sample {
            domain,
            prompt: l.prompt.unwrap_or_default(),
            answer,
        });
    }
    Ok(())
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

    #[test]
    fn jsonl_gives_prompt_answer_samples_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sft.JSONL");
        let long = "x".repeat(100);
        std::fs::write(
            &p,
            format!(
                "{{\"prompt\": \"12+7=\", \"answer\": \"19\", \"domain\": \"arithmetic\", \"id\": 3}}\n\n\
                 {{\"prompt\": \"Q\", \"completion\": \" {long}\"}}\n{{\"text\": \"a doc\"}}\n"
            ),
        )
        .unwrap();
        let s = load(&[&p], 16).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0],
            Sample {
                domain: Some(super::super::Domain::Arithmetic),
                prompt: "12+7=".into(),
                answer: "19".into()
            }
        );
        // Kept whole, not chunked to max_len.
        assert_eq!(s[1].answer.len(), 101);
        assert_eq!((s[2].prompt.as_str(), s[2].answer.as_str()), ("", "a doc"));
    }

    #[test]
    fn written_jsonl_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        let samples = vec![
            Sample {
                domain: Some(super::super::Domain::Calendar),
                prompt: "March 27 + 9 days is".into(),
                answer: " April 5.".into(),
            },
            Sample {
                domain: None,
                prompt: String::new(),
                answer: "plain \"text\"\nover lines".into(),
            },
        ];
        write_jsonl(&p, &samples).unwrap();
        assert_eq!(load(&[&p], 4).unwrap(), samples);
    }

    #[test]
    fn jsonl_refuses_bad_lines_with_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.jsonl");
        for (body, needle) in [
            ("{\"prompt\": \"a\"}", "no `completion`"),
            ("{\"answer\": \"a\", \"completion\": \"b\"}", "use one"),
            (
                "{\"prompt\": \"a\", \"text\": \"b\"}",
                "`text` is a whole document",
            ),
            ("{\"answer\": \"  \"}", "is empty"),
            (
                "{\"answer\": \"a\", \"domain\": \"poetry\"}",
                "unknown domain",
            ),
            ("[1, 2]", "expected"),
            ("{\"answer\": 5}", "invalid type"),
            ("not json", "expected"),
        ] {
            std::fs::write(&p, format!("{{\"answer\": \"ok\"}}\n{body}\n")).unwrap();
            match load(&[&p], 16) {
                Err(e @ Error::BadSample { line: 2, .. }) => {
                    assert!(e.to_string().contains(needle), "{body}: {e}")
                }
                other => panic!("{body}: expected a line-2 error, got {other:?}"),
            }
        }
    }
}
