//! Rooms laid onto shared queues (buckets): each room keeps its own order and audience while
//! its messages travel with other rooms' in the same envelopes, sends, receives and deletes.

mod support;

use std::sync::Arc;

use chatflow::queue::{
    BodyFormat, EmbeddedQueues, Intercept, Intercepted, PublishEntry, QueueAttributes, SharedQueues,
};
use chatflow::rooms::{Layout, QueueNaming};
use chatflow::ws::connect_split;
use chatflow_consumer::{ConsumerConfig, start};
use chatflow_producer::ProducerConfig;
use support::*;

/// Rooms 1-8 on two queues of four rooms each.
async fn bucketed() -> SharedQueues {
    buckets_of(4, &[1, 5]).await
}

/// Queues of `rooms` rooms each, counted from room 1, with these keys.
async fn buckets_of(rooms: u32, keys: &[u32]) -> SharedQueues {
    let naming = QueueNaming::default().with_layout(Layout::Buckets { rooms }, 1);
    let queues: SharedQueues = Arc::new(EmbeddedQueues::new(naming));
    for &key in keys {
        queues
            .ensure_queue(key, &QueueAttributes::default())
            .await
            .unwrap();
    }
    queues
}

/// Hides the queue being in memory, so the producer publishes through its batchers.
struct Remote;

#[async_trait::async_trait]
impl Intercept for Remote {}

fn frame(user: u32, seq: usize) -> String {
    serde_json::json!({
        "userId": user.to_string(),
        "username": format!("user{user}"),
        "message": format!("{seq:06}"),
        "timestamp": "2026-11-27T10:00:00Z",
        "messageType": "TEXT",
    })
    .to_string()
}

/// Sends `n` messages to each of `rooms`, interleaved, through a producer that publishes over
/// the network path (its batchers), and checks each room's subscriber gets its own, in order.
async fn each_room_in_order(queues: &SharedQueues, last: u32, rooms: &[u32], n: usize) {
    let consumer = start(ConsumerConfig::local(1, last), queues.clone())
        .await
        .unwrap();
    let config = ProducerConfig::local(1, last);
    let remote: SharedQueues = Arc::new(Intercepted::new(queues.clone(), Remote));
    let producer = chatflow_producer::start(config, remote).await.unwrap();
    let mut subs = Vec::new();
    for &room in rooms {
        subs.push(subscribe(&consumer, room).await);
    }
    let mut writers = Vec::new();
    for room in rooms {
        let url = format!("ws://{}/chat/{room}", producer.addr);
        writers.push(connect_split(&url, T).await.unwrap());
    }
    // Interleaved, so batches of one queue carry several rooms.
    for seq in 0..n {
        for (_, w) in &mut writers {
            w.text(frame(1, seq).as_bytes()).await.unwrap();
        }
    }
    for (_, w) in &mut writers {
        w.flush().await.unwrap();
    }
    for (room, sub) in rooms.iter().zip(&mut subs) {
        let evs = events(sub, n).await;
        assert_eq!(seqs(&evs), (0..n).collect::<Vec<_>>(), "room {room}");
        assert!(evs.iter().all(|e| e.room_id == *room), "room {room}");
    }
    futures::future::join_all(subs.iter_mut().map(nothing_more)).await;
    producer.shutdown().await;
    consumer.shutdown().await;
}

#[tokio::test]
async fn rooms_sharing_a_queue_each_get_their_own_messages_in_order() {
    let queues = bucketed().await;
    assert_eq!(
        queues.naming().queue_name(3).unwrap(),
        "chatflow-rooms-1-4.fifo"
    );
    each_room_in_order(&queues, 8, &[1, 2, 4, 6], 200).await;
    for key in [1, 5] {
        let d = queues.depth(key).await.unwrap();
        assert_eq!((d.visible, d.in_flight), (0, 0), "queue {key} drained");
    }
}

#[tokio::test]
async fn a_bucket_of_more_rooms_than_one_batch_holds_keeps_each_rooms_order() {
    // 30 rooms on one queue, more than the ten entries of a batch: they share envelopes.
    let queues = buckets_of(30, &[1]).await;
    let rooms: Vec<u32> = (1..=30).collect();
    each_room_in_order(&queues, 30, &rooms, 60).await;
}

#[tokio::test]
async fn a_message_of_a_room_its_queue_does_not_hold_is_dropped_not_redelivered() {
    let queues = bucketed().await;
    let consumer = start(ConsumerConfig::local(1, 8), queues.clone())
        .await
        .unwrap();
    let mut sub = subscribe(&consumer, 5).await;
    let stray = task(3, 0, 4);
    let own = task(5, 1, 4);
    let entry = |group: &str, t: &chatflow::protocol::TaskMessage| PublishEntry {
        body: serde_json::to_string(t).unwrap(),
        group_id: group.into(),
        dedup_id: t.message_id.clone(),
        format: BodyFormat::Task,
    };
    // Room 3 lives on the queue of rooms 1-4; this one was put on rooms 5-8's.
    for r in queues
        .publish(5, &[entry("3", &stray), entry("5", &own)])
        .await
        .unwrap()
    {
        r.unwrap();
    }
    assert_eq!(seqs(&events(&mut sub, 1).await), [1]);
    nothing_more(&mut sub).await;
    let d = queues.depth(5).await.unwrap();
    assert_eq!((d.visible, d.in_flight), (0, 0));
    consumer.shutdown().await;
}
