//! History in a real Redis: what a shard broadcast outlives it, a resume on any shard is
//! answered from the store, and a store that stops or restarts loses nothing.

use std::time::{Duration, Instant};

use chatflow::protocol::{BroadcastEvent, Position, RecoveryNotice};
use chatflow::queue::{QueueAttributes, SharedQueues};
use chatflow::ws::{ClientEvent, ClientReader, connect_split};
use chatflow_consumer::{ConsumerConfig, ConsumerHandle, start};
use chatflow_fanout::store::{Store, StoreOptions};

mod support;
use chatflow_testkit::RedisServer;
use support::*;

fn store_options(redis: &RedisServer) -> StoreOptions {
    StoreOptions {
        url: Some(redis.url()),
        max_len: 10_000,
        max_age_secs: 3600,
        key_prefix: format!("test-{}", uuid::Uuid::new_v4()),
        timeout_ms: 500,
    }
}

fn config(store: &StoreOptions) -> ConsumerConfig {
    let mut c = ConsumerConfig::local(1, 1);
    c.store = store.clone();
    c
}

async fn resume(c: &ConsumerHandle, after: Position) -> (RecoveryNotice, ClientReader) {
    let mut r = connect_split(&format!("ws://{}/subscribe/1?after={after}", c.addr), T)
        .await
        .unwrap()
        .0;
    match tokio::time::timeout(T, r.next()).await.unwrap().unwrap() {
        ClientEvent::Text(b) => (serde_json::from_slice(&b).expect("a recovery notice"), r),
        other => panic!("expected the recovery notice, got {other:?}"),
    }
}

fn last(evs: &[BroadcastEvent]) -> Position {
    evs.last().and_then(|e| e.position).expect("positions")
}

/// Waits until the room's queue holds nothing, visible or in flight: all broadcast and deleted.
async fn drained(queues: &SharedQueues) {
    let due = Instant::now() + T;
    loop {
        let d = queues.depth(1).await.unwrap();
        if d.visible == 0 && d.in_flight == 0 {
            return;
        }
        assert!(Instant::now() < due, "queue not drained: {d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A shard started anew on `queues`, and a subscriber resuming on it after `seen`.
async fn resume_on_a_new_shard(
    store: &StoreOptions,
    queues: &SharedQueues,
    seen: Position,
) -> (ConsumerHandle, RecoveryNotice, ClientReader) {
    let new = start(config(store), queues.clone()).await.unwrap();
    let (notice, reader) = resume(&new, seen).await;
    (new, notice, reader)
}

/// A first subscriber sees 0..5 and leaves; returns the position of the last.
async fn first_five(c: &ConsumerHandle, queues: &SharedQueues) -> Position {
    let mut s = subscribe(c, 1).await;
    publish(queues, 1, 0..5, 5).await;
    last(&events(&mut s, 5).await)
}

#[tokio::test]
#[ignore = "needs redis-server: run scripts/test"]
async fn what_a_shard_broadcast_to_nobody_is_resumed_on_a_new_shard() {
    let redis = RedisServer::start();
    let store = store_options(&redis);
    let (old, queues) = setup(1..=1, QueueAttributes::default(), config(&store)).await;
    let seen = first_five(&old, &queues).await;
    // Nobody listens: the shard broadcasts these to nobody and deletes them.
    publish(&queues, 1, 5..10, 5).await;
    drained(&queues).await;
    old.shutdown().await;

    let (new, n, mut back) = resume_on_a_new_shard(&store, &queues, seen).await;
    assert_eq!((n.recovered, n.replayed), (true, 5), "{n:?}");
    assert_eq!(seqs(&events(&mut back, 5).await), [5, 6, 7, 8, 9]);
    publish(&queues, 1, 10..12, 5).await;
    assert_eq!(seqs(&events(&mut back, 2).await), [10, 11], "then live");
    nothing_more(&mut back).await;
    new.shutdown().await;
}

#[tokio::test]
#[ignore = "needs redis-server: run scripts/test"]
async fn the_store_answers_what_the_shards_memory_let_go_of() {
    let redis = RedisServer::start();
    let store = store_options(&redis);
    let mut c = config(&store);
    c.history_size = 2;
    let (c, queues) = setup(1..=1, QueueAttributes::default(), c).await;
    let seen = first_five(&c, &queues).await;
    let mut other = subscribe(&c, 1).await;
    publish(&queues, 1, 5..15, 5).await;
    events(&mut other, 10).await;
    drained(&queues).await;

    let (n, mut back) = resume(&c, seen).await;
    assert_eq!((n.recovered, n.replayed), (true, 10), "{n:?}");
    assert_eq!(
        seqs(&events(&mut back, 10).await),
        (5..15).collect::<Vec<_>>()
    );
    publish(&queues, 1, 15..16, 5).await;
    assert_eq!(seqs(&events(&mut back, 1).await), [15]);
    nothing_more(&mut back).await;
    c.shutdown().await;
}

#[tokio::test]
#[ignore = "needs redis-server: run scripts/test"]
async fn a_trimmed_store_says_it_cannot_cover_the_gap() {
    let redis = RedisServer::start();
    let mut store = store_options(&redis);
    store.max_len = 3;
    let (old, queues) = setup(1..=1, QueueAttributes::default(), config(&store)).await;
    let seen = first_five(&old, &queues).await;
    publish(&queues, 1, 5..10, 5).await;
    drained(&queues).await;
    old.shutdown().await;

    let (new, n, mut back) = resume_on_a_new_shard(&store, &queues, seen).await;
    assert!(!n.recovered, "5 and 6 were trimmed: {n:?}");
    assert_eq!(seqs(&events(&mut back, 3).await), [7, 8, 9]);
    new.shutdown().await;
}

#[tokio::test]
#[ignore = "needs redis-server: run scripts/test"]
async fn a_store_that_is_down_pauses_the_room_and_loses_nothing() {
    let mut redis = RedisServer::start();
    let store = store_options(&redis);
    let (c, queues) = setup(1..=1, QueueAttributes::default(), config(&store)).await;
    let seen = first_five(&c, &queues).await;
    // Stored and deleted: the outage begins with nothing in hand.
    drained(&queues).await;
    let mut live = subscribe(&c, 1).await;

    redis.stop(true);
    publish(&queues, 1, 5..8, 5).await;
    // Broadcast live as received, but not deleted: the store has not taken them.
    let mut got = seqs(&events(&mut live, 1).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = queues.depth(1).await.unwrap();
    assert!(
        d.visible + d.in_flight > 0,
        "nothing may be deleted while the store is down: {d:?}"
    );

    redis.resume();
    publish(&queues, 1, 8..10, 5).await;
    while got.len() < 5 {
        got.extend(seqs(&events(&mut live, 1).await));
    }
    assert_eq!(got, [5, 6, 7, 8, 9], "in order, nothing twice");
    drained(&queues).await;
    nothing_more(&mut live).await;
    c.shutdown().await;

    let (new, n, mut back) = resume_on_a_new_shard(&store, &queues, seen).await;
    assert_eq!((n.recovered, n.replayed), (true, 5), "{n:?}");
    assert_eq!(seqs(&events(&mut back, 5).await), [5, 6, 7, 8, 9]);
    new.shutdown().await;
}

#[tokio::test]
#[ignore = "needs redis-server: run scripts/test"]
async fn a_redis_restart_under_load_loses_nothing() {
    let mut redis = RedisServer::start();
    let store = store_options(&redis);
    let (old, queues) = setup(1..=1, QueueAttributes::default(), config(&store)).await;
    let seen = first_five(&old, &queues).await;
    publish(&queues, 1, 5..10, 5).await;
    drained(&queues).await;
    // Sending goes on while Redis stops (cleanly) and starts again from its append-only file.
    let sending = tokio::spawn({
        let queues = queues.clone();
        async move {
            for i in 10..40 {
                publish(&queues, 1, i..i + 1, 5).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.stop(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.resume();
    sending.await.unwrap();
    drained(&queues).await;
    old.shutdown().await;

    let (new, n, mut back) = resume_on_a_new_shard(&store, &queues, seen).await;
    assert_eq!((n.recovered, n.replayed), (true, 35), "{n:?}");
    assert_eq!(
        seqs(&events(&mut back, 35).await),
        (5..40).collect::<Vec<_>>()
    );
    nothing_more(&mut back).await;
    new.shutdown().await;
}

#[tokio::test]
#[ignore = "needs redis-server: run scripts/test"]
async fn appends_are_idempotent_and_reads_say_what_they_cover() {
    let redis = RedisServer::start();
    let store = Store::open(&store_options(&redis)).unwrap().unwrap();
    let at = |sequence| Position { sequence, index: 0 };
    let ev = |s: u128| (at(s), bytes::Bytes::from(format!("e{s}")));
    assert_eq!(store.append(1, &[ev(10), ev(20)]).await.unwrap(), 2);
    assert_eq!(
        store.append(1, &[ev(20), ev(30)]).await.unwrap(),
        3,
        "20 once"
    );
    let s = store.since(1, at(10)).await.unwrap();
    assert!(s.covered);
    assert_eq!(s.events, [ev(20), ev(30)]);
    assert!(
        !store.since(1, at(5)).await.unwrap().covered,
        "before the stream began"
    );
    assert!(
        !store.since(2, at(5)).await.unwrap().covered,
        "a room never stored"
    );
    assert!(store.since(1, at(30)).await.unwrap().events.is_empty());
}

#[tokio::test]
#[ignore = "needs redis-server: run scripts/test"]
async fn length_and_age_caps_trim_the_oldest_and_say_what_is_gone() {
    let redis = RedisServer::start();
    let at = |sequence| Position { sequence, index: 0 };
    let ev = |s: u128| (at(s), bytes::Bytes::from(format!("e{s}")));
    let mut opts = store_options(&redis);
    opts.max_len = 3;
    let store = Store::open(&opts).unwrap().unwrap();
    let all: Vec<_> = (1..=5).map(ev).collect();
    assert_eq!(store.append(1, &all).await.unwrap(), 3);
    assert!(
        !store.since(1, at(1)).await.unwrap().covered,
        "2 was let go"
    );
    let s = store.since(1, at(2)).await.unwrap();
    assert!(
        s.covered,
        "2 was the newest let go: everything after it is held"
    );
    assert_eq!(s.events, [ev(3), ev(4), ev(5)]);

    let mut opts = store_options(&redis);
    opts.max_age_secs = 1;
    let store = Store::open(&opts).unwrap().unwrap();
    store.append(1, &[ev(10), ev(11)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    store.append(1, &[ev(12)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        store.append(1, &[ev(20)]).await.unwrap(),
        2,
        "10 and 11 aged out"
    );
    assert!(!store.since(1, at(10)).await.unwrap().covered);
    let s = store.since(1, at(11)).await.unwrap();
    assert!(s.covered);
    assert_eq!(s.events, [ev(12), ev(20)]);
    // A room quiet for longer than the age cap is forgotten whole, and says so.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    store.append(1, &[ev(30)]).await.unwrap();
    assert!(!store.since(1, at(20)).await.unwrap().covered);
}

#[tokio::test]
#[ignore = "needs redis-server: run scripts/test"]
async fn a_stream_evicted_apart_from_its_floor_vouches_for_nothing() {
    let redis = RedisServer::start();
    let at = |sequence| Position { sequence, index: 0 };
    let ev = |s: u128| (at(s), bytes::Bytes::from(format!("e{s}")));
    let mut opts = store_options(&redis);
    opts.max_len = 2;
    let store = Store::open(&opts).unwrap().unwrap();
    store.append(1, &[ev(1), ev(2), ev(3)]).await.unwrap();
    assert!(store.since(1, at(1)).await.unwrap().covered);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!("{}:{{1}}:history", opts.key_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !store.since(1, at(1)).await.unwrap().covered,
        "the floor alone"
    );
    store.append(1, &[ev(10)]).await.unwrap();
    assert!(
        !store.since(1, at(5)).await.unwrap().covered,
        "a new stream starts a history of its own"
    );
    assert!(store.since(1, at(10)).await.unwrap().covered);
}

#[tokio::test]
#[ignore = "needs redis-server: run scripts/test"]
async fn a_resume_far_behind_gets_the_newest_events_and_is_told_so() {
    let redis = RedisServer::start();
    let limit = chatflow_fanout::store::REPLAY_LIMIT as u128;
    let at = |sequence| Position { sequence, index: 0 };
    let mut opts = store_options(&redis);
    opts.max_len = 20_000;
    let store = Store::open(&opts).unwrap().unwrap();
    let all: Vec<_> = (1..=limit + 5)
        .map(|s| (at(s), bytes::Bytes::from(format!("e{s}"))))
        .collect();
    for chunk in all.chunks(1000) {
        store.append(1, chunk).await.unwrap();
    }
    let s = store.since(1, at(1)).await.unwrap();
    assert!(!s.covered, "more followed than one resume reads");
    assert_eq!(s.events.len() as u128, limit);
    assert_eq!(
        s.events.first().unwrap().0,
        at(6),
        "the newest, oldest first"
    );
    assert_eq!(s.events.last().unwrap().0, at(limit + 5));
    let s = store.since(1, at(5)).await.unwrap();
    assert!(s.covered, "exactly the limit follows");
}

#[tokio::test]
#[ignore = "needs redis-server: run scripts/test"]
async fn a_new_shard_s_history_page_reaches_back_through_the_store() {
    let redis = RedisServer::start();
    let store = store_options(&redis);
    let (old, queues) = setup(1..=1, QueueAttributes::default(), config(&store)).await;
    let first = first_five(&old, &queues).await;
    drained(&queues).await;
    old.shutdown().await;

    // The new shard's memory is empty: the page comes from the store.
    let new = start(config(&store), queues.clone()).await.unwrap();
    let (status, body) = http_get(new.addr, "/history/1?limit=3").await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let newest: Vec<BroadcastEvent> = serde_json::from_value(page["events"].clone()).unwrap();
    assert_eq!(seqs(&newest), [2, 3, 4]);
    assert_eq!(last(&newest), first);

    // Paging from a position the memory never held: the store's next ones, not its newest.
    let second = newest[0].position.unwrap();
    let (_, body) = http_get(new.addr, &format!("/history/1?after={second}&limit=1")).await;
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["recovered"], true, "{body}");
    assert_eq!(page["more"], true, "{body}");
    let next: Vec<BroadcastEvent> = serde_json::from_value(page["events"].clone()).unwrap();
    assert_eq!(seqs(&next), [3]);

    // Then live messages join the stored ones, and a page after a position says it is whole.
    let mut s = subscribe(&new, 1).await;
    publish(&queues, 1, 5..7, 5).await;
    events(&mut s, 2).await;
    let (_, body) = http_get(new.addr, &format!("/history/1?after={first}")).await;
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["recovered"], true, "{body}");
    let after: Vec<BroadcastEvent> = serde_json::from_value(page["events"].clone()).unwrap();
    assert_eq!(seqs(&after), [5, 6]);
    let (_, body) = http_get(new.addr, "/history/1?limit=4").await;
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let newest: Vec<BroadcastEvent> = serde_json::from_value(page["events"].clone()).unwrap();
    assert_eq!(
        seqs(&newest),
        [3, 4, 5, 6],
        "the store's and the memory's, once each"
    );
    new.shutdown().await;
}
