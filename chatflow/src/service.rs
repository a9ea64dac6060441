//! A running service as its owner sees it: where it listens, and a way to stop it.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::rooms::RoomError;

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad rooms.
    #[error("invalid rooms: {0}")]
    Rooms(#[from] RoomError),
    /// The listen address is unusable.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Binds `addr`, naming it in the error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

/// The address a listener got (the port, when 0 was asked for).
pub fn local_addr(
    listener: &TcpListener,
    configured: SocketAddr,
) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Listen {
        addr: configured,
        source,
    })
}

/// A started service.
pub struct ServiceHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl ServiceHandle {
    /// Wraps a service's address, its stop token and its main task.
    pub fn new(addr: SocketAddr, shutdown: CancellationToken, task: JoinHandle<()>) -> Self {
        ServiceHandle {
            addr,
            shutdown,
            task,
        }
    }

    /// Asks the service to drain and stop, and waits until it has.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// The token that stops this service.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}
