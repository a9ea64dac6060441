//! `bench ingest`: acknowledged messages per second through the producer on the embedded
//! queue, p99 ack latency at half that rate, and memory per idle connection, each beside a raw
//! fastwebsockets echo server measured in the same run.

use std::sync::Arc;
use std::time::Duration;

use chatflow::queue::SharedQueues;
use chatflow::rooms::RoomRange;
use chatflow_producer::ProducerConfig;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::pump::{PumpSpec, pump};
use super::{baseline, figure, memory};

/// Options of `bench ingest`.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Client connections.
    #[arg(long, default_value_t = 200)]
    pub connections: usize,
    /// Messages each connection keeps outstanding.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Offered rate of the latency measurement, in msg/s (default: half the producer's peak).
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// Rounds of the latency measurement; echo and producer take turns going first, and the
    /// verdict is the median of the rounds' p99 ratios, so one noisy stretch of a shared
    /// machine does not decide it.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub rounds: u32,
    /// Idle connections for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub idle_connections: usize,
}

/// Valid chat frames without a clientMessageId, so every one is a distinct queue entry.
pub fn frames(n: usize) -> Arc<Vec<String>> {
    let texts = crate::workload::CANNED;
    Arc::new(
        (0..n)
            .map(|i| {
                let user = 1 + (i * 7919) % 100_000;
                serde_json::json!({
                    "userId": user.to_string(),
                    "username": format!("user{user}"),
                    "message": texts[i % texts.len()],
                    "timestamp": "2026-11-27T10:00:00Z",
                    "messageType": "TEXT",
                })
                .to_string()
            })
            .collect(),
    )
}

/// Empties the rooms' queues every 50 ms for the whole run, as a consumer that keeps up would.
/// Without it the queue would hold every message of the run (millions, a gigabyte), and the
/// cost of growing it, which no drained queue has, would land on the producer's latency.
async fn keep_drained(
    queues: Arc<chatflow::queue::EmbeddedQueues>,
    rooms: RoomRange,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for room in rooms.iter() {
            let _ = queues.purge(room);
        }
    }
}

/// One server's paced measurements, pooled over the rounds.
#[derive(Default)]
struct Paced {
    latency: crate::stats::Recorder,
    replies: u64,
    elapsed: Duration,
    cpu: Duration,
}

impl Paced {
    /// Runs one paced measurement, pools it, and returns its p99 in ms.
    async fn measure(&mut self, spec: PumpSpec) -> anyhow::Result<f64> {
        let (result, cpu) = super::cpu::measured(pump(spec)).await;
        let result = result?;
        self.latency.merge(&result.latency);
        self.replies += result.replies;
        self.elapsed += result.elapsed;
        self.cpu += cpu;
        Ok(result.latency.summary().p99)
    }

    /// Process CPU time per reply, in µs: the load client's share plus the server's.
    fn cpu_per_message(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.replies.max(1) as f64
    }

    fn print(&self, name: &str) {
        let l = self.latency.summary();
        println!(
            "      {name} p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  {:>7.0} msg/s achieved  {:.2} µs CPU/msg",
            l.p50,
            l.p99,
            l.p999,
            self.replies as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.cpu_per_message()
        );
    }
}

/// The two servers measured side by side: the raw echo and the producer.
struct Targets<'a> {
    o: &'a Options,
    echo: Vec<String>,
    producer: Vec<String>,
}

impl Targets<'_> {
    fn spec(&self, urls: &[String], rate: Option<f64>) -> PumpSpec {
        PumpSpec {
            urls: urls.to_vec(),
            connections: self.o.connections,
            window: self.o.window,
            duration: Duration::from_secs(self.o.seconds),
            rate,
            frames: frames(4096),
        }
    }

    /// Closed loop: the most each takes; the producer's rate, every reply OK.
    async fn peaks(&self) -> anyhow::Result<f64> {
        let echo_peak = pump(self.spec(&self.echo, None)).await?;
        let peak = pump(self.spec(&self.producer, None)).await?;
        if peak.ok != peak.replies {
            anyhow::bail!(
                "{} of {} replies were not OK",
                peak.replies - peak.ok,
                peak.replies
            );
        }
        figure(
            "raw echo (baseline), frames/s",
            echo_peak.rate(),
            "msg/s",
            None,
        );
        figure(
            "producer acked, msg/s",
            peak.rate(),
            "msg/s",
            Some(("echo", echo_peak.rate())),
        );
        Ok(peak.rate())
    }

    /// Open loop at `rate`: the p99 of each, in rounds of alternating order.
    async fn paced(&self, rate: f64) -> anyhow::Result<()> {
        let mut echo = Paced::default();
        let mut prod = Paced::default();
        let mut ratios = Vec::new();
        for round in 1..=self.o.rounds {
            // Whichever goes second meets what the first left behind (a busier allocator,
            // timers still draining), so the order alternates.
            let (e, p) = if round % 2 == 1 {
                let e = echo.measure(self.spec(&self.echo, Some(rate))).await?;
                (
                    e,
                    prod.measure(self.spec(&self.producer, Some(rate))).await?,
                )
            } else {
                let p = prod.measure(self.spec(&self.producer, Some(rate))).await?;
                (echo.measure(self.spec(&self.echo, Some(rate))).await?, p)
            };
            let ratio = p / e.max(1e-9);
            ratios.push(ratio);
            println!(
                "    round {round}: p99 raw echo {e:>7.2} ms, producer ack {p:>7.2} ms ({ratio:.2}x)"
            );
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        println!("    all rounds:");
        echo.print("raw echo     ");
        prod.print("producer ack ");
        println!(
            "    producer ack p99: median of the rounds {median:.2}x the echo's; CPU per message {:.2}x",
            prod.cpu_per_message() / echo.cpu_per_message().max(1e-9)
        );
        Ok(())
    }

    /// Heap and RSS per idle connection at `n` connections.
    async fn idle_memory(&self, n: usize) -> anyhow::Result<()> {
        let echo_mem = memory::per_connection(&self.echo[0], n).await?;
        let prod_mem = memory::per_connection(&self.producer[0], n).await?;
        println!("  memory per idle connection at {n} connections (heap, exact / RSS growth):");
        println!(
            "    raw echo      {:>8.1} KiB / {:>6.1} KiB",
            echo_mem.heap / 1024.0,
            echo_mem.rss / 1024.0
        );
        println!(
            "    producer      {:>8.1} KiB / {:>6.1} KiB",
            prod_mem.heap / 1024.0,
            prod_mem.rss / 1024.0
        );
        Ok(())
    }
}

/// Runs the scenario and prints its figures.
pub async fn run(o: Options) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let rooms = RoomRange::new(1, 20)?;
    let echo = baseline::echo_server(stop.clone()).await?;
    let embedded = Arc::new(chatflow::queue::EmbeddedQueues::default());
    let queues: SharedQueues = embedded.clone();
    chatflow::queue::ensure_rooms(queues.as_ref(), rooms).await?;
    tokio::spawn(keep_drained(embedded, rooms, stop.clone()));
    let producer = chatflow_producer::start(ProducerConfig::local(1, 20), queues).await?;
    let targets = Targets {
        o: &o,
        echo: vec![format!("ws://{echo}/echo")],
        producer: rooms
            .iter()
            .map(|r| format!("ws://{}/chat/{r}", producer.addr))
            .collect(),
    };
    println!(
        "bench ingest: {} connections x window {}, {} s per measurement",
        o.connections, o.window, o.seconds
    );
    let peak = targets.peaks().await?;
    let rate = o.latency_rate.unwrap_or(peak / 2.0);
    match o.latency_rate {
        Some(_) => println!(
            "  at the rate asked for ({rate:.0} msg/s offered), {} rounds:",
            o.rounds
        ),
        None => println!(
            "  at half the producer's peak ({rate:.0} msg/s offered), {} rounds:",
            o.rounds
        ),
    }
    targets.paced(rate).await?;
    if o.idle_connections > 0 {
        targets.idle_memory(o.idle_connections).await?;
    }
    producer.shutdown().await;
    stop.cancel();
    Ok(())
}
