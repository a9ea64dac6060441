//! Presence as a chat page meets it: who is in a room, across servers sharing a store, with
//! joins and leaves as they happen, and a server killed without a goodbye whose users expire.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatflow::auth::{Claims, mint_hs256};
use chatflow::protocol::{PresenceDiff, SubscriberFrame};
use chatflow::service::ServiceHandle;
use chatflow::ws::{ClientEvent, ClientReader, connect_reader_with};
use chatflow_server::{ServerConfig, start};
use chatflow_testkit::{RedisServer, http_request};

const T: Duration = Duration::from_secs(10);
const SECRET: &[u8] = b"presence-test-secret-presence-test-secret";
/// The store's expiry in these tests: a killed server's users are gone within it and a refresh.
const TTL_SECS: u64 = 4;

fn secret_file(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chatflow-presence-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secret");
    std::fs::write(&path, SECRET).unwrap();
    path
}

fn token(user: &str, name: &str) -> String {
    let mut claims = Claims::new(user, 3600, &["1-10"], &["1-10"]);
    claims.name = Some(name.to_owned());
    mint_hs256(SECRET, &claims)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

const KEY: &str = "presence-test-key-0123456789";

async fn server(test: &str, store: Option<String>) -> ServiceHandle {
    let mut config = ServerConfig::local(1, 10);
    config.producer.api_key = Some(chatflow_producer::config::ApiKey(KEY.to_owned()));
    config.producer.auth.jwt_secret_file = Some(secret_file(test));
    config.producer.presence.url = store;
    config.producer.presence.ttl_secs = TTL_SECS;
    config.producer.presence.diff_interval_ms = 200;
    let queues = config.producer.queue.connect().await.unwrap();
    start(config, queues).await.unwrap()
}

async fn subscribe(addr: SocketAddr, query: &str, token: &str) -> ClientReader {
    let url = format!("ws://{addr}/subscribe/1{query}");
    connect_reader_with(&url, T, &[("Authorization", &bearer(token))])
        .await
        .unwrap()
}

/// The next presence frame with a change within `wait` (a subscription's first may have none).
async fn presence_frame(r: &mut ClientReader, wait: Duration) -> PresenceDiff {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, r.next())
            .await
            .expect("a presence frame in time")
            .unwrap();
        if let ClientEvent::Text(b) = ev
            && let Ok(SubscriberFrame::Presence(p)) = serde_json::from_slice(&b)
            && !(p.joined.is_empty() && p.left.is_empty())
        {
            return p;
        }
    }
}

/// Waits for a subscription's first presence frame: changes reach it from then on.
async fn greeted(r: &mut ClientReader) {
    loop {
        let ev = tokio::time::timeout(T, r.next())
            .await
            .expect("a first presence frame")
            .unwrap();
        if let ClientEvent::Text(b) = ev
            && let Ok(SubscriberFrame::Presence(_)) = serde_json::from_slice(&b)
        {
            return;
        }
    }
}

async fn roster(addr: SocketAddr, token: &str) -> serde_json::Value {
    let (status, body) = http_request(
        addr,
        "GET",
        "/presence/1?limit=10",
        &[("Authorization", &bearer(token))],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn users(roster: &serde_json::Value) -> Vec<String> {
    roster["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn one_server_lists_its_subscribers_and_tells_watchers_who_comes_and_goes() {
    let s = server("one", None).await;
    let addr = s.addr;
    let bob = token("bob", "Bob");
    let mut watcher = subscribe(addr, "?presence=true", &bob).await;
    let first = presence_frame(&mut watcher, T).await;
    assert_eq!((first.count, first.joined[0].user_id.as_str()), (1, "bob"));
    let alice = subscribe(addr, "", &token("alice", "Alice")).await;
    let joined = presence_frame(&mut watcher, T).await;
    assert_eq!(joined.count, 2);
    assert_eq!(joined.joined[0].user_id, "alice");
    assert_eq!(joined.joined[0].name.as_deref(), Some("Alice"));
    let listed = roster(addr, &bob).await;
    assert_eq!(listed["count"], 2);
    assert_eq!(users(&listed), ["bob", "alice"], "arrival order");
    drop(alice);
    let left = presence_frame(&mut watcher, T).await;
    assert_eq!(
        (left.count, left.left.as_slice()),
        (1, ["alice".to_owned()].as_slice())
    );
    // The roster is read like history: a token for the room, or nothing.
    let (status, _) = http_request(addr, "GET", "/presence/1", &[], "").await;
    assert_eq!(status, 401);
    let other_room = mint_hs256(SECRET, &Claims::new("eve", 3600, &["2"], &["2"]));
    let (status, _) = http_request(
        addr,
        "GET",
        "/presence/1",
        &[("Authorization", &bearer(&other_room))],
        "",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = http_request(
        addr,
        "GET",
        "/presence/1?limit=0",
        &[("Authorization", &bearer(&bob))],
        "",
    )
    .await;
    assert_eq!(status, 400);
    s.shutdown().await;
}

/// The close a connection gets within `T`, skipping what comes before it.
async fn closed(r: &mut ClientReader) -> (Option<u16>, String) {
    loop {
        match tokio::time::timeout(T, r.next())
            .await
            .expect("a close in time")
        {
            Ok(ClientEvent::Closed(code, reason)) => return (code, reason),
            Ok(_) => {}
            Err(e) => panic!("the connection failed without a close: {e}"),
        }
    }
}

fn apikey() -> String {
    format!("apikey {KEY}")
}

#[tokio::test]
async fn a_backend_reads_a_roster_and_disconnects_a_user_s_every_connection() {
    let s = server("disconnect", None).await;
    let addr = s.addr;
    let alice = token("alice", "Alice");
    let mut alice_feed = subscribe(addr, "", &alice).await;
    let (mut alice_chat, _writer) = chatflow::ws::connect_split_with(
        &format!("ws://{addr}/chat/1"),
        T,
        &[("Authorization", &bearer(&alice))],
    )
    .await
    .unwrap();
    let bob = token("bob", "Bob");
    let mut watcher = subscribe(addr, "?presence=true", &bob).await;
    greeted(&mut watcher).await;
    let key = apikey();
    let auth = [("Authorization", key.as_str())];
    let mut listed = serde_json::Value::Null;
    for _ in 0..50 {
        let (status, body) = http_request(addr, "GET", "/api/rooms/1/presence", &auth, "").await;
        assert_eq!(status, 200, "{body}");
        listed = serde_json::from_str(&body).unwrap();
        if listed["count"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(users(&listed), ["alice", "bob"]);

    let (status, body) = http_request(addr, "POST", "/api/users/alice/disconnect", &auth, "").await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["closedHere"], 2, "her subscriber and her sender");
    let why = (Some(4403), "disconnected by the server".to_owned());
    assert_eq!(closed(&mut alice_feed).await, why);
    assert_eq!(closed(&mut alice_chat).await, why);
    assert_eq!(presence_frame(&mut watcher, T).await.left, ["alice"]);

    // Refusals: a wrong key, a GET, a user route without its action.
    let wrong = [("Authorization", "apikey not-the-key-not-the-key")];
    let (status, _) = http_request(addr, "POST", "/api/users/bob/disconnect", &wrong, "").await;
    assert_eq!(status, 401);
    let (status, _) = http_request(addr, "GET", "/api/users/bob/disconnect", &auth, "").await;
    assert_eq!(status, 405);
    let (status, _) = http_request(addr, "POST", "/api/rooms/1/presence", &auth, "").await;
    assert_eq!(status, 405);
    let (status, _) = http_request(addr, "POST", "/api/users/bob", &auth, "").await;
    assert_eq!(status, 404);
    assert_eq!(users(&roster(addr, &bob).await), ["bob"], "bob stays");
    s.shutdown().await;
}

/// A standalone server in a process of its own, so the test can SIGKILL it.
struct Killable {
    child: Child,
    addr: SocketAddr,
}

impl Killable {
    async fn start(store: &str) -> Killable {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_chatflow-server"))
            .env("LISTEN_ADDR", addr.to_string())
            .env("ROOMS_END", "10")
            .env("JWT_SECRET_FILE", secret_file("killable"))
            .env("PRESENCE_STORE_URL", store)
            .env("PRESENCE_TTL_SECS", TTL_SECS.to_string())
            .env("PRESENCE_DIFF_INTERVAL_MS", "200")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                started.elapsed() < T,
                "chatflow-server did not listen on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Killable { child, addr }
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "needs redis-server: run scripts/test"]
async fn servers_sharing_a_store_see_each_others_users_and_a_killed_servers_users_expire() {
    let redis = RedisServer::start();
    let b = server("shared", Some(redis.url())).await;
    let mut a = Killable::start(&redis.url()).await;
    let bob = token("bob", "Bob");
    let mut watcher = subscribe(b.addr, "?presence=true", &bob).await;
    greeted(&mut watcher).await;

    // Alice on the other server appears in this one's roster and frames.
    let alice = subscribe(a.addr, "", &token("alice", "Alice")).await;
    let asked = Instant::now();
    let joined = presence_frame(&mut watcher, T).await;
    let join_seen = asked.elapsed();
    assert_eq!(joined.joined[0].user_id, "alice");
    assert_eq!(joined.count, 2);
    let listed = roster(b.addr, &bob).await;
    assert_eq!(users(&listed), ["bob", "alice"]);
    assert_eq!(listed["members"][1]["name"], "Alice");
    // Her second connection, then her first going, leaves her present.
    let alice_too = subscribe(a.addr, "", &token("alice", "Alice")).await;
    drop(alice);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(roster(b.addr, &bob).await["count"], 2);
    drop(alice_too);
    let left = presence_frame(&mut watcher, T).await;
    assert_eq!(left.left, ["alice"]);
    assert_eq!(roster(b.addr, &bob).await["count"], 1);

    // A disconnect asked of this server closes Dave's connection on the other.
    let mut dave = subscribe(a.addr, "", &token("dave", "Dave")).await;
    assert_eq!(
        presence_frame(&mut watcher, T).await.joined[0].user_id,
        "dave"
    );
    let key = apikey();
    let (status, body) = http_request(
        b.addr,
        "POST",
        "/api/users/dave/disconnect",
        &[("Authorization", key.as_str())],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""otherPodsTold":true"#), "{body}");
    assert_eq!(closed(&mut dave).await.0, Some(4403));
    assert_eq!(presence_frame(&mut watcher, T).await.left, ["dave"]);

    // Carol's server is killed: no goodbye, so she leaves by expiry.
    let _carol = subscribe(a.addr, "", &token("carol", "Carol")).await;
    assert_eq!(
        presence_frame(&mut watcher, T).await.joined[0].user_id,
        "carol"
    );
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    let left = presence_frame(&mut watcher, Duration::from_secs(TTL_SECS * 3)).await;
    let expired_after = killed.elapsed();
    assert_eq!(left.left, ["carol"]);
    assert_eq!(users(&roster(b.addr, &bob).await), ["bob"]);
    // Expiry plus a quarter of it for the next sweep, plus the frame interval.
    assert!(
        expired_after <= Duration::from_millis(TTL_SECS * 1_250 + 1_000),
        "{expired_after:?}"
    );
    eprintln!(
        "join seen across servers after {join_seen:?}; killed server's user gone after {expired_after:?}"
    );
    b.shutdown().await;
}
