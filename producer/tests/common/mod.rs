//! Helpers shared by the producer's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chatflow::protocol::{Reply, TaskMessage};
use chatflow::queue::{EmbeddedQueues, QueueAttributes, SharedQueues};
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
    let queues: SharedQueues = Arc::new(EmbeddedQueues::default());
    ensure_rooms(&queues, config.queue.rooms_start..=config.queue.rooms_end).await;
    (start(config, queues.clone()).await.unwrap(), queues)
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
