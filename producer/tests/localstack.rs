//! The producer against LocalStack: the ack round trip, and an outage of the queue service.
// A scenario on real servers reads top to bottom, as its steps happen; the length bound is
// for the code under test.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatflow::protocol::{ErrorCode, Reply};
use chatflow::queue::{SharedQueues, SqsConfig, SqsQueues};
use chatflow::rooms::QueueNaming;
use chatflow_producer::{ProducerConfig, start};
use chatflow_testkit::Proxy;
use common::*;

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

fn prefix() -> String {
    format!("p{}-", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

async fn sqs(endpoint: &str, prefix: &str, timeout: Duration) -> SharedQueues {
    let config = SqsConfig {
        endpoint: Some(endpoint.into()),
        call_timeout: timeout,
        ..SqsConfig::default()
    };
    Arc::new(
        SqsQueues::connect(&config, QueueNaming::parse(prefix).unwrap())
            .await
            .unwrap(),
    )
}

fn sqs_config(endpoint: &str, prefix: &str) -> ProducerConfig {
    let mut c = ProducerConfig::local(1, 2);
    c.queue.queue_backend = chatflow::config::Backend::Sqs;
    c.queue.aws_endpoint_url = Some(endpoint.into());
    c.queue.queue_prefix = prefix.into();
    c
}

#[tokio::test]
#[ignore = "needs LocalStack: run scripts/test"]
async fn ack_round_trip_through_localstack() {
    let prefix = prefix();
    let queues = sqs(&endpoint(), &prefix, Duration::from_secs(5)).await;
    ensure_rooms(&queues, 1..=2).await;
    let p = start(sqs_config(&endpoint(), &prefix), queues.clone())
        .await
        .unwrap();
    let (mut r, mut w) = client(&p, "2").await;
    for i in 0..25 {
        w.text(message(7, "via sqs", Some(&format!("rt-{i}"))).as_bytes())
            .await
            .unwrap();
    }
    w.flush().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..25 {
        match next_reply(&mut r).await {
            Reply::Ok(ok) => ids.push(ok.message_id),
            other => panic!("expected OK, got {other:?}"),
        }
    }
    let queued: Vec<String> = drain(&queues, 2)
        .await
        .into_iter()
        .map(|t| t.message_id)
        .collect();
    assert_eq!(queued, ids, "queued once each, in the order sent");
    p.shutdown().await;
    for room in 1..=2 {
        queues.delete_queue(room).await.unwrap();
    }
}

#[tokio::test]
#[ignore = "needs LocalStack: run scripts/test"]
async fn an_outage_fails_fast_opens_the_breaker_and_recovers_without_loss() {
    let prefix = prefix();
    let direct = sqs(&endpoint(), &prefix, Duration::from_secs(5)).await;
    ensure_rooms(&direct, 1..=2).await;
    let upstream: SocketAddr = endpoint().trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream).await.unwrap();
    let proxied = format!("http://{}", proxy.addr);
    let mut config = sqs_config(&proxied, &prefix);
    config.queue.queue_call_timeout_ms = 1000;
    config.publish_attempts = 2;
    config.breaker_threshold = 2;
    config.breaker_cooldown_ms = 300;
    let p = start(config, sqs(&proxied, &prefix, Duration::from_secs(1)).await)
        .await
        .unwrap();
    let (mut r, mut w) = client(&p, "1").await;

    let mut acked: HashMap<String, String> = HashMap::new();
    let mut seq = 0;
    let mut send_one = async |r: &mut chatflow::ws::ClientReader,
                              w: &mut chatflow::ws::ClientWriter| {
        seq += 1;
        let cmid = format!("o-{seq}");
        send(w, &message(3, "outage", Some(&cmid))).await;
        let started = Instant::now();
        let reply = next_reply(r).await;
        (cmid, reply, started.elapsed())
    };

    for _ in 0..10 {
        let (cmid, reply, _) = send_one(&mut r, &mut w).await;
        let Reply::Ok(ok) = reply else {
            panic!("expected OK before the outage, got {reply:?}")
        };
        acked.insert(ok.message_id, cmid);
    }

    proxy.down();
    let mut errors = 0;
    for _ in 0..6 {
        let (_, reply, took) = send_one(&mut r, &mut w).await;
        assert!(
            took < Duration::from_secs(8),
            "QUEUE_ERROR within a bounded time, took {took:?}"
        );
        match reply {
            Reply::Error(e) => {
                assert_eq!(e.error_code, ErrorCode::QueueError);
                errors += 1;
            }
            Reply::Ok(_) => panic!("no OK while the queue service is down"),
        }
    }
    assert_eq!(errors, 6);
    let (status, body) = http_get(p.addr, "/ready").await;
    assert_eq!(status, 503, "breaker open fails readiness: {body}");
    let (_, metrics) = http_get(p.addr, "/metrics").await;
    assert!(
        metrics.contains("chatflow_producer_breaker_open 1"),
        "{metrics}"
    );
    // Every QUEUE_ERROR answer counts under its code, whether the breaker refused the message
    // or its batch failed.
    assert!(
        metrics.contains(r#"chatflow_producer_errors_total{code="QUEUE_ERROR"} 6"#),
        "{metrics}"
    );

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(p.addr, "/ready").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the producer did not recover by itself"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..10 {
        let (cmid, reply, _) = send_one(&mut r, &mut w).await;
        let Reply::Ok(ok) = reply else {
            panic!("expected OK after recovery, got {reply:?}")
        };
        acked.insert(ok.message_id, cmid);
    }

    let queued = drain(&direct, 1).await;
    let mut count: HashMap<String, usize> = HashMap::new();
    for t in &queued {
        *count.entry(t.message_id.clone()).or_default() += 1;
    }
    for id in acked.keys() {
        assert_eq!(
            count.get(id),
            Some(&1),
            "acked message {id} is in the queue exactly once"
        );
    }
    p.shutdown().await;
    for room in 1..=2 {
        direct.delete_queue(room).await.unwrap();
    }
}
