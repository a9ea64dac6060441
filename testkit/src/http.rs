//! Plain HTTP/1.1 requests, for the services' routes that are not WebSockets.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest wait for the whole answer.
const TIMEOUT: Duration = Duration::from_secs(15);

/// The status and body of `GET path` on `addr` (panics if the server does not answer in time).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, &[], "").await
}

/// The status and body of one request with `headers` and `body` (panics if the server does not
/// answer in time).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let answer = http_exchange(addr, method, path, headers, body).await;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The whole answer to one request, status line and headers included (panics if the server does
/// not answer in time).
pub async fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the server accepts");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let length = match (method, body.len()) {
        ("GET" | "OPTIONS", 0) => String::new(),
        (_, n) => format!("Content-Length: {n}\r\n"),
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{length}{extra}\r\n{body}"
    );
    s.write_all(req.as_bytes())
        .await
        .expect("the request is written");
    let mut answer = String::new();
    tokio::time::timeout(TIMEOUT, s.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("a readable answer");
    answer
}
