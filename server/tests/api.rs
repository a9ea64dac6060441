//! The server API: a backend publishes into a room over HTTP with the API key, and its message
//! takes its place in the room's order among WebSocket messages, once however often it is sent.

use std::net::SocketAddr;
use std::time::Duration;

use chatflow::protocol::BroadcastEvent;
use chatflow::ws::{ClientEvent, ClientReader, ClientWriter, connect_split};
use chatflow_server::{ServerConfig, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);
const KEY: &str = "api-test-key-0123456789";

/// The status code and body a POST with `headers` gets.
async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    chatflow_testkit::http_request(addr, "POST", path, headers, body).await
}

fn message(user: u32, text: &str, client_message_id: &str) -> String {
    serde_json::json!({
        "userId": user, "username": format!("user{user}"), "message": text,
        "timestamp": "2026-12-07T10:00:00Z", "messageType": "TEXT",
        "clientMessageId": client_message_id,
    })
    .to_string()
}

async fn next_event(reader: &mut ClientReader) -> BroadcastEvent {
    match tokio::time::timeout(T, reader.next())
        .await
        .unwrap()
        .unwrap()
    {
        ClientEvent::Text(b) => serde_json::from_slice(&b).unwrap(),
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn send(writer: &mut ClientWriter, text: &str, id: &str) {
    writer.text(message(7, text, id).as_bytes()).await.unwrap();
    writer.flush().await.unwrap();
}

async fn server_with_key() -> chatflow::service::ServiceHandle {
    let mut config = ServerConfig::local(1, 10);
    config.producer.api_key = Some(chatflow_producer::config::ApiKey(KEY.to_owned()));
    let queues = config.producer.queue.connect().await.unwrap();
    start(config, queues).await.unwrap()
}

#[tokio::test]
async fn a_backend_s_message_is_ordered_among_websocket_ones_and_stored_once() {
    let srv = server_with_key().await;
    let addr = srv.addr;
    let auth = format!("apikey {KEY}");
    let headers = [("authorization", auth.as_str())];
    let (mut sub, _) = connect_split(&format!("ws://{addr}/subscribe/3"), T)
        .await
        .unwrap();
    let (mut replies, mut chat) = connect_split(&format!("ws://{addr}/chat/3"), T)
        .await
        .unwrap();

    send(&mut chat, "before the notice", "ws-1").await;
    assert_eq!(next_event(&mut sub).await.message, "before the notice");
    let notice = message(1, "the room closes at ten", "notice-1");
    let (status, body) = post(addr, "/api/rooms/3/messages", &headers, &notice).await;
    assert_eq!(status, 200, "{body}");
    let ok: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ok["status"], "OK");
    assert_eq!(ok["clientMessageId"], "notice-1");
    // A retry after a lost answer: the same message id, and no second delivery.
    let (status, again) = post(addr, "/api/rooms/3/messages", &headers, &notice).await;
    assert_eq!(status, 200, "{again}");
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["messageId"], ok["messageId"]);
    send(&mut chat, "after the notice", "ws-2").await;

    let delivered = next_event(&mut sub).await;
    assert_eq!(delivered.message, "the room closes at ten");
    assert_eq!(delivered.message_id, ok["messageId"].as_str().unwrap());
    assert_eq!(next_event(&mut sub).await.message, "after the notice");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub.next())
            .await
            .is_err(),
        "the retry was not delivered twice"
    );
    for _ in 0..2 {
        let _ = tokio::time::timeout(T, replies.next()).await.unwrap();
    }

    srv.shutdown().await;
}

#[tokio::test]
async fn refused_requests_say_why_and_publish_nothing() {
    let srv = server_with_key().await;
    let addr = srv.addr;
    let auth = format!("apikey {KEY}");
    let headers = [("authorization", auth.as_str())];
    let notice = message(1, "the room closes at ten", "notice-1");
    let (mut sub, _) = connect_split(&format!("ws://{addr}/subscribe/3"), T)
        .await
        .unwrap();
    // Requests that cannot be published say why, and publish nothing.
    let bad = post(addr, "/api/rooms/3/messages", &headers, r#"{"userId":1}"#).await;
    assert_eq!(bad.0, 400, "{}", bad.1);
    assert!(bad.1.contains("VALIDATION_ERROR"), "{}", bad.1);
    let wrong_key = [("authorization", "apikey not-the-key-not-the-key")];
    assert_eq!(
        post(addr, "/api/rooms/3/messages", &wrong_key, &notice)
            .await
            .0,
        401
    );
    assert_eq!(
        post(addr, "/api/rooms/3/messages", &[], &notice).await.0,
        401
    );
    assert_eq!(
        post(addr, "/api/rooms/11/messages", &headers, &notice)
            .await
            .0,
        404
    );
    // Refused on its declared length, before the body is read (which is never sent here, so
    // the server's close meets no unread bytes).
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/rooms/3/messages HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         authorization: {auth}\r\nContent-Length: 20000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(T, s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(
        post(addr, "/chat/3", &headers, &notice).await.0,
        405,
        "only the API takes POST"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .is_err(),
        "nothing refused was delivered"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn without_a_key_the_api_is_off_and_a_short_key_is_refused() {
    let config = ServerConfig::local(1, 10);
    let queues = config.producer.queue.connect().await.unwrap();
    let srv = start(config, queues).await.unwrap();
    let notice = message(1, "hello", "n");
    let auth = [("authorization", "apikey anything-at-all-here")];
    let (status, body) = post(srv.addr, "/api/rooms/3/messages", &auth, &notice).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("API_KEY"), "{body}");
    srv.shutdown().await;

    let mut config = ServerConfig::local(1, 10);
    config.producer.api_key = Some(chatflow_producer::config::ApiKey("short".to_owned()));
    let queues = config.producer.queue.connect().await.unwrap();
    let err = start(config, queues)
        .await
        .err()
        .expect("a short key is refused");
    assert!(err.to_string().contains("API_KEY"), "{err}");
}
