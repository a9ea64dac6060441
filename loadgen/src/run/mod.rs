//! Drives a workload through an ingest and a subscribe endpoint and gathers what happened.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatflow::rooms::{RoomId, RoomRange};

use crate::progress::Progress;
use crate::sender::{SendRecord, Status};
use crate::subscriber::Received;
use crate::verify::{Acked, Verdict};

mod audience;
mod phases;

/// Where the system under test listens; `{roomId}` is replaced by the room.
#[derive(Clone)]
pub struct Targets {
    /// Ingest URL template, e.g. ws://host:8080/chat/{roomId}.
    pub ingest: String,
    /// Subscribe URL template, e.g. ws://host:8081/subscribe/{roomId}; None skips delivery checks.
    pub subscribe: Option<Arc<dyn Fn(RoomId) -> String + Send + Sync>>,
    /// Tokens for the users, when the servers check them.
    pub credentials: Option<Arc<crate::credentials::Credentials>>,
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
    /// Where the first room's subscribers connected (a shard, or an edge for every room).
    pub subscribed_at: Option<String>,
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

/// How long connecting a sender or a subscriber may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What every part of one run shares.
struct Run<'a> {
    /// The run's id, prefix of every clientMessageId.
    id: Arc<str>,
    /// The run's clock: every time in the records is µs since this instant.
    t0: Instant,
    targets: &'a Targets,
    workload: &'a Workload,
    progress: &'a Progress,
}

/// Runs warm-up then the measured phase, then waits for deliveries and checks them.
pub async fn execute(
    targets: &Targets,
    workload: &Workload,
    progress: &Progress,
) -> Result<RunResult, RunError> {
    let run_id: String = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let t0_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let run = Run {
        id: run_id.clone().into(),
        t0: Instant::now(),
        targets,
        workload,
        progress,
    };

    // Fail fast, with the URL in the message, when nothing listens.
    let auth = targets.credentials.as_ref().map(|c| c.sender_header(0));
    let headers = crate::credentials::headers(auth.as_deref());
    chatflow::ws::connect_with(
        &fill(&targets.ingest, workload.rooms.start()),
        CONNECT_TIMEOUT,
        &headers,
    )
    .await
    .map_err(|source| RunError::Unreachable {
        what: "ingest endpoint",
        source,
    })?;

    let audience = audience::Audience::connect(&run).await?;
    let (warmup, next_seq) = phases::warm_up(&run).await?;
    let measured = phases::measured(&run, next_seq).await?;
    let acked: Vec<Acked> = warmup
        .iter()
        .chain(&measured.records)
        .filter(|r| r.status == Status::Ok)
        .map(|r| Acked {
            seq: r.seq,
            room: r.room,
            sender: r.sender,
            order: r.order,
            first_order: r.first_order,
        })
        .collect();
    let (streams, verdict) = audience.finish(&run, &acked).await;
    progress.finish();
    Ok(RunResult {
        run_id,
        workload: workload.clone(),
        warmup,
        records: measured.records,
        wall: measured.wall,
        start_us: measured.start_us,
        t0_unix_ms,
        streams,
        verdict,
        subscribed_at: targets
            .subscribe
            .as_ref()
            .map(|url| url(workload.rooms.start())),
    })
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
