//! Drives a workload through an ingest and a subscribe endpoint and gathers what happened.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chatflow::rooms::{RoomId, RoomRange};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::progress::Progress;
use crate::sender::{self, SendRecord, SenderSpec, Status};
use crate::subscriber::{self, Received};
use crate::verify::{self, Acked, Verdict};
use crate::workload;

/// Where the system under test listens; `{roomId}` is replaced by the room.
#[derive(Clone)]
pub struct Targets {
    /// Ingest URL template, e.g. ws://host:8080/chat/{roomId}.
    pub ingest: String,
    /// Subscribe URL template, e.g. ws://host:8081/subscribe/{roomId}; None skips delivery checks.
    pub subscribe: Option<Arc<dyn Fn(RoomId) -> String + Send + Sync>>,
}

/// The workload's shape.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Messages in the measured phase.
    pub messages: u64,
    /// Warm-up connections.
    pub warmup_connections: usize,
    /// Messages per warm-up connection.
    pub warmup_messages: u64,
    /// Rooms messages are spread over.
    pub rooms: RoomRange,
    /// Sender connections per room in the measured phase.
    pub connections_per_room: usize,
    /// Messages a connection has outstanding.
    pub window: usize,
    /// Subscribers per room.
    pub subscribers_per_room: usize,
    /// Retries per message.
    pub max_retries: u32,
    /// RNG seed.
    pub seed: u64,
    /// How long to wait for the last deliveries after the last ack.
    pub drain_timeout: Duration,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            messages: 500_000,
            warmup_connections: 32,
            warmup_messages: 1_000,
            rooms: RoomRange::new(1, 20).expect("static range"),
            connections_per_room: 4,
            window: 64,
            subscribers_per_room: 1,
            max_retries: 5,
            seed: 42,
            drain_timeout: Duration::from_secs(15),
        }
    }
}

/// Everything measured in one run.
pub struct RunResult {
    /// The run's id (prefix of every clientMessageId).
    pub run_id: String,
    /// Workload.
    pub workload: Workload,
    /// Warm-up records.
    pub warmup: Vec<SendRecord>,
    /// Measured-phase records.
    pub records: Vec<SendRecord>,
    /// Measured-phase wall time, first send to last answer.
    pub wall: Duration,
    /// Measured-phase start, µs since t0.
    pub start_us: u64,
    /// Wall-clock time of t0, ms since the Unix epoch.
    pub t0_unix_ms: u64,
    /// Subscriber streams.
    pub streams: Vec<Received>,
    /// Delivery check.
    pub verdict: Option<Verdict>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An endpoint could not be reached.
    #[error("{what} unreachable: {source}")]
    Unreachable {
        /// Which endpoint.
        what: &'static str,
        /// Why.
        source: chatflow::ws::ConnectError,
    },
    /// A sender task failed.
    #[error("sender failed: {0}")]
    Sender(String),
}

/// Fills `{roomId}` in a URL template.
pub fn fill(template: &str, room: RoomId) -> String {
    template.replace("{roomId}", &room.to_string())
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs warm-up then the measured phase, then waits for deliveries and checks them.
pub async fn execute(
    targets: &Targets,
    workload: &Workload,
    progress: &Progress,
) -> Result<RunResult, RunError> {
    let run_id: String = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let run: Arc<str> = run_id.clone().into();
    let t0 = Instant::now();
    let t0_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let rooms = workload.rooms;

    // Fail fast, with the URL in the message, when nothing listens.
    chatflow::ws::connect(&fill(&targets.ingest, rooms.start()), CONNECT_TIMEOUT)
        .await
        .map_err(|source| RunError::Unreachable {
            what: "ingest endpoint",
            source,
        })?;

    let stop = CancellationToken::new();
    let received = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    if let Some(sub_url) = &targets.subscribe {
        for room in rooms.iter() {
            for _ in 0..workload.subscribers_per_room {
                let reader = subscriber::connect(&sub_url(room), CONNECT_TIMEOUT)
                    .await
                    .map_err(|source| RunError::Unreachable {
                        what: "subscribe endpoint",
                        source,
                    })?;
                subs.push(tokio::spawn(subscriber::listen(
                    reader,
                    room,
                    run.clone(),
                    t0,
                    received.clone(),
                    stop.clone(),
                )));
            }
        }
    }

    // Warm-up: fixed connections, each with its own room and message count.
    let mut rng = SmallRng::seed_from_u64(workload.seed);
    let mut next_seq = 0u64;
    let mut warm_plan = Vec::new();
    for c in 0..workload.warmup_connections {
        let room = rooms.start() + (c % rooms.len()) as u32;
        let msgs: Vec<_> = (0..workload.warmup_messages)
            .map(|_| {
                next_seq += 1;
                workload::make(&run, next_seq, room, &mut rng)
            })
            .collect();
        warm_plan.push((room, msgs));
    }
    progress.phase(
        "warm-up",
        workload.warmup_connections as u64 * workload.warmup_messages,
    );
    let mut warm_tasks = Vec::new();
    for (c, (room, msgs)) in warm_plan.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(msgs.len().max(1));
        for m in msgs {
            let _ = tx.try_send(m);
        }
        drop(tx);
        let spec = spec(targets, workload, room, 100_000 + c as u32, t0, progress);
        warm_tasks.push(tokio::spawn(sender::run(spec, rx)));
    }
    let warmup = gather(warm_tasks).await?;

    // Measured phase: one generator feeding bounded per-connection channels.
    let start_us = t0.elapsed().as_micros() as u64;
    progress.phase("main", workload.messages);
    let per_room = workload.connections_per_room.max(1);
    let mut txs: HashMap<RoomId, Vec<mpsc::Sender<workload::Outgoing>>> = HashMap::new();
    let mut tasks = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        for k in 0..per_room {
            let (tx, rx) = mpsc::channel(workload.window * 4);
            txs.entry(room).or_default().push(tx);
            tasks.push(tokio::spawn(sender::run(
                spec(
                    targets,
                    workload,
                    room,
                    (i * per_room + k) as u32,
                    t0,
                    progress,
                ),
                rx,
            )));
        }
    }
    let generator = {
        let run = run.clone();
        let messages = workload.messages;
        let seed = workload.seed ^ 0x5eed;
        tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut turn: HashMap<RoomId, usize> = HashMap::new();
            for i in 0..messages {
                let room = workload::draw_room(rooms, &mut rng);
                let msg = workload::make(&run, next_seq + 1 + i, room, &mut rng);
                let t = turn.entry(room).or_default();
                let senders = &txs[&room];
                *t = (*t + 1) % senders.len();
                if senders[*t].send(msg).await.is_err() {
                    return;
                }
            }
        })
    };
    let records = gather(tasks).await?;
    let _ = generator.await;
    let end_us = records
        .iter()
        .map(|r| r.sent_us + r.latency_us)
        .max()
        .unwrap_or(start_us);
    let wall = Duration::from_micros(end_us.saturating_sub(start_us));

    // Wait for the deliveries every acknowledged message owes each subscriber.
    let acked: Vec<Acked> = warmup
        .iter()
        .chain(&records)
        .filter(|r| r.status == Status::Ok)
        .map(|r| Acked {
            seq: r.seq,
            room: r.room,
            sender: r.sender,
            order: r.order,
        })
        .collect();
    let mut streams = Vec::new();
    let mut verdict = None;
    if !subs.is_empty() {
        let expected = acked.len() as u64 * workload.subscribers_per_room as u64;
        progress.phase("deliveries", expected);
        let mut last = received.load(Ordering::Relaxed);
        let mut quiet_since = Instant::now();
        loop {
            let now = received.load(Ordering::Relaxed);
            progress.set(now);
            if now >= expected {
                // Linger briefly so duplicates, if any, are seen too.
                tokio::time::sleep(Duration::from_millis(300)).await;
                break;
            }
            if now != last {
                last = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() > workload.drain_timeout {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        for s in subs {
            if let Ok(r) = s.await {
                streams.push(r);
            }
        }
        let vs: Vec<verify::Stream> = streams
            .iter()
            .map(|s| verify::Stream {
                room: s.room,
                seqs: s.seqs.clone(),
            })
            .collect();
        verdict = Some(verify::check(&acked, &vs));
    }
    progress.finish();
    Ok(RunResult {
        run_id,
        workload: workload.clone(),
        warmup,
        records,
        wall,
        start_us,
        t0_unix_ms,
        streams,
        verdict,
    })
}

fn spec(
    targets: &Targets,
    workload: &Workload,
    room: RoomId,
    id: u32,
    t0: Instant,
    progress: &Progress,
) -> SenderSpec {
    SenderSpec {
        done: progress.counter(),
        id,
        url: fill(&targets.ingest, room),
        window: workload.window,
        max_retries: workload.max_retries,
        t0,
        connect_timeout: CONNECT_TIMEOUT,
    }
}

async fn gather(
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<SendRecord>, chatflow::ws::ConnectError>>>,
) -> Result<Vec<SendRecord>, RunError> {
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(records)) => all.extend(records),
            Ok(Err(e)) => return Err(RunError::Sender(e.to_string())),
            Err(e) => return Err(RunError::Sender(e.to_string())),
        }
    }
    Ok(all)
}

/// Builds the subscribe-URL function from a template (`ws://host/subscribe/{roomId}`) or from
/// per-shard templates (`1-10=ws://a/subscribe/{roomId},11-20=ws://b/subscribe/{roomId}`).
pub fn subscribe_router(spec: &str) -> Result<Arc<dyn Fn(RoomId) -> String + Send + Sync>, String> {
    if !spec.contains('=') {
        if !spec.contains("{roomId}") {
            return Err(format!("{spec:?} must contain {{roomId}}"));
        }
        let t = spec.to_owned();
        return Ok(Arc::new(move |room| fill(&t, room)));
    }
    let mut routes: Vec<(RoomRange, String)> = Vec::new();
    for part in spec.split(',') {
        let (range, url) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not START-END=URL"))?;
        let range: RoomRange = range
            .parse()
            .map_err(|e: chatflow::rooms::RoomError| e.to_string())?;
        routes.push((range, url.to_owned()));
    }
    Ok(Arc::new(move |room| {
        routes
            .iter()
            .find(|(r, _)| r.contains(room))
            .map(|(_, t)| fill(t, room))
            .unwrap_or_else(|| format!("ws://no-shard-for-room-{room}.invalid/"))
    }))
}
