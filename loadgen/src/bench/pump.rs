//! A lean load client for benchmarks: many connections, each pipelining up to a window of
//! frames (optionally paced), timing each reply against its send.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatflow::ws::{ClientEvent, ClientReader, ClientWriter, connect_split};
use tokio::sync::Semaphore;

use crate::stats::Recorder;

/// What to send, where, how hard.
#[derive(Clone)]
pub struct PumpSpec {
    /// One URL per connection (cycled).
    pub urls: Vec<String>,
    /// Connections.
    pub connections: usize,
    /// Frames outstanding per connection.
    pub window: usize,
    /// How long to send.
    pub duration: Duration,
    /// Total frames per second across connections; None sends as fast as replies allow.
    pub rate: Option<f64>,
    /// Frames to send, cycled.
    pub frames: Arc<Vec<String>>,
}

/// What came back.
#[derive(Default)]
pub struct PumpResult {
    /// Replies received.
    pub replies: u64,
    /// Replies that were an OK acknowledgement.
    pub ok: u64,
    /// First send to last reply.
    pub elapsed: Duration,
    /// Send-to-reply latency.
    pub latency: Recorder,
}

impl PumpResult {
    /// Replies per second.
    pub fn rate(&self) -> f64 {
        self.replies as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What a connection's writer and reader share.
struct Shared {
    /// Messages sent and not yet answered, as places.
    window: Semaphore,
    /// When each unanswered message was sent, oldest first.
    sent: Mutex<VecDeque<Instant>>,
    /// How many the writer sent, once it stopped (until then `u64::MAX`).
    done_sending: AtomicU64,
}

/// Sends frames until `deadline`, paced at `rate` when given, never more than the window ahead.
async fn write(
    mut writer: ClientWriter,
    shared: Arc<Shared>,
    frames: Arc<Vec<String>>,
    offset: usize,
    rate: Option<f64>,
    deadline: Instant,
) -> ClientWriter {
    let mut n = 0u64;
    let mut pacer = rate.map(|r| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / r.max(0.001)));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        i
    });
    while Instant::now() < deadline {
        if let Some(p) = pacer.as_mut() {
            p.tick().await;
        }
        let Ok(permit) = shared.window.acquire().await else {
            break;
        };
        permit.forget();
        shared
            .sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Instant::now());
        let frame = &frames[(n as usize + offset) % frames.len()];
        if writer.text(frame.as_bytes()).await.is_err() {
            break;
        }
        n += 1;
        if (pacer.is_some() || shared.window.available_permits() == 0 || n.is_multiple_of(32))
            && writer.flush().await.is_err()
        {
            break;
        }
    }
    let _ = writer.flush().await;
    shared.done_sending.store(n, Ordering::SeqCst);
    writer
}

/// Takes replies until every message sent was answered (or none came for 5 s): how many, their
/// latencies, and when the last came.
async fn read(
    mut reader: ClientReader,
    shared: Arc<Shared>,
    ok: Arc<AtomicU64>,
) -> (u64, Recorder, Instant) {
    let mut latency = Recorder::default();
    let mut replies = 0u64;
    let mut last = Instant::now();
    while replies < shared.done_sending.load(Ordering::SeqCst) {
        let ev = match tokio::time::timeout(Duration::from_secs(5), reader.next()).await {
            Ok(Ok(ev)) => ev,
            _ => break,
        };
        if let ClientEvent::Text(b) = ev {
            let now = Instant::now();
            let sent = shared
                .sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            if let Some(t) = sent {
                latency.record_us(now.duration_since(t).as_micros() as u64);
            }
            if b.starts_with(br#"{"status":"OK""#) {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            replies += 1;
            last = now;
            shared.window.add_permits(1);
        }
    }
    (replies, latency, last)
}

/// Runs the load and gathers replies.
pub async fn pump(spec: PumpSpec) -> anyhow::Result<PumpResult> {
    let start = Instant::now();
    let deadline = start + spec.duration;
    let ok = Arc::new(AtomicU64::new(0));
    let per_conn_rate = spec.rate.map(|r| r / spec.connections as f64);
    let mut tasks = Vec::new();
    for c in 0..spec.connections {
        let url = &spec.urls[c % spec.urls.len()];
        let (reader, writer) = connect_split(url, Duration::from_secs(10)).await?;
        let shared = Arc::new(Shared {
            window: Semaphore::new(spec.window),
            sent: Mutex::default(),
            done_sending: AtomicU64::new(u64::MAX),
        });
        let frames = spec.frames.clone();
        let w = tokio::spawn(write(
            writer,
            shared.clone(),
            frames,
            c * 7,
            per_conn_rate,
            deadline,
        ));
        let r = tokio::spawn(read(reader, shared, ok.clone()));
        tasks.push((w, r));
    }
    let mut out = PumpResult::default();
    let mut last = start;
    for (w, r) in tasks {
        let _writer = w.await?;
        let (replies, latency, at) = r.await?;
        out.replies += replies;
        out.latency.merge(&latency);
        last = last.max(at);
    }
    out.ok = ok.load(Ordering::Relaxed);
    out.elapsed = last.duration_since(start);
    Ok(out)
}
