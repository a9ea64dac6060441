//! Fault injection for tests: a TCP proxy that can be cut and restored, standing in for a queue
//! service outage (LocalStack keeps no queues across a restart, so it cannot simply be stopped).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A cuttable TCP proxy to one upstream address.
pub struct Proxy {
    /// Where the proxy listens.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<Mutex<CancellationToken>>,
}

impl Proxy {
    /// Starts a proxy on loopback forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        Self::with_delay(upstream, Duration::ZERO).await
    }

    /// Like [`Proxy::start`], delivering every response chunk `delay` after it arrived: a
    /// network round trip, for measuring how a client copes with a remote service. It is
    /// latency, not bandwidth: chunks of a large response are not delayed one after another.
    pub async fn with_delay(upstream: SocketAddr, delay: Duration) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue;
                }
                let token = cut2.lock().unwrap_or_else(|e| e.into_inner()).clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut ci, co) = inbound.into_split();
                    let (ui, mut uo) = outbound.into_split();
                    let up = tokio::io::copy(&mut ci, &mut uo);
                    let down = delayed_copy(ui, co, delay);
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        Ok(Proxy { addr, up, cut })
    }

    /// The proxy's address as an http:// endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Refuses new connections and drops open ones.
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut cut = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        cut.cancel();
        *cut = CancellationToken::new();
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, writing each chunk `delay` after it was read.
async fn delayed_copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    // Bounded, so a stalled writer stops the reading instead of buffering without limit.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // The writer finishes what was read before the upstream closed.
    tokio::join!(read, write);
}
