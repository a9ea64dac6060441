//! What a shard does not take on trust: queue bodies are checked again before they reach
//! subscribers (a chat message the producer would have refused is dropped and counted, and the
//! messages around it are delivered in order), and a subscriber's oversized frame is refused.

use chatflow::queue::{BodyFormat, PublishEntry, QueueAttributes};
use chatflow::ws::{ClientEvent, connect_split};
use chatflow_consumer::ConsumerConfig;

mod support;
use support::*;

#[tokio::test]
async fn a_queued_message_that_breaks_the_rules_is_dropped_and_counted() {
    let (c, queues) = setup(
        1..=1,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 1),
    )
    .await;
    let mut s = subscribe(&c, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    publish(&queues, 1, 0..2, 5).await;
    let mut bad = Vec::new();
    let mut other_room = task(1, 90, 5);
    other_room.room_id = 2;
    bad.push(other_room);
    let mut nobody = task(1, 91, 5);
    nobody.user_id = "0".into();
    bad.push(nobody);
    bad.push(task(1, 92, 600));
    let entries: Vec<PublishEntry> = bad
        .iter()
        .map(|t| PublishEntry {
            body: serde_json::to_string(t).unwrap(),
            group_id: "1".into(),
            dedup_id: t.message_id.clone(),
            format: BodyFormat::Task,
        })
        .collect();
    for r in queues.publish(1, &entries).await.unwrap() {
        r.unwrap();
    }
    publish(&queues, 1, 2..4, 5).await;

    assert_eq!(seqs(&events(&mut s, 4).await), [0, 1, 2, 3]);
    nothing_more(&mut s).await;
    let m = http_get(c.addr, "/metrics").await.1;
    assert!(m.contains("chatflow_consumer_rejected_total 3"), "{m}");
    c.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_frame_over_the_limit_is_closed_with_1009() {
    let (c, _queues) = setup(
        1..=1,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 1),
    )
    .await;
    let (mut r, mut w) = connect_split(&format!("ws://{}/subscribe/1", c.addr), T)
        .await
        .unwrap();
    w.text(&vec![b'x'; 4200]).await.unwrap();
    w.flush().await.unwrap();
    match tokio::time::timeout(T, r.next()).await.unwrap().unwrap() {
        ClientEvent::Closed(code, _) => assert_eq!(code, Some(1009)),
        other => panic!("expected a close, got {other:?}"),
    }
    c.shutdown().await;
}
