//! A backend disconnects a user through the server API: every sender connection of the user is
//! closed with 4403 once what it sent before is answered, on both connection engines, and other
//! users keep sending.

mod common;

use chatflow::auth::{Claims, mint_hs256};
use chatflow::protocol::Reply;
use chatflow::ws::{ClientEvent, ClientReader, ClientWriter, connect_split_with};
use chatflow_producer::ProducerConfig;
use chatflow_producer::config::ApiKey;
use chatflow_testkit::http_request;
use common::*;

const SECRET: &[u8] = b"disconnect-test-secret-disconnect-test";
const KEY: &str = "disconnect-test-key-0123456789";

fn config(test: &str) -> ProducerConfig {
    let dir =
        std::env::temp_dir().join(format!("chatflow-disconnect-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    let mut c = ProducerConfig::local(1, 4);
    c.auth.jwt_secret_file = Some(dir.join("secret"));
    c.api_key = Some(ApiKey(KEY.to_owned()));
    c
}

async fn sender(addr: std::net::SocketAddr, user: u32) -> (ClientReader, ClientWriter) {
    let token = mint_hs256(
        SECRET,
        &Claims::new(user.to_string(), 600, &["1-4"], &["1-4"]),
    );
    connect_split_with(
        &format!("ws://{addr}/chat/1"),
        T,
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap()
}

async fn a_disconnected_user_s_senders_close_with_4403_after_their_answers(engine: Engine) {
    let (p, queues) = producer_on(engine, config(&format!("{engine:?}"))).await;
    let (mut a1, mut w1) = sender(p.addr, 7).await;
    let (mut a2, _w2) = sender(p.addr, 7).await;
    let (mut other, mut wo) = sender(p.addr, 8).await;
    send(&mut w1, &message(7, "before the disconnect", Some("d-1"))).await;
    assert!(matches!(next_reply(&mut a1).await, Reply::Ok(_)));

    let auth = format!("apikey {KEY}");
    let (status, body) = http_request(
        p.addr,
        "POST",
        "/api/users/7/disconnect",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""closedHere":2"#), "{body}");
    for r in [&mut a1, &mut a2] {
        let close = tokio::time::timeout(T, r.next()).await.unwrap().unwrap();
        assert!(
            matches!(&close, ClientEvent::Closed(Some(4403), why) if why == "disconnected by the server"),
            "{close:?}"
        );
    }
    // Another user is untouched, and what the disconnected user sent is in the queue.
    send(&mut wo, &message(8, "still here", Some("d-2"))).await;
    assert!(matches!(next_reply(&mut other).await, Reply::Ok(_)));
    let texts: Vec<String> = drain(&queues, 1)
        .await
        .into_iter()
        .map(|m| m.message)
        .collect();
    assert_eq!(texts, ["before the disconnect", "still here"]);
    p.shutdown().await;
}

on_both_engines!(a_disconnected_user_s_senders_close_with_4403_after_their_answers);
