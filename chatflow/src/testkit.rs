//! Fault injection for tests: a TCP proxy that can be cut and restored, standing in for a queue
//! service outage (LocalStack keeps no queues across a restart, so it cannot simply be stopped).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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

    /// Like [`Proxy::start`], holding every response chunk for `delay`: a network round trip,
    /// for measuring how a client copes with a remote service.
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
                    let (mut ci, mut co) = inbound.into_split();
                    let (mut ui, mut uo) = outbound.into_split();
                    let up = tokio::io::copy(&mut ci, &mut uo);
                    let down = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match ui.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            if co.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
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
