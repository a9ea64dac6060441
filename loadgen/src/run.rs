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
use crate::sender::{self, Schedule, SendRecord, SenderSpec, Status};
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
    /// Open loop: messages per second offered across the measured phase's senders, latency
    /// counted from each message's intended send time. None: closed loop.
    pub rate: Option<f64>,
}

impl Workload {
    /// How the measured phase drives load, for reports.
    pub fn mode(&self) -> String {
        match self.rate {
            Some(rate) => format!(
                "open loop at {rate:.0} msg/s offered, latency from intended send time (coordinated omission corrected)"
            ),
            None => format!("closed loop, window {}", self.window),
        }
    }
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
            rate: None,
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
                let url = sub_url(room);
                let reader =
                    subscriber::connect(&url, CONNECT_TIMEOUT)
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
                    subscriber::Resume {
                        url,
                        give_up_after: Some(workload.drain_timeout),
                    },
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
        let spec = spec(
            targets,
            workload,
            room,
            100_000 + c as u32,
            t0,
            progress,
            None,
        );
        warm_tasks.push(tokio::spawn(sender::run(spec, rx)));
    }
    let warmup = gather(warm_tasks).await?;

    // Measured phase: one generator feeding bounded per-connection channels (closed loop), or
    // one per connection (open loop).
    let per_room = workload.connections_per_room.max(1);
    let senders = (rooms.len() * per_room) as u64;
    // Open loop: the first message is due a moment from now, so connecting is not charged to it.
    let start_us = t0.elapsed().as_micros() as u64
        + if workload.rate.is_some() {
            OPEN_LOOP_LEAD.as_micros() as u64
        } else {
            0
        };
    progress.phase("main", workload.messages);
    let mut txs: HashMap<RoomId, Vec<mpsc::Sender<workload::Outgoing>>> = HashMap::new();
    let mut tasks = Vec::new();
    let mut generators = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        for k in 0..per_room {
            let id = (i * per_room + k) as u64;
            let schedule = workload.rate.map(|rate| Schedule {
                start_us,
                rate,
                senders,
                index: id,
            });
            let (tx, rx) = mpsc::channel(workload.window * 4);
            if let Some(schedule) = schedule {
                generators.push(tokio::spawn(generate_for(
                    run.clone(),
                    next_seq + 1,
                    workload.messages,
                    schedule,
                    room,
                    workload.seed ^ 0x5eed ^ id.rotate_left(32),
                    tx,
                )));
            } else {
                txs.entry(room).or_default().push(tx);
            }
            tasks.push(tokio::spawn(sender::run(
                spec(targets, workload, room, id as u32, t0, progress, schedule),
                rx,
            )));
        }
    }
    let generator = workload.rate.is_none().then(|| {
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
    });
    let records = gather(tasks).await?;
    if let Some(g) = generator {
        let _ = g.await;
    }
    for g in generators {
        let _ = g.await;
    }
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
    schedule: Option<Schedule>,
) -> SenderSpec {
    SenderSpec {
        done: progress.counter(),
        id,
        url: fill(&targets.ingest, room),
        window: workload.window,
        max_retries: workload.max_retries,
        t0,
        connect_timeout: CONNECT_TIMEOUT,
        schedule,
    }
}

const OPEN_LOOP_LEAD: Duration = Duration::from_millis(200);

/// Open loop: feeds one sender the run-wide messages g = index, index + senders, ... below
/// `messages` (sequence number `first_seq + g`), so every sender gets an equal share and a sender
/// held back by a full window never stalls the others' sources.
async fn generate_for(
    run: Arc<str>,
    first_seq: u64,
    messages: u64,
    schedule: Schedule,
    room: RoomId,
    seed: u64,
    tx: mpsc::Sender<workload::Outgoing>,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let step = schedule.senders.max(1) as usize;
    for g in (schedule.index..messages).step_by(step) {
        if tx
            .send(workload::make(&run, first_seq + g, room, &mut rng))
            .await
            .is_err()
        {
            return;
        }
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
