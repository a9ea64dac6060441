//! `bench flood`: other users' ack latency while one user floods, against the same workload
//! without the flood, in the same run. The producer checks tokens and limits each user's rate;
//! every sender connection is a user with its own token, and the flooder, one more user, sends
//! as fast as its window allows and is answered RATE_LIMITED beyond its rate. Latency is open
//! loop (from each message's intended send time), and every acknowledged message, the
//! flooder's included, must reach the room's subscriber.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chatflow::queue::{EmbeddedQueues, SharedQueues};
use chatflow::rooms::RoomRange;
use chatflow::ws::{ClientEvent, ClientReader, connect_reader, connect_split_with};
use chatflow_producer::ProducerConfig;
use clap::Args;

use crate::credentials::Credentials;
use crate::local::LocalSystem;
use crate::progress::Progress;
use crate::run::{self, Workload};
use crate::sender::Status;
use crate::stats::{Latency, Recorder};

/// The flooder's sender id: its user (100000) is none of the run's, whose sender ids are small.
const FLOODER_SENDER: u32 = 99_999;

/// Options of `bench flood`.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Messages per second the other users offer, open loop.
    #[arg(long, default_value_t = 2_000.0)]
    pub rate: f64,
    /// Messages the other users send per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Rooms, each with its connections and one subscriber.
    #[arg(long, default_value_t = 4)]
    pub rooms: u32,
    /// The producer's per-user rate (USER_MESSAGE_RATE, and its burst): above what each of the
    /// others' connections offers (rate / (rooms x 4)).
    #[arg(long, default_value_t = 250)]
    pub user_rate: u32,
    /// Measurements of each kind, taking turns; the verdict is the median ratio.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub rounds: u32,
}

/// What the flooder saw.
#[derive(Debug, Default)]
struct Flood {
    sent: AtomicU64,
    acked: AtomicU64,
    limited: AtomicU64,
}

impl Flood {
    /// Counts one answer to the flooder.
    fn count(&self, answer: &[u8]) {
        if contains(answer, b"\"status\":\"OK\"") {
            self.acked.fetch_add(1, Ordering::Relaxed);
        } else if contains(answer, b"RATE_LIMITED") {
            self.limited.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One measurement: the others' latency, whether their delivery was clean, and the flood.
struct Measured {
    latency: Latency,
    clean: bool,
    flood_acked: u64,
    flood_limited: u64,
    flood_delivered: u64,
}

/// The others' load: open loop at `o.rate` over every room.
fn workload(o: &Options, rooms: RoomRange) -> Workload {
    Workload {
        messages: o.messages,
        warmup_connections: 4,
        warmup_messages: 50,
        rooms,
        connections_per_room: 4,
        window: 64,
        subscribers_per_room: 1,
        max_retries: 5,
        seed: 7,
        drain_timeout: Duration::from_secs(10),
        rate: Some(o.rate),
    }
}

/// Counts the flooder's messages a subscriber of its room gets, until `stop`.
async fn count_flooders(
    mut reader: ClientReader,
    delivered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let user = Credentials::user_of(FLOODER_SENDER);
    let needle = format!("\"userId\":\"{user}\"");
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), reader.next()).await {
            Ok(Ok(ClientEvent::Text(b))) if contains(&b, needle.as_bytes()) => {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(ClientEvent::Text(_))) | Err(_) => {}
            Ok(_) => return,
        }
    }
}

async fn measure(o: &Options, flood: bool) -> anyhow::Result<Measured> {
    let rooms = RoomRange::new(1, o.rooms)?;
    let queues: SharedQueues = Arc::new(EmbeddedQueues::default());
    let secret =
        std::env::temp_dir().join(format!("chatflow-bench-flood-{}.key", std::process::id()));
    std::fs::write(&secret, uuid::Uuid::new_v4().simple().to_string().repeat(2))?;
    let credentials = Arc::new(Credentials::from_file(&secret)?);
    let mut config = ProducerConfig::local(rooms.start(), rooms.end());
    config.user_message_rate = o.user_rate;
    config.user_message_burst = o.user_rate;
    config.auth.jwt_secret_file = Some(secret);
    let system = LocalSystem::start_with(rooms, queues, false, config).await?;
    let mut targets = system.targets();
    targets.credentials = Some(credentials.clone());

    // The flooder stops first and takes its last answers; the subscriber stops once it has
    // what was acknowledged.
    let stop_flood = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Flood::default());
    let delivered = Arc::new(AtomicU64::new(0));
    let mut listening = None;
    let mut flooding = None;
    if flood {
        let sub = format!("ws://{}/subscribe/1", system.consumer.addr);
        let reader = connect_reader(&sub, Duration::from_secs(5)).await?;
        listening = Some(tokio::spawn(count_flooders(
            reader,
            delivered.clone(),
            stop.clone(),
        )));
        let url = format!("ws://{}/chat/1", system.producer.addr);
        let auth = credentials.sender_header(FLOODER_SENDER);
        flooding = Some(tokio::spawn(flooder(
            url,
            auth,
            seen.clone(),
            stop_flood.clone(),
        )));
        // The flood is under way before the others start.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let result = run::execute(&targets, &workload(o, rooms), &Progress::new(false)).await?;
    stop_flood.store(true, Ordering::Relaxed);
    if let Some(f) = flooding {
        let _ = f.await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::Relaxed) < seen.acked.load(Ordering::Relaxed)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Linger, so a duplicate would be seen too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    if let Some(l) = listening {
        let _ = l.await;
    }
    system.stop().await;
    let mut rec = Recorder::default();
    for r in result.records.iter().filter(|r| r.status == Status::Ok) {
        rec.record_us(r.latency_us);
    }
    Ok(Measured {
        latency: rec.summary(),
        clean: result.verdict.as_ref().is_some_and(|v| v.clean())
            && result.records.iter().all(|r| r.status == Status::Ok),
        flood_acked: seen.acked.load(Ordering::Relaxed),
        flood_limited: seen.limited.load(Ordering::Relaxed),
        flood_delivered: delivered.load(Ordering::Relaxed),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends as the flooder's user into room 1 with a window of 64 until `stop`, counting answers.
async fn flooder(url: String, auth: String, seen: Arc<Flood>, stop: Arc<AtomicBool>) {
    let headers = [("authorization", auth.as_str())];
    let Ok((mut reader, mut writer)) =
        connect_split_with(&url, Duration::from_secs(5), &headers).await
    else {
        return;
    };
    let user = Credentials::user_of(FLOODER_SENDER);
    let frame = serde_json::json!({
        "userId": user.to_string(), "username": "flooder1", "message": "flood",
        "timestamp": "2026-11-27T10:00:00Z", "messageType": "TEXT",
    })
    .to_string();
    let mut outstanding = 0u32;
    while !stop.load(Ordering::Relaxed) {
        while outstanding < 64 {
            if writer.text(frame.as_bytes()).await.is_err() {
                return;
            }
            outstanding += 1;
            seen.sent.fetch_add(1, Ordering::Relaxed);
        }
        if writer.flush().await.is_err() {
            return;
        }
        match reader.next().await {
            Ok(ClientEvent::Text(b)) => {
                outstanding -= 1;
                seen.count(&b);
            }
            _ => return,
        }
    }
    // Whatever is still owed an answer gets it before the count is final.
    while outstanding > 0 {
        match tokio::time::timeout(Duration::from_secs(5), reader.next()).await {
            Ok(Ok(ClientEvent::Text(b))) => {
                outstanding -= 1;
                seen.count(&b);
            }
            _ => return,
        }
    }
}

/// Runs the scenario and prints its figures and verdict.
pub async fn run(o: Options) -> anyhow::Result<()> {
    println!(
        "bench flood: {} msg/s offered by other users over {} rooms, one user flooding room 1; \
         each sender connection a user with a token, USER_MESSAGE_RATE {}",
        o.rate, o.rooms, o.user_rate
    );
    let mut ratios = Vec::new();
    let mut all_clean = true;
    for round in 1..=o.rounds {
        // Taking turns, so neither kind always runs on a warmer machine.
        let flood_first = round % 2 == 0;
        let (a, b) = if flood_first {
            let f = measure(&o, true).await?;
            (measure(&o, false).await?, f)
        } else {
            let q = measure(&o, false).await?;
            (q, measure(&o, true).await?)
        };
        let ratio = b.latency.p99 / a.latency.p99.max(0.001);
        println!(
            "  round {round}: others' p50/p99 {:.2}/{:.2} ms without the flood, {:.2}/{:.2} ms with it ({ratio:.2}x); \
             flooder acked {}, refused {} (RATE_LIMITED), delivered {}",
            a.latency.p50,
            a.latency.p99,
            b.latency.p50,
            b.latency.p99,
            b.flood_acked,
            b.flood_limited,
            b.flood_delivered
        );
        all_clean &= a.clean && b.clean && b.flood_delivered == b.flood_acked;
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!(
        "  verdict: others' p99 with the flood {median:.2}x without it (median of {} rounds; target at most 1.5x); \
         every acknowledged message delivered once, in order: {}",
        ratios.len(),
        if all_clean { "yes" } else { "NO" }
    );
    anyhow::ensure!(
        all_clean,
        "an acknowledged message was lost, duplicated or reordered"
    );
    Ok(())
}
