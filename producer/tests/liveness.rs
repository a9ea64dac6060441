//! Idle clients are pinged; one that never answers is closed, one that does stays; a client's
//! ping is answered at once. Whether the queue is in memory (one task per connection) or behind
//! batchers (a reader and a writer).

mod common;

use std::sync::Arc;
use std::time::Duration;

use chatflow::queue::{EmbeddedQueues, SharedQueues};
use chatflow::ws::{ClientEvent, connect, connect_reader, connect_split};
use chatflow_producer::{ProducerConfig, start};
use common::*;
use fastwebsockets::{Frame, OpCode, Payload};

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
            assert_eq!(code, Some(1001), "as every server closes an idle peer");
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

/// A client that only pings, with nothing else to read, gets its pong.
async fn pinged_answers_pong(queues: SharedQueues) {
    ensure_rooms(&queues, 1..=1).await;
    let p = start(ProducerConfig::local(1, 1), queues).await.unwrap();
    let mut ws = connect(&format!("ws://{}/chat/1", p.addr), T)
        .await
        .unwrap();
    for n in 0..3u8 {
        let payload = [b'p', n];
        ws.write_frame(Frame::new(
            true,
            OpCode::Ping,
            None,
            Payload::Borrowed(&payload),
        ))
        .await
        .unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(2), ws.read_frame())
            .await
            .expect("a pong within 2 s")
            .unwrap();
        assert_eq!(frame.opcode, OpCode::Pong);
        assert_eq!(&frame.payload[..], &payload);
    }
    p.shutdown().await;
}

#[tokio::test]
async fn idle_on_the_embedded_queue() {
    silent_closed_answering_kept(Arc::new(EmbeddedQueues::default())).await;
}

#[tokio::test]
async fn idle_behind_batchers() {
    silent_closed_answering_kept(batched(Arc::new(EmbeddedQueues::default()))).await;
}

#[tokio::test]
async fn ping_on_the_embedded_queue() {
    pinged_answers_pong(Arc::new(EmbeddedQueues::default())).await;
}

#[tokio::test]
async fn ping_behind_batchers() {
    pinged_answers_pong(batched(Arc::new(EmbeddedQueues::default()))).await;
}
