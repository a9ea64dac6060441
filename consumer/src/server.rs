//! The consumer service: routes, subscriber admission, one poll loop per room, shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chatflow::http::{self, Body};
use chatflow::queue::SharedQueues;
use chatflow::rooms::RoomRange;
use chatflow::service::{self, ServiceHandle, StartError};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ConsumerConfig;
use crate::metrics::Metrics;
use crate::poller::{self, PollContext};
use crate::room::Room;
use crate::subscriber;

struct Shared {
    config: ConsumerConfig,
    rooms: RoomRange,
    room_state: Vec<Arc<Room>>,
    metrics: Arc<Metrics>,
    registry: Registry,
    subscribers: AtomicUsize,
    /// Fires when subscribers must go (after the pollers stopped).
    closing: CancellationToken,
    stopping: CancellationToken,
}

/// A running consumer.
pub type ConsumerHandle = ServiceHandle;

/// Starts the consumer on `config.listen_addr` over `queues`.
pub async fn start(
    config: ConsumerConfig,
    queues: SharedQueues,
) -> Result<ConsumerHandle, StartError> {
    let listener = service::bind(config.listen_addr).await?;
    start_on(listener, config, queues)
}

/// Starts the consumer on an already bound listener.
pub fn start_on(
    listener: TcpListener,
    config: ConsumerConfig,
    queues: SharedQueues,
) -> Result<ConsumerHandle, StartError> {
    let rooms = config.queue.rooms()?;
    let addr = service::local_addr(&listener, config.listen_addr)?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let (turns, wait) = config.poll_plan(rooms.len());
    let stopping = CancellationToken::new();
    let ctx = Arc::new(PollContext {
        queues,
        metrics: metrics.clone(),
        wait,
        turns: turns.map(|n| Arc::new(Semaphore::new(n))),
        stop: stopping.clone(),
    });
    let room_state: Vec<Arc<Room>> = rooms
        .iter()
        .map(|_| Arc::new(Room::new(config.dedup_memory as usize)))
        .collect();
    let pollers = TaskTracker::new();
    for (room_id, room) in rooms.iter().zip(&room_state) {
        pollers.spawn(poller::run(room_id, room.clone(), ctx.clone()));
    }
    pollers.close();
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let shared = Arc::new(Shared {
        config,
        rooms,
        room_state,
        metrics,
        registry,
        subscribers: AtomicUsize::new(0),
        closing: CancellationToken::new(),
        stopping: stopping.clone(),
    });
    let task = tokio::spawn({
        let shared = shared.clone();
        async move {
            tracing::info!(%addr, rooms = %shared.rooms, pollers = ?turns, wait = ?wait, "consumer listening");
            let conns = TaskTracker::new();
            let handler = {
                let shared = shared.clone();
                let conns = conns.clone();
                move |req, _peer| route(req, shared.clone(), conns.clone())
            };
            http::serve(listener, shared.stopping.clone(), handler).await;
            // Pollers stop first and finish their batches, so subscribers get everything in hand.
            if tokio::time::timeout(grace, pollers.wait()).await.is_err() {
                tracing::warn!("shutdown grace period over with broadcasts in progress");
            }
            shared.closing.cancel();
            for room in &shared.room_state {
                room.close_all();
            }
            conns.close();
            let _ = tokio::time::timeout(grace, conns.wait()).await;
            tracing::info!("consumer stopped");
        }
    });
    Ok(ServiceHandle::new(addr, stopping, task))
}

async fn route(req: Request<Incoming>, shared: Arc<Shared>, conns: TaskTracker) -> Response<Body> {
    if req.method() != Method::GET {
        return http::text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/health" => http::text(StatusCode::OK, "ok\n"),
        "/ready" => http::ready(if shared.stopping.is_cancelled() {
            Err("shutting down".into())
        } else {
            Ok(())
        }),
        "/metrics" => http::metrics(&shared.registry),
        p if p.starts_with("/subscribe/") => {
            subscribe(req, shared, conns, &p["/subscribe/".len()..])
        }
        _ => http::text(
            StatusCode::NOT_FOUND,
            "not found: use /subscribe/{roomId}, /health, /ready or /metrics\n",
        ),
    }
}

fn subscribe(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    conns: TaskTracker,
    room: &str,
) -> Response<Body> {
    let room_id = match shared.rooms.parse_room(room) {
        Ok(r) => r,
        Err(e) => {
            return http::text(
                StatusCode::NOT_FOUND,
                format!("this shard does not serve that room: {e}\n"),
            );
        }
    };
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return http::text(
            StatusCode::UPGRADE_REQUIRED,
            "this route is a WebSocket: send an upgrade request\n",
        );
    }
    if shared.stopping.is_cancelled() {
        return http::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    if shared.subscribers.fetch_add(1, Ordering::AcqRel) >= shared.config.max_subscribers {
        shared.subscribers.fetch_sub(1, Ordering::AcqRel);
        return http::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "subscriber limit reached, retry later\n",
        );
    }
    let (resp, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(e) => {
            shared.subscribers.fetch_sub(1, Ordering::AcqRel);
            return http::text(
                StatusCode::BAD_REQUEST,
                format!("bad WebSocket upgrade: {e}\n"),
            );
        }
    };
    let room = shared.room_state[(room_id - shared.rooms.start()) as usize].clone();
    shared.metrics.subscribers.inc();
    conns.spawn(async move {
        if let Ok(ws) = fut.await {
            subscriber::serve(
                ws,
                room,
                shared.config.subscriber_buffer as usize,
                shared.closing.clone(),
            )
            .await;
        }
        shared.metrics.subscribers.dec();
        shared.subscribers.fetch_sub(1, Ordering::AcqRel);
    });
    http::switching(resp)
}
