//! The run report: a summary on stdout, and CSV, JSON and SVG files.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chatflow::protocol::MessageType;
use serde::Serialize;

use crate::run::RunResult;
use crate::sender::{SendRecord, Status};
use crate::stats::{self, Latency, PercentilePoint, Recorder};
use crate::subscriber::Received;
use crate::verify::Verdict;

/// Per-room figures.
#[derive(Debug, Clone, Serialize)]
pub struct RoomFigures {
    /// Messages acknowledged.
    pub ok: u64,
    /// Acknowledged messages per second over the run.
    pub per_sec: f64,
}

/// Little's law beside the measured rate.
#[derive(Debug, Clone, Serialize)]
pub struct LittlesLaw {
    /// Messages the client may keep outstanding (connections x window).
    pub in_flight: f64,
    /// Messages actually outstanding on average (sum of latencies / wall time).
    pub measured_in_flight: f64,
    /// Mean ack latency, ms.
    pub mean_latency_ms: f64,
    /// in_flight / mean latency, messages per second.
    pub predicted_per_sec: f64,
    /// Measured, messages per second.
    pub measured_per_sec: f64,
}

/// The machine-readable summary (written as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Run id.
    pub run_id: String,
    /// How the measured phase drove load: closed loop with a window, or open loop at a rate.
    pub mode: String,
    /// Subscribers per room and where the first room's connected, when subscribers ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<String>,
    /// Open loop: messages per second offered. None: closed loop.
    pub offered_per_sec: Option<f64>,
    /// Open loop: how far behind their intended times first attempts went out (the window or the
    /// client holding them back), ms.
    pub schedule_lag_ms: Option<Latency>,
    /// Messages in the measured phase.
    pub sent: u64,
    /// Acknowledged.
    pub ok: u64,
    /// Errors by code.
    pub errors: BTreeMap<String, u64>,
    /// Retries spent.
    pub retries: u64,
    /// Measured phase wall time, seconds.
    pub wall_secs: f64,
    /// Acknowledged messages per second (in open loop, the achieved rate).
    pub throughput_per_sec: f64,
    /// Send (open loop: intended send) to acknowledgement.
    pub ack_latency_ms: Latency,
    /// Send (open loop: intended send) to broadcast received.
    pub e2e_latency_ms: Latency,
    /// Ack latency percentile distribution.
    pub ack_percentiles: Vec<PercentilePoint>,
    /// End-to-end latency percentile distribution.
    pub e2e_percentiles: Vec<PercentilePoint>,
    /// Per room.
    pub rooms: BTreeMap<u32, RoomFigures>,
    /// Message-type counts.
    pub message_types: BTreeMap<String, u64>,
    /// Acknowledgements per second, by second since the phase started.
    pub per_second: Vec<(f64, u64)>,
    /// Acknowledgements per 100 ms bucket (bucket start in seconds since the phase started,
    /// count; ten times the count is the rate in msg/s).
    pub per_100ms: Vec<(f64, u64)>,
    /// Little's law.
    pub littles_law: LittlesLaw,
    /// Delivery check, when subscribers ran.
    pub delivery: Option<Verdict>,
    /// Subscribers' lost connections and how they resumed.
    pub resumes: Resumes,
    /// Warm-up: messages and acknowledged.
    pub warmup_sent: u64,
    /// Warm-up acknowledged.
    pub warmup_ok: u64,
}

/// How subscribers came back after losing their connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Resumes {
    /// Connections lost and made again, over all subscribers.
    pub reconnects: u64,
    /// Resumes the server could not vouch for (its history did not reach back far enough).
    pub partial: u64,
    /// Longest time a subscriber was away, ms.
    pub longest_outage_ms: u64,
}

/// What the senders' records add up to.
#[derive(Default)]
struct Tally {
    ack: Recorder,
    lag: Recorder,
    ok: u64,
    errors: BTreeMap<String, u64>,
    rooms: BTreeMap<u32, RoomFigures>,
    types: BTreeMap<String, u64>,
    /// When each message was sent (or due), by sequence number.
    sent_at: HashMap<u64, u64>,
}

impl Tally {
    fn of(records: &[SendRecord]) -> Self {
        let mut t = Tally {
            types: MessageType::ALL
                .iter()
                .map(|t| (t.as_str().to_owned(), 0))
                .collect(),
            sent_at: HashMap::with_capacity(records.len()),
            ..Tally::default()
        };
        for rec in records {
            t.lag.record_us(rec.lag_us);
            *t.types
                .entry(rec.message_type.as_str().to_owned())
                .or_default() += 1;
            t.sent_at.insert(rec.seq, rec.sent_us);
            match rec.status {
                Status::Ok => {
                    t.ok += 1;
                    t.ack.record_us(rec.latency_us);
                    t.rooms
                        .entry(rec.room)
                        .or_insert(RoomFigures {
                            ok: 0,
                            per_sec: 0.0,
                        })
                        .ok += 1;
                }
                other => *t.errors.entry(other.code().to_owned()).or_default() += 1,
            }
        }
        t
    }

    /// End-to-end latencies: from each message's send (or due) time to its delivery.
    fn e2e(&self, streams: &[Received]) -> Recorder {
        let mut e2e = Recorder::default();
        for s in streams {
            for (seq, at) in s.seqs.iter().zip(&s.at_us) {
                if let Some(sent) = self.sent_at.get(seq) {
                    e2e.record_us(at.saturating_sub(*sent));
                }
            }
        }
        e2e
    }
}

/// How the subscribers came back after losing their connections.
fn resumes(streams: &[Received]) -> Resumes {
    Resumes {
        reconnects: streams.iter().map(|s| u64::from(s.reconnects)).sum(),
        partial: streams.iter().map(|s| u64::from(s.partial_resumes)).sum(),
        longest_outage_ms: streams
            .iter()
            .map(|s| s.longest_outage_us / 1000)
            .max()
            .unwrap_or(0),
    }
}

/// Computes the summary of a run.
pub fn summarize(r: &RunResult) -> Summary {
    let tally = Tally::of(&r.records);
    let e2e = tally.e2e(&r.streams);
    let Tally {
        ack,
        lag,
        ok,
        errors,
        mut rooms,
        types,
        ..
    } = tally;
    let wall = r.wall.as_secs_f64().max(1e-9);
    for f in rooms.values_mut() {
        f.per_sec = f.ok as f64 / wall;
    }
    let ack_summary = ack.summary();
    let in_flight =
        (r.workload.rooms.len() * r.workload.connections_per_room * r.workload.window) as f64;
    let throughput = ok as f64 / wall;
    let answered_after_start = || {
        r.records
            .iter()
            .filter(|x| x.status == Status::Ok)
            .map(|x| (x.sent_us + x.latency_us).saturating_sub(r.start_us))
    };
    Summary {
        run_id: r.run_id.clone(),
        mode: r.workload.mode(),
        subscribers: r.subscribed_at.as_ref().map(|url| {
            format!(
                "{} per room (room {} at {url})",
                r.workload.subscribers_per_room,
                r.workload.rooms.start()
            )
        }),
        offered_per_sec: r.workload.rate,
        schedule_lag_ms: r.workload.rate.map(|_| lag.summary()),
        sent: r.records.len() as u64,
        ok,
        errors,
        retries: r.records.iter().map(|x| x.retries as u64).sum(),
        wall_secs: wall,
        throughput_per_sec: throughput,
        ack_latency_ms: ack_summary,
        e2e_latency_ms: e2e.summary(),
        ack_percentiles: ack.percentile_curve(PERCENTILE_TICKS),
        e2e_percentiles: e2e.percentile_curve(PERCENTILE_TICKS),
        rooms,
        message_types: types,
        per_second: stats::buckets(answered_after_start(), 1_000_000),
        per_100ms: stats::buckets(answered_after_start(), 100_000),
        littles_law: LittlesLaw {
            in_flight,
            measured_in_flight: ack_summary.mean / 1000.0 * throughput,
            mean_latency_ms: ack_summary.mean,
            predicted_per_sec: stats::littles_law_rate(in_flight, ack_summary.mean),
            measured_per_sec: throughput,
        },
        delivery: r.verdict,
        resumes: resumes(&r.streams),
        warmup_sent: r.warmup.len() as u64,
        warmup_ok: r.warmup.iter().filter(|x| x.status == Status::Ok).count() as u64,
    }
}

/// Points per halving of the distance to 100% in the percentile distributions.
const PERCENTILE_TICKS: u32 = 5;

fn latency_line(name: &str, l: &Latency) -> String {
    format!(
        "{name:<14} mean {:>8.2}  p50 {:>8.2}  p95 {:>8.2}  p99 {:>8.2}  p99.9 {:>8.2}  min {:>7.2}  max {:>8.2}  (ms, n={})",
        l.mean, l.p50, l.p95, l.p99, l.p999, l.min, l.max, l.count
    )
}

/// The human-readable report.
pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "ChatFlow load report (run {})", s.run_id);
    render_counts(&mut o, s);
    render_latency(&mut o, s);
    render_delivery(&mut o, s);
    render_tables(&mut o, s);
    o
}

/// What was sent and how it was answered.
fn render_counts(o: &mut String, s: &Summary) {
    let _ = writeln!(
        o,
        "  warm-up        {} sent, {} OK",
        s.warmup_sent, s.warmup_ok
    );
    let _ = writeln!(o, "  sent           {}", s.sent);
    let _ = writeln!(o, "  OK             {}", s.ok);
    let errs = if s.errors.is_empty() {
        "none".to_owned()
    } else {
        s.errors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(o, "  errors         {errs}");
    let _ = writeln!(o, "  retries        {}", s.retries);
    let _ = writeln!(o, "  wall time      {:.2} s", s.wall_secs);
    let _ = writeln!(o, "  mode           {}", s.mode);
    if let Some(subscribers) = &s.subscribers {
        let _ = writeln!(o, "  subscribers    {subscribers}");
    }
}

/// Throughput, latencies and what Little's law makes of them.
fn render_latency(o: &mut String, s: &Summary) {
    match s.offered_per_sec {
        Some(offered) => {
            let _ = writeln!(
                o,
                "  throughput     {:.0} msg/s achieved of {:.0} msg/s offered ({:.1}%)",
                s.throughput_per_sec,
                offered,
                s.throughput_per_sec * 100.0 / offered
            );
        }
        None => {
            let _ = writeln!(o, "  throughput     {:.0} msg/s", s.throughput_per_sec);
        }
    }
    if let Some(l) = &s.schedule_lag_ms {
        let _ = writeln!(o, "  {}", latency_line("behind sched.", l));
    }
    let _ = writeln!(o, "  {}", latency_line("ack latency", &s.ack_latency_ms));
    let _ = writeln!(o, "  {}", latency_line("end to end", &s.e2e_latency_ms));
    let l = &s.littles_law;
    if let Some(offered) = s.offered_per_sec {
        // Open loop fixes the rate, so the law predicts what is in flight, not the throughput.
        let _ = writeln!(
            o,
            "  Little's law   {:.0} msg/s offered x {:.2} ms mean = {:.1} in flight predicted, {:.1} measured (window allows {:.0})",
            offered,
            l.mean_latency_ms,
            offered * l.mean_latency_ms / 1000.0,
            l.measured_in_flight,
            l.in_flight
        );
    } else {
        let _ = writeln!(
            o,
            "  Little's law   window {:.0} in flight / {:.2} ms mean = {:.0} msg/s predicted, {:.0} msg/s measured ({:.0} in flight on average)",
            l.in_flight,
            l.mean_latency_ms,
            l.predicted_per_sec,
            l.measured_per_sec,
            l.measured_in_flight
        );
    }
}

/// What the subscribers got, and how they came back after losing their connections.
fn render_delivery(o: &mut String, s: &Summary) {
    match &s.delivery {
        Some(v) => {
            let _ = writeln!(
                o,
                "  delivery       {} of {} expected deliveries; lost {}, duplicated {}, out of order {}, divergent subscribers {}, deliveries of unacknowledged messages {}",
                v.delivered,
                v.expected,
                v.lost,
                v.duplicated,
                v.out_of_order,
                v.divergent_subscribers,
                v.unacked_deliveries
            );
        }
        None => {
            let _ = writeln!(o, "  delivery       not checked (no subscribers)");
        }
    }
    if s.resumes.reconnects > 0 {
        let _ = writeln!(
            o,
            "  resumes        {} subscriber reconnects, longest outage {} ms, {} resumes the server could not fully cover",
            s.resumes.reconnects, s.resumes.longest_outage_ms, s.resumes.partial
        );
    }
}

/// The message mix, the rate per room and the acks per second.
fn render_tables(o: &mut String, s: &Summary) {
    let total: u64 = s.message_types.values().sum();
    let mix: Vec<String> = s
        .message_types
        .iter()
        .map(|(k, v)| format!("{k} {v} ({:.1}%)", *v as f64 * 100.0 / total.max(1) as f64))
        .collect();
    let _ = writeln!(o, "  message types  {}", mix.join(", "));
    let _ = writeln!(o, "  per room (msg/s):");
    for chunk in s.rooms.iter().collect::<Vec<_>>().chunks(5) {
        let line: Vec<String> = chunk
            .iter()
            .map(|(room, f)| format!("room {room:>3} {:>8.0}", f.per_sec))
            .collect();
        let _ = writeln!(o, "    {}", line.join("   "));
    }
    let _ = writeln!(o, "  per second (acks):");
    for chunk in s.per_second.chunks(8) {
        let line: Vec<String> = chunk
            .iter()
            .map(|(t, n)| format!("{t:>4.0}s {n:>7}"))
            .collect();
        let _ = writeln!(o, "    {}", line.join(" "));
    }
}

/// Writes `messages.csv`, `summary.json` and `chart.svg` into `dir`; returns their paths.
pub fn write_files(dir: &Path, r: &RunResult, s: &Summary) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let csv = dir.join("messages.csv");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&csv)?);
    writeln!(w, "timestamp,messageType,latencyMs,statusCode,roomId")?;
    for rec in &r.records {
        writeln!(
            w,
            "{},{},{:.3},{},{}",
            r.t0_unix_ms + rec.sent_us / 1000,
            rec.message_type.as_str(),
            rec.latency_us as f64 / 1000.0,
            rec.status.code(),
            rec.room
        )?;
    }
    w.flush()?;
    let json = dir.join("summary.json");
    std::fs::write(
        &json,
        serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?,
    )?;
    let svg = dir.join("chart.svg");
    crate::chart::draw(&svg, s).map_err(std::io::Error::other)?;
    Ok(vec![csv, json, svg])
}
