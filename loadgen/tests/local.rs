//! A small `local` run end to end: every acknowledged message reaches every subscriber once, in order.

use std::time::Duration;

use chatflow::rooms::RoomRange;
use chatflow_loadgen::local::LocalSystem;
use chatflow_loadgen::progress::Progress;
use chatflow_loadgen::report;
use chatflow_loadgen::run::{self, Workload};

fn small() -> Workload {
    Workload {
        messages: 5_000,
        warmup_connections: 4,
        warmup_messages: 100,
        rooms: RoomRange::new(1, 5).unwrap(),
        connections_per_room: 2,
        window: 16,
        subscribers_per_room: 2,
        drain_timeout: Duration::from_secs(10),
        ..Workload::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_local_run_delivers_everything_once_in_order() {
    let w = small();
    let system = LocalSystem::start(w.rooms, None).await.unwrap();
    let result = run::execute(&system.targets(), &w, &Progress::new(false))
        .await
        .unwrap();
    system.stop().await;
    let s = report::summarize(&result);
    assert_eq!((s.sent, s.ok), (5_000, 5_000));
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let v = s.delivery.unwrap();
    assert!(v.clean(), "{v:?}");
    assert_eq!(v.expected, (5_000 + 400) * 2);
    assert_eq!(v.delivered, v.expected);
    assert_eq!(s.message_types.values().sum::<u64>(), 5_000);
    assert_eq!(s.rooms.values().map(|r| r.ok).sum::<u64>(), 5_000);

    let dir = std::env::temp_dir().join(format!("chatflow-report-{}", result.run_id));
    let files = report::write_files(&dir, &result, &s).unwrap();
    let csv = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(
        csv.lines().count(),
        5_001,
        "header plus one row per message"
    );
    assert!(csv.lines().nth(1).unwrap().split(',').nth(3) == Some("OK"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[1]).unwrap()).unwrap();
    assert_eq!(json["ok"], 5_000);
    assert!(
        std::fs::read_to_string(&files[2])
            .unwrap()
            .starts_with("<svg")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_unreachable_ingest_url_fails_within_seconds_with_the_url() {
    let targets = run::Targets {
        ingest: "ws://127.0.0.1:9/chat/{roomId}".into(),
        subscribe: None,
        credentials: None,
    };
    let started = std::time::Instant::now();
    let err = run::execute(&targets, &small(), &Progress::new(false))
        .await
        .err()
        .expect("must fail");
    assert!(started.elapsed() < Duration::from_secs(10));
    let msg = err.to_string();
    assert!(
        msg.contains("ingest endpoint unreachable") && msg.contains("127.0.0.1:9"),
        "{msg}"
    );
}

#[tokio::test]
#[ignore = "needs LocalStack: run scripts/test"]
async fn a_local_run_through_localstack_is_clean() {
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
    let w = Workload {
        messages: 2_000,
        ..small()
    };
    let system = LocalSystem::start(w.rooms, Some(endpoint)).await.unwrap();
    let result = run::execute(&system.targets(), &w, &Progress::new(false))
        .await
        .unwrap();
    system.stop().await;
    let s = report::summarize(&result);
    assert_eq!(s.ok, 2_000, "{:?}", s.errors);
    assert!(s.delivery.unwrap().clean(), "{:?}", s.delivery);
}
