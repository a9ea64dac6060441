//! Idle clients are pinged; one that never answers is closed, one that does stays, whether the
//! queue is in memory (one task per connection) or behind batchers (a reader and a writer).

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatflow::queue::{EmbeddedQueues, Intercept, Intercepted, SharedQueues};
use chatflow::ws::{ClientEvent, connect_reader, connect_split};
use chatflow_producer::{ProducerConfig, start};
use common::*;

/// Changes nothing but hides the queue being in memory, so the producer uses its batchers.
struct Batched;

#[async_trait]
impl Intercept for Batched {}

async fn silent_closed_answering_kept(queues: SharedQueues) {
    ensure_rooms(&queues, 1..=1).await;
    let mut config = ProducerConfig::local(1, 1);
    config.idle_timeout_secs = 1;
    let p = start(config, queues).await.unwrap();
    let url = format!("ws://{}/chat/1", p.addr);
    // Reads, but never writes: no pong for the server's pings, as a vanished peer.
    let (mut silent, _writer_never_used) = connect_split(&url, T).await.unwrap();
    // Reading is what answers pings, as in any client.
    let mut answering = connect_reader(&url, T).await.unwrap();
    let answering = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(6), answering.next()).await
    });

    match tokio::time::timeout(Duration::from_secs(10), silent.next())
        .await
        .expect("closed within a few idle periods")
        .unwrap()
    {
        ClientEvent::Closed(code, reason) => {
            assert_eq!(code, Some(1000));
            assert!(reason.contains("idle"), "{reason}");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    let got = answering.await.unwrap();
    assert!(
        got.is_err(),
        "the client that answers pings is still open, with nothing to read: {got:?}"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn on_the_embedded_queue() {
    silent_closed_answering_kept(Arc::new(EmbeddedQueues::default())).await;
}

#[tokio::test]
async fn behind_batchers() {
    let batched = Intercepted::new(Arc::new(EmbeddedQueues::default()), Batched);
    silent_closed_answering_kept(Arc::new(batched)).await;
}
