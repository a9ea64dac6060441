//! The producer end to end over an in-memory queue, each behaviour on both connection engines
//! (publishing in place, and through batchers as over SQS): validation, acks, ordering, limits,
//! shutdown.

mod common;

use std::collections::HashMap;

use chatflow::protocol::{ErrorCode, MessageType, Reply};
use chatflow::ws::ClientEvent;
use chatflow_producer::ProducerConfig;
use common::*;
use fastwebsockets::{Frame, OpCode, Payload};

async fn a_valid_message_is_acked_and_queued_with_every_field(engine: Engine) {
    let (p, queues) = producer_on(engine, ProducerConfig::local(1, 20)).await;
    let (mut r, mut w) = client(&p, "7").await;
    send(&mut w, &message(42, "hello é", Some("c-1"))).await;
    let Reply::Ok(ok) = next_reply(&mut r).await else {
        panic!("expected OK")
    };
    assert_eq!(ok.client_message_id.as_deref(), Some("c-1"));
    let queued = drain(&queues, 7).await;
    assert_eq!(queued.len(), 1);
    let t = &queued[0];
    assert_eq!(t.message_id, ok.message_id);
    assert_eq!(
        (t.room_id, t.user_id.as_str(), t.username.as_str()),
        (7, "42", "user42")
    );
    assert_eq!(
        (t.message.as_str(), t.message_type),
        ("hello é", MessageType::Text)
    );
    assert_eq!(t.timestamp, "2026-11-27T10:00:00Z");
    assert_eq!(t.server_id, "producer-1");
    assert_eq!(t.client_ip, "127.0.0.1");
    assert!(chatflow::protocol::parse_rfc3339(&t.received_at).is_some());
    p.shutdown().await;
}

async fn invalid_messages_get_the_right_error_code_and_reason(engine: Engine) {
    let (p, queues) = producer_on(engine, ProducerConfig::local(1, 20)).await;
    let (mut r, mut w) = client(&p, "1").await;
    let bad_user = message(0, "hi", None);
    let bad_name = message(5, "hi", None).replace("user5", "u5");
    let long_text = message(5, &"x".repeat(501), None);
    let bad_ts = message(5, "hi", None).replace("2026-11-27T10:00:00Z", "2026-11-27T10:00:00");
    let bad_type = message(5, "hi", None).replace("TEXT", "text");
    let cases = [
        ("{not json", ErrorCode::InvalidJson, "malformed JSON"),
        (
            bad_user.as_str(),
            ErrorCode::ValidationError,
            "userId must be an integer between 1 and 100000",
        ),
        (
            bad_name.as_str(),
            ErrorCode::ValidationError,
            "username must be 3-20",
        ),
        (
            long_text.as_str(),
            ErrorCode::ValidationError,
            "at most 500 characters",
        ),
        (
            bad_ts.as_str(),
            ErrorCode::ValidationError,
            "timestamp must be",
        ),
        (
            bad_type.as_str(),
            ErrorCode::ValidationError,
            "messageType must be exactly TEXT, JOIN or LEAVE",
        ),
    ];
    for (frame, code, reason) in cases {
        send(&mut w, frame).await;
        match next_reply(&mut r).await {
            Reply::Error(e) => {
                assert_eq!(e.error_code, code, "{frame}");
                assert!(
                    e.error_message.contains(reason),
                    "{frame}: {}",
                    e.error_message
                );
            }
            other => panic!("{frame}: expected ERROR, got {other:?}"),
        }
    }
    assert!(
        drain(&queues, 1).await.is_empty(),
        "nothing invalid reaches the queue"
    );

    for room in ["abc", "0", "21", "1.5"] {
        let (mut r, mut w) = client(&p, room).await;
        send(&mut w, &message(1, "hi", Some("k"))).await;
        match next_reply(&mut r).await {
            Reply::Error(e) => {
                assert_eq!(e.error_code, ErrorCode::InvalidRoom, "room {room}");
                assert!(
                    e.error_message.contains("between 1 and 20"),
                    "{}",
                    e.error_message
                );
                assert_eq!(e.client_message_id.as_deref(), Some("k"));
            }
            other => panic!("room {room}: expected INVALID_ROOM, got {other:?}"),
        }
    }
    p.shutdown().await;
}

async fn oversize_and_binary_frames_are_refused_and_the_server_keeps_serving(engine: Engine) {
    let mut config = ProducerConfig::local(1, 2);
    config.max_frame_bytes = 1024;
    let (p, _queues) = producer_on(engine, config).await;

    let (mut r, mut w) = client(&p, "1").await;
    w.binary(b"\x00\x01").await.unwrap();
    w.flush().await.unwrap();
    match next_reply(&mut r).await {
        Reply::Error(e) => assert_eq!(e.error_code, ErrorCode::InvalidJson),
        other => panic!("expected ERROR for binary, got {other:?}"),
    }
    send(&mut w, &message(1, "still open", None)).await;
    assert!(matches!(next_reply(&mut r).await, Reply::Ok(_)));

    send(&mut w, &"x".repeat(2048)).await;
    match tokio::time::timeout(T, r.next()).await.unwrap().unwrap() {
        ClientEvent::Closed(code, reason) => {
            assert_eq!(code, Some(1009));
            assert!(reason.contains("1024"), "{reason}");
        }
        other => panic!("expected close 1009, got {other:?}"),
    }

    // The same limit holds for a message split into fragments.
    let (mut r, mut w) = client(&p, "1").await;
    let chunk = vec![b'x'; 600];
    w.frame(Frame::new(
        false,
        OpCode::Text,
        None,
        Payload::Borrowed(&chunk),
    ))
    .await
    .unwrap();
    w.frame(Frame::new(
        true,
        OpCode::Continuation,
        None,
        Payload::Borrowed(&chunk),
    ))
    .await
    .unwrap();
    w.flush().await.unwrap();
    assert!(matches!(
        tokio::time::timeout(T, r.next()).await.unwrap().unwrap(),
        ClientEvent::Closed(Some(1009), _)
    ));

    // A fragmented message under the limit is joined and accepted.
    let (mut r, mut w) = client(&p, "2").await;
    let full = message(3, "joined", None);
    let (a, b) = full.as_bytes().split_at(10);
    w.frame(Frame::new(false, OpCode::Text, None, Payload::Borrowed(a)))
        .await
        .unwrap();
    w.frame(Frame::new(
        true,
        OpCode::Continuation,
        None,
        Payload::Borrowed(b),
    ))
    .await
    .unwrap();
    w.flush().await.unwrap();
    assert!(matches!(next_reply(&mut r).await, Reply::Ok(_)));
    p.shutdown().await;
}

async fn ten_thousand_pipelined_messages_are_acked_and_queued_in_order(engine: Engine) {
    let (p, queues) = producer_on(engine, ProducerConfig::local(1, 20)).await;
    const CONNS: usize = 4;
    const PER_CONN: usize = 2500;
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        let (mut r, mut w) = client(&p, &(1 + c % 2).to_string()).await;
        let reader = tokio::spawn(async move {
            let mut ids = Vec::with_capacity(PER_CONN);
            for _ in 0..PER_CONN {
                match next_reply(&mut r).await {
                    Reply::Ok(ok) => ids.push(ok.client_message_id.unwrap()),
                    other => panic!("expected OK, got {other:?}"),
                }
            }
            ids
        });
        // Everything is written before any reply is read: the client pipelines.
        for i in 0..PER_CONN {
            w.text(message(1 + i as u32, "pipelined", Some(&format!("c{c}-{i}"))).as_bytes())
                .await
                .unwrap();
        }
        w.flush().await.unwrap();
        tasks.push((c, reader, w));
    }
    for (c, reader, _w) in tasks {
        let ids = reader.await.unwrap();
        let want: Vec<String> = (0..PER_CONN).map(|i| format!("c{c}-{i}")).collect();
        assert_eq!(ids, want, "connection {c}: acks in the order sent");
    }
    let mut per_conn: HashMap<String, Vec<usize>> = HashMap::new();
    let mut total = 0;
    for room in [1, 2] {
        for t in drain(&queues, room).await {
            total += 1;
            let id = t.client_message_id.unwrap();
            let (conn, i) = id.split_once('-').unwrap();
            assert_eq!(t.room_id, room);
            per_conn
                .entry(conn.to_owned())
                .or_default()
                .push(i.parse().unwrap());
        }
    }
    assert_eq!(total, CONNS * PER_CONN, "each message queued once");
    for (conn, seq) in per_conn {
        assert!(
            seq.windows(2).all(|w| w[0] < w[1]),
            "{conn}: queue order is the order received"
        );
        assert_eq!(seq.len(), PER_CONN);
    }
    p.shutdown().await;
}

async fn a_burst_mixing_valid_and_invalid_frames_is_answered_in_order(engine: Engine) {
    let (p, queues) = producer_on(engine, ProducerConfig::local(1, 2)).await;
    let (mut r, mut w) = client(&p, "1").await;
    // One write, so the producer reads the whole burst at once and publishes it together.
    for i in 0..200u32 {
        match i % 4 {
            0 | 1 => w
                .text(message(1 + i, "ok", Some(&format!("m{i}"))).as_bytes())
                .await
                .unwrap(),
            2 => w.text(b"{not json").await.unwrap(),
            _ => {
                w.frame(Frame::new(
                    true,
                    OpCode::Ping,
                    None,
                    Payload::Borrowed(b"p"),
                ))
                .await
                .unwrap();
                w.binary(b"\x00").await.unwrap();
            }
        }
    }
    w.flush().await.unwrap();
    for i in 0..200u32 {
        match (i % 4, next_reply(&mut r).await) {
            (0 | 1, Reply::Ok(ok)) => assert_eq!(ok.client_message_id, Some(format!("m{i}"))),
            (2 | 3, Reply::Error(e)) => assert_eq!(e.error_code, ErrorCode::InvalidJson),
            (_, other) => panic!("reply {i} out of order: {other:?}"),
        }
    }
    let queued: Vec<String> = drain(&queues, 1)
        .await
        .into_iter()
        .map(|t| t.client_message_id.unwrap())
        .collect();
    let sent: Vec<String> = (0..200)
        .filter(|i| i % 4 < 2)
        .map(|i| format!("m{i}"))
        .collect();
    assert_eq!(queued, sent);
    p.shutdown().await;
}

async fn messages_sent_before_a_close_are_answered_before_its_echo(engine: Engine) {
    let (p, _queues) = producer_on(engine, ProducerConfig::local(1, 1)).await;
    let (mut r, mut w) = client(&p, "1").await;
    for i in 0..50u32 {
        w.text(message(1 + i, "bye", Some(&format!("c{i}"))).as_bytes())
            .await
            .unwrap();
    }
    w.close(1000).await.unwrap();
    for i in 0..50u32 {
        match tokio::time::timeout(T, r.next()).await.unwrap().unwrap() {
            ClientEvent::Text(b) => {
                let reply: Reply = serde_json::from_slice(&b).unwrap();
                assert!(
                    matches!(reply, Reply::Ok(ok) if ok.client_message_id == Some(format!("c{i}")))
                );
            }
            other => panic!("reply {i} expected before the close, got {other:?}"),
        }
    }
    match tokio::time::timeout(T, r.next()).await.unwrap().unwrap() {
        ClientEvent::Closed(code, _) => assert_eq!(code, Some(1000)),
        other => panic!("expected the close echo, got {other:?}"),
    }
    p.shutdown().await;
}

async fn a_resend_with_the_same_client_message_id_is_queued_once(engine: Engine) {
    let (p, queues) = producer_on(engine, ProducerConfig::local(1, 20)).await;
    let (mut r, mut w) = client(&p, "3").await;
    for _ in 0..3 {
        send(&mut w, &message(9, "once", Some("retry-me"))).await;
        assert!(matches!(next_reply(&mut r).await, Reply::Ok(_)));
    }
    // From a second connection too: deduplication is by id, not by socket.
    let (mut r2, mut w2) = client(&p, "3").await;
    send(&mut w2, &message(9, "once", Some("retry-me"))).await;
    assert!(matches!(next_reply(&mut r2).await, Reply::Ok(_)));
    let queued = drain(&queues, 3).await;
    assert_eq!(queued.len(), 1);

    // The resend's ack carries the id subscribers see; another user's equal id is its own message.
    send(&mut w, &message(9, "once", Some("retry-me"))).await;
    let Reply::Ok(ok) = next_reply(&mut r).await else {
        panic!("expected OK")
    };
    assert_eq!(ok.message_id, queued[0].message_id);
    send(&mut w, &message(10, "mine", Some("retry-me"))).await;
    assert!(matches!(next_reply(&mut r).await, Reply::Ok(_)));
    let later = drain(&queues, 3).await;
    assert_eq!(
        later.len(),
        1,
        "user 10's message is not a duplicate of user 9's"
    );
    assert_eq!(later[0].user_id, "10");
    p.shutdown().await;
}

#[tokio::test]
async fn health_ready_metrics_and_the_connection_limit() {
    let mut config = ProducerConfig::local(1, 2);
    config.max_connections = 2;
    let (p, _queues) = embedded_producer(config).await;
    assert_eq!(http_get(p.addr, "/health").await.0, 200);
    assert_eq!(http_get(p.addr, "/ready").await.0, 200);
    let (_a, _aw) = client(&p, "1").await;
    let (mut b, mut bw) = client(&p, "1").await;
    let refused = chatflow::ws::connect(&format!("ws://{}/chat/1", p.addr), T).await;
    assert!(
        matches!(refused, Err(chatflow::ws::ConnectError::Refused(ref s)) if s.contains("503")),
        "{:?}",
        refused.err()
    );
    send(&mut bw, &message(1, "counted", None)).await;
    next_reply(&mut b).await;
    let (status, body) = http_get(p.addr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "chatflow_producer_connections 2",
        "chatflow_producer_connections_refused_total 1",
        "chatflow_producer_messages_validated_total 1",
        "chatflow_producer_messages_published_total 1",
        "chatflow_build_info{component=\"producer\"",
    ] {
        assert!(body.contains(line), "metrics lack {line:?}:\n{body}");
    }
    let (status, info) = http_get(p.addr, "/info").await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&info).expect("/info is JSON");
    assert_eq!(info["component"], "producer");
    assert_eq!(info["config"]["max_connections"], 2, "{info}");
    assert_eq!(http_get(p.addr, "/nope").await.0, 404);
    p.shutdown().await;
}

#[tokio::test]
async fn with_a_metrics_address_metrics_leave_the_client_port() {
    let queues: chatflow::queue::SharedQueues =
        std::sync::Arc::new(chatflow::queue::EmbeddedQueues::default());
    ensure_rooms(&queues, 1..=1).await;
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let p = chatflow_producer::start_on(
        chatflow::service::Listeners {
            main,
            metrics: Some(metrics),
        },
        ProducerConfig::local(1, 1),
        queues,
    )
    .unwrap();
    assert_eq!(http_get(p.addr, "/metrics").await.0, 404, "not for clients");
    assert_eq!(http_get(p.addr, "/ready").await.0, 200);
    let (status, body) = http_get(metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("chatflow_producer_connections"), "{body}");
    p.shutdown().await;
}

async fn shutdown_answers_pending_messages_and_closes_with_1001(engine: Engine) {
    let mut config = ProducerConfig::local(1, 1);
    config.batch_linger_us = 200_000;
    let (p, queues) = producer_on(engine, config).await;
    let (mut r, mut w) = client(&p, "1").await;
    for i in 0..5 {
        w.text(message(1, "in flight", Some(&format!("s{i}"))).as_bytes())
            .await
            .unwrap();
    }
    w.flush().await.unwrap();
    // Read and held by the batcher's linger (relayed) or published (in place) when the stop
    // begins.
    read_by_producer(&p, 5).await;
    let stopping = tokio::spawn(p.shutdown());
    for _ in 0..5 {
        assert!(
            matches!(next_reply(&mut r).await, Reply::Ok(_)),
            "pending messages are answered"
        );
    }
    match tokio::time::timeout(T, r.next()).await.unwrap().unwrap() {
        ClientEvent::Closed(code, _) => assert_eq!(code, Some(1001)),
        other => panic!("expected close 1001, got {other:?}"),
    }
    stopping.await.unwrap();
    assert_eq!(drain(&queues, 1).await.len(), 5);
}

/// What one client saw after the stop: its replies, and when its close (and which) came.
async fn watch(mut r: chatflow::ws::ClientReader) -> (usize, Option<u16>, std::time::Instant) {
    let mut ok = 0;
    loop {
        match tokio::time::timeout(T, r.next()).await.unwrap() {
            Ok(ClientEvent::Text(b)) => {
                if matches!(serde_json::from_slice(&b), Ok(Reply::Ok(_))) {
                    ok += 1;
                }
            }
            Ok(ClientEvent::Closed(code, _)) => return (ok, code, std::time::Instant::now()),
            other => panic!("expected replies then a close, got {other:?}"),
        }
    }
}

async fn shutdown_spreads_its_closes_and_serves_each_connection_until_its_turn(engine: Engine) {
    const N: usize = 10;
    let mut config = ProducerConfig::local(1, 1);
    config.close_spread_secs = 2;
    let (p, _queues) = producer_on(engine, config).await;
    let addr = p.addr;
    let mut writers = Vec::new();
    let mut watchers = Vec::new();
    for _ in 0..N {
        let (r, w) = client(&p, "1").await;
        writers.push(w);
        watchers.push(tokio::spawn(watch(r)));
    }
    let stopping = tokio::spawn(p.shutdown());
    // The stop has begun once the listener is gone.
    tokio::time::timeout(T, async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the listener closes at the stop");
    for (i, w) in writers.iter_mut().enumerate() {
        let frame = message(1, "after the stop", Some(&format!("late-{i}")));
        // The first turns may have come already: their sockets refuse the write.
        if w.text(frame.as_bytes()).await.is_ok() {
            let _ = w.flush().await;
        }
    }
    let mut seen = Vec::new();
    for watcher in watchers {
        seen.push(watcher.await.unwrap());
    }
    stopping.await.unwrap();
    assert!(
        seen.iter().all(|(_, code, _)| *code == Some(1001)),
        "{seen:?}"
    );
    let served: usize = seen.iter().map(|(ok, _, _)| ok).sum();
    assert!(
        served >= N - 2,
        "connections whose turn had not come kept serving: {served} of {N} answered"
    );
    let first = seen.iter().map(|(_, _, at)| *at).min().unwrap();
    let last = seen.iter().map(|(_, _, at)| *at).max().unwrap();
    // Ten turns evenly over 2 s: the last comes 1.8 s after the first.
    assert!(
        last - first >= std::time::Duration::from_millis(1500),
        "closes came within {:?} of each other",
        last - first
    );
}

on_both_engines!(
    shutdown_spreads_its_closes_and_serves_each_connection_until_its_turn,
    a_valid_message_is_acked_and_queued_with_every_field,
    invalid_messages_get_the_right_error_code_and_reason,
    oversize_and_binary_frames_are_refused_and_the_server_keeps_serving,
    ten_thousand_pipelined_messages_are_acked_and_queued_in_order,
    a_burst_mixing_valid_and_invalid_frames_is_answered_in_order,
    messages_sent_before_a_close_are_answered_before_its_echo,
    a_resend_with_the_same_client_message_id_is_queued_once,
    shutdown_answers_pending_messages_and_closes_with_1001,
);
