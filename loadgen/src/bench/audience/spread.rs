//! The audience spread over worker processes, for audiences beyond one process's open files.
//! This process holds the source (a raw broadcast server, or a consumer over the embedded
//! queue) and sends; each worker runs its share of the relays (raw broadcast relays, or edges)
//! with its share of the subscribers connected to them, and reports per message its last
//! delivery and how many of its subscribers got it. Times are the wall clock's, which the
//! processes of one machine share.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use chatflow::queue::{QueueAttributes, SharedQueues};
use chatflow::ws::{ClientEvent, ClientReader};
use chatflow_consumer::ConsumerConfig;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{
    AsyncSend, Clock, Measured, Options, QueueSend, RawSend, Relayed, baseline, connect,
    memory_figures, print, raise_open_files, settle, start_edge, verdict,
};
use crate::stats::Recorder;

/// What a worker's relays subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Raw relays: one upstream WebSocket each into a tokio broadcast server.
    Raw,
    /// ChatFlow edges relaying the consumer's room.
    Edge,
}

/// Options of the hidden `audience-worker` scenario.
#[derive(Debug, Clone, Args)]
pub struct WorkerOptions {
    /// Which relays to run.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// The raw source's URL, or the shard's subscribe URL template.
    #[arg(long)]
    pub upstream: String,
    /// Relays in this worker.
    #[arg(long)]
    pub relays: usize,
    /// Subscribers in this worker, spread over its relays.
    #[arg(long)]
    pub subscribers: usize,
    /// Messages the run sends.
    #[arg(long)]
    pub messages: u64,
}

/// A worker's deliveries: per message, its last delivery (wall-clock µs) and how many of the
/// worker's subscribers got it.
#[derive(Serialize, Deserialize)]
struct Report {
    last: Vec<u64>,
    count: Vec<u64>,
}

/// Forwards every frame of one upstream subscription into a local broadcast channel.
async fn relay_raw(mut reader: ClientReader, frames: broadcast::Sender<Bytes>) {
    while let Ok(ClientEvent::Text(b)) = reader.next().await {
        let _ = frames.send(b);
    }
}

/// Runs a worker: starts its relays, connects its subscribers, says `ready`, and after `done`
/// on stdin (every message sent) waits for the deliveries and prints its report.
pub async fn worker(o: WorkerOptions) -> anyhow::Result<()> {
    raise_open_files(o.subscribers)?;
    let stop = CancellationToken::new();
    let mut urls = Vec::new();
    let mut edges = Vec::new();
    for _ in 0..o.relays.max(1) {
        match o.mode {
            Mode::Raw => {
                let (tx, _) = broadcast::channel::<Bytes>(1 << 16);
                let addr = baseline::broadcast_server(stop.clone(), tx.clone()).await?;
                let upstream =
                    chatflow::ws::connect_reader(&o.upstream, Duration::from_secs(30)).await?;
                tokio::spawn(relay_raw(upstream, tx));
                urls.push(format!("ws://{addr}/raw"));
            }
            Mode::Edge => {
                let e = start_edge(&o.upstream).await?;
                urls.push(format!("ws://{}/subscribe/1", e.addr));
                edges.push(e);
            }
        }
    }
    let clock = Clock::new(o.messages);
    let counts: Arc<Vec<AtomicU64>> =
        Arc::new((0..o.messages).map(|_| AtomicU64::new(0)).collect());
    let tasks = connect(&urls, o.subscribers, &clock, &counts).await?;
    // Edges subscribe upstream at their first subscriber: let every relay settle first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut out = tokio::io::stdout();
    out.write_all(b"ready\n").await?;
    out.flush().await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let _ = stdin.next_line().await;
    settle(&clock, o.messages * o.subscribers as u64).await;
    for t in tasks {
        t.abort();
    }
    let load = |v: &[AtomicU64]| v.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let report = Report {
        last: load(&clock.last),
        count: load(&counts),
    };
    out.write_all(format!("{}\n", serde_json::to_string(&report)?).as_bytes())
        .await?;
    out.flush().await?;
    stop.cancel();
    drop(edges);
    Ok(())
}

/// A started worker and its stdout.
struct Worker {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn start(
        mode: Mode,
        upstream: &str,
        relays: usize,
        n: usize,
        messages: u64,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let mode = match mode {
            Mode::Raw => "raw",
            Mode::Edge => "edge",
        };
        let mut child = Command::new(exe)
            .args([
                "bench",
                "audience-worker",
                "--mode",
                mode,
                "--upstream",
                upstream,
            ])
            .args([
                "--relays",
                &relays.to_string(),
                "--subscribers",
                &n.to_string(),
            ])
            .args(["--messages", &messages.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting an audience worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        Ok(Worker {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn line(&mut self, what: &str, limit: Duration) -> anyhow::Result<String> {
        tokio::time::timeout(limit, self.lines.next_line())
            .await
            .with_context(|| format!("an audience worker: no {what} in {limit:?}"))??
            .with_context(|| format!("an audience worker ended before its {what}"))
    }
}

/// Sends the run's messages with the audience spread over `o.processes` workers of `mode`, and
/// merges their reports.
async fn measure_spread<F: AsyncSend>(
    o: &Options,
    mode: Mode,
    upstream: &str,
    mut send: F,
) -> anyhow::Result<Measured> {
    let relays = o.edges.div_ceil(o.processes).max(1);
    let mut workers = Vec::new();
    for i in 0..o.processes {
        // Subscribers split as evenly as they go.
        let n = o.subscribers / o.processes + usize::from(i < o.subscribers % o.processes);
        workers.push(Worker::start(mode, upstream, relays, n, o.messages).await?);
    }
    for w in &mut workers {
        let line = w.line("ready", Duration::from_secs(600)).await?;
        if line != "ready" {
            bail!("an audience worker failed to connect its subscribers: {line}");
        }
    }
    let clock = Clock::new(o.messages);
    let mut pacer = tokio::time::interval(Duration::from_secs_f64(1.0 / o.rate.max(0.001)));
    for seq in 0..o.messages {
        pacer.tick().await;
        clock.sent[seq as usize].store(clock.now_us(), Ordering::Relaxed);
        send.send(seq).await;
    }
    let first_sent = clock.sent.first().map_or(0, |s| s.load(Ordering::Relaxed));
    let (mut last, mut count) = (
        vec![0u64; o.messages as usize],
        vec![0u64; o.messages as usize],
    );
    for w in &mut workers {
        w.child
            .stdin
            .as_mut()
            .context("worker stdin")?
            .write_all(b"done\n")
            .await?;
    }
    for w in &mut workers {
        let report: Report =
            serde_json::from_str(&w.line("report", Duration::from_secs(120)).await?)
                .context("reading a worker's report")?;
        for (i, (l, c)) in report
            .last
            .iter()
            .zip(&report.count)
            .enumerate()
            .take(last.len())
        {
            last[i] = last[i].max(*l);
            count[i] += c;
        }
    }
    for mut w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w.child.wait()).await;
    }
    let mut rec = Recorder::default();
    let mut incomplete = 0;
    for ((sent, last), count) in clock.sent.iter().zip(&last).zip(&count) {
        if *count < o.subscribers as u64 {
            incomplete += 1;
            continue;
        }
        rec.record_us(last.saturating_sub(sent.load(Ordering::Relaxed)));
    }
    let end = last.iter().copied().max().unwrap_or(first_sent);
    let elapsed = (end.saturating_sub(first_sent) as f64 / 1e6).max(1e-6);
    Ok(Measured {
        last: rec,
        incomplete,
        per_sec: count.iter().sum::<u64>() as f64 / elapsed,
    })
}

/// Runs the scenario over worker processes and prints its figures.
pub async fn run(o: Options) -> anyhow::Result<()> {
    let relays = o.edges.div_ceil(o.processes).max(1) * o.processes;
    println!(
        "bench audience: 1 room, {} subscribers over {} processes, {} messages at {} msg/s; raw broadcast relays, then {relays} edges relaying a consumer",
        o.subscribers, o.processes, o.messages, o.rate
    );
    let stop = CancellationToken::new();
    let (tx, _) = broadcast::channel::<Bytes>(1 << 16);
    let source = baseline::broadcast_server(stop.clone(), tx.clone()).await?;
    let raw = measure_spread(
        &o,
        Mode::Raw,
        &format!("ws://{source}/raw"),
        RawSend(tx.clone()),
    )
    .await?;
    print(
        &format!("raw broadcast, {relays} relays (baseline)"),
        &raw,
        None,
    );
    let queues: SharedQueues = Arc::new(chatflow::queue::EmbeddedQueues::default());
    queues.ensure_queue(1, &QueueAttributes::default()).await?;
    let consumer = chatflow_consumer::start(ConsumerConfig::local(1, 1), queues.clone()).await?;
    let upstream = format!("ws://{}/subscribe/{{roomId}}", consumer.addr);
    let edges = measure_spread(&o, Mode::Edge, &upstream, QueueSend(queues.clone())).await?;
    print(&format!("consumer -> {relays} edges"), &edges, Some(&raw));
    if o.idle_subscribers > 0 {
        // Memory per subscriber, on one edge and one raw server in this process.
        let (idle_tx, _) = broadcast::channel::<Bytes>(16);
        let raw_addr = baseline::broadcast_server(stop.clone(), idle_tx).await?;
        let relayed = Relayed::start(1).await?;
        raise_open_files(o.idle_subscribers)?;
        memory_figures(
            o.idle_subscribers,
            &format!("ws://{raw_addr}/raw"),
            &relayed.urls[0],
        )
        .await?;
        relayed.stop().await;
    }
    verdict(&raw, &edges);
    consumer.shutdown().await;
    stop.cancel();
    Ok(())
}
