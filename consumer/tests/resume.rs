//! Subscribers that reconnect with `?after=` get what they missed, in order, without duplicates,
//! from the same shard or from a new one.

use std::time::Duration;

use chatflow::protocol::{BroadcastEvent, Position, RecoveryNotice, SubscriberFrame};
use chatflow::queue::QueueAttributes;
use chatflow::ws::{ClientEvent, ClientReader, connect_split};
use chatflow_consumer::{ConsumerConfig, ConsumerHandle, start};

mod support;
use support::*;

async fn resume(c: &ConsumerHandle, room: u32, after: Position) -> ClientReader {
    connect_split(
        &format!("ws://{}/subscribe/{room}?after={after}", c.addr),
        T,
    )
    .await
    .unwrap()
    .0
}

async fn notice(r: &mut ClientReader) -> RecoveryNotice {
    match tokio::time::timeout(T, r.next()).await.unwrap().unwrap() {
        ClientEvent::Text(b) => match serde_json::from_slice(&b) {
            Ok(SubscriberFrame::Recovery(n)) => n,
            other => panic!("expected the recovery notice first, got {other:?}"),
        },
        other => panic!("expected the recovery notice, got {other:?}"),
    }
}

fn last_position(evs: &[BroadcastEvent]) -> Position {
    evs.last()
        .and_then(|e| e.position)
        .expect("events carry positions")
}

#[tokio::test]
async fn a_subscriber_that_reconnects_gets_exactly_what_it_missed() {
    let (c, queues) = setup(
        1..=1,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 1),
    )
    .await;
    let mut s = subscribe(&c, 1).await;
    publish(&queues, 1, 0..5, 5).await;
    let seen = events(&mut s, 5).await;
    let positions: Vec<Position> = seen.iter().map(|e| e.position.unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    drop(s);

    // Away while 5..10 are broadcast to the room (to another subscriber, so they are deleted).
    let mut other = subscribe(&c, 1).await;
    publish(&queues, 1, 5..10, 5).await;
    events(&mut other, 5).await;

    let mut back = resume(&c, 1, last_position(&seen)).await;
    let n = notice(&mut back).await;
    assert_eq!((n.recovered, n.replayed), (true, 5));
    assert_eq!(seqs(&events(&mut back, 5).await), [5, 6, 7, 8, 9]);
    publish(&queues, 1, 10..12, 5).await;
    assert_eq!(seqs(&events(&mut back, 2).await), [10, 11], "then live");
    nothing_more(&mut back).await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_new_shard_holds_the_backlog_until_the_subscribers_are_back() {
    let attrs = QueueAttributes::default();
    let (old, queues) = setup(1..=1, attrs, ConsumerConfig::local(1, 1)).await;
    let mut s = subscribe(&old, 1).await;
    publish(&queues, 1, 0..3, 5).await;
    let seen = events(&mut s, 3).await;
    old.shutdown().await;

    // Accepted while no shard runs: the new shard must not broadcast these to an empty room.
    publish(&queues, 1, 3..8, 5).await;
    let mut config = ConsumerConfig::local(1, 1);
    config.resume_hold_secs = 60;
    config.poll_wait_secs = 2;
    let new = start(config, queues.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        queues.depth(1).await.unwrap().visible,
        5,
        "the backlog waits for the room's subscribers"
    );

    let mut back = resume(&new, 1, last_position(&seen)).await;
    let n = notice(&mut back).await;
    assert!(
        !n.recovered,
        "a new shard cannot vouch for what the old one deleted"
    );
    assert_eq!(seqs(&events(&mut back, 5).await), [3, 4, 5, 6, 7]);
    nothing_more(&mut back).await;
    new.shutdown().await;
}

#[tokio::test]
async fn redeliveries_of_what_a_resuming_subscriber_saw_are_not_sent_again() {
    let attrs = QueueAttributes {
        visibility_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let (c, queues) = setup(1..=1, attrs.clone(), ConsumerConfig::local(1, 1)).await;
    c.shutdown().await;
    publish(&queues, 1, 0..3, 5).await;
    // A shard that broadcast these and was killed before deleting them: they come back.
    let held = queues.receive(1, 10, Duration::from_secs(1)).await.unwrap();
    let seen_up_to = Position {
        sequence: held[2].sequence.unwrap(),
        index: 0,
    };
    let c = start(ConsumerConfig::local(1, 1), queues.clone())
        .await
        .unwrap();
    let mut back = resume(&c, 1, seen_up_to).await;
    assert_eq!(notice(&mut back).await.replayed, 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    publish(&queues, 1, 3..5, 5).await;
    assert_eq!(
        seqs(&events(&mut back, 2).await),
        [3, 4],
        "0..3 came back from the queue and were not sent again"
    );
    nothing_more(&mut back).await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_malformed_resume_position_is_refused() {
    let (c, _queues) = setup(
        1..=1,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 1),
    )
    .await;
    let res = connect_split(&format!("ws://{}/subscribe/1?after=latest", c.addr), T).await;
    assert!(
        matches!(res, Err(chatflow::ws::ConnectError::Refused(ref s)) if s.contains("400")),
        "a bad position must be refused with 400"
    );
    c.shutdown().await;
}
