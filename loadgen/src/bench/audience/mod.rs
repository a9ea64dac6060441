//! `bench audience`: one room with a large audience spread over edges that relay it from the
//! shard, against a raw tokio broadcast server holding the same
//! audience in the same run: for each message, the time from its send to its delivery to the
//! *last* subscriber (p50 and p99 over the messages), and memory per idle subscriber on an edge
//! against the raw server's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use chatflow::protocol::{BroadcastEvent, SubscriberFrame};
use chatflow::queue::{BodyFormat, PublishEntry, QueueAttributes, SharedQueues};
use chatflow::rooms::RoomRange;
use chatflow::ws::{ClientEvent, ClientReader};
use chatflow_consumer::ConsumerConfig;
use chatflow_fanout::edge::routes::Routes;
use chatflow_fanout::edge::{self, EdgeConfig};
use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

mod spread;

pub use spread::{WorkerOptions, worker};

use super::{baseline, memory};
use crate::stats::Recorder;

/// Options of `bench audience`.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Subscribers of the room. Clients and servers share this process, so each subscriber
    /// takes two open files: 9,000 fits the usual limit of 20,000.
    #[arg(long, default_value_t = 9_000)]
    pub subscribers: usize,
    /// Edges the subscribers are spread over.
    #[arg(long, default_value_t = 8)]
    pub edges: usize,
    /// Messages sent to the room per measurement.
    #[arg(long, default_value_t = 200)]
    pub messages: u64,
    /// Messages per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Idle subscribers for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 5_000)]
    pub idle_subscribers: usize,
    /// Worker processes that hold the relays and the audience, split evenly (0: this process
    /// alone). Each holds a client and a server socket per subscriber, so an audience beyond
    /// one process's open-file limit (50,000 subscribers: 8 processes under a limit of 20,000)
    /// needs several. Both paths are spread the same way.
    #[arg(long, default_value_t = 0)]
    pub processes: usize,
}

/// Per message: when it was sent and when its last delivery came, in µs of the wall clock (read
/// once, then advanced by the monotonic clock), so processes on one machine compare times.
struct Clock {
    t0: Instant,
    origin_us: u64,
    sent: Vec<AtomicU64>,
    last: Vec<AtomicU64>,
    delivered: AtomicU64,
}

impl Clock {
    fn new(messages: u64) -> Arc<Self> {
        let slots = || (0..messages).map(|_| AtomicU64::new(0)).collect();
        let origin = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Arc::new(Clock {
            t0: Instant::now(),
            origin_us: origin.as_micros() as u64,
            sent: slots(),
            last: slots(),
            delivered: AtomicU64::new(0),
        })
    }

    fn now_us(&self) -> u64 {
        self.origin_us + self.t0.elapsed().as_micros() as u64
    }

    /// From each message's send to its last delivery, over the messages every subscriber got;
    /// and how many messages some subscriber missed.
    fn last_delivery(&self, subscribers: usize, counts: &[AtomicU64]) -> (Recorder, usize) {
        let mut rec = Recorder::default();
        let mut incomplete = 0;
        for ((sent, last), count) in self.sent.iter().zip(&self.last).zip(counts) {
            if count.load(Ordering::Relaxed) < subscribers as u64 {
                incomplete += 1;
                continue;
            }
            let (sent, last) = (sent.load(Ordering::Relaxed), last.load(Ordering::Relaxed));
            rec.record_us(last.saturating_sub(sent));
        }
        (rec, incomplete)
    }
}

/// The message's sequence number, from the id this bench gives it (`aud-N`).
fn seq_of(frame: &[u8]) -> Option<usize> {
    const KEY: &[u8] = br#""messageId":"aud-"#;
    let at = frame.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = frame[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&frame[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn event(seq: u64) -> BroadcastEvent {
    let mut task = super::fanout::task(seq);
    task.message_id = format!("aud-{seq}");
    BroadcastEvent::from_task(task, chatflow::protocol::now_rfc3339())
}

/// Reads one subscriber's events, stamping each message's last delivery.
async fn listen(mut reader: ClientReader, clock: Arc<Clock>, counts: Arc<Vec<AtomicU64>>) {
    while let Ok(ClientEvent::Text(b)) = reader.next().await {
        let Some(seq) = seq_of(&b) else { continue };
        if let (Some(last), Some(count)) = (clock.last.get(seq), counts.get(seq)) {
            last.fetch_max(clock.now_us(), Ordering::Relaxed);
            count.fetch_add(1, Ordering::Relaxed);
            clock.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Connects `n` subscribers spread over `urls`, 200 handshakes at a time.
async fn connect(
    urls: &[String],
    n: usize,
    clock: &Arc<Clock>,
    counts: &Arc<Vec<AtomicU64>>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let opened = futures::future::join_all(chunk.iter().map(|i| {
            let url = &urls[i % urls.len()];
            chatflow::ws::connect_reader(url, Duration::from_secs(30))
        }))
        .await;
        for c in opened {
            let reader = c.with_context(|| format!("subscriber {} of {n}", tasks.len() + 1))?;
            tasks.push(tokio::spawn(listen(reader, clock.clone(), counts.clone())));
        }
    }
    Ok(tasks)
}

/// One path's figures.
struct Measured {
    last: Recorder,
    incomplete: usize,
    per_sec: f64,
}

/// Sends `o.messages` at `o.rate` through `send`, with the audience connected to `urls`, and
/// waits for every delivery (or 10 s without one).
async fn measure<F>(o: &Options, urls: &[String], mut send: F) -> anyhow::Result<Measured>
where
    F: AsyncSend,
{
    let clock = Clock::new(o.messages);
    let counts: Arc<Vec<AtomicU64>> =
        Arc::new((0..o.messages).map(|_| AtomicU64::new(0)).collect());
    let tasks = connect(urls, o.subscribers, &clock, &counts).await?;
    // Edges subscribe upstream at their first subscriber: let every relay settle first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = clock.now_us();
    let mut pacer = tokio::time::interval(Duration::from_secs_f64(1.0 / o.rate.max(0.001)));
    for seq in 0..o.messages {
        pacer.tick().await;
        clock.sent[seq as usize].store(clock.now_us(), Ordering::Relaxed);
        send.send(seq).await;
    }
    settle(&clock, o.messages * o.subscribers as u64).await;
    let elapsed = (clock.now_us() - started) as f64 / 1e6;
    for t in tasks {
        t.abort();
    }
    let (last, incomplete) = clock.last_delivery(o.subscribers, &counts);
    Ok(Measured {
        last,
        incomplete,
        per_sec: clock.delivered.load(Ordering::Relaxed) as f64 / elapsed,
    })
}

/// Waits until `target` deliveries arrived, or none for 10 s.
async fn settle(clock: &Clock, target: u64) {
    let (mut seen, mut quiet) = (0, Instant::now());
    while clock.delivered.load(Ordering::Relaxed) < target
        && quiet.elapsed() < Duration::from_secs(10)
    {
        let now = clock.delivered.load(Ordering::Relaxed);
        if now != seen {
            (seen, quiet) = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends message `seq` of the run.
trait AsyncSend {
    async fn send(&mut self, seq: u64);
}

struct RawSend(broadcast::Sender<Bytes>);

impl AsyncSend for RawSend {
    async fn send(&mut self, seq: u64) {
        let _ = self
            .0
            .send(SubscriberFrame::Event(event(seq)).to_json().into());
    }
}

struct QueueSend(SharedQueues);

impl AsyncSend for QueueSend {
    async fn send(&mut self, seq: u64) {
        let mut task = super::fanout::task(seq);
        task.message_id = format!("aud-{seq}");
        let entry = PublishEntry {
            dedup_id: task.message_id.clone(),
            body: serde_json::to_string(&task).expect("tasks serialize"),
            group_id: "1".into(),
            format: BodyFormat::Task,
        };
        let _ = self.0.publish(1, &[entry]).await;
    }
}

/// An edge relaying room 1 from the shard at `upstream` (a subscribe URL template).
async fn start_edge(upstream: &str) -> anyhow::Result<chatflow::service::ServiceHandle> {
    let config = EdgeConfig {
        // The whole audience may be on one edge.
        edge_max_subscribers: 1_000_000,
        ..EdgeConfig::default()
    };
    Ok(edge::start_on(
        TcpListener::bind("127.0.0.1:0").await?,
        config,
        Routes::Template(upstream.to_owned()),
        RoomRange::new(1, 1)?,
    )?)
}

/// Edges relaying room 1 from one consumer over the embedded queue.
struct Relayed {
    queues: SharedQueues,
    consumer: chatflow::service::ServiceHandle,
    edges: Vec<chatflow::service::ServiceHandle>,
    urls: Vec<String>,
}

impl Relayed {
    async fn start(edges: usize) -> anyhow::Result<Self> {
        let queues: SharedQueues = Arc::new(chatflow::queue::EmbeddedQueues::default());
        queues.ensure_queue(1, &QueueAttributes::default()).await?;
        let consumer =
            chatflow_consumer::start(ConsumerConfig::local(1, 1), queues.clone()).await?;
        let shard = format!("ws://{}/subscribe/{{roomId}}", consumer.addr);
        let mut relays = Vec::new();
        let mut urls = Vec::new();
        for _ in 0..edges.max(1) {
            let e = start_edge(&shard).await?;
            urls.push(format!("ws://{}/subscribe/1", e.addr));
            relays.push(e);
        }
        Ok(Relayed {
            queues,
            consumer,
            edges: relays,
            urls,
        })
    }

    async fn stop(self) {
        for e in self.edges {
            e.shutdown().await;
        }
        self.consumer.shutdown().await;
    }
}

/// Open files enough for the audience: a client and a server socket per subscriber.
fn raise_open_files(subscribers: usize) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // A client and a server socket per subscriber, and a few hundred for everything else.
    let want = subscribers as u64 * 2 + 500;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= want {
        return Ok(());
    }
    // Raising the hard limit needs root (CAP_SYS_RESOURCE); the soft one, only the hard one.
    if setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)).is_err() {
        if hard < want {
            bail!(
                "{subscribers} subscribers in one process need {want} open files and the limit is {hard}: raise it (ulimit -Hn, as root) or ask for fewer subscribers (--subscribers)"
            );
        }
        setrlimit(Resource::RLIMIT_NOFILE, want, hard)?;
    }
    Ok(())
}

fn print(name: &str, m: &Measured, baseline: Option<&Measured>) {
    let l = m.last.summary();
    let ratio = baseline.map_or(String::new(), |b| {
        format!("  ({:.2}x raw p99)", l.p99 / b.last.summary().p99.max(1e-9))
    });
    println!(
        "  {name:<34} last delivery p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms  {:>9.0} deliv/s{ratio}",
        l.p50, l.p99, l.max, m.per_sec
    );
    if m.incomplete > 0 {
        println!(
            "    {} messages did not reach every subscriber",
            m.incomplete
        );
    }
}

/// Prints the heap and RSS growth per idle subscriber, on the raw server and on an edge.
async fn memory_figures(idle: usize, raw_url: &str, edge_url: &str) -> anyhow::Result<()> {
    let raw_mem = memory::per_connection(raw_url, idle).await?;
    let edge_mem = memory::per_connection(edge_url, idle).await?;
    println!(
        "  memory per idle subscriber at {idle} subscribers (heap, exact / RSS growth): raw {:.1} / {:.1} KiB, edge {:.1} / {:.1} KiB",
        raw_mem.heap / 1024.0,
        raw_mem.rss / 1024.0,
        edge_mem.heap / 1024.0,
        edge_mem.rss / 1024.0
    );
    Ok(())
}

fn verdict(raw: &Measured, edges: &Measured) {
    let ratio = edges.last.summary().p99 / raw.last.summary().p99.max(1e-9);
    println!(
        "  verdict: the last subscriber's p99 over edges {ratio:.2}x the raw broadcast's (target at most 2x); every message to every subscriber: {}",
        if edges.incomplete == 0 && raw.incomplete == 0 {
            "yes"
        } else {
            "NO"
        }
    );
}

/// Runs the scenario and prints its figures.
pub async fn run(o: Options) -> anyhow::Result<()> {
    if o.processes > 0 {
        return spread::run(o).await;
    }
    raise_open_files(o.subscribers.max(o.idle_subscribers))?;
    println!(
        "bench audience: 1 room, {} subscribers, {} messages at {} msg/s; the raw broadcast server, then {} edges relaying a consumer",
        o.subscribers, o.messages, o.rate, o.edges
    );
    let stop = CancellationToken::new();
    let (tx, _) = broadcast::channel::<Bytes>(1 << 16);
    // As many listeners as edges, sharing one channel: one address alone would run out of the
    // client's ephemeral ports before 50,000 connections.
    let mut raw_urls = Vec::new();
    for _ in 0..o.edges.max(1) {
        let addr = baseline::broadcast_server(stop.clone(), tx.clone()).await?;
        raw_urls.push(format!("ws://{addr}/raw"));
    }
    let raw = measure(&o, &raw_urls, RawSend(tx.clone())).await?;
    print("raw tokio broadcast (baseline)", &raw, None);
    // The raw server learns that its subscribers left only when a write fails, which takes a
    // write after the peer's reset: a few more frames free their sockets before the edges'
    // audience connects.
    for _ in 0..3 {
        let _ = tx.send(Bytes::from_static(b"{}"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let relayed = Relayed::start(o.edges).await?;
    let edges = measure(&o, &relayed.urls, QueueSend(relayed.queues.clone())).await?;
    print(
        &format!("consumer -> {} edges", o.edges),
        &edges,
        Some(&raw),
    );
    if o.idle_subscribers > 0 {
        memory_figures(o.idle_subscribers, &raw_urls[0], &relayed.urls[0]).await?;
    }
    verdict(&raw, &edges);
    relayed.stop().await;
    stop.cancel();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_number_is_read_from_the_message_id() {
        let frame = SubscriberFrame::Event(event(4711)).to_json();
        assert_eq!(seq_of(&frame), Some(4711));
        assert_eq!(seq_of(br#"{"messageId":"other-3"}"#), None);
    }
}
