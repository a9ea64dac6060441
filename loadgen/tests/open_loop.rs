//! Open-loop (`--rate`) runs: messages go out on a fixed schedule and latency counts from each
//! message's intended send time. Assertions are exact schedule times or lower bounds a slow
//! machine can only make larger, never timings that a loaded machine could miss.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use chatflow::rooms::RoomRange;
use chatflow_loadgen::local::LocalSystem;
use chatflow_loadgen::progress::Progress;
use chatflow_loadgen::report;
use chatflow_loadgen::run::{self, Workload};
use chatflow_loadgen::sender::{self, Schedule, SenderSpec, Status};
use chatflow_loadgen::workload;
use rand::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_run_is_clean_on_schedule_and_near_the_offered_rate() {
    let rate = 2_000.0;
    let w = Workload {
        messages: 2_000,
        warmup_connections: 2,
        warmup_messages: 50,
        rooms: RoomRange::new(1, 4).unwrap(),
        connections_per_room: 2,
        window: 16,
        subscribers_per_room: 1,
        drain_timeout: Duration::from_secs(10),
        rate: Some(rate),
        ..Workload::default()
    };
    let system = LocalSystem::start(w.rooms, None).await.unwrap();
    let result = run::execute(&system.targets(), &w, &Progress::new(false))
        .await
        .unwrap();
    system.stop().await;
    let s = report::summarize(&result);
    assert_eq!((s.sent, s.ok), (2_000, 2_000), "{:?}", s.errors);
    let v = s.delivery.unwrap();
    assert!(v.clean(), "{v:?}");
    assert_eq!(v.delivered, v.expected);
    assert_eq!(v.expected, 2_000 + 100);

    // Every message is recorded at its intended time: run-wide message g at start + g / rate.
    let first = result.records.iter().map(|r| r.seq).min().unwrap();
    for r in &result.records {
        let g = (r.seq - first) as f64;
        assert_eq!(
            r.sent_us,
            result.start_us + (g * 1e6 / rate).round() as u64,
            "{r:?}"
        );
    }
    // Sends never precede their intended time, so the rate cannot exceed the offered one.
    let achieved = s.throughput_per_sec;
    assert!(
        (0.5 * rate..=1.2 * rate).contains(&achieved),
        "achieved {achieved:.0} msg/s of {rate} offered"
    );
    assert_eq!(s.offered_per_sec, Some(rate));
    assert!(s.mode.starts_with("open loop at 2000 msg/s"), "{}", s.mode);
    assert!(s.schedule_lag_ms.is_some());
    assert!(report::render(&s).contains("msg/s achieved of 2000 msg/s offered"));
    assert_eq!(s.per_100ms.iter().map(|(_, n)| n).sum::<u64>(), 2_000);
    assert!(!s.ack_percentiles.is_empty() && !s.e2e_percentiles.is_empty());

    let dir = std::env::temp_dir().join(format!("chatflow-report-{}", result.run_id));
    let files = report::write_files(&dir, &result, &s).unwrap();
    let svg = std::fs::read_to_string(&files[2]).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("99.99%"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn closed_loop_stays_the_default() {
    let w = Workload::default();
    assert_eq!(w.rate, None);
    assert_eq!(w.mode(), "closed loop, window 64");
}

/// A TCP proxy that holds every byte coming back from `upstream` during `stall` until it ends.
async fn stalling_proxy(upstream: SocketAddr, stall: (Instant, Instant)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut ci, mut co) = inbound.into_split();
                let (mut ui, mut uo) = outbound.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut ci, &mut uo).await });
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match ui.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let now = Instant::now();
                    if now >= stall.0 && now < stall.1 {
                        tokio::time::sleep_until(stall.1.into()).await;
                    }
                    if co.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stall_is_charged_to_every_message_scheduled_during_it() {
    let rooms = RoomRange::new(1, 1).unwrap();
    let system = LocalSystem::start(rooms, None).await.unwrap();
    let t0 = Instant::now();
    let ms = |m: u64| Duration::from_millis(m);
    let (stall_from_us, stall_to_us) = (400_000u64, 700_000u64);
    let proxy = stalling_proxy(
        system.producer.addr,
        (
            t0 + Duration::from_micros(stall_from_us),
            t0 + Duration::from_micros(stall_to_us),
        ),
    )
    .await;
    // 500 msg/s from 200 ms: messages 100 to 249 are due during the stall.
    let schedule = Schedule {
        start_us: 200_000,
        rate: 500.0,
        senders: 1,
        index: 0,
    };
    let (n, window) = (500u64, 8u64);
    let (tx, rx) = tokio::sync::mpsc::channel(n as usize);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    for seq in 0..n {
        tx.try_send(workload::make("co", seq, 1, &mut rng)).unwrap();
    }
    drop(tx);
    let spec = SenderSpec {
        id: 0,
        url: format!("ws://{proxy}/chat/1"),
        window: window as usize,
        max_retries: 0,
        t0,
        connect_timeout: ms(5_000),
        done: Arc::new(AtomicU64::new(0)),
        schedule: Some(schedule),
        credentials: None,
    };
    let records = sender::run(spec, rx).await.unwrap();
    system.stop().await;

    assert_eq!(records.len(), n as usize);
    let mut in_stall = 0;
    for r in &records {
        assert_eq!(r.status, Status::Ok, "{r:?}");
        // In the source's order, so the sequence number is the schedule index.
        assert_eq!(r.sent_us, schedule.intended_us(r.seq), "{r:?}");
        if (stall_from_us..stall_to_us).contains(&r.sent_us) {
            in_stall += 1;
            // Nothing sent during the stall is answered before it ends.
            assert!(r.sent_us + r.latency_us >= stall_to_us, "{r:?}");
            // Past the first window's worth, the full window kept these from being sent until
            // the stall ended; measured from the actual send they would look fast.
            if r.seq >= 100 + window {
                assert!(r.lag_us >= stall_to_us - r.sent_us, "{r:?}");
            }
        }
    }
    assert_eq!(in_stall, 150);
    let mut sorted: Vec<_> = records.iter().map(|r| r.latency_us).collect();
    sorted.sort_unstable();
    // 150 of 500 messages waited out part of a 300 ms stall: p90 shows well over 100 ms.
    assert!(sorted[450] >= 100_000, "p90 {} µs", sorted[450]);
}
