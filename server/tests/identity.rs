//! Identity and limits as a client meets them: tokens open rooms and name the sender, browsers
//! come from allowed pages, an expired token closes the connection so a fresh one resumes, and a
//! flooding user is held back without costing anyone else a message.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chatflow::auth::{Claims, mint_hs256};
use chatflow::protocol::{BroadcastEvent, Position, RecoveryNotice};
use chatflow::service::ServiceHandle;
use chatflow::ws::{ClientEvent, ClientReader, ClientWriter, connect_split_with};
use chatflow_server::{ServerConfig, start};
use chatflow_testkit::http_request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);
const SECRET: &[u8] = b"identity-test-secret-identity-test-secret";

fn secret_file(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chatflow-identity-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secret");
    std::fs::write(&path, SECRET).unwrap();
    path
}

async fn server(test: &str, tune: impl FnOnce(&mut ServerConfig)) -> ServiceHandle {
    let mut config = ServerConfig::local(1, 10);
    config.producer.auth.jwt_secret_file = Some(secret_file(test));
    config.producer.auth.jwt_leeway_secs = 0;
    tune(&mut config);
    let queues = config.producer.queue.connect().await.unwrap();
    start(config, queues).await.unwrap()
}

fn token(user: u32, ttl: u64, rooms: &[&str]) -> String {
    mint_hs256(SECRET, &Claims::new(user.to_string(), ttl, rooms, rooms))
}

/// The status line and headers a raw upgrade request gets.
async fn upgrade_head(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed before the answer");
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

async fn open(addr: SocketAddr, path: &str, token: &str) -> (ClientReader, ClientWriter) {
    let bearer = format!("Bearer {token}");
    connect_split_with(
        &format!("ws://{addr}{path}"),
        T,
        &[("authorization", &bearer)],
    )
    .await
    .unwrap()
}

async fn next(reader: &mut ClientReader, what: &str) -> ClientEvent {
    tokio::time::timeout(T, reader.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {T:?}"))
        .unwrap()
}

async fn next_json<V: serde::de::DeserializeOwned>(reader: &mut ClientReader, what: &str) -> V {
    match next(reader, what).await {
        ClientEvent::Text(b) => serde_json::from_slice(&b).unwrap(),
        other => panic!("expected {what}, got {other:?}"),
    }
}

async fn send(writer: &mut ClientWriter, user: u32, text: &str) {
    let frame = serde_json::json!({
        "userId": user, "username": format!("user{user}"), "message": text,
        "timestamp": "2026-11-27T10:00:00Z", "messageType": "TEXT",
    });
    writer.text(frame.to_string().as_bytes()).await.unwrap();
    writer.flush().await.unwrap();
}

#[tokio::test]
async fn a_token_opens_only_its_rooms_and_speaks_only_as_its_user() {
    let srv = server("rooms", |_| {}).await;
    let addr = srv.addr;
    let alice = token(42, 300, &["1-5"]);
    let bearer = format!("Bearer {alice}");
    let auth = [("authorization", bearer.as_str())];

    for path in ["/subscribe/6", "/chat/6"] {
        let head = upgrade_head(addr, path, &auth).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{path}: {head}");
    }
    let head = upgrade_head(addr, "/subscribe/3", &[]).await;
    assert!(head.starts_with("HTTP/1.1 401"), "no token: {head}");
    let forged = mint_hs256(
        b"not-the-secret-not-the-secret-not-the",
        &Claims::new("42", 300, &["*"], &["*"]),
    );
    let head = upgrade_head(
        addr,
        "/subscribe/3",
        &[("authorization", &format!("Bearer {forged}"))],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 401"), "forged: {head}");
    // A browser page from elsewhere is refused even with a good token; from the server's own
    // host it may carry the token in a subprotocol, and gets `chatflow` chosen back.
    let evil = [auth[0], ("origin", "http://evil.example")];
    assert!(
        upgrade_head(addr, "/subscribe/3", &evil)
            .await
            .starts_with("HTTP/1.1 403")
    );
    let proto = format!("chatflow, chatflow.token.{alice}");
    let own = format!("http://{addr}");
    let browser = [
        ("origin", own.as_str()),
        ("sec-websocket-protocol", proto.as_str()),
    ];
    let head = upgrade_head(addr, "/subscribe/3", &browser).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: chatflow\r\n"),
        "{head}"
    );

    let (mut sub, _sub_w) = open(addr, "/subscribe/3", &alice).await;
    let (mut acks, mut chat) = open(addr, "/chat/3", &alice).await;
    send(&mut chat, 43, "as bob").await;
    let refused: serde_json::Value = next_json(&mut acks, "refusal").await;
    assert_eq!(refused["errorCode"], "FORBIDDEN", "{refused}");
    send(&mut chat, 42, "as alice").await;
    let ack: serde_json::Value = next_json(&mut acks, "ack").await;
    assert_eq!(ack["status"], "OK", "{ack}");
    let ev: BroadcastEvent = next_json(&mut sub, "broadcast").await;
    assert_eq!(
        (ev.user_id.as_str(), ev.message.as_str()),
        ("42", "as alice")
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_is_closed_and_a_fresh_one_resumes_without_loss() {
    let srv = server("expiry", |c| c.producer.auth.token_expiry_grace_secs = 1).await;
    let addr = srv.addr;
    let (mut sub, _sub_w) = open(addr, "/subscribe/1", &token(7, 2, &["1"])).await;
    let (mut acks, mut chat) = open(addr, "/chat/1", &token(8, 300, &["1"])).await;
    for i in 0..3 {
        send(&mut chat, 8, &format!("m{i}")).await;
        let _: serde_json::Value = next_json(&mut acks, "ack").await;
    }
    let mut last: Option<Position> = None;
    for _ in 0..3 {
        let ev: BroadcastEvent = next_json(&mut sub, "broadcast").await;
        last = ev.position;
    }
    match next(&mut sub, "the expiry close").await {
        ClientEvent::Closed(code, _) => assert_eq!(code, Some(chatflow::auth::CLOSE_TOKEN_EXPIRED)),
        other => panic!("expected a close, got {other:?}"),
    }
    // Sent while the subscriber fetches a fresh token.
    for i in 3..6 {
        send(&mut chat, 8, &format!("m{i}")).await;
        let _: serde_json::Value = next_json(&mut acks, "ack").await;
    }
    let path = format!("/subscribe/1?after={}", last.unwrap());
    let (mut back, _w) = open(addr, &path, &token(7, 300, &["1"])).await;
    let notice: RecoveryNotice = next_json(&mut back, "recovery notice").await;
    assert!(notice.recovered && notice.replayed == 3, "{notice:?}");
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev: BroadcastEvent = next_json(&mut back, "replay").await;
        got.push(ev.message);
    }
    assert_eq!(got, ["m3", "m4", "m5"]);

    // A sender's short token closes its connection the same way, after its answers.
    let (mut short_acks, mut short) = open(addr, "/chat/1", &token(9, 1, &["1"])).await;
    send(&mut short, 9, "last words").await;
    let ack: serde_json::Value = next_json(&mut short_acks, "ack").await;
    assert_eq!(ack["status"], "OK");
    match next(&mut short_acks, "the sender's expiry close").await {
        ClientEvent::Closed(code, _) => assert_eq!(code, Some(chatflow::auth::CLOSE_TOKEN_EXPIRED)),
        other => panic!("expected a close, got {other:?}"),
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn a_flooding_user_is_limited_while_others_are_served_and_every_ack_is_delivered() {
    let srv = server("flood", |c| {
        c.producer.user_message_rate = 20;
        c.producer.user_message_burst = 20;
    })
    .await;
    let addr = srv.addr;
    let (mut sub, _sub_w) = open(addr, "/subscribe/2", &token(1, 300, &["2"])).await;
    let (mut flood_acks, mut flood) = open(addr, "/chat/2", &token(1, 300, &["2"])).await;
    let (mut calm_acks, mut calm) = open(addr, "/chat/2", &token(2, 300, &["2"])).await;
    let mut acked = Vec::new();
    let mut limited = 0;
    let started = std::time::Instant::now();
    for i in 0..200 {
        send(&mut flood, 1, &format!("flood {i}")).await;
        if i % 20 == 0 {
            send(&mut calm, 2, &format!("calm {i}")).await;
            let ack: serde_json::Value = next_json(&mut calm_acks, "calm ack").await;
            assert_eq!(ack["status"], "OK", "the calm user is not limited: {ack}");
            acked.push(format!("calm {i}"));
        }
    }
    for i in 0..200 {
        let reply: serde_json::Value = next_json(&mut flood_acks, "flood reply").await;
        match reply["status"].as_str() {
            Some("OK") => acked.push(format!("flood {i}")),
            _ => {
                assert_eq!(reply["errorCode"], "RATE_LIMITED", "{reply}");
                limited += 1;
            }
        }
    }
    // The flooder is held to its burst and rate: a refused sender is not read again until its
    // limit takes a message, so its refusals stay few too.
    let flood_acked = 200 - limited;
    let allowed = 20.0 + 20.0 * started.elapsed().as_secs_f64() + 1.0;
    assert!(
        limited > 0 && f64::from(flood_acked) <= allowed,
        "{flood_acked} acked, {limited} refused"
    );
    let mut delivered = Vec::new();
    while delivered.len() < acked.len() {
        let ev: BroadcastEvent = next_json(&mut sub, "broadcast").await;
        delivered.push(ev.message);
    }
    acked.sort();
    delivered.sort();
    assert_eq!(
        delivered, acked,
        "every acknowledged message, and only those"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_key_rotated_in_the_jwks_file_is_taken_without_a_restart() {
    use base64::Engine;
    let jwks = |secret: &[u8]| {
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        serde_json::json!({"keys": [{"kty": "oct", "alg": "HS256", "k": k}]}).to_string()
    };
    let (old, new) = (
        SECRET,
        b"rotated-secret-rotated-secret-rotated-secret".as_slice(),
    );
    let path = secret_file("jwks").with_file_name("jwks.json");
    std::fs::write(&path, jwks(old)).unwrap();
    let srv = server("jwks", |c| {
        c.producer.auth.jwt_secret_file = None;
        c.producer.auth.jwks_file = Some(path.clone());
        c.producer.auth.jwks_refresh_secs = 1;
    })
    .await;
    let claims = Claims::new("5", 300, &["1"], &["1"]);
    let addr = srv.addr;
    let status = |token: String| async move {
        let bearer = format!("Bearer {token}");
        let head = upgrade_head(addr, "/subscribe/1", &[("authorization", &bearer)]).await;
        head[9..12].to_owned()
    };
    assert_eq!(status(mint_hs256(old, &claims)).await, "101");
    assert_eq!(status(mint_hs256(new, &claims)).await, "401");

    std::fs::write(&path, jwks(new)).unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while status(mint_hs256(new, &claims)).await != "101" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated key was never taken"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        status(mint_hs256(old, &claims)).await,
        "401",
        "the retired key is refused"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn the_history_route_asks_for_the_token_subscribing_does() {
    let srv = server("history", |_| {}).await;
    let addr = srv.addr;
    let alice = token(42, 300, &["1-5"]);
    let bearer = format!("Bearer {alice}");
    let auth = [("authorization", bearer.as_str())];
    let (mut sub, _) = open(addr, "/subscribe/3", &alice).await;
    let (_, mut w) = open(addr, "/chat/3", &alice).await;
    send(&mut w, 42, "first").await;
    send(&mut w, 42, "second").await;
    let delivered: Vec<BroadcastEvent> = vec![
        next_json(&mut sub, "the first event").await,
        next_json(&mut sub, "the second event").await,
    ];
    let (status, body) = http_request(addr, "GET", "/history/3", &auth, "").await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let read: Vec<BroadcastEvent> = serde_json::from_value(page["events"].clone()).unwrap();
    assert_eq!(read, delivered);
    assert_eq!(read[1].user_id, "42", "the sender is the token's user");

    let (status, _) = http_request(addr, "GET", "/history/3", &[], "").await;
    assert_eq!(status, 401, "no token");
    let (status, _) = http_request(addr, "GET", "/history/6", &auth, "").await;
    assert_eq!(status, 403, "a room the token does not open");
    srv.shutdown().await;
}

/// The status line and headers of a plain request with `headers`, lower-cased.
async fn head(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let answer = chatflow_testkit::http_exchange(addr, method, path, headers, "").await;
    answer
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase()
}

#[tokio::test]
async fn a_page_from_an_allowed_origin_reads_history_and_presence_across_origins() {
    let srv = server("cors", |c| {
        c.producer.auth.allowed_origins = vec!["https://chat.example.com".into()];
    })
    .await;
    let addr = srv.addr;
    let bearer = format!("Bearer {}", token(42, 300, &["1-5"]));
    let page = ("Origin", "https://chat.example.com");
    for path in ["/history/3", "/presence/3"] {
        // The browser's preflight for a request with a token.
        let pre = head(
            addr,
            "OPTIONS",
            path,
            &[
                page,
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
        )
        .await;
        assert!(pre.starts_with("http/1.1 204"), "{pre}");
        assert!(
            pre.contains("access-control-allow-origin: https://chat.example.com"),
            "{pre}"
        );
        assert!(
            pre.contains("access-control-allow-headers: authorization"),
            "{pre}"
        );
        let got = head(addr, "GET", path, &[page, ("Authorization", &bearer)]).await;
        assert!(got.starts_with("http/1.1 200"), "{got}");
        assert!(
            got.contains("access-control-allow-origin: https://chat.example.com"),
            "{got}"
        );
        assert!(got.contains("vary: origin"), "{got}");
        // Another origin is refused, and a program without an Origin gets no CORS headers.
        let other = ("Origin", "https://evil.example");
        let refused = head(addr, "OPTIONS", path, &[other]).await;
        assert!(refused.starts_with("http/1.1 403"), "{refused}");
        let refused = head(addr, "GET", path, &[other, ("Authorization", &bearer)]).await;
        assert!(refused.starts_with("http/1.1 403"), "{refused}");
        let program = head(addr, "GET", path, &[("Authorization", &bearer)]).await;
        assert!(program.starts_with("http/1.1 200"), "{program}");
        assert!(
            !program.contains("access-control-allow-origin"),
            "{program}"
        );
    }
    // Only routes that answer content over HTTP: the WebSocket routes need no CORS.
    let chat = head(addr, "OPTIONS", "/chat/3", &[page]).await;
    assert!(chat.starts_with("http/1.1 403"), "{chat}");
    srv.shutdown().await;
}
