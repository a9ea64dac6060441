//! The edge: subscribers of one room spread over edges that each hold one upstream subscription
//! to the owning shard, through shard replacement and resumes, with nothing lost or repeated.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chatflow::protocol::{BroadcastEvent, Position, RecoveryNotice, SubscriberFrame};
use chatflow::queue::QueueAttributes;
use chatflow::rooms::RoomRange;
use chatflow::service::ServiceHandle;
use chatflow::ws::{ClientEvent, ClientReader, ConnectError, connect_split};
use chatflow_consumer::{ConsumerConfig, start};
use chatflow_fanout::edge::routes::Routes;
use chatflow_fanout::edge::{self, EdgeConfig};
use tokio::net::TcpListener;

mod support;
use support::*;

async fn start_edge(routes: Routes) -> ServiceHandle {
    start_edge_with(EdgeConfig::default(), routes).await
}

async fn start_edge_with(config: EdgeConfig, routes: Routes) -> ServiceHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    edge::start_on(listener, config, routes, RoomRange::new(1, 1).unwrap()).unwrap()
}

fn shard_of(addr: std::net::SocketAddr) -> Routes {
    Routes::Template(format!("ws://{addr}/subscribe/{{roomId}}"))
}

async fn join(edge: &ServiceHandle, query: &str) -> Result<ClientReader, ConnectError> {
    connect_split(&format!("ws://{}/subscribe/1{query}", edge.addr), T)
        .await
        .map(|(r, _w)| r)
}

async fn frame(r: &mut ClientReader) -> SubscriberFrame {
    match tokio::time::timeout(T, r.next())
        .await
        .expect("a frame in time")
        .expect("open")
    {
        ClientEvent::Text(b) => serde_json::from_slice(&b).expect("a subscriber frame"),
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// `n` events, and the recovery notices met on the way.
async fn events_and_notices(
    r: &mut ClientReader,
    n: usize,
) -> (Vec<BroadcastEvent>, Vec<RecoveryNotice>) {
    let (mut evs, mut notices) = (Vec::new(), Vec::new());
    while evs.len() < n {
        match frame(r).await {
            SubscriberFrame::Event(e) => evs.push(e),
            SubscriberFrame::Recovery(n) => notices.push(n),
            SubscriberFrame::Presence(p) => panic!("presence not asked for: {p:?}"),
        }
    }
    (evs, notices)
}

/// A plain HTTP/1.0 GET of /metrics.
#[tokio::test]
async fn subscribers_on_two_edges_get_every_message_in_order_over_one_upstream_per_edge() {
    let (c, queues) = setup(
        1..=1,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 1),
    )
    .await;
    let (a, b) = (
        start_edge(shard_of(c.addr)).await,
        start_edge(shard_of(c.addr)).await,
    );
    let mut subs = Vec::new();
    for edge in [&a, &a, &a, &b, &b] {
        subs.push(join(edge, "").await.unwrap());
    }
    publish(&queues, 1, 0..300, 10).await;
    for s in &mut subs {
        let (evs, notices) = events_and_notices(s, 300).await;
        assert_eq!(seqs(&evs), (0..300).collect::<Vec<_>>());
        assert!(notices.is_empty());
    }
    nothing_more(&mut subs[0]).await;
    let shard = http_get(c.addr, "/metrics").await.1;
    assert!(
        shard.contains("chatflow_consumer_subscribers 2"),
        "one upstream per edge: {shard}"
    );
    let edge_a = http_get(a.addr, "/metrics").await.1;
    assert!(edge_a.contains("chatflow_edge_subscribers 3"), "{edge_a}");
    assert!(edge_a.contains("chatflow_edge_upstreams 1"), "{edge_a}");
    assert!(
        edge_a.contains("chatflow_edge_deliveries_total 900"),
        "{edge_a}"
    );
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

struct RoutingFile(PathBuf);

impl RoutingFile {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "chatflow-edge-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        RoutingFile(dir.join("routing.json"))
    }

    /// Points room 1 at `addr`, replacing the file at once as a ConfigMap volume does.
    fn point_at(&self, addr: std::net::SocketAddr) {
        let table = format!(
            r#"{{"shards":[{{"start":1,"end":1,"subscribe":"ws://{addr}/subscribe/{{roomId}}"}}]}}"#
        );
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, table).unwrap();
        std::fs::rename(tmp, &self.0).unwrap();
    }
}

impl Drop for RoutingFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

#[tokio::test]
async fn a_shard_replaced_under_the_edge_loses_nothing_and_repeats_nothing() {
    let (old, queues) = setup(
        1..=1,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 1),
    )
    .await;
    let routing = RoutingFile::new();
    routing.point_at(old.addr);
    let e = start_edge(Routes::file(routing.0.clone())).await;
    let mut subs = vec![join(&e, "").await.unwrap(), join(&e, "").await.unwrap()];
    publish(&queues, 1, 0..100, 10).await;
    for s in &mut subs {
        assert_eq!(
            seqs(&events_and_notices(s, 100).await.0),
            (0..100).collect::<Vec<_>>()
        );
    }
    // A reshard: the old shard drains and goes; messages wait in the queue for its successor,
    // which holds them until a subscriber (the edge) is back; the table changes a little later.
    old.shutdown().await;
    publish(&queues, 1, 100..200, 10).await;
    let mut config = ConsumerConfig::local(1, 1);
    config.resume_hold_secs = 15;
    config.poll_wait_secs = 2;
    let new = start(config, queues.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    routing.point_at(new.addr);
    for s in &mut subs {
        let (evs, notices) = events_and_notices(s, 100).await;
        assert_eq!(
            seqs(&evs),
            (100..200).collect::<Vec<_>>(),
            "nothing lost or repeated"
        );
        // The new shard cannot vouch for what came before it: the edge says so, as a shard does.
        assert!(notices.iter().all(|n| !n.recovered), "{:?}", notices.len());
    }
    publish(&queues, 1, 200..250, 10).await;
    for s in &mut subs {
        assert_eq!(
            seqs(&events_and_notices(s, 50).await.0),
            (200..250).collect::<Vec<_>>()
        );
    }
    let m = http_get(e.addr, "/metrics").await.1;
    assert!(m.contains("chatflow_edge_upstream_connects_total 2"), "{m}");
    e.shutdown().await;
    new.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_that_resumes_on_another_edge_gets_exactly_what_it_missed() {
    let (c, queues) = setup(
        1..=1,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 1),
    )
    .await;
    let (a, b) = (
        start_edge(shard_of(c.addr)).await,
        start_edge(shard_of(c.addr)).await,
    );
    let mut s = join(&a, "").await.unwrap();
    let mut stays = join(&a, "").await.unwrap();
    publish(&queues, 1, 0..5, 10).await;
    let seen = events_and_notices(&mut s, 5).await.0;
    let last: Position = seen.last().and_then(|e| e.position).unwrap();
    drop(s);
    publish(&queues, 1, 5..10, 10).await;
    events_and_notices(&mut stays, 10).await;

    // Edge b has never relayed the room: it subscribes upstream from the client's position.
    let mut back = join(&b, &format!("?after={last}")).await.unwrap();
    let SubscriberFrame::Recovery(n) = frame(&mut back).await else {
        panic!("a recovery notice first")
    };
    assert!(n.recovered, "the shard's history covers the gap");
    assert_eq!(n.replayed, 5);
    let (evs, notices) = events_and_notices(&mut back, 5).await;
    assert_eq!(seqs(&evs), (5..10).collect::<Vec<_>>());
    assert!(notices.is_empty());
    publish(&queues, 1, 10..15, 10).await;
    assert_eq!(
        seqs(&events_and_notices(&mut back, 5).await.0),
        (10..15).collect::<Vec<_>>()
    );
    nothing_more(&mut back).await;
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_resume_from_before_an_edge_began_relaying_the_room_is_fetched_from_the_shard() {
    let (c, queues) = setup(
        1..=1,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 1),
    )
    .await;
    let (a, b) = (
        start_edge(shard_of(c.addr)).await,
        start_edge(shard_of(c.addr)).await,
    );
    let mut s = join(&a, "").await.unwrap();
    publish(&queues, 1, 0..5, 10).await;
    let last: Position = events_and_notices(&mut s, 5)
        .await
        .0
        .last()
        .and_then(|e| e.position)
        .unwrap();
    drop(s);
    // Edge b begins relaying the room only now, after the client's position.
    let mut late = join(&b, "").await.unwrap();
    publish(&queues, 1, 5..10, 10).await;
    events_and_notices(&mut late, 5).await;

    let mut back = join(&b, &format!("?after={last}")).await.unwrap();
    let SubscriberFrame::Recovery(n) = frame(&mut back).await else {
        panic!("a recovery notice first")
    };
    assert!(
        n.recovered,
        "the shard's history covers what b's relay does not"
    );
    assert_eq!((n.after, n.replayed), (last, 5));
    let (evs, notices) = events_and_notices(&mut back, 5).await;
    assert_eq!(seqs(&evs), (5..10).collect::<Vec<_>>());
    assert!(notices.is_empty());
    publish(&queues, 1, 10..13, 10).await;
    assert_eq!(
        seqs(&events_and_notices(&mut back, 3).await.0),
        (10..13).collect::<Vec<_>>()
    );
    nothing_more(&mut back).await;
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_client_position_from_the_future_does_not_silence_the_room_for_the_others() {
    let (c, queues) = setup(
        1..=1,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 1),
    )
    .await;
    let e = start_edge(shard_of(c.addr)).await;
    // The room's first subscriber on this edge names a position no message has reached.
    let _odd = join(&e, "?after=99999999999999999999999-0").await.unwrap();
    let mut other = join(&e, "").await.unwrap();
    publish(&queues, 1, 0..10, 10).await;
    let (evs, notices) = events_and_notices(&mut other, 10).await;
    assert_eq!(seqs(&evs), (0..10).collect::<Vec<_>>());
    assert!(notices.is_empty());
    e.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_stalled_local_subscriber_is_dropped_while_the_others_and_the_upstream_keep_going() {
    let (c, queues) = setup(
        1..=1,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 1),
    )
    .await;
    let config = EdgeConfig {
        edge_subscriber_buffer: 256,
        ..EdgeConfig::default()
    };
    let e = start_edge_with(config, shard_of(c.addr)).await;
    let stalled = join(&e, "").await.unwrap();
    let mut healthy = join(&e, "").await.unwrap();
    // Enough bytes to fill the stalled peer's socket buffers and then its queue.
    const N: usize = 20_000;
    let reader = tokio::spawn(async move { events_and_notices(&mut healthy, N).await });
    for start in (0..N).step_by(100) {
        publish(&queues, 1, start..start + 100, 480).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (evs, notices) = reader.await.unwrap();
    assert_eq!(seqs(&evs), (0..N).collect::<Vec<_>>());
    assert!(notices.is_empty(), "the upstream kept up: no gap");
    let m = http_get(e.addr, "/metrics").await.1;
    assert!(
        m.contains("chatflow_edge_dropped_slow_subscribers_total 1"),
        "{m}"
    );
    assert!(m.contains("chatflow_edge_subscribers 1"), "{m}");
    assert!(m.contains("chatflow_edge_upstream_connects_total 1"), "{m}");
    drop(stalled);
    e.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_room_whose_shard_cannot_be_reached_is_refused_in_bounded_time() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let e = start_edge(shard_of(addr)).await;
    let t0 = Instant::now();
    match join(&e, "").await {
        Err(ConnectError::Refused(why)) => assert!(why.contains("503"), "{why}"),
        other => panic!("expected a 503, got {:?}", other.map(|_| ())),
    }
    assert!(t0.elapsed() < Duration::from_secs(12));
    match join(&e, "").await.map(|_| ()) {
        Err(ConnectError::Refused(_)) => {}
        other => panic!("still refused while the shard is away: {other:?}"),
    }
    let not_served = connect_split(&format!("ws://{}/subscribe/7", e.addr), T).await;
    assert!(matches!(not_served, Err(ConnectError::Refused(ref why)) if why.contains("404")));
    e.shutdown().await;
}

/// Events a subscriber gets until its close, and when and how the close came.
async fn until_closed(mut r: ClientReader) -> (Vec<BroadcastEvent>, Option<u16>, Instant) {
    let mut evs = Vec::new();
    loop {
        match tokio::time::timeout(T, r.next())
            .await
            .expect("a close in time")
        {
            Ok(ClientEvent::Text(b)) => {
                if let Ok(SubscriberFrame::Event(e)) = serde_json::from_slice(&b) {
                    evs.push(e);
                }
            }
            Ok(ClientEvent::Closed(code, _)) => return (evs, code, Instant::now()),
            other => panic!("expected events then a close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stopping_edge_closes_subscribers_by_turns_and_relays_to_each_until_its_turn() {
    const N: usize = 8;
    let (c, queues) = setup(
        1..=1,
        QueueAttributes::default(),
        ConsumerConfig::local(1, 1),
    )
    .await;
    let config = EdgeConfig {
        edge_close_spread_secs: 4,
        ..EdgeConfig::default()
    };
    let e = start_edge_with(config, shard_of(c.addr)).await;
    let addr = e.addr;
    let mut watchers = Vec::new();
    for _ in 0..N {
        let mut r = join(&e, "").await.unwrap();
        publish(&queues, 1, watchers.len()..watchers.len() + 1, 10).await;
        // Each sees the room's latest message: it is in the room and relayed.
        let (evs, _) = events_and_notices(&mut r, 1).await;
        assert_eq!(seqs(&evs), [watchers.len()]);
        watchers.push(tokio::spawn(until_closed(r)));
    }
    let stopping = tokio::spawn(e.shutdown());
    tokio::time::timeout(T, async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the listener closes at the stop");
    publish(&queues, 1, 100..110, 10).await;
    let mut seen = Vec::new();
    for w in watchers {
        seen.push(w.await.unwrap());
    }
    stopping.await.unwrap();
    assert!(seen.iter().all(|(_, code, _)| *code == Some(1001)));
    let relayed = seen
        .iter()
        .filter(|(evs, _, _)| seqs(evs).ends_with(&(100..110).collect::<Vec<_>>()))
        .count();
    assert!(
        relayed >= N - 2,
        "subscribers whose turn had not come still got the room: {relayed} of {N}"
    );
    let first = seen.iter().map(|(_, _, at)| *at).min().unwrap();
    let last = seen.iter().map(|(_, _, at)| *at).max().unwrap();
    // Eight turns evenly over 4 s: the last comes 3.5 s after the first.
    assert!(
        last - first >= Duration::from_millis(2800),
        "closes came within {:?} of each other",
        last - first
    );
    c.shutdown().await;
}
