//! A deliberately plain HTTP/1.1 + server-sent-events client over a raw `TcpStream`: what the
//! API must work with is the wire format, not one client library's leniency. It writes a request
//! with `Connection: close`, parses the status line and headers, de-chunks a chunked body, and
//! splits an event stream into its `data:` payloads as they arrive.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A response head.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An open response whose body is read on demand.
pub struct Response {
    pub head: Head,
    reader: BufReader<TcpStream>,
    chunked: bool,
    /// Bytes left in the current chunk (chunked) or in the body (content-length).
    left: Option<usize>,
    done: bool,
    /// Body bytes read but not yet consumed as an event.
    pending: Vec<u8>,
}

/// Sends `method path` with an optional JSON body and reads the response head.
pub async fn send(addr: SocketAddr, method: &str, path: &str, body: Option<&[u8]>) -> Response {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write head");
    if let Some(body) = body {
        // The server may answer (413) before reading a large body; a failed write is fine then.
        let _ = stream.write_all(body).await;
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await.expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header has a colon");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let head = Head { status, headers };
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let left = if chunked {
        None
    } else {
        head.header("content-length")
            .map(|v| v.parse().expect("content-length"))
    };
    Response {
        head,
        reader,
        chunked,
        left,
        done: false,
        pending: Vec::new(),
    }
}

impl Response {
    /// The next piece of body, or `None` at its end.
    async fn next_bytes(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        if !self.chunked {
            let mut buf = Vec::new();
            match self.left {
                Some(n) => {
                    buf.resize(n, 0);
                    self.reader.read_exact(&mut buf).await.expect("body");
                }
                None => {
                    self.reader.read_to_end(&mut buf).await.expect("body");
                }
            }
            self.done = true;
            return Some(buf);
        }
        let mut line = String::new();
        self.reader.read_line(&mut line).await.expect("chunk size");
        let size = usize::from_str_radix(line.trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {line:?}"));
        let mut buf = vec![0; size];
        self.reader.read_exact(&mut buf).await.expect("chunk");
        line.clear();
        self.reader.read_line(&mut line).await.expect("chunk end");
        if size == 0 {
            self.done = true;
            return None;
        }
        Some(buf)
    }

    /// The whole body.
    pub async fn body(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = self.next_bytes().await {
            out.extend(b);
        }
        out
    }

    /// The whole body as JSON.
    pub async fn json(self) -> serde_json::Value {
        let body = self.body().await;
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)))
    }

    /// The `data:` payload of the next server-sent event (comments and keep-alives skipped),
    /// or `None` when the stream ends.
    pub async fn next_event(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.pending.drain(..end + 2).collect();
                let text = String::from_utf8(raw).expect("events are UTF-8");
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return Some(data.join("\n"));
            }
            let more = self.next_bytes().await?;
            self.pending.extend(more);
        }
    }
}
