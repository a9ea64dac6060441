//! The producer-wide bound on unanswered messages: at the bound, reading pauses on every
//! connection and resumes as answers go out, with nothing lost or reordered.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatflow::protocol::Reply;
use chatflow::queue::{
    EmbeddedQueues, EntryError, PublishEntry, PublishResult, QueueAttributes, QueueDepth,
    QueueError, Queues, ReceivedMessage, SharedQueues, Tags,
};
use chatflow::rooms::RoomId;
use chatflow_producer::{ProducerConfig, start};
use common::*;
use tokio::sync::Semaphore;

/// The embedded queue, with publishes held until the gate lets them through.
struct Gated {
    inner: EmbeddedQueues,
    gate: Semaphore,
}

#[async_trait]
impl Queues for Gated {
    fn backend(&self) -> &'static str {
        "gated"
    }
    async fn create_queue_tagged(
        &self,
        room: RoomId,
        attrs: &QueueAttributes,
        tags: &Tags,
    ) -> Result<(), QueueError> {
        self.inner.create_queue_tagged(room, attrs, tags).await
    }
    async fn queue_tags(&self, room: RoomId) -> Result<Tags, QueueError> {
        self.inner.queue_tags(room).await
    }
    async fn tag_queue(&self, room: RoomId, tags: &Tags) -> Result<(), QueueError> {
        self.inner.tag_queue(room, tags).await
    }
    async fn queue_attributes(&self, room: RoomId) -> Result<BTreeMap<String, String>, QueueError> {
        self.inner.queue_attributes(room).await
    }
    async fn set_queue_attributes(
        &self,
        room: RoomId,
        a: BTreeMap<String, String>,
    ) -> Result<(), QueueError> {
        self.inner.set_queue_attributes(room, a).await
    }
    async fn delete_queue(&self, room: RoomId) -> Result<(), QueueError> {
        self.inner.delete_queue(room).await
    }
    async fn publish(
        &self,
        room: RoomId,
        e: &[PublishEntry],
    ) -> Result<Vec<PublishResult>, QueueError> {
        self.gate.acquire().await.expect("never closed").forget();
        self.inner.publish(room, e).await
    }
    async fn receive(
        &self,
        room: RoomId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.inner.receive(room, max, wait).await
    }
    async fn delete_batch(
        &self,
        room: RoomId,
        r: &[String],
    ) -> Result<Vec<Result<(), EntryError>>, QueueError> {
        self.inner.delete_batch(room, r).await
    }
    async fn depth(&self, room: RoomId) -> Result<QueueDepth, QueueError> {
        self.inner.depth(room).await
    }
}

fn received(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("chatflow_producer_messages_received_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no received counter in:\n{metrics}"))
}

#[tokio::test]
async fn at_the_bound_reading_pauses_everywhere_and_resumes_as_answers_go_out() {
    let gated = Arc::new(Gated {
        inner: EmbeddedQueues::default(),
        gate: Semaphore::new(0),
    });
    let queues: SharedQueues = gated.clone();
    ensure_rooms(&queues, 1..=2).await;
    let mut config = ProducerConfig::local(1, 2);
    config.max_unanswered = 3;
    let p = start(config, queues.clone()).await.unwrap();
    let mut conns = Vec::new();
    for room in ["1", "2"] {
        let (r, mut w) = client(&p, room).await;
        for i in 0..5 {
            send(&mut w, &message(1, "held", Some(&format!("{room}-{i}")))).await;
        }
        conns.push((room, r, w));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        received(&http_get(p.addr, "/metrics").await.1),
        3,
        "three messages are read while none is answered; the other seven wait in the sockets"
    );

    gated.gate.add_permits(1_000);
    for (room, mut r, _w) in conns {
        for i in 0..5 {
            match next_reply(&mut r).await {
                Reply::Ok(ok) => assert_eq!(
                    ok.client_message_id.as_deref(),
                    Some(format!("{room}-{i}").as_str())
                ),
                other => panic!("expected OK, got {other:?}"),
            }
        }
    }
    let queued = drain(&queues, 1).await.len() + drain(&queues, 2).await.len();
    assert_eq!(queued, 10, "every message queued once");
    p.shutdown().await;
}
