//! Helpers shared by the producer's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chatflow::protocol::{Reply, TaskMessage};
use chatflow::queue::{EmbeddedQueues, Intercept, Intercepted, QueueAttributes, SharedQueues};
use chatflow::ws::{ClientEvent, ClientReader, ClientWriter, connect_split};
use chatflow_producer::{ProducerConfig, ProducerHandle, start};

pub const T: Duration = Duration::from_secs(10);

pub async fn ensure_rooms(queues: &SharedQueues, rooms: std::ops::RangeInclusive<u32>) {
    for room in rooms {
        queues
            .ensure_queue(room, &QueueAttributes::default())
            .await
            .unwrap();
    }
}

pub async fn embedded_producer(config: ProducerConfig) -> (ProducerHandle, SharedQueues) {
    producer_on(Engine::InPlace, config).await
}

/// How a producer's connections publish.
#[derive(Debug, Clone, Copy)]
pub enum Engine {
    /// Each connection publishes what it read itself (a queue in memory).
    InPlace,
    /// Connections hand messages to their room's batcher (a queue behind a network, as SQS).
    Relayed,
}

/// Changes nothing but hides the queue being in memory, so the producer uses its batchers.
pub struct Batched;

#[async_trait::async_trait]
impl Intercept for Batched {}

/// An in-memory queue that the producer treats as remote: its connections go through batchers.
pub fn batched(inner: SharedQueues) -> SharedQueues {
    Arc::new(Intercepted::new(inner, Batched))
}

/// A producer over an in-memory queue, publishing with `engine`; the queue is returned to read
/// what was published.
pub async fn producer_on(engine: Engine, config: ProducerConfig) -> (ProducerHandle, SharedQueues) {
    let queues: SharedQueues = Arc::new(EmbeddedQueues::default());
    ensure_rooms(&queues, config.queue.rooms_start..=config.queue.rooms_end).await;
    let served = match engine {
        Engine::InPlace => queues.clone(),
        Engine::Relayed => batched(queues.clone()),
    };
    (start(config, served).await.unwrap(), queues)
}

/// Runs each named `async fn(Engine)` as two tests, `in_place::NAME` and `relayed::NAME`, so
/// every behaviour holds on both connection engines.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod in_place {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Engine::InPlace).await
            })*
        }
        mod relayed {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Engine::Relayed).await
            })*
        }
    };
}

/// The producer's count of messages read, from its `/metrics`.
pub fn received(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("chatflow_producer_messages_received_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no received counter in:\n{metrics}"))
}

/// Waits until the producer has read `n` messages.
pub async fn read_by_producer(p: &ProducerHandle, n: u64) {
    tokio::time::timeout(T, async {
        while received(&http_get(p.addr, "/metrics").await.1) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the producer reads what was sent");
}

pub async fn client(p: &ProducerHandle, room: &str) -> (ClientReader, ClientWriter) {
    connect_split(&format!("ws://{}/chat/{room}", p.addr), T)
        .await
        .unwrap()
}

pub fn message(user: u32, text: &str, cmid: Option<&str>) -> String {
    let mut v = serde_json::json!({
        "userId": user.to_string(),
        "username": format!("user{user}"),
        "message": text,
        "timestamp": "2026-11-27T10:00:00Z",
        "messageType": "TEXT",
    });
    if let Some(id) = cmid {
        v["clientMessageId"] = id.into();
    }
    v.to_string()
}

pub async fn send(w: &mut ClientWriter, frame: &str) {
    w.text(frame.as_bytes()).await.unwrap();
    w.flush().await.unwrap();
}

pub async fn next_text(r: &mut ClientReader) -> String {
    match tokio::time::timeout(T, r.next())
        .await
        .expect("reply in time")
        .expect("open socket")
    {
        ClientEvent::Text(b) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("expected a text reply, got {other:?}"),
    }
}

pub async fn next_reply(r: &mut ClientReader) -> Reply {
    let text = next_text(r).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Receives and deletes everything in a room's queue, in queue order.
pub async fn drain(queues: &SharedQueues, room: u32) -> Vec<TaskMessage> {
    let mut out = Vec::new();
    loop {
        let got = queues
            .receive(room, 10, Duration::from_millis(300))
            .await
            .unwrap();
        if got.is_empty() {
            return out;
        }
        let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
        for m in &got {
            out.extend(chatflow::envelope::unpack(&m.format, &m.body).unwrap());
        }
        queues.delete_batch(room, &receipts).await.unwrap();
    }
}

// Not every test binary that includes this module probes a route.
#[allow(unused_imports)]
pub use chatflow_testkit::http_get;
