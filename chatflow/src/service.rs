//! A running service as its owner sees it: where it listens, and a way to stop it.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::QueueOptions;
use crate::lifecycle::Lifecycle;
use crate::queue::SharedQueues;
use crate::rooms::RoomError;
use crate::router::Router;

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
    /// Token keys could not be loaded.
    #[error("token keys: {0}")]
    Keys(#[from] crate::auth::KeyError),
    /// Another setting is unusable (named in the message).
    #[error("{0}")]
    Setting(String),
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
}

/// Listeners of a service: the one clients use and, when metrics are kept apart, theirs.
pub struct Listeners {
    /// Clients' routes, health and readiness (and metrics, without a metrics listener).
    pub main: TcpListener,
    /// `/metrics` alone, off the Service clients reach.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds `main` and, when given, `metrics`.
    pub async fn bind(main: SocketAddr, metrics: Option<SocketAddr>) -> Result<Self, StartError> {
        Ok(Listeners {
            main: bind(main).await?,
            metrics: match metrics {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            },
        })
    }
}

impl From<TcpListener> for Listeners {
    fn from(main: TcpListener) -> Self {
        Listeners {
            main,
            metrics: None,
        }
    }
}

/// Serves `router` until `life` stops, then runs `drain` (the services' own shutdown:
/// answering what they accepted); the handle's `shutdown` waits for all of it.
pub fn spawn(
    name: &'static str,
    listeners: Listeners,
    configured: SocketAddr,
    router: Router,
    life: &Lifecycle,
    drain: impl Future<Output = ()> + Send + 'static,
) -> Result<ServiceHandle, StartError> {
    let shutdown = life.stopping().clone();
    let Listeners {
        main: listener,
        metrics,
    } = listeners;
    let addr = local_addr(&listener, configured)?;
    tracing::info!(%addr, "{name} listening");
    let router = match metrics {
        Some(metrics) => {
            let (router, metrics_router) = router.metrics_apart();
            if let Ok(at) = metrics.local_addr() {
                tracing::info!(addr = %at, "{name} metrics listening");
            }
            tokio::spawn(metrics_router.serve(metrics, shutdown.clone()));
            router
        }
        None => router,
    };
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            router.serve(listener, shutdown).await;
            drain.await;
            tracing::info!("{name} stopped");
        }
    });
    Ok(ServiceHandle::new(addr, shutdown, task))
}

/// The life of a service binary once its configuration is parsed: connect the queue backend,
/// start, serve until SIGTERM or Ctrl-C, then drain. Exits 2 on a bad queue setting, 1 when the
/// service cannot start.
pub async fn main<C, F, Fut>(name: &str, queue: &QueueOptions, config: C, start: F) -> ExitCode
where
    F: FnOnce(C, SharedQueues) -> Fut,
    Fut: Future<Output = Result<ServiceHandle, StartError>>,
{
    if let Err(e) = queue.naming() {
        // Logging may not be what the operator reads first: a start-up error goes to stderr.
        eprintln!("{name}: invalid configuration: {e}");
        return ExitCode::from(2);
    }
    let queues = match queue.connect().await {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(error = %e, "{name}: connecting the queue backend failed");
            return ExitCode::FAILURE;
        }
    };
    let service = match start(config, queues).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "{name}: start failed");
            return ExitCode::FAILURE;
        }
    };
    crate::telemetry::shutdown_signal().await;
    tracing::info!("shutdown signal received: draining");
    service.shutdown().await;
    ExitCode::SUCCESS
}
