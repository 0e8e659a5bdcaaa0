//! The `/ruvdllm/1.0.0` request-response wire format. Requests and responses are opaque bytes
//! (callers put prost-encoded messages in them); this codec only frames them, with a hard size
//! limit checked against the declared length before anything is read, and a body read that grows
//! with the bytes that actually arrive — a peer that declares 1 GiB and sends nothing costs nothing.
//!
//! ```text
//! request  = len:u32be body[len]
//! response = status:u8 len:u32be body[len]     status 0 ok, 1 handler error (UTF-8 text),
//!                                              2 unauthorized, 3 busy (UTF-8 reason)
//! ```

use std::io;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// The protocol name negotiated by multistream-select.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/ruvdllm/1.0.0");

/// A server's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The handler's response bytes.
    Ok(Vec<u8>),
    /// The handler returned an error message.
    Failed(String),
    /// The requesting peer is not on the allowlist.
    Unauthorized,
    /// The server cannot take the request now (concurrency limit, shutting down).
    Busy(String),
}

/// A declared frame length above the limit; carried inside `io::Error` so callers can report it.
#[derive(Debug, thiserror::Error)]
#[error("frame of {size} bytes exceeds the limit of {max} bytes")]
pub struct FrameTooLarge {
    pub size: usize,
    pub max: usize,
}

#[derive(Debug, Clone)]
pub struct Codec {
    max_message_size: usize,
}

impl Codec {
    pub fn new(max_message_size: usize) -> Self {
        Self { max_message_size }
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    fn check(&self, size: usize) -> io::Result<()> {
        if size > self.max_message_size || u32::try_from(size).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                FrameTooLarge {
                    size,
                    max: self.max_message_size,
                },
            ));
        }
        Ok(())
    }

    async fn read_body<T: AsyncRead + Unpin>(&self, io: &mut T) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        self.check(len)?;
        let mut body = Vec::new();
        io.take(len as u64).read_to_end(&mut body).await?;
        if body.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "frame declared {len} bytes, stream ended after {}",
                    body.len()
                ),
            ));
        }
        Ok(body)
    }

    async fn write_body<T: AsyncWrite + Unpin>(&self, io: &mut T, body: &[u8]) -> io::Result<()> {
        self.check(body.len())?;
        io.write_all(&(body.len() as u32).to_be_bytes()).await?;
        io.write_all(body).await?;
        io.flush().await
    }
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Reply;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_body(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Reply>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut status = [0u8; 1];
        io.read_exact(&mut status).await?;
        let body = self.read_body(io).await?;
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        match status[0] {
            0 => Ok(Reply::Ok(body)),
            1 => Ok(Reply::Failed(text(body))),
            2 => Ok(Reply::Unauthorized),
            3 => Ok(Reply::Busy(text(body))),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown response status {other}"),
            )),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_body(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Reply,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let (status, body): (u8, &[u8]) = match &res {
            Reply::Ok(b) => (0, b),
            Reply::Failed(m) => (1, m.as_bytes()),
            Reply::Unauthorized => (2, &[]),
            Reply::Busy(m) => (3, m.as_bytes()),
        };
        io.write_all(&[status]).await?;
        self.write_body(io, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;
    use libp2p::request_response::Codec as _;

    fn frame(len: u32, body: &[u8]) -> Vec<u8> {
        let mut v = len.to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn request_and_replies_round_trip() {
        block_on(async {
            let mut c = Codec::new(1024);
            let mut wire = Cursor::new(Vec::new());
            c.write_request(&PROTOCOL, &mut wire, b"hello".to_vec())
                .await
                .unwrap();
            wire.set_position(0);
            assert_eq!(
                c.read_request(&PROTOCOL, &mut wire).await.unwrap(),
                b"hello"
            );
            for reply in [
                Reply::Ok(vec![1, 2, 3]),
                Reply::Ok(Vec::new()),
                Reply::Failed("no such round".into()),
                Reply::Unauthorized,
                Reply::Busy("shutting down".into()),
            ] {
                let mut wire = Cursor::new(Vec::new());
                c.write_response(&PROTOCOL, &mut wire, reply.clone())
                    .await
                    .unwrap();
                wire.set_position(0);
                assert_eq!(c.read_response(&PROTOCOL, &mut wire).await.unwrap(), reply);
            }
        });
    }

    #[test]
    fn oversized_frames_are_refused_both_ways() {
        block_on(async {
            let mut c = Codec::new(8);
            let mut wire = Cursor::new(Vec::new());
            let err = c
                .write_request(&PROTOCOL, &mut wire, vec![0; 9])
                .await
                .unwrap_err();
            assert!(err.get_ref().unwrap().is::<FrameTooLarge>());
            assert!(wire.get_ref().is_empty(), "nothing written");
            // A declared length of 4 GiB - 1 is refused without reading or allocating it.
            let mut wire = Cursor::new(frame(u32::MAX, b"x"));
            let err = c.read_request(&PROTOCOL, &mut wire).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        });
    }

    #[test]
    fn truncated_and_unknown_frames_are_errors() {
        block_on(async {
            let mut c = Codec::new(1024);
            let mut wire = Cursor::new(frame(10, b"short"));
            let err = c.read_request(&PROTOCOL, &mut wire).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
            let mut wire = Cursor::new(vec![9u8, 0, 0, 0, 0]);
            assert!(c.read_response(&PROTOCOL, &mut wire).await.is_err());
            let mut wire = Cursor::new(vec![0u8, 0]);
            assert!(c.read_response(&PROTOCOL, &mut wire).await.is_err());
        });
    }
}
