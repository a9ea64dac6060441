//! One behavioural suite for the queue interface, run against the embedded backend and against
//! SQS (LocalStack, started by scripts/test).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatflow::queue::{
    BodyFormat, Deletion, EmbeddedQueues, Ensured, OWNER_TAG, PublishEntry, QueueAttributes,
    QueueError, Queues, SqsConfig, SqsQueues, delete_owned, ensure_owned,
};
use chatflow::rooms::QueueNaming;

type Q = Arc<dyn Queues>;

async fn embedded() -> Q {
    Arc::new(EmbeddedQueues::default())
}

async fn sqs() -> Q {
    // A fresh prefix per test keeps tests apart on a shared LocalStack.
    let prefix = format!("t{}-", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let naming = QueueNaming::parse(&prefix).unwrap();
    Arc::new(
        SqsQueues::connect(&SqsConfig::default(), naming)
            .await
            .expect("SQS client"),
    )
}

fn attrs(visibility_secs: u64) -> QueueAttributes {
    QueueAttributes {
        visibility_timeout: Duration::from_secs(visibility_secs),
        ..Default::default()
    }
}

fn entry(group: &str, dedup: &str, body: &str) -> PublishEntry {
    PublishEntry {
        body: body.into(),
        group_id: group.into(),
        dedup_id: dedup.into(),
        format: BodyFormat::Task,
    }
}

async fn publish_seq(q: &Q, room: u32, group: &str, bodies: std::ops::Range<u32>) {
    let all: Vec<PublishEntry> = bodies
        .map(|i| entry(group, &format!("{group}-{i}"), &i.to_string()))
        .collect();
    for chunk in all.chunks(10) {
        for r in q.publish(room, chunk).await.unwrap() {
            r.unwrap();
        }
    }
}

mod cases {
    use super::*;

    pub async fn create_is_idempotent(q: Q) {
        q.create_queue(1, &attrs(30)).await.unwrap();
        q.create_queue(1, &attrs(30)).await.unwrap();
        assert_eq!(q.ensure_queue(1, &attrs(30)).await.unwrap(), Ensured::Ready);
        let a = q.queue_attributes(1).await.unwrap();
        assert_eq!(a.get("FifoQueue").map(String::as_str), Some("true"));
        assert_eq!(a.get("VisibilityTimeout").map(String::as_str), Some("30"));
        q.delete_queue(1).await.unwrap();
    }

    pub async fn conflicting_create_is_rejected_and_ensure_repairs_drift(q: Q) {
        q.create_queue(1, &attrs(30)).await.unwrap();
        let err = q.create_queue(1, &attrs(60)).await.unwrap_err();
        assert!(matches!(err, QueueError::AlreadyExists { .. }), "{err:?}");
        assert_eq!(
            q.ensure_queue(1, &attrs(60)).await.unwrap(),
            Ensured::Repaired(vec!["VisibilityTimeout".into()])
        );
        assert_eq!(
            q.queue_attributes(1).await.unwrap()["VisibilityTimeout"],
            "60"
        );
        assert_eq!(q.ensure_queue(1, &attrs(60)).await.unwrap(), Ensured::Ready);
        q.delete_queue(1).await.unwrap();
        q.delete_queue(1).await.unwrap();
    }

    pub async fn missing_queue_is_not_found(q: Q) {
        let err = q.publish(9, &[entry("g", "d", "b")]).await.unwrap_err();
        assert!(matches!(err, QueueError::NotFound { .. }), "{err:?}");
    }

    pub async fn duplicate_dedup_id_is_dropped_even_after_delete(q: Q) {
        q.create_queue(1, &attrs(30)).await.unwrap();
        let first = q
            .publish(1, &[entry("g", "same", "one"), entry("g", "same", "two")])
            .await
            .unwrap();
        assert!(first.iter().all(Result::is_ok), "{first:?}");
        let got = q.receive(1, 10, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["one"]
        );
        let del = q.delete_batch(1, &[got[0].receipt.clone()]).await.unwrap();
        assert!(del[0].is_ok());
        let again = q.publish(1, &[entry("g", "same", "three")]).await.unwrap();
        assert!(again[0].is_ok(), "a duplicate is acknowledged, not refused");
        assert!(q.receive(1, 10, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(q.depth(1).await.unwrap().visible, 0);
        q.delete_queue(1).await.unwrap();
    }

    pub async fn batch_of_ten_gives_a_result_per_entry(q: Q) {
        q.create_queue(1, &attrs(30)).await.unwrap();
        let batch: Vec<_> = (0..10)
            .map(|i| entry("g", &format!("d{i}"), &format!("b{i}")))
            .collect();
        let res = q.publish(1, &batch).await.unwrap();
        assert_eq!(res.len(), 10);
        let ids: HashSet<String> = res.into_iter().map(Result::unwrap).collect();
        assert_eq!(ids.len(), 10, "every entry gets its own message id");
        let eleven: Vec<_> = (0..11).map(|i| entry("g", &format!("e{i}"), "x")).collect();
        assert!(matches!(
            q.publish(1, &eleven).await,
            Err(QueueError::Invalid(_))
        ));
        assert!(matches!(
            q.publish(1, &[]).await,
            Err(QueueError::Invalid(_))
        ));
        q.delete_queue(1).await.unwrap();
    }

    pub async fn a_group_is_received_in_order(q: Q) {
        q.create_queue(1, &attrs(30)).await.unwrap();
        publish_seq(&q, 1, "room", 0..25).await;
        let mut seen = Vec::new();
        let mut sequences = Vec::new();
        while seen.len() < 25 {
            let got = q.receive(1, 10, Duration::from_secs(1)).await.unwrap();
            assert!(!got.is_empty(), "stalled after {seen:?}");
            let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
            seen.extend(got.iter().map(|m| m.body.parse::<u32>().unwrap()));
            sequences.extend(
                got.iter()
                    .map(|m| m.sequence.expect("FIFO gives a sequence")),
            );
            assert!(
                q.delete_batch(1, &receipts)
                    .await
                    .unwrap()
                    .iter()
                    .all(Result::is_ok)
            );
        }
        assert_eq!(seen, (0..25).collect::<Vec<_>>());
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "sequence numbers grow in send order: {sequences:?}"
        );
        q.delete_queue(1).await.unwrap();
    }

    pub async fn a_group_stays_locked_while_in_flight_and_others_flow(q: Q) {
        q.create_queue(1, &attrs(30)).await.unwrap();
        publish_seq(&q, 1, "a", 0..2).await;
        publish_seq(&q, 1, "b", 0..1).await;
        let first = q.receive(1, 1, Duration::from_secs(1)).await.unwrap();
        assert_eq!(first.len(), 1);
        let second = q.receive(1, 1, Duration::from_secs(1)).await.unwrap();
        assert_eq!(second.len(), 1, "the other group still flows");
        assert_ne!(first[0].group_id, second[0].group_id);
        assert!(
            q.receive(1, 10, Duration::ZERO).await.unwrap().is_empty(),
            "group a is locked while its first message is in flight"
        );
        let a0 = if first[0].group_id == "a" {
            &first[0]
        } else {
            &second[0]
        };
        assert_eq!(a0.body, "0");
        q.delete_batch(1, std::slice::from_ref(&a0.receipt))
            .await
            .unwrap()[0]
            .clone()
            .unwrap();
        let next = q.receive(1, 10, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            (next[0].group_id.as_str(), next[0].body.as_str()),
            ("a", "1")
        );
        q.delete_queue(1).await.unwrap();
    }

    pub async fn unacknowledged_messages_are_redelivered_after_the_visibility_timeout(q: Q) {
        q.create_queue(1, &attrs(1)).await.unwrap();
        publish_seq(&q, 1, "g", 0..1).await;
        let got = q.receive(1, 10, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got[0].receive_count, 1);
        assert!(q.receive(1, 10, Duration::ZERO).await.unwrap().is_empty());
        let again = q.receive(1, 10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].message_id, got[0].message_id);
        assert_eq!(again[0].receive_count, 2);
        assert_eq!(
            again[0].sequence, got[0].sequence,
            "a redelivery keeps its place in the group"
        );
        q.delete_queue(1).await.unwrap();
    }

    pub async fn a_long_poll_wakes_on_send_and_ends_empty_after_its_wait(q: Q) {
        q.create_queue(1, &attrs(30)).await.unwrap();
        let started = Instant::now();
        let empty = q.receive(1, 10, Duration::from_secs(1)).await.unwrap();
        let waited = started.elapsed();
        assert!(empty.is_empty());
        assert!(
            waited >= Duration::from_millis(900),
            "returned after {waited:?}"
        );
        assert!(waited < Duration::from_secs(5), "returned after {waited:?}");

        let poll = tokio::spawn({
            let q = q.clone();
            async move {
                let got = q.receive(1, 10, Duration::from_secs(10)).await.unwrap();
                (got, Instant::now())
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent_at = Instant::now();
        publish_seq(&q, 1, "g", 0..1).await;
        let (got, woke_at) = poll.await.unwrap();
        assert_eq!(got.len(), 1);
        let lag = woke_at.saturating_duration_since(sent_at);
        assert!(
            lag < Duration::from_millis(200),
            "woke {lag:?} after the send"
        );
        q.delete_queue(1).await.unwrap();
    }

    pub async fn batch_delete_and_depth_counts(q: Q) {
        q.create_queue(1, &attrs(30)).await.unwrap();
        publish_seq(&q, 1, "a", 0..3).await;
        publish_seq(&q, 1, "b", 0..2).await;
        let d = q.depth(1).await.unwrap();
        assert_eq!((d.visible, d.in_flight), (5, 0));
        let mut got = Vec::new();
        while got.len() < 5 {
            let batch = q.receive(1, 10, Duration::from_secs(1)).await.unwrap();
            assert!(!batch.is_empty());
            got.extend(batch);
        }
        let d = q.depth(1).await.unwrap();
        assert_eq!((d.visible, d.in_flight), (0, 5));
        let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
        let res = q.delete_batch(1, &receipts).await.unwrap();
        assert_eq!(res.len(), 5);
        assert!(res.iter().all(Result::is_ok), "{res:?}");
        let d = q.depth(1).await.unwrap();
        assert_eq!((d.visible, d.in_flight), (0, 0));
        q.delete_queue(1).await.unwrap();
    }

    pub async fn an_owned_queue_is_never_changed_or_deleted_for_another_owner(q: Q) {
        assert_eq!(
            ensure_owned(q.as_ref(), 1, &attrs(30), "team-a/chat", false)
                .await
                .unwrap(),
            Ensured::Ready
        );
        assert_eq!(q.queue_tags(1).await.unwrap()[OWNER_TAG], "team-a/chat");
        let err = ensure_owned(q.as_ref(), 1, &attrs(45), "team-b/chat", false)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, QueueError::OwnedByOther { room: 1, owner } if owner == "team-a/chat"),
            "{err:?}"
        );
        let current = QueueAttributes::from_map(&q.queue_attributes(1).await.unwrap());
        assert_eq!(
            current.visibility_timeout,
            Duration::from_secs(30),
            "not repaired"
        );
        assert_eq!(
            delete_owned(q.as_ref(), 1, "team-b/chat").await.unwrap(),
            Deletion::Kept {
                owner: Some("team-a/chat".into())
            }
        );
        q.queue_attributes(1).await.expect("still there");
        // The owner repairs its own queue's drift and deletes it.
        assert!(matches!(
            ensure_owned(q.as_ref(), 1, &attrs(45), "team-a/chat", false)
                .await
                .unwrap(),
            Ensured::Repaired(_)
        ));
        assert_eq!(
            delete_owned(q.as_ref(), 1, "team-a/chat").await.unwrap(),
            Deletion::Deleted
        );
        assert_eq!(
            delete_owned(q.as_ref(), 1, "team-a/chat").await.unwrap(),
            Deletion::Absent
        );
    }

    pub async fn an_untagged_queue_is_adopted_only_when_asked(q: Q) {
        q.create_queue(2, &attrs(30)).await.unwrap();
        assert!(q.queue_tags(2).await.unwrap().is_empty());
        assert!(matches!(
            ensure_owned(q.as_ref(), 2, &attrs(45), "ns/old", false).await,
            Err(QueueError::Untagged { room: 2 })
        ));
        assert!(q.queue_tags(2).await.unwrap().is_empty(), "left untagged");
        ensure_owned(q.as_ref(), 2, &attrs(30), "ns/old", true)
            .await
            .unwrap();
        assert_eq!(q.queue_tags(2).await.unwrap()[OWNER_TAG], "ns/old");
        assert!(
            ensure_owned(q.as_ref(), 2, &attrs(30), "ns/new", true)
                .await
                .is_err()
        );
        q.delete_queue(2).await.unwrap();
    }

    pub async fn the_body_format_travels_with_the_message(q: Q) {
        q.create_queue(1, &attrs(30)).await.unwrap();
        let mut packed = entry("a", "a-env", "[]");
        packed.format = BodyFormat::Envelope;
        let batch = [entry("a", "a-task", "{}"), packed];
        for r in q.publish(1, &batch).await.unwrap() {
            r.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 2 {
            let batch = q.receive(1, 10, Duration::from_secs(1)).await.unwrap();
            assert!(!batch.is_empty());
            got.extend(batch);
        }
        let formats: Vec<_> = got.iter().map(|m| m.format.clone()).collect();
        assert_eq!(formats, [BodyFormat::Task, BodyFormat::Envelope]);
        q.delete_queue(1).await.unwrap();
    }
}

macro_rules! suite {
    ($make:path, $attr:meta; $($case:ident),+ $(,)?) => {
        $(
            #[$attr]
            #[tokio::test]
            async fn $case() {
                super::cases::$case($make().await).await;
            }
        )+
    };
}

macro_rules! all_cases {
    ($make:path, $attr:meta) => {
        suite!($make, $attr;
            create_is_idempotent,
            conflicting_create_is_rejected_and_ensure_repairs_drift,
            missing_queue_is_not_found,
            duplicate_dedup_id_is_dropped_even_after_delete,
            batch_of_ten_gives_a_result_per_entry,
            a_group_is_received_in_order,
            a_group_stays_locked_while_in_flight_and_others_flow,
            unacknowledged_messages_are_redelivered_after_the_visibility_timeout,
            a_long_poll_wakes_on_send_and_ends_empty_after_its_wait,
            batch_delete_and_depth_counts,
            the_body_format_travels_with_the_message,
            an_owned_queue_is_never_changed_or_deleted_for_another_owner,
            an_untagged_queue_is_adopted_only_when_asked,
        );
    };
}

mod embedded_backend {
    all_cases!(super::embedded, cfg(all()));
}

mod sqs_backend {
    all_cases!(super::sqs, ignore = "needs LocalStack: run scripts/test");
}
