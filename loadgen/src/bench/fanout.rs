//! `bench fanout`: deliveries per second from one room to many subscribers through the consumer
//! on the embedded queue, p99 from receivedAt to the subscriber at half that rate, and memory
//! per subscriber, each beside a raw broadcast server measured in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatflow::protocol::{
    BroadcastEvent, MessageType, SubscriberFrame, TaskMessage, now_rfc3339, parse_rfc3339,
};
use chatflow::queue::{BodyFormat, PublishEntry, QueueAttributes, SharedQueues};
use chatflow::ws::ClientEvent;
use chatflow_consumer::ConsumerConfig;
use clap::Args;
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{baseline, figure, memory};
use crate::stats::Recorder;

/// Options of `bench fanout`.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Subscribers of the room.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Subscribers whose events are timed (the rest only count).
    #[arg(long, default_value_t = 20)]
    pub timed_subscribers: usize,
    /// Idle subscribers for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub idle_subscribers: usize,
}

#[derive(Deserialize)]
struct Stamp<'a> {
    #[serde(rename = "serverTimestamp", borrow)]
    server_timestamp: Option<&'a str>,
    #[serde(rename = "message", borrow)]
    message: Option<&'a str>,
}

struct Audience {
    delivered: Arc<AtomicU64>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Recorder>>,
}

/// Connects `n` subscribers, spread in turn over `urls`; the first `timed` record latency from
/// the publish time carried in each event's text.
async fn audience(urls: &[String], n: usize, timed: usize) -> anyhow::Result<Audience> {
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let url = &urls[i % urls.len()];
        let (mut reader, _w) = chatflow::ws::connect_split(url, Duration::from_secs(10)).await?;
        let (delivered, stop) = (delivered.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let _keep = _w;
            let mut rec = Recorder::default();
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return rec,
                    ev = reader.next() => ev,
                };
                match ev {
                    Ok(ClientEvent::Text(b)) => {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        if i < timed {
                            record_latency(&b, &mut rec);
                        }
                    }
                    Ok(_) | Err(_) => return rec,
                }
            }
        }));
    }
    Ok(Audience {
        delivered,
        stop,
        tasks,
    })
}

fn record_latency(event: &[u8], rec: &mut Recorder) {
    // The publisher writes its send time as the message text, so both tiers time the same span.
    let Ok(s) = serde_json::from_slice::<Stamp>(event) else {
        return;
    };
    let sent = s
        .message
        .and_then(parse_rfc3339)
        .or_else(|| s.server_timestamp.and_then(parse_rfc3339));
    if let Some(sent) = sent {
        let us = (OffsetDateTime::now_utc() - sent)
            .whole_microseconds()
            .max(0) as u64;
        rec.record_us(us);
    }
}

impl Audience {
    /// Waits for every published message to reach every subscriber, then measures the run.
    async fn settle(self, published: u64, subscribers: usize, started: Instant) -> Measured {
        let target = published * subscribers as u64;
        settle(&self.delivered, target).await;
        let got = self.delivered.load(Ordering::Relaxed);
        let per_sec = got as f64 / started.elapsed().as_secs_f64();
        Measured {
            per_sec,
            latency: self.finish().await,
            complete: got >= target,
        }
    }

    async fn finish(self) -> Recorder {
        self.stop.cancel();
        let mut all = Recorder::default();
        for t in self.tasks {
            if let Ok(r) = t.await {
                all.merge(&r);
            }
        }
        all
    }
}

fn event_bytes(seq: u64) -> Bytes {
    let t = task(seq);
    SubscriberFrame::Event(BroadcastEvent::from_task(t, now_rfc3339()))
        .to_json()
        .into()
}

/// Message `seq` of a bench run, its text the time it was made.
pub(super) fn task(seq: u64) -> TaskMessage {
    TaskMessage {
        message_id: format!("bench-{seq}"),
        room_id: 1,
        user_id: "1".into(),
        username: "user1".into(),
        message: now_rfc3339(),
        timestamp: "2026-11-27T10:00:00Z".into(),
        message_type: MessageType::Text,
        server_id: "bench".into(),
        client_ip: "127.0.0.1".into(),
        received_at: now_rfc3339(),
        client_message_id: None,
    }
}

/// Publishes messages while deliveries keep up (at most `slack` messages unheard per
/// subscriber), optionally paced to `rate` messages per second; returns the count.
async fn publish_loop<F, Fut>(
    seconds: u64,
    subscribers: usize,
    delivered: Arc<AtomicU64>,
    rate: Option<f64>,
    mut send10: F,
) -> u64
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let slack = 500u64;
    let mut published = 0u64;
    let mut pacer = rate.map(|r| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(10.0 / r.max(0.001)));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        i
    });
    while Instant::now() < deadline {
        if let Some(p) = pacer.as_mut() {
            p.tick().await;
        }
        while published * subscribers as u64
            > delivered.load(Ordering::Relaxed) + slack * subscribers as u64
        {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        send10(published).await;
        published += 10;
    }
    published
}

/// Waits until every published message reached every subscriber, or deliveries stall.
async fn settle(delivered: &AtomicU64, target: u64) {
    let mut last = 0;
    let mut quiet = Instant::now();
    while delivered.load(Ordering::Relaxed) < target {
        let now = delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet = Instant::now();
        } else if quiet.elapsed() > Duration::from_secs(3) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What reached the subscribers of one measurement.
pub(super) struct Measured {
    /// Deliveries per second.
    pub per_sec: f64,
    /// Send to subscriber, of the timed subscribers.
    pub latency: Recorder,
    /// Whether every message reached every subscriber.
    pub complete: bool,
}

/// Connects the audience to `url`, publishes through `send10` (ten messages a call) for the
/// scenario's duration, and measures what reached the subscribers.
async fn measure<F, Fut>(
    o: &Options,
    url: &str,
    rate: Option<f64>,
    send10: F,
) -> anyhow::Result<Measured>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    measure_on(o, &[url.to_owned()], rate, send10).await
}

/// [`measure`] with the audience spread over `urls`.
pub(super) async fn measure_on<F, Fut>(
    o: &Options,
    urls: &[String],
    rate: Option<f64>,
    send10: F,
) -> anyhow::Result<Measured>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let aud = audience(urls, o.subscribers, o.timed_subscribers).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let published = publish_loop(
        o.seconds,
        o.subscribers,
        aud.delivered.clone(),
        rate,
        send10,
    )
    .await;
    Ok(aud.settle(published, o.subscribers, started).await)
}

/// Publishes ten messages of room 1 a call to `queues`, each carrying its send time.
pub(super) fn embedded_publisher(
    queues: &SharedQueues,
) -> impl FnMut(u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + use<> {
    let queues = queues.clone();
    move |seq| {
        let queues = queues.clone();
        Box::pin(async move {
            let entries: Vec<PublishEntry> = (0..10)
                .map(|i| {
                    let t = task(seq + i);
                    PublishEntry {
                        dedup_id: t.message_id.clone(),
                        body: serde_json::to_string(&t).expect("tasks serialize"),
                        group_id: "1".into(),
                        format: BodyFormat::Task,
                    }
                })
                .collect();
            let _ = queues.publish(1, &entries).await;
        })
    }
}

async fn measure_raw(o: &Options, rate: Option<f64>) -> anyhow::Result<Measured> {
    let stop = CancellationToken::new();
    let (tx, _) = broadcast::channel::<Bytes>(1 << 16);
    let addr = baseline::broadcast_server(stop.clone(), tx.clone()).await?;
    let measured = measure(o, &format!("ws://{addr}/raw"), rate, |seq| {
        for i in 0..10 {
            let _ = tx.send(event_bytes(seq + i));
        }
        async {}
    })
    .await;
    stop.cancel();
    measured
}

async fn measure_consumer(o: &Options, rate: Option<f64>) -> anyhow::Result<Measured> {
    let queues: SharedQueues = Arc::new(chatflow::queue::EmbeddedQueues::default());
    queues.ensure_queue(1, &QueueAttributes::default()).await?;
    let consumer = chatflow_consumer::start(ConsumerConfig::local(1, 1), queues.clone()).await?;
    let url = format!("ws://{}/subscribe/1", consumer.addr);
    let measured = measure(o, &url, rate, embedded_publisher(&queues)).await;
    consumer.shutdown().await;
    measured
}

/// Runs the scenario and prints its figures.
pub async fn run(o: Options) -> anyhow::Result<()> {
    println!(
        "bench fanout: 1 room, {} subscribers, {} s per measurement",
        o.subscribers, o.seconds
    );
    let raw = measure_raw(&o, None).await?;
    let peak = measure_consumer(&o, None).await?;
    figure(
        "raw broadcast (baseline), deliveries/s",
        raw.per_sec,
        "deliv/s",
        None,
    );
    figure(
        "consumer, deliveries/s",
        peak.per_sec,
        "deliv/s",
        Some(("raw", raw.per_sec)),
    );
    if !peak.complete || !raw.complete {
        println!("  warning: not every message reached every subscriber before the run ended");
    }
    let half_rate = peak.per_sec / 2.0 / o.subscribers as f64;
    let raw_half = measure_raw(&o, Some(half_rate)).await?;
    let half = measure_consumer(&o, Some(half_rate)).await?;
    let (r, c) = (raw_half.latency.summary(), half.latency.summary());
    println!(
        "  at half the consumer's peak ({half_rate:.0} msg/s x {} subscribers):",
        o.subscribers
    );
    println!(
        "    raw broadcast publish -> subscriber  p50 {:>7.2} ms  p99 {:>7.2} ms",
        r.p50, r.p99
    );
    println!(
        "    consumer queue send -> subscriber    p50 {:>7.2} ms  p99 {:>7.2} ms",
        c.p50, c.p99
    );
    if o.idle_subscribers > 0 {
        let queues: SharedQueues = Arc::new(chatflow::queue::EmbeddedQueues::default());
        queues.ensure_queue(1, &QueueAttributes::default()).await?;
        let consumer = chatflow_consumer::start(ConsumerConfig::local(1, 1), queues).await?;
        let mem = memory::per_connection(
            &format!("ws://{}/subscribe/1", consumer.addr),
            o.idle_subscribers,
        )
        .await?;
        println!(
            "  memory per idle subscriber at {}: heap {:.1} KiB (exact), RSS growth {:.1} KiB",
            o.idle_subscribers,
            mem.heap / 1024.0,
            mem.rss / 1024.0
        );
        consumer.shutdown().await;
    }
    Ok(())
}
