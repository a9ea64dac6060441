//! WebSocket plumbing shared by the producer, the consumer and the load generator: server-side
//! split into a message reader and a batching frame writer; the client side is in [`client`].

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket, WebSocketError, WebSocketRead};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

/// Normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// The server is going away (shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// The peer broke the WebSocket protocol.
pub const CLOSE_PROTOCOL: u16 = 1002;
/// The peer broke a policy (too slow, for instance).
pub const CLOSE_POLICY: u16 = 1008;
/// A message was larger than allowed.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// A service the server needs is unavailable for now: reconnect (and resume) later.
pub const CLOSE_TRY_AGAIN: u16 = 1013;
/// How every server closes a peer that answered no ping for twice the idle time (a peer that
/// vanished without closing): "going away", so clients reconnect as after any other loss.
pub const CLOSE_IDLE: (u16, &str) = (CLOSE_GOING_AWAY, "idle: no answer to pings");

/// The upgraded connection a server or client holds.
pub type Stream = TokioIo<Upgraded>;

/// Appends one unmasked (server-to-client) frame to `buf`.
pub fn encode_frame(buf: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    buf.push(0x80 | opcode as u8);
    let len = payload.len();
    if len < 126 {
        buf.push(len as u8);
    } else if len <= u16::MAX as usize {
        buf.push(126);
        buf.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        buf.push(127);
        buf.extend_from_slice(&(len as u64).to_be_bytes());
    }
    buf.extend_from_slice(payload);
}

/// Close frame payload: code then reason, the reason cut to fit a control frame.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(&reason.as_bytes()[..cut]);
    p
}

/// Server-side frame writer: frames queue in one buffer and go out in one write per flush,
/// so a burst of replies costs one syscall.
pub struct FrameSink<W> {
    io: W,
    buf: Vec<u8>,
}

/// A flushed buffer larger than this is released, so idle connections stay small.
const KEEP_BUFFER: usize = 16 * 1024;

impl<W: AsyncWrite + Unpin> FrameSink<W> {
    /// Wraps the write half of an upgraded connection.
    pub fn new(io: W) -> Self {
        FrameSink {
            io,
            buf: Vec::new(),
        }
    }

    /// Queues a text frame.
    pub fn text(&mut self, payload: &[u8]) {
        encode_frame(&mut self.buf, OpCode::Text, payload);
    }

    /// Queues a control or data frame with a raw payload.
    pub fn frame(&mut self, opcode: OpCode, payload: &[u8]) {
        encode_frame(&mut self.buf, opcode, payload);
    }

    /// Queues a close frame.
    pub fn close(&mut self, code: u16, reason: &str) {
        encode_frame(&mut self.buf, OpCode::Close, &close_payload(code, reason));
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.buf.len()
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.io.write_all(&self.buf).await?;
        self.buf.clear();
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Like [`FrameSink::flush`], but a peer that takes nothing for `limit` counts as gone: a
    /// client that stops reading must not hold a task and its buffers forever.
    pub async fn flush_within(&mut self, limit: Duration) -> std::io::Result<()> {
        // Most flushes complete in one go: the timer is armed only for one that has to wait, and
        // that same flush goes on under it (a write dropped halfway would lose its place).
        let mut flush = std::pin::pin!(self.flush());
        if let std::task::Poll::Ready(res) = futures::poll!(flush.as_mut()) {
            return res;
        }
        match tokio::time::timeout(limit, flush).await {
            Ok(res) => res,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("peer took nothing for {limit:?}"),
            )),
        }
    }

    /// Flushes and shuts the write side down.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }
}

/// A complete message or event read from a peer.
#[derive(Debug)]
pub enum Inbound {
    /// A whole text message, fragments joined.
    Text(Bytes),
    /// A whole binary message.
    Binary(Bytes),
    /// A ping or a pong: a sign of life that carries no message. A ping's pong has been handed
    /// to the caller's `owe` by then, so a caller that writes its own frames can send it at once.
    Pong,
    /// The peer closed; the close echo has been handed to the writer.
    Close,
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A frame or a reassembled message exceeded the limit.
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection ended.
    #[error("connection closed")]
    Closed,
}

/// Frames the reader owes the peer (pong for ping, close echo); the writer sends them.
#[derive(Debug, Clone)]
pub enum Obligation {
    /// Answer to a ping.
    Pong(Bytes),
    /// Echo of the peer's close.
    Close(Bytes),
}

/// Reads whole messages, joining fragments and enforcing a size limit on the whole message.
pub struct MessageReader<R> {
    inner: WebSocketRead<R>,
    max_message: usize,
    partial: Option<(OpCode, Vec<u8>)>,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// Next message; obligations (pong, close echo) are passed to `owe` before it returns.
    pub async fn next<F, Fut>(&mut self, owe: &mut F) -> Result<Inbound, ReadError>
    where
        F: FnMut(Obligation) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            // The library hands over the echo of a close; pings come back as frames (below).
            let mut send = |f: Frame<'_>| {
                let ob = (f.opcode == OpCode::Close)
                    .then(|| Obligation::Close(Bytes::copy_from_slice(&f.payload)));
                let fut = ob.map(&mut *owe);
                async move {
                    if let Some(fut) = fut {
                        fut.await;
                    }
                    Ok::<(), std::convert::Infallible>(())
                }
            };
            let frame = match self.inner.read_frame(&mut send).await {
                Ok(frame) => frame,
                Err(WebSocketError::FrameTooLarge) => {
                    return Err(ReadError::TooLarge(self.max_message));
                }
                Err(
                    WebSocketError::UnexpectedEOF
                    | WebSocketError::IoError(_)
                    | WebSocketError::ConnectionClosed,
                ) => return Err(ReadError::Closed),
                Err(e) => return Err(ReadError::Protocol(e.to_string())),
            };
            match frame.opcode {
                OpCode::Close => return Ok(Inbound::Close),
                OpCode::Pong => return Ok(Inbound::Pong),
                OpCode::Ping => {
                    owe(Obligation::Pong(Bytes::copy_from_slice(&frame.payload))).await;
                    return Ok(Inbound::Pong);
                }
                OpCode::Text | OpCode::Binary if frame.fin => {
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol(
                            "new message inside a fragmented one".into(),
                        ));
                    }
                    let bytes = payload_bytes(frame.payload);
                    return Ok(if frame.opcode == OpCode::Text {
                        Inbound::Text(bytes)
                    } else {
                        Inbound::Binary(bytes)
                    });
                }
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol(
                            "new message inside a fragmented one".into(),
                        ));
                    }
                    self.partial = Some((frame.opcode, frame.payload.to_vec()));
                }
                OpCode::Continuation => {
                    let Some((opcode, mut buf)) = self.partial.take() else {
                        return Err(ReadError::Protocol(
                            "continuation without a first fragment".into(),
                        ));
                    };
                    if buf.len() + frame.payload.len() > self.max_message {
                        return Err(ReadError::TooLarge(self.max_message));
                    }
                    buf.extend_from_slice(&frame.payload);
                    if !frame.fin {
                        self.partial = Some((opcode, buf));
                        continue;
                    }
                    if opcode == OpCode::Binary {
                        return Ok(Inbound::Binary(buf.into()));
                    }
                    if std::str::from_utf8(&buf).is_err() {
                        return Err(ReadError::Protocol(
                            "text message is not valid UTF-8".into(),
                        ));
                    }
                    return Ok(Inbound::Text(buf.into()));
                }
            }
        }
    }
}

fn payload_bytes(p: Payload<'_>) -> Bytes {
    match p {
        Payload::Bytes(b) => b.freeze(),
        Payload::Owned(v) => v.into(),
        other => Bytes::copy_from_slice(&other),
    }
}

/// Splits a server-side WebSocket into a message reader and a frame writer.
pub fn split_server(
    ws: WebSocket<Stream>,
    max_message: usize,
) -> (
    MessageReader<ReadHalf<Stream>>,
    FrameSink<WriteHalf<Stream>>,
) {
    let (r, w) = tokio::io::split(ws.into_inner());
    (server_reader(r, max_message), FrameSink::new(w))
}

/// Reads a client's frames (masked, as clients send them) from any byte stream.
pub fn server_reader<R: AsyncRead + Unpin>(r: R, max_message: usize) -> MessageReader<R> {
    // The library's own write half is not used: replies are batched by FrameSink.
    let (mut read, _) = fastwebsockets::after_handshake_split(r, tokio::io::sink(), Role::Server);
    // A ping is returned rather than answered inside the read, which goes on reading: a caller
    // that writes its own frames learns of the pong it owes at once, not with the next message.
    read.set_auto_pong(false);
    // The library refuses frames whose length is >= the limit; allow exactly `max_message`.
    read.set_max_message_size(max_message.saturating_add(1));
    MessageReader {
        inner: read,
        max_message,
        partial: None,
    }
}

mod client;
mod liveness;

pub use liveness::{Check, Liveness};

pub use client::{
    ClientEvent, ClientReader, ClientWriter, ConnectError, connect, connect_reader,
    connect_reader_with, connect_split, connect_split_with, connect_with,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_use_the_right_header() {
        for (len, head) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
        ] {
            let mut buf = Vec::new();
            encode_frame(&mut buf, OpCode::Text, &vec![b'x'; len]);
            assert_eq!(buf.len(), head + len, "payload {len}");
            assert_eq!(buf[0], 0x81);
        }
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let p = close_payload(1009, &"é".repeat(100));
        assert!(p.len() <= 125);
        assert_eq!(&p[..2], &1009u16.to_be_bytes());
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }
}
