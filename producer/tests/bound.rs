//! The producer-wide bound on unanswered messages: at the bound, reading pauses on every
//! connection and resumes as answers go out, with nothing lost or reordered.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatflow::protocol::Reply;
use chatflow::queue::{EmbeddedQueues, Intercept, Intercepted, QueueError, SharedQueues};
use chatflow::rooms::RoomId;
use chatflow_producer::{ProducerConfig, start};
use common::*;
use tokio::sync::Semaphore;

/// Holds publishes until the gate lets them through.
struct Gate(Semaphore);

#[async_trait]
impl Intercept for Gate {
    async fn publish(&self, _room: RoomId) -> Result<(), QueueError> {
        self.0.acquire().await.expect("never closed").forget();
        Ok(())
    }
}

#[tokio::test]
async fn at_the_bound_reading_pauses_everywhere_and_resumes_as_answers_go_out() {
    let gated = Arc::new(Intercepted::new(
        Arc::new(EmbeddedQueues::default()),
        Gate(Semaphore::new(0)),
    ));
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

    gated.hooks().0.add_permits(1_000);
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

#[tokio::test]
async fn a_burst_larger_than_the_bound_is_answered_in_full_on_the_embedded_queue() {
    // The embedded queue is published from the connection: messages it gathered must not hold
    // the places it waits for.
    let mut config = ProducerConfig::local(1, 1);
    config.max_unanswered = 10;
    let (p, _queues) = embedded_producer(config).await;
    let (mut r, mut w) = client(&p, "1").await;
    for i in 0..40u32 {
        w.text(message(1 + i, "burst", Some(&format!("b{i}"))).as_bytes())
            .await
            .unwrap();
    }
    w.flush().await.unwrap();
    for i in 0..40u32 {
        match next_reply(&mut r).await {
            Reply::Ok(ok) => assert_eq!(ok.client_message_id, Some(format!("b{i}"))),
            other => panic!("expected OK for b{i}, got {other:?}"),
        }
    }
    p.shutdown().await;
}
