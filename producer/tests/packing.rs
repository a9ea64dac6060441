//! How the producer lays a burst of messages into queue messages, per packing setting.

mod common;

use std::time::Duration;

use chatflow::envelope::{self, Packing};
use chatflow::protocol::Reply;
use chatflow::queue::{BodyFormat, ReceivedMessage, SharedQueues};
use chatflow_producer::ProducerConfig;
use common::*;

const BURST: usize = 1000;

/// Pipelines a burst into room 1 and waits for every ack.
async fn burst(packing: Packing) -> SharedQueues {
    let mut config = ProducerConfig::local(1, 1);
    config.packing = packing;
    let (p, queues) = embedded_producer(config).await;
    let (mut r, mut w) = client(&p, "1").await;
    for i in 0..BURST {
        w.text(message(1 + i as u32, "burst", Some(&format!("b-{i}"))).as_bytes())
            .await
            .unwrap();
    }
    w.flush().await.unwrap();
    for _ in 0..BURST {
        assert!(matches!(next_reply(&mut r).await, Reply::Ok(_)));
    }
    p.shutdown().await;
    queues
}

async fn drain_raw(queues: &SharedQueues) -> Vec<ReceivedMessage> {
    let mut out = Vec::new();
    loop {
        let got = queues
            .receive(1, 10, Duration::from_millis(300))
            .await
            .unwrap();
        if got.is_empty() {
            return out;
        }
        let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
        queues.delete_batch(1, &receipts).await.unwrap();
        out.extend(got);
    }
}

fn client_ids(raw: &[ReceivedMessage]) -> Vec<String> {
    raw.iter()
        .flat_map(|m| envelope::unpack(&m.format, &m.body).unwrap())
        .map(|t| t.client_message_id.unwrap())
        .collect()
}

#[tokio::test]
async fn envelopes_carry_a_burst_in_a_fraction_of_the_queue_messages() {
    let raw = drain_raw(&burst(Packing::Envelope).await).await;
    // A queue message of one chat message travels in the single format, all others as envelopes.
    for m in &raw {
        let carried = envelope::unpack(&m.format, &m.body).unwrap().len();
        let want = if carried == 1 {
            BodyFormat::Task
        } else {
            BodyFormat::Envelope
        };
        assert_eq!(m.format, want, "a queue message of {carried}");
    }
    assert!(
        raw.len() <= BURST / 10,
        "{} queue messages for {BURST} chat messages",
        raw.len()
    );
    let want: Vec<String> = (0..BURST).map(|i| format!("b-{i}")).collect();
    assert_eq!(client_ids(&raw), want, "every message once, in order");
}

#[tokio::test]
async fn single_packing_keeps_one_task_message_per_queue_message() {
    let raw = drain_raw(&burst(Packing::Single).await).await;
    assert_eq!(raw.len(), BURST);
    assert!(raw.iter().all(|m| m.format == BodyFormat::Task));
    let want: Vec<String> = (0..BURST).map(|i| format!("b-{i}")).collect();
    assert_eq!(client_ids(&raw), want);
}
