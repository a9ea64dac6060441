//! `bench edge`: one room's subscribers all on one consumer, then spread over edges that each
//! hold one upstream subscription to that consumer: deliveries per second, the shard's writes
//! per message, and p99 from the queue send to the subscriber at half the direct peak, both in
//! the same run.

use std::sync::Arc;

use chatflow::queue::{QueueAttributes, SharedQueues};
use chatflow::rooms::RoomRange;
use chatflow_consumer::ConsumerConfig;
use chatflow_fanout::edge::routes::Routes;
use chatflow_fanout::edge::{self, EdgeConfig};
use clap::Args;
use tokio::net::TcpListener;

use super::fanout::{self, Measured};
use super::figure;

/// Options of `bench edge`.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Subscribers of the room.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Edges the subscribers are spread over.
    #[arg(long, default_value_t = 4)]
    pub edges: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Subscribers whose events are timed (the rest only count).
    #[arg(long, default_value_t = 20)]
    pub timed_subscribers: usize,
}

/// One path measured: what reached the subscribers and what the shard wrote for it.
struct Path {
    measured: Measured,
    shard_writes_per_message: f64,
}

async fn measure(o: &Options, edges: usize, rate: Option<f64>) -> anyhow::Result<Path> {
    let queues: SharedQueues = Arc::new(chatflow::queue::EmbeddedQueues::default());
    queues.ensure_queue(1, &QueueAttributes::default()).await?;
    let consumer = chatflow_consumer::start(ConsumerConfig::local(1, 1), queues.clone()).await?;
    let shard = format!("ws://{}/subscribe/{{roomId}}", consumer.addr);
    let mut relays = Vec::new();
    let urls: Vec<String> = if edges == 0 {
        vec![shard.replace("{roomId}", "1")]
    } else {
        let mut urls = Vec::new();
        for _ in 0..edges {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let e = edge::start_on(
                listener,
                EdgeConfig::default(),
                Routes::Template(shard.clone()),
                RoomRange::new(1, 1)?,
            )?;
            urls.push(format!("ws://{}/subscribe/1", e.addr));
            relays.push(e);
        }
        urls
    };
    let f = fanout::Options {
        subscribers: o.subscribers,
        seconds: o.seconds,
        timed_subscribers: o.timed_subscribers,
        idle_subscribers: 0,
    };
    let measured = fanout::measure_on(&f, &urls, rate, fanout::embedded_publisher(&queues)).await?;
    let text = metrics_text(consumer.addr).await?;
    let writes = metric(&text, "chatflow_consumer_deliveries_total");
    let broadcasts = metric(&text, "chatflow_consumer_broadcasts_total");
    for e in relays {
        e.shutdown().await;
    }
    consumer.shutdown().await;
    Ok(Path {
        measured,
        shard_writes_per_message: writes / broadcasts.max(1.0),
    })
}

/// Runs the scenario and prints its figures.
pub async fn run(o: Options) -> anyhow::Result<()> {
    println!(
        "bench edge: 1 room, {} subscribers, all on the consumer vs. over {} edges, {} s per measurement",
        o.subscribers, o.edges, o.seconds
    );
    let direct = measure(&o, 0, None).await?;
    let relayed = measure(&o, o.edges, None).await?;
    figure(
        "all on the consumer (baseline), deliveries/s",
        direct.measured.per_sec,
        "deliv/s",
        None,
    );
    figure(
        &format!("over {} edges, deliveries/s", o.edges),
        relayed.measured.per_sec,
        "deliv/s",
        Some(("direct", direct.measured.per_sec)),
    );
    println!(
        "  the shard's writes per message: {:.0} direct, {:.0} through the edges",
        direct.shard_writes_per_message, relayed.shard_writes_per_message
    );
    if !direct.measured.complete || !relayed.measured.complete {
        println!("  warning: not every message reached every subscriber before the run ended");
    }
    let half_rate = direct.measured.per_sec / 2.0 / o.subscribers as f64;
    let d = measure(&o, 0, Some(half_rate))
        .await?
        .measured
        .latency
        .summary();
    let r = measure(&o, o.edges, Some(half_rate))
        .await?
        .measured
        .latency
        .summary();
    println!(
        "  at half the direct peak ({half_rate:.0} msg/s x {} subscribers):",
        o.subscribers
    );
    println!(
        "    direct        queue send -> subscriber  p50 {:>7.2} ms  p99 {:>7.2} ms",
        d.p50, d.p99
    );
    println!(
        "    through edges queue send -> subscriber  p50 {:>7.2} ms  p99 {:>7.2} ms  (p99 {:.2}x direct)",
        r.p50,
        r.p99,
        r.p99 / d.p99.max(f64::MIN_POSITIVE)
    );
    Ok(())
}

/// The consumer's /metrics, by a plain HTTP/1.0 GET.
async fn metrics_text(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// The value of an unlabelled series in a metrics text, 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_read_by_its_whole_name() {
        let text = "# HELP x\nchatflow_consumer_deliveries_total 4000\nchatflow_consumer_deliveries_total_x 1\n";
        assert_eq!(metric(text, "chatflow_consumer_deliveries_total"), 4000.0);
        assert_eq!(metric(text, "chatflow_consumer_broadcasts_total"), 0.0);
    }
}
