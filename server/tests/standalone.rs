//! The standalone server as a user meets it: one address for sending, subscribing, the page and
//! the probes, over queues it creates itself.

use std::time::Duration;

use chatflow::ws::{ClientEvent, connect_split};
use chatflow_server::{ServerConfig, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(T, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

async fn next_json(reader: &mut chatflow::ws::ClientReader, what: &str) -> serde_json::Value {
    let next = tokio::time::timeout(T, reader.next()).await;
    match next
        .unwrap_or_else(|_| panic!("no {what} within {T:?}"))
        .unwrap()
    {
        ClientEvent::Text(b) => serde_json::from_slice(&b).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn send(writer: &mut chatflow::ws::ClientWriter, frame: &str) {
    writer.text(frame.as_bytes()).await.unwrap();
    writer.flush().await.unwrap();
}

fn message(user: u32, text: &str, cmid: &str) -> String {
    serde_json::json!({
        "userId": user.to_string(),
        "username": format!("user{user}"),
        "message": text,
        "timestamp": "2026-11-27T10:00:00Z",
        "messageType": "TEXT",
        "clientMessageId": cmid,
    })
    .to_string()
}

#[tokio::test]
async fn one_address_sends_subscribes_and_serves_the_page_over_queues_it_created() {
    let mut config = ServerConfig::local(1, 5);
    // Connecting the configured backend, as the binary does: embedded queues must exist after.
    let queues = config.producer.queue.connect().await.unwrap();
    config.producer.listen_addr = "127.0.0.1:0".parse().unwrap();
    let server = start(config, queues).await.unwrap();
    let addr = server.addr;

    let page = get(addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("text/html") && page.contains("<script src=\"chat.js\">"));
    assert!(get(addr, "/chat.js").await.contains("class Link"));
    assert!(get(addr, "/ready").await.starts_with("HTTP/1.1 200"));
    assert!(
        get(addr, "/metrics")
            .await
            .contains("chatflow_consumer_subscribers")
    );
    assert!(
        get(addr, "/metrics")
            .await
            .contains("chatflow_producer_connections")
    );
    let missing = get(addr, "/nope").await;
    assert!(missing.contains("/chat/{roomId}") && missing.contains("/subscribe/{roomId}"));

    let (mut sub, _sub_w) = connect_split(&format!("ws://{addr}/subscribe/3"), T)
        .await
        .unwrap();
    let (mut replies, mut chat) = connect_split(&format!("ws://{addr}/chat/3"), T)
        .await
        .unwrap();
    for (i, text) in ["first", "second", "third"].iter().enumerate() {
        send(&mut chat, &message(7, text, &format!("c{i}"))).await;
        let ack = next_json(&mut replies, &format!("ack {i}")).await;
        assert_eq!(ack["status"], "OK", "{ack}");
    }
    // A resend under the same clientMessageId is acknowledged again but broadcast once.
    send(&mut chat, &message(7, "third", "c2")).await;
    assert_eq!(
        next_json(&mut replies, "ack of the resend").await["status"],
        "OK"
    );
    send(&mut chat, &message(7, "fourth", "c3")).await;
    assert_eq!(next_json(&mut replies, "ack").await["status"], "OK");

    let mut got = Vec::new();
    for _ in 0..4 {
        let ev = next_json(&mut sub, "broadcast").await;
        assert_eq!(ev["roomId"], 3, "{ev}");
        got.push(ev["message"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, ["first", "second", "third", "fourth"]);

    // A room outside the range is refused on both routes, each in its own way.
    let (mut bad, mut bad_w) = connect_split(&format!("ws://{addr}/chat/9"), T)
        .await
        .unwrap();
    send(&mut bad_w, &message(7, "x", "b")).await;
    assert_eq!(
        next_json(&mut bad, "INVALID_ROOM reply").await["errorCode"],
        "INVALID_ROOM"
    );
    assert!(
        connect_split(&format!("ws://{addr}/subscribe/9"), T)
            .await
            .is_err()
    );

    server.shutdown().await;
}
