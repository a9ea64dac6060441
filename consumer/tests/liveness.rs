//! Idle subscribers are pinged; those that never answer are closed, those that do stay.

use std::time::Duration;

use chatflow::queue::QueueAttributes;
use chatflow::ws::{ClientEvent, connect_reader, connect_split};
use chatflow_consumer::ConsumerConfig;

mod support;
use support::*;

#[tokio::test]
async fn a_silent_subscriber_is_closed_and_one_that_answers_pings_stays() {
    let mut config = ConsumerConfig::local(1, 1);
    config.idle_timeout_secs = 1;
    let (c, queues) = setup(1..=1, QueueAttributes::default(), config).await;
    let url = format!("ws://{}/subscribe/1", c.addr);
    // Reads, but never writes: no pong for the server's pings, as a vanished peer.
    let (mut silent, _writer_never_used) = connect_split(&url, T).await.unwrap();
    let mut answering = connect_reader(&url, T).await.unwrap();
    // Reading is what answers pings, as in any client.
    let answering = tokio::spawn(async move { seqs(&events(&mut answering, 1).await) });

    match tokio::time::timeout(Duration::from_secs(10), silent.next())
        .await
        .expect("closed within a few idle periods")
        .unwrap()
    {
        ClientEvent::Closed(code, reason) => {
            assert_eq!(code, Some(1001));
            assert!(reason.contains("ping"), "{reason}");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    publish(&queues, 1, 0..1, 5).await;
    assert_eq!(
        answering.await.unwrap(),
        [0],
        "the subscriber that answered pings is still there"
    );
    c.shutdown().await;
}
