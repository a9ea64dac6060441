//! ChatFlow standalone: one process serving `/chat/{roomId}` and `/subscribe/{roomId}` on one
//! address, plus the chat page at `/`, so a user can point any WebSocket client (or a browser)
//! at it without a cluster. Over the embedded queue by default; over SQS when configured.

pub mod config;

use std::sync::Arc;

use chatflow::about::Info;
use chatflow::auth::Gate;
use chatflow::lifecycle::Lifecycle;
use chatflow::queue::SharedQueues;
use chatflow::router::Router;
use chatflow::service::{self, ServiceHandle, StartError};
use chatflow_consumer::Consumer;
use chatflow_fanout::presence::{Presence, PresenceRoute};
use chatflow_producer::Producer;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub use config::ServerConfig;

/// The chat page and its script, served at `/` and `/chat.js`.
const PAGE: &[u8] = include_bytes!("../static/index.html");
const SCRIPT: &[u8] = include_bytes!("../static/chat.js");

/// Starts the standalone server on `config.producer.listen_addr` over `queues`.
pub async fn start(
    config: ServerConfig,
    queues: SharedQueues,
) -> Result<ServiceHandle, StartError> {
    let listener = service::bind(config.producer.listen_addr).await?;
    start_on(listener, config, queues)
}

/// Starts the standalone server on an already bound listener.
pub fn start_on(
    listener: TcpListener,
    config: ServerConfig,
    queues: SharedQueues,
) -> Result<ServiceHandle, StartError> {
    let configured = config.producer.listen_addr;
    let mut registry = Registry::default();
    let life = Lifecycle::new();
    let info = Info::new(
        "server",
        serde_json::json!({"producer": config.producer, "consumer": config.consumer}),
    );
    // One gate for both routes, so the per-address cap counts senders and subscribers together.
    let gate = Gate::new(
        &config.producer.auth,
        config.producer.trusted_proxies.clone(),
        &mut registry,
    )?;
    // One presence for the process: its subscribers are the consumer's.
    let presence = Presence::start(&config.producer.presence, &mut registry)
        .map_err(|e| StartError::Setting(e.to_string()))?;
    let producer = Producer::new(
        config.producer,
        queues.clone(),
        &mut registry,
        life.clone(),
        presence.clone(),
    )
    .inspect_err(|_| presence.iter().for_each(Presence::abort))?;
    // The consumer stops after the producer has drained, so what the producer acknowledged
    // while draining is still broadcast.
    let consumer_life = Lifecycle::new();
    let consumer = Consumer::new(
        config.consumer,
        queues,
        &mut registry,
        consumer_life.clone(),
        presence.clone(),
    )
    .inspect_err(|_| presence.iter().for_each(Presence::abort))?;
    tracing::info!(rooms = %producer.rooms(), "producer and consumer serving");
    let mut router = Router::new(registry, info)
        .gate(gate)
        .endpoint(Arc::new(producer.clone()))
        .endpoint(producer.api())
        .endpoint(producer.users_api())
        .endpoint(Arc::new(consumer.clone()))
        .endpoint(consumer.history());
    if let Some(p) = &presence {
        router = router.endpoint(Arc::new(PresenceRoute::new(
            p.clone(),
            consumer.rooms(),
            life.clone(),
            "server",
        )));
    }
    let router = router
        .page("/", "text/html; charset=utf-8", PAGE)
        .page("/index.html", "text/html; charset=utf-8", PAGE)
        .page("/chat.js", "text/javascript; charset=utf-8", SCRIPT);
    let drain = async move {
        producer.drain().await;
        consumer_life.stop();
        consumer.drain().await;
        if let Some(p) = presence {
            p.close().await;
        }
    };
    service::spawn(
        "chatflow server",
        listener.into(),
        configured,
        router,
        &life,
        drain,
    )
}
