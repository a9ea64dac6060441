//! `GET /history/{roomId}`: a room's recent messages over HTTP, exactly what a resume from the
//! same position replays, from the shard and through an edge.

use chatflow::protocol::{BroadcastEvent, Position, SubscriberFrame};
use chatflow::queue::QueueAttributes;
use chatflow::rooms::RoomRange;
use chatflow::ws::{ClientEvent, connect_split};
use chatflow_consumer::ConsumerConfig;
use chatflow_fanout::edge::{self, EdgeConfig, routes::Routes};
use tokio::net::TcpListener;

mod support;
use support::*;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn page_events(page: &serde_json::Value) -> Vec<BroadcastEvent> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_value(e.clone()).unwrap())
        .collect()
}

async fn page(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http_get(addr, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    json(&body)
}

#[tokio::test]
async fn a_room_s_history_is_served_over_http_as_a_resume_replays_it() {
    let (c, queues) = setup(
        1..=1,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 1),
    )
    .await;
    let mut s = subscribe(&c, 1).await;
    publish(&queues, 1, 0..10, 5).await;
    let seen = events(&mut s, 10).await;

    // A page that opens the room: its newest messages, oldest first.
    let newest = page(c.addr, "/history/1?limit=3").await;
    assert!(newest["after"].is_null());
    assert_eq!(seqs(&page_events(&newest)), [7, 8, 9]);
    let all = page(c.addr, "/history/1").await;
    assert_eq!(seqs(&page_events(&all)), (0..10).collect::<Vec<_>>());

    // A client told `recovered: false`, or one paging back in: what followed a position.
    let after: Position = seen[3].position.unwrap();
    let first = page(c.addr, &format!("/history/1?after={after}&limit=4")).await;
    assert_eq!(first["after"], after.to_string());
    assert_eq!(first["recovered"], true);
    assert_eq!(first["more"], true, "6 follow, 4 fit");
    let first_events = page_events(&first);
    assert_eq!(seqs(&first_events), [4, 5, 6, 7]);
    let next = first_events.last().unwrap().position.unwrap();
    let second = page(c.addr, &format!("/history/1?after={next}&limit=4")).await;
    assert_eq!(second["recovered"], true);
    assert_eq!(second["more"], false);
    assert_eq!(seqs(&page_events(&second)), [8, 9]);

    // The same events, byte for byte, as a WebSocket resume from that position.
    let mut resumed = connect_split(&format!("ws://{}/subscribe/1?after={after}", c.addr), T)
        .await
        .unwrap()
        .0;
    let mut frames = Vec::new();
    while frames.len() < 7 {
        match tokio::time::timeout(T, resumed.next())
            .await
            .unwrap()
            .unwrap()
        {
            ClientEvent::Text(b) => frames.push(json(std::str::from_utf8(&b).unwrap())),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        serde_json::from_value(frames[0].clone()),
        Ok(SubscriberFrame::Recovery(n)) if n.recovered && n.replayed == 6
    ));
    let whole = page(c.addr, &format!("/history/1?after={after}")).await;
    assert_eq!(whole["events"].as_array().unwrap()[..], frames[1..]);

    // Requests that cannot be answered say why.
    assert_eq!(http_get(c.addr, "/history/2").await.0, 404);
    assert_eq!(http_get(c.addr, "/history/1?after=yesterday").await.0, 400);
    let (status, body) = http_get(c.addr, "/history/1?limit=5000").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit"), "{body}");

    // Through an edge, which passes the request on to the room's shard.
    let edge = edge::start_on(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        EdgeConfig::default(),
        Routes::Template(format!("ws://{}/subscribe/{{roomId}}", c.addr)),
        RoomRange::new(1, 1).unwrap(),
    )
    .unwrap();
    let path = format!("/history/1?after={after}&limit=4");
    assert_eq!(page(edge.addr, &path).await, first);
    assert_eq!(http_get(edge.addr, "/history/1?limit=0").await.0, 400);
    c.shutdown().await;
    let (status, body) = http_get(edge.addr, "/history/1").await;
    assert_eq!(status, 503, "a shard that is gone: {body}");
    edge.shutdown().await;
}
