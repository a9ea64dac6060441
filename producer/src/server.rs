//! The producer service: routes, connection admission, per-room batchers, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chatflow::http::{self, Body};
use chatflow::queue::SharedQueues;
use chatflow::rooms::{RoomId, RoomRange};
use chatflow::service::{self, ServiceHandle, StartError};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batcher::{self, BatchContext, BatchPolicy, Pending};
use crate::breaker::Breaker;
use crate::client_ip;
use crate::config::ProducerConfig;
use crate::connection::{self, Target};
use crate::metrics::Metrics;

/// Messages a room's batcher holds before senders wait; ten full batches.
const BATCHER_QUEUE: usize = 100;

/// State every connection shares.
pub struct Shared {
    /// Configuration.
    pub config: ProducerConfig,
    /// Rooms served.
    pub rooms: RoomRange,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
    batchers: Vec<mpsc::Sender<Pending>>,
    batch: Arc<BatchContext>,
    registry: Registry,
    connections: AtomicUsize,
}

impl Shared {
    /// The batcher of a room of the range.
    pub fn batcher(&self, room: RoomId) -> &mpsc::Sender<Pending> {
        &self.batchers[(room - self.rooms.start()) as usize]
    }

    fn ready(&self) -> Result<(), String> {
        if self.shutdown.is_cancelled() {
            return Err("shutting down".into());
        }
        if self.batch.breaker.is_open() {
            return Err("queue service unavailable (circuit breaker open)".into());
        }
        Ok(())
    }
}

/// A running producer.
pub type ProducerHandle = ServiceHandle;

/// Starts the producer on `config.listen_addr` over `queues`.
pub async fn start(
    config: ProducerConfig,
    queues: SharedQueues,
) -> Result<ProducerHandle, StartError> {
    let listener = service::bind(config.listen_addr).await?;
    start_on(listener, config, queues)
}

/// Starts the producer on an already bound listener.
pub fn start_on(
    listener: TcpListener,
    config: ProducerConfig,
    queues: SharedQueues,
) -> Result<ProducerHandle, StartError> {
    let rooms = config.queue.rooms()?;
    let addr = service::local_addr(&listener, config.listen_addr)?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let batch = Arc::new(BatchContext {
        queues,
        policy: BatchPolicy {
            linger: config.linger(),
            attempts: config.publish_attempts,
            retry_base: Duration::from_millis(config.retry_base_ms),
            retry_max: Duration::from_millis(config.retry_max_ms),
        },
        breaker: Breaker::new(
            config.breaker_threshold,
            Duration::from_millis(config.breaker_cooldown_ms),
        ),
        metrics: metrics.clone(),
    });
    let batcher_tasks = TaskTracker::new();
    let batchers = rooms
        .iter()
        .map(|room| {
            let (tx, rx) = mpsc::channel(BATCHER_QUEUE);
            batcher_tasks.spawn(batcher::run(room, batch.clone(), rx));
            tx
        })
        .collect();
    batcher_tasks.close();
    let shutdown = CancellationToken::new();
    tokio::spawn(batcher::probe_while_open(
        rooms.start(),
        batch.clone(),
        Duration::from_millis(config.breaker_cooldown_ms),
        shutdown.clone(),
    ));
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let shared = Arc::new(Shared {
        config,
        rooms,
        metrics,
        shutdown: shutdown.clone(),
        batchers,
        batch,
        registry,
        connections: AtomicUsize::new(0),
    });
    let connections = TaskTracker::new();
    let task = tokio::spawn({
        let shared = shared.clone();
        let connections = connections.clone();
        async move {
            tracing::info!(%addr, rooms = %shared.rooms, "producer listening");
            let handler = {
                let shared = shared.clone();
                let connections = connections.clone();
                move |req, peer| route(req, peer, shared.clone(), connections.clone())
            };
            http::serve(listener, shared.shutdown.clone(), handler).await;
            connections.close();
            if tokio::time::timeout(grace, connections.wait())
                .await
                .is_err()
            {
                tracing::warn!("shutdown grace period over with connections still open");
            }
            // Last reference to the batchers' senders: they flush what they hold and stop.
            drop(shared);
            let _ = tokio::time::timeout(grace, batcher_tasks.wait()).await;
            tracing::info!("producer stopped");
        }
    });
    Ok(ServiceHandle::new(addr, shutdown, task))
}

async fn route(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    connections: TaskTracker,
) -> Response<Body> {
    if req.method() != Method::GET {
        return http::text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/health" => http::text(StatusCode::OK, "ok\n"),
        "/ready" => http::ready(shared.ready()),
        "/metrics" => http::metrics(&shared.registry),
        p if p.starts_with("/chat/") => {
            upgrade(req, peer, shared, connections, &p["/chat/".len()..])
        }
        _ => http::text(
            StatusCode::NOT_FOUND,
            "not found: use /chat/{roomId}, /health, /ready or /metrics\n",
        ),
    }
}

fn upgrade(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    connections: TaskTracker,
    room: &str,
) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return http::text(
            StatusCode::UPGRADE_REQUIRED,
            "this route is a WebSocket: send an upgrade request\n",
        );
    }
    if shared.shutdown.is_cancelled() {
        return http::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    // Counted before the upgrade so a burst cannot overshoot the limit.
    let open = shared.connections.fetch_add(1, Ordering::AcqRel);
    if open >= shared.config.max_connections {
        shared.connections.fetch_sub(1, Ordering::AcqRel);
        shared.metrics.connections_refused.inc();
        return http::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached, retry later\n",
        );
    }
    let target = match shared.rooms.parse_room(room) {
        Ok(room) => Target::Room(room),
        Err(e) => Target::Invalid(e.to_string()),
    };
    let client_ip = client_ip::resolve(peer, req.headers(), &shared.config.trusted_proxies);
    let (resp, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(e) => {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            return http::text(
                StatusCode::BAD_REQUEST,
                format!("bad WebSocket upgrade: {e}\n"),
            );
        }
    };
    shared.metrics.connections.inc();
    connections.spawn(async move {
        match fut.await {
            Ok(ws) => connection::serve(ws, shared.clone(), target, client_ip).await,
            Err(e) => tracing::debug!(%peer, error = %e, "upgrade did not complete"),
        }
        shared.metrics.connections.dec();
        shared.connections.fetch_sub(1, Ordering::AcqRel);
    });
    http::switching(resp)
}
