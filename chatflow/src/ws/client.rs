//! The client side: connecting to a server and reading and writing whole messages.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket, WebSocketError, WebSocketRead};
use http_body_util::Empty;
use hyper::Request;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::{ReadError, Stream, payload_bytes};

/// Why a client connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not ws://host:port/path.
    #[error("bad WebSocket URL {0:?}: expected ws://host:port/path")]
    BadUrl(String),
    /// No TCP connection within the deadline.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// host:port tried.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The server answered the upgrade with another status.
    #[error("server refused the WebSocket upgrade: {0}")]
    Refused(String),
}

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

/// Opens a client WebSocket to `url` (ws://host:port/path) within `timeout`.
pub async fn connect(url: &str, timeout: Duration) -> Result<WebSocket<Stream>, ConnectError> {
    connect_with(url, timeout, &[]).await
}

/// [`connect`] with extra request headers (`Authorization`, `Origin`).
pub async fn connect_with(
    url: &str,
    timeout: Duration,
    headers: &[(&str, &str)],
) -> Result<WebSocket<Stream>, ConnectError> {
    let uri: hyper::Uri = url.parse().map_err(|_| ConnectError::BadUrl(url.into()))?;
    if uri.scheme_str() != Some("ws") {
        return Err(ConnectError::BadUrl(url.into()));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| ConnectError::BadUrl(url.into()))?
        .clone();
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let unreachable = |reason: String| ConnectError::Unreachable {
        addr: addr.clone(),
        reason,
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| unreachable(format!("no connection within {timeout:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::builder();
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .method("GET")
        .uri(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())
        .map_err(|_| ConnectError::BadUrl(url.into()))?;
    let (ws, _) = tokio::time::timeout(
        timeout,
        fastwebsockets::handshake::client(&SpawnExecutor, req, stream),
    )
    .await
    .map_err(|_| unreachable(format!("no upgrade within {timeout:?}")))?
    .map_err(|e| match e {
        WebSocketError::InvalidStatusCode(code) => ConnectError::Refused(format!("HTTP {code}")),
        other => ConnectError::Refused(other.to_string()),
    })?;
    Ok(ws)
}

/// What a client reads from a server.
#[derive(Debug)]
pub enum ClientEvent {
    /// A text message.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// The server closed with this code and reason.
    Closed(Option<u16>, String),
}

/// Read half of a client connection.
pub struct ClientReader {
    inner: WebSocketRead<ReadHalf<Stream>>,
    /// The write half, when nothing else writes (a subscriber): pings are answered with it.
    answer: Option<Arc<tokio::sync::Mutex<ClientWriter>>>,
}

impl ClientReader {
    /// Next data message or the close. Pings are answered when this reader holds the write half
    /// ([`connect_reader`]); a split connection's writer is left alone.
    pub async fn next(&mut self) -> Result<ClientEvent, ReadError> {
        loop {
            let answer = self.answer.clone();
            let frame = self
                .inner
                // The library reads past pings by itself, handing us the pong to send.
                .read_frame(&mut |f: Frame<'_>| {
                    let pong = (f.opcode == OpCode::Pong).then(|| f.payload.to_vec());
                    let answer = answer.clone();
                    async move {
                        if let (Some(payload), Some(w)) = (pong, answer) {
                            let mut w = w.lock().await;
                            // A failed write shows up as a failed read soon enough.
                            if w.inner
                                .write_frame(Frame::pong(Payload::Owned(payload)))
                                .await
                                .is_ok()
                            {
                                let _ = w.inner.flush().await;
                            }
                        }
                        Ok::<(), std::convert::Infallible>(())
                    }
                })
                .await
                .map_err(|e| match e {
                    WebSocketError::UnexpectedEOF
                    | WebSocketError::IoError(_)
                    | WebSocketError::ConnectionClosed => ReadError::Closed,
                    other => ReadError::Protocol(other.to_string()),
                })?;
            match frame.opcode {
                OpCode::Text => return Ok(ClientEvent::Text(payload_bytes(frame.payload))),
                OpCode::Binary => return Ok(ClientEvent::Binary(payload_bytes(frame.payload))),
                OpCode::Close => {
                    let code = (frame.payload.len() >= 2)
                        .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                    let reason =
                        String::from_utf8_lossy(frame.payload.get(2..).unwrap_or_default())
                            .into_owned();
                    return Ok(ClientEvent::Closed(code, reason));
                }
                _ => continue,
            }
        }
    }
}

/// Write half of a client connection; frames are buffered until [`ClientWriter::flush`].
pub struct ClientWriter {
    inner: fastwebsockets::WebSocketWrite<tokio::io::BufWriter<WriteHalf<Stream>>>,
}

impl ClientWriter {
    /// Queues a text frame (flushed when the buffer fills or on `flush`).
    pub async fn text(&mut self, payload: &[u8]) -> Result<(), WebSocketError> {
        self.inner
            .write_frame(Frame::text(Payload::Borrowed(payload)))
            .await
    }

    /// Queues a binary frame.
    pub async fn binary(&mut self, payload: &[u8]) -> Result<(), WebSocketError> {
        self.inner
            .write_frame(Frame::binary(Payload::Borrowed(payload)))
            .await
    }

    /// Queues a raw frame (fragments, for instance).
    pub async fn frame(&mut self, frame: Frame<'_>) -> Result<(), WebSocketError> {
        self.inner.write_frame(frame).await
    }

    /// Sends a close frame.
    pub async fn close(&mut self, code: u16) -> Result<(), WebSocketError> {
        self.inner.write_frame(Frame::close(code, b"")).await?;
        self.inner.flush().await
    }

    /// Writes out everything queued.
    pub async fn flush(&mut self) -> Result<(), WebSocketError> {
        self.inner.flush().await
    }
}

/// Opens a client WebSocket split into a reader and a buffered writer.
pub async fn connect_split(
    url: &str,
    timeout: Duration,
) -> Result<(ClientReader, ClientWriter), ConnectError> {
    connect_split_with(url, timeout, &[]).await
}

/// [`connect_split`] with extra request headers.
pub async fn connect_split_with(
    url: &str,
    timeout: Duration,
    headers: &[(&str, &str)],
) -> Result<(ClientReader, ClientWriter), ConnectError> {
    let ws = connect_with(url, timeout, headers).await?;
    let (r, w) = tokio::io::split(ws.into_inner());
    let (read, write) = fastwebsockets::after_handshake_split(
        r,
        tokio::io::BufWriter::with_capacity(16 * 1024, w),
        Role::Client,
    );
    Ok((
        ClientReader {
            inner: read,
            answer: None,
        },
        ClientWriter { inner: write },
    ))
}

/// Opens a client WebSocket that only reads (a subscriber); it answers the server's pings.
pub async fn connect_reader(url: &str, timeout: Duration) -> Result<ClientReader, ConnectError> {
    connect_reader_with(url, timeout, &[]).await
}

/// [`connect_reader`] with extra request headers.
pub async fn connect_reader_with(
    url: &str,
    timeout: Duration,
    headers: &[(&str, &str)],
) -> Result<ClientReader, ConnectError> {
    let (mut reader, writer) = connect_split_with(url, timeout, headers).await?;
    reader.answer = Some(Arc::new(tokio::sync::Mutex::new(writer)));
    Ok(reader)
}
