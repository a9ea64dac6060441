//! The consumer reads both queue body formats, in queue order, and drops what it cannot read.

mod support;

use chatflow::envelope::{Packer, Packing};
use chatflow::queue::{BodyFormat, PublishEntry, QueueAttributes};
use chatflow_consumer::ConsumerConfig;
use support::*;

fn single(seq: usize) -> PublishEntry {
    let t = task(1, seq, 4);
    PublishEntry {
        body: serde_json::to_string(&t).unwrap(),
        group_id: "1".into(),
        dedup_id: t.message_id,
        format: BodyFormat::Task,
    }
}

fn envelope(seqs: std::ops::Range<usize>) -> PublishEntry {
    let mut p = Packer::new(Packing::Envelope);
    for s in seqs {
        p.push(single(s)).unwrap();
    }
    let mut entries = p.take();
    assert_eq!(entries.len(), 1);
    entries.remove(0).0
}

#[tokio::test]
async fn singles_and_envelopes_interleave_in_queue_order_and_unreadable_ones_are_dropped() {
    let (c, queues) = setup(
        1..=1,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 1),
    )
    .await;
    let mut sub = subscribe(&c, 1).await;
    let mut unknown = single(900);
    unknown.format = BodyFormat::Unknown("zstd".into());
    let mut broken = envelope(901..905);
    broken.body.truncate(broken.body.len() / 2);
    broken.dedup_id = "broken".into();
    let batch = [
        single(0),
        envelope(1..40),
        unknown,
        single(40),
        broken,
        envelope(41..100),
    ];
    for r in queues.publish(1, &batch).await.unwrap() {
        r.unwrap();
    }
    let evs = events(&mut sub, 100).await;
    assert_eq!(seqs(&evs), (0..100).collect::<Vec<_>>());
    nothing_more(&mut sub).await;
    let d = queues.depth(1).await.unwrap();
    assert_eq!(
        (d.visible, d.in_flight),
        (0, 0),
        "unreadable messages are deleted, not redelivered forever"
    );
    c.shutdown().await;
}
