//! A plain HTTP/1.1 GET, for the services' health, readiness, metrics and info routes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest wait for the whole answer.
const TIMEOUT: Duration = Duration::from_secs(15);

/// The status and body of `GET path` on `addr` (panics if the server does not answer in time).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the server accepts");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("the request is written");
    let mut answer = String::new();
    tokio::time::timeout(TIMEOUT, s.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("a readable answer");
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
