//! Baselines: the socket layer alone, with no ChatFlow logic.

use std::net::SocketAddr;

use bytes::Bytes;
use chatflow::http;
use fastwebsockets::{FragmentCollector, OpCode};
use hyper::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// A raw fastwebsockets echo server: every text frame comes straight back.
pub async fn echo_server(stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(http::serve(listener, stop, |mut req, _| async move {
        let Ok((resp, fut)) = fastwebsockets::upgrade::upgrade(&mut req) else {
            return http::text(StatusCode::BAD_REQUEST, "upgrade required\n");
        };
        tokio::spawn(async move {
            let Ok(ws) = fut.await else { return };
            let mut ws = FragmentCollector::new(ws);
            while let Ok(frame) = ws.read_frame().await {
                let echo = match frame.opcode {
                    OpCode::Close => break,
                    OpCode::Text | OpCode::Binary => frame,
                    _ => continue,
                };
                if ws.write_frame(echo).await.is_err() {
                    break;
                }
            }
        });
        http::switching(resp)
    }));
    Ok(addr)
}

/// A raw broadcast server: every subscriber gets each published frame through a broadcast
/// channel and writes it straight to its socket.
pub async fn broadcast_server(
    stop: CancellationToken,
    frames: broadcast::Sender<Bytes>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(http::serve(listener, stop, move |mut req, _| {
        let mut rx = frames.subscribe();
        async move {
            let Ok((resp, fut)) = fastwebsockets::upgrade::upgrade(&mut req) else {
                return http::text(StatusCode::BAD_REQUEST, "upgrade required\n");
            };
            tokio::spawn(async move {
                let Ok(ws) = fut.await else { return };
                let (_reader, mut sink) = chatflow::ws::split_server(ws, 1024);
                while let Ok(frame) = rx.recv().await {
                    sink.text(&frame);
                    while let Ok(more) = rx.try_recv() {
                        sink.text(&more);
                    }
                    if sink.flush().await.is_err() {
                        break;
                    }
                }
            });
            http::switching(resp)
        }
    }));
    Ok(addr)
}
