//! Helpers shared by the consumer's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chatflow::protocol::{BroadcastEvent, MessageType, SubscriberFrame, TaskMessage};
use chatflow::queue::{BodyFormat, EmbeddedQueues, PublishEntry, QueueAttributes, SharedQueues};
use chatflow::rooms::RoomId;
use chatflow::ws::{ClientEvent, ClientReader, connect_split};
use chatflow_consumer::{ConsumerConfig, ConsumerHandle, start};

/// Longest wait for anything in these tests.
pub const T: Duration = Duration::from_secs(15);

pub fn task(room: RoomId, seq: usize, text_len: usize) -> TaskMessage {
    TaskMessage {
        message_id: format!("m-{room}-{seq}"),
        room_id: room,
        user_id: "1".into(),
        username: "user1".into(),
        message: format!("{seq:06}{}", "x".repeat(text_len)),
        timestamp: "2026-11-27T10:00:00Z".into(),
        message_type: MessageType::Text,
        server_id: "test".into(),
        client_ip: "127.0.0.1".into(),
        received_at: chatflow::protocol::now_rfc3339(),
        client_message_id: None,
    }
}

pub async fn publish(
    queues: &SharedQueues,
    room: RoomId,
    seqs: std::ops::Range<usize>,
    text_len: usize,
) {
    let entries: Vec<PublishEntry> = seqs
        .map(|i| {
            let t = task(room, i, text_len);
            PublishEntry {
                body: serde_json::to_string(&t).unwrap(),
                group_id: room.to_string(),
                dedup_id: t.message_id,
                format: BodyFormat::Task,
            }
        })
        .collect();
    for chunk in entries.chunks(10) {
        for r in queues.publish(room, chunk).await.unwrap() {
            r.unwrap();
        }
    }
}

pub async fn setup(
    rooms: std::ops::RangeInclusive<u32>,
    attrs: QueueAttributes,
    config: ConsumerConfig,
) -> (ConsumerHandle, SharedQueues) {
    let queues: SharedQueues = Arc::new(EmbeddedQueues::default());
    for room in rooms {
        queues.ensure_queue(room, &attrs).await.unwrap();
    }
    (start(config, queues.clone()).await.unwrap(), queues)
}

pub async fn subscribe(c: &ConsumerHandle, room: RoomId) -> ClientReader {
    connect_split(&format!("ws://{}/subscribe/{room}", c.addr), T)
        .await
        .unwrap()
        .0
}

/// The next `n` frames, each a room's message (an `"OK"` frame, not a notice).
pub async fn events(r: &mut ClientReader, n: usize) -> Vec<BroadcastEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(T, r.next())
            .await
            .expect("event in time")
            .expect("open")
        {
            ClientEvent::Text(b) => match serde_json::from_slice(&b) {
                Ok(SubscriberFrame::Event(e)) => out.push(e),
                other => panic!("expected an event, got {other:?}"),
            },
            other => panic!("expected an event, got {other:?}"),
        }
    }
    out
}

pub async fn nothing_more(r: &mut ClientReader) {
    if let Ok(ev) = tokio::time::timeout(Duration::from_millis(1500), r.next()).await {
        panic!("unexpected extra event {ev:?}");
    }
}

pub fn seqs(evs: &[BroadcastEvent]) -> Vec<usize> {
    evs.iter()
        .map(|e| e.message[..6].parse().unwrap())
        .collect()
}

// Not every test binary that includes this module probes a route.
#[allow(unused_imports)]
pub use chatflow_testkit::http_get;
