use super::*;
use crate::queue::BodyFormat;

fn entry(dedup: &str) -> PublishEntry {
    PublishEntry {
        body: dedup.into(),
        group_id: "g".into(),
        dedup_id: dedup.into(),
        format: BodyFormat::Task,
    }
}

#[tokio::test(start_paused = true)]
async fn dedup_window_ends_after_five_minutes() {
    let q = EmbeddedQueues::default();
    q.create_queue(1, &QueueAttributes::default())
        .await
        .unwrap();
    q.publish(1, &[entry("a")]).await.unwrap();
    tokio::time::advance(DEDUP_WINDOW - Duration::from_secs(1)).await;
    q.publish(1, &[entry("a")]).await.unwrap();
    assert_eq!(q.depth(1).await.unwrap().visible, 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    q.publish(1, &[entry("a")]).await.unwrap();
    assert_eq!(q.depth(1).await.unwrap().visible, 2);
}

#[tokio::test(start_paused = true)]
async fn retention_drops_old_messages() {
    let q = EmbeddedQueues::default();
    let attrs = QueueAttributes {
        retention: Duration::from_secs(60),
        ..Default::default()
    };
    q.create_queue(1, &attrs).await.unwrap();
    q.publish(1, &[entry("a")]).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(q.depth(1).await.unwrap(), QueueDepth::default());
    assert!(q.receive(1, 10, Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_delivery_that_times_out_returns_and_then_meets_retention() {
    let q = EmbeddedQueues::default();
    let attrs = QueueAttributes {
        visibility_timeout: Duration::from_secs(30),
        retention: Duration::from_secs(60),
        ..Default::default()
    };
    q.create_queue(1, &attrs).await.unwrap();
    q.publish(1, &[entry("a")]).await.unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(q.receive(1, 10, Duration::ZERO).await.unwrap().len(), 1);
    // Publishes in between must not hide the timeout from the queue.
    tokio::time::advance(Duration::from_secs(29)).await;
    q.publish(1, &[entry("b")]).await.unwrap();
    assert_eq!(q.depth(1).await.unwrap().in_flight, 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    q.publish(1, &[entry("c")]).await.unwrap();
    let depth = q.depth(1).await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (3, 0), "a is back");
    tokio::time::advance(Duration::from_secs(20)).await;
    let left = q.receive(1, 10, Duration::ZERO).await.unwrap();
    assert_eq!(
        left.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["b", "c"],
        "a passed retention 60 s after it was sent"
    );
}

#[tokio::test(start_paused = true)]
async fn a_shorter_retention_applies_to_messages_already_queued() {
    let q = EmbeddedQueues::default();
    q.create_queue(1, &QueueAttributes::default())
        .await
        .unwrap();
    q.publish(1, &[entry("a")]).await.unwrap();
    tokio::time::advance(Duration::from_secs(120)).await;
    let shorter = BTreeMap::from([("MessageRetentionPeriod".to_owned(), "60".to_owned())]);
    q.set_queue_attributes(1, shorter).await.unwrap();
    assert_eq!(q.depth(1).await.unwrap(), QueueDepth::default());
}

#[tokio::test]
async fn a_deleted_queue_fails_its_long_polls() {
    let q = Arc::new(EmbeddedQueues::default());
    q.create_queue(1, &QueueAttributes::default())
        .await
        .unwrap();
    let poll = tokio::spawn({
        let q = q.clone();
        async move { q.receive(1, 10, Duration::from_secs(20)).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    q.delete_queue(1).await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(2), poll)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(res, Err(QueueError::NotFound { .. })), "{res:?}");
}

#[tokio::test]
async fn purge_empties_the_queue_but_remembers_dedup_ids() {
    let q = EmbeddedQueues::default();
    q.create_queue(1, &QueueAttributes::default())
        .await
        .unwrap();
    q.publish(1, &[entry("a"), entry("b"), entry("c")])
        .await
        .unwrap();
    let taken = q.receive(1, 1, Duration::ZERO).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(q.purge(1).unwrap(), 3);
    assert_eq!(q.depth(1).await.unwrap(), QueueDepth::default());
    let receipt = taken[0].receipt.clone();
    assert!(q.delete_batch(1, &[receipt]).await.unwrap()[0].is_err());
    q.publish(1, &[entry("a"), entry("d")]).await.unwrap();
    let left = q.receive(1, 10, Duration::ZERO).await.unwrap();
    assert_eq!(
        left.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["d"]
    );
}

#[tokio::test]
async fn dedup_memory_forgets_the_oldest_ids_past_its_bound() {
    let q = EmbeddedQueues::default();
    q.create_queue(1, &QueueAttributes::default())
        .await
        .unwrap();
    let ids: Vec<String> = (0..=DEDUP_MAX_IDS).map(|i| format!("id-{i}")).collect();
    for chunk in ids.chunks(MAX_BATCH) {
        let entries: Vec<PublishEntry> = chunk.iter().map(|id| entry(id)).collect();
        q.publish(1, &entries).await.unwrap();
        q.purge(1).unwrap();
    }
    // The first id was forgotten to make room; the most recent half are still remembered.
    let recent = format!("id-{}", DEDUP_MAX_IDS + 1 - DEDUP_MAX_IDS / 2);
    q.publish(1, &[entry(&recent), entry("id-0")])
        .await
        .unwrap();
    let left = q.receive(1, 10, Duration::ZERO).await.unwrap();
    assert_eq!(
        left.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["id-0"]
    );
}
