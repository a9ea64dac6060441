//! The consumer on the embedded queue (and, ignored by default, with the producer over LocalStack).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chatflow::queue::{
    EmbeddedQueues, Intercept, Intercepted, QueueAttributes, QueueError, SharedQueues, SqsConfig,
    SqsQueues,
};
use chatflow::rooms::{QueueNaming, RoomId};
use chatflow::ws::{ClientEvent, connect_split};
use chatflow_consumer::{ConsumerConfig, start};

mod support;
use support::*;

#[tokio::test]
async fn every_subscriber_gets_every_message_once_in_order_and_rooms_are_isolated() {
    let (c, queues) = setup(
        1..=2,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 2),
    )
    .await;
    let mut room1 = vec![
        subscribe(&c, 1).await,
        subscribe(&c, 1).await,
        subscribe(&c, 1).await,
    ];
    let mut room2 = vec![subscribe(&c, 2).await, subscribe(&c, 2).await];
    publish(&queues, 1, 0..300, 10).await;
    publish(&queues, 2, 0..150, 10).await;
    for s in &mut room1 {
        let evs = events(s, 300).await;
        assert_eq!(seqs(&evs), (0..300).collect::<Vec<_>>());
        assert!(evs.iter().all(|e| e.room_id == 1));
    }
    for s in &mut room2 {
        let evs = events(s, 150).await;
        assert_eq!(seqs(&evs), (0..150).collect::<Vec<_>>());
        assert!(evs.iter().all(|e| e.room_id == 2));
    }
    nothing_more(&mut room1[0]).await;
    // What the operator's autoscaler reads as each room's rate.
    let metrics = http_get(c.addr, "/metrics").await.1;
    for line in [
        r#"chatflow_consumer_room_broadcasts_total{room="1"} 300"#,
        r#"chatflow_consumer_room_broadcasts_total{room="2"} 150"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let d = queues.depth(1).await.unwrap();
    assert_eq!(
        (d.visible, d.in_flight),
        (0, 0),
        "broadcast messages are deleted"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn a_stalled_subscriber_is_dropped_while_the_others_keep_receiving() {
    let mut config = ConsumerConfig::local(1, 1);
    config.subscriber_buffer = 256;
    let (c, queues) = setup(1..=1, QueueAttributes::default(), config).await;
    let stalled = subscribe(&c, 1).await;
    let mut healthy = subscribe(&c, 1).await;
    // Enough bytes to fill the stalled peer's socket buffers and then its queue.
    const N: usize = 20_000;
    let reader = tokio::spawn(async move { events(&mut healthy, N).await });
    // Paced, so the healthy subscriber keeps up while the stalled one's buffers fill.
    for start in (0..N).step_by(100) {
        publish(&queues, 1, start..start + 100, 480).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let evs = reader.await.unwrap();
    assert_eq!(seqs(&evs), (0..N).collect::<Vec<_>>());
    let metrics = http_get(c.addr, "/metrics").await.1;
    assert!(
        metrics.contains("chatflow_consumer_dropped_slow_subscribers_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("chatflow_consumer_subscribers 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"chatflow_consumer_queue_age_seconds{room="1"}"#),
        "{metrics}"
    );
    drop(stalled);
    c.shutdown().await;
}

/// Embedded queues whose first batch's deletes fail, retry included, as a lost delete would.
/// Fails the first deletes it sees, as a flaky queue service would.
struct FirstDeletesFail {
    failures_left: AtomicUsize,
}

#[async_trait]
impl Intercept for FirstDeletesFail {
    async fn delete(&self, _room: RoomId) -> Result<(), QueueError> {
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(QueueError::Transport("injected delete failure".into()));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_redelivered_message_is_not_broadcast_twice() {
    let queues: SharedQueues = Arc::new(Intercepted::new(
        Arc::new(EmbeddedQueues::default()),
        FirstDeletesFail {
            failures_left: AtomicUsize::new(2),
        },
    ));
    let attrs = QueueAttributes {
        visibility_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    queues.ensure_queue(1, &attrs).await.unwrap();
    let c = start(ConsumerConfig::local(1, 1), queues.clone())
        .await
        .unwrap();
    let mut s = subscribe(&c, 1).await;
    publish(&queues, 1, 0..3, 5).await;
    assert_eq!(seqs(&events(&mut s, 3).await), [0, 1, 2]);
    // The failed delete brings the batch back after a second; it must not reach anyone again.
    let deadline = Instant::now() + T;
    loop {
        let m = http_get(c.addr, "/metrics").await.1;
        if m.contains("chatflow_consumer_duplicates_dropped_total 3") {
            break;
        }
        assert!(Instant::now() < deadline, "redelivery never seen:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nothing_more(&mut s).await;
    let d = queues.depth(1).await.unwrap();
    assert_eq!(
        (d.visible, d.in_flight),
        (0, 0),
        "the redelivered copies were deleted"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn a_message_held_by_a_dead_consumer_is_delivered_by_its_successor() {
    let attrs = QueueAttributes {
        visibility_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let queues: SharedQueues = Arc::new(EmbeddedQueues::default());
    queues.ensure_queue(1, &attrs).await.unwrap();
    publish(&queues, 1, 0..2, 5).await;
    // A consumer that received the messages and died before broadcasting or deleting them.
    let held = queues.receive(1, 10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(held.len(), 2);
    let c = start(ConsumerConfig::local(1, 1), queues.clone())
        .await
        .unwrap();
    let mut s = subscribe(&c, 1).await;
    assert_eq!(seqs(&events(&mut s, 2).await), [0, 1]);
    c.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_subscribers_with_1001_and_only_owned_rooms_are_served() {
    let (c, _queues) = setup(
        5..=6,
        QueueAttributes::default(),
        ConsumerConfig::local(5, 6),
    )
    .await;
    for bad in ["4", "7", "x"] {
        let res = connect_split(&format!("ws://{}/subscribe/{bad}", c.addr), T).await;
        assert!(
            matches!(res, Err(chatflow::ws::ConnectError::Refused(ref s)) if s.contains("404")),
            "room {bad}"
        );
    }
    assert!(http_get(c.addr, "/ready").await.1.contains("ready"));
    let mut s = subscribe(&c, 5).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.shutdown().await;
    match tokio::time::timeout(T, s.next()).await.unwrap().unwrap() {
        ClientEvent::Closed(code, _) => assert_eq!(code, Some(1001)),
        other => panic!("expected close 1001, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs LocalStack: run scripts/test"]
async fn producer_queue_and_consumer_deliver_20_rooms_of_1000_exactly_once_in_order() {
    use chatflow::protocol::Reply;
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
    let prefix = format!("e{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let sqs_config = SqsConfig {
        endpoint: Some(endpoint),
        ..SqsConfig::default()
    };
    let queues: SharedQueues = Arc::new(
        SqsQueues::connect(&sqs_config, QueueNaming::parse(&prefix).unwrap())
            .await
            .unwrap(),
    );
    for room in 1..=20 {
        queues
            .ensure_queue(room, &QueueAttributes::default())
            .await
            .unwrap();
    }
    let consumer = start(ConsumerConfig::local(1, 20), queues.clone())
        .await
        .unwrap();
    let producer = chatflow_producer::start(
        chatflow_producer::ProducerConfig::local(1, 20),
        queues.clone(),
    )
    .await
    .unwrap();
    const PER_ROOM: usize = 1000;
    let mut subscribers = Vec::new();
    for room in 1..=20u32 {
        for _ in 0..2 {
            let mut s = subscribe(&consumer, room).await;
            subscribers.push(tokio::spawn(async move {
                (room, events(&mut s, PER_ROOM).await)
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut senders = Vec::new();
    for room in 1..=20u32 {
        let url = format!("ws://{}/chat/{room}", producer.addr);
        senders.push(tokio::spawn(async move {
            let (mut r, mut w) = connect_split(&url, T).await.unwrap();
            for i in 0..PER_ROOM {
                let frame = serde_json::json!({"userId": 1, "username": "user1", "message": format!("{i:06}"),
                    "timestamp": "2026-11-27T10:00:00Z", "messageType": "TEXT", "clientMessageId": format!("r{room}-{i}")});
                w.text(frame.to_string().as_bytes()).await.unwrap();
            }
            w.flush().await.unwrap();
            for _ in 0..PER_ROOM {
                match tokio::time::timeout(Duration::from_secs(60), r.next()).await.unwrap().unwrap() {
                    ClientEvent::Text(b) => assert!(matches!(serde_json::from_slice(&b).unwrap(), Reply::Ok(_))),
                    other => panic!("{other:?}"),
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    for s in subscribers {
        let (room, evs) = s.await.unwrap();
        assert_eq!(seqs(&evs), (0..PER_ROOM).collect::<Vec<_>>(), "room {room}");
    }
    producer.shutdown().await;
    consumer.shutdown().await;
    for room in 1..=20 {
        queues.delete_queue(room).await.unwrap();
    }
}

#[tokio::test]
async fn with_capped_pollers_a_busy_room_does_not_starve_a_quiet_one() {
    let mut config = ConsumerConfig::local(1, 10);
    config.pollers = 2;
    config.subscriber_buffer = 10_000;
    let (c, queues) = setup(1..=10, QueueAttributes::default(), config).await;
    let mut busy = subscribe(&c, 1).await;
    let mut quiet = subscribe(&c, 10).await;
    let reader = tokio::spawn(async move { events(&mut busy, 3_000).await });
    publish(&queues, 1, 0..3_000, 10).await;
    let sent = Instant::now();
    publish(&queues, 10, 0..1, 10).await;
    let got = events(&mut quiet, 1).await;
    assert_eq!(seqs(&got), [0]);
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "the quiet room waited {:?}",
        sent.elapsed()
    );
    assert_eq!(seqs(&reader.await.unwrap()), (0..3_000).collect::<Vec<_>>());
    c.shutdown().await;
}
