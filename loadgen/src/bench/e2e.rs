//! `bench e2e`: the whole pipeline over SQS (LocalStack), once per packing, beside plain SDK
//! loops against the same service in the same run, with the SQS requests each run made.

use std::time::Duration;

use chatflow::envelope::Packing;
use chatflow::rooms::RoomRange;
use clap::Args;

use super::over_sqs::{self, Endpoint, PipelineRun};
use super::{figure, sqs_loops};
use chatflow_consumer::ConsumerConfig;
use chatflow_fanout::store::StoreOptions;
use chatflow_producer::ProducerConfig;

use crate::report::Summary;
use crate::run::Workload;

/// Options of `bench e2e`.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// SQS endpoint.
    #[arg(
        long,
        env = "AWS_ENDPOINT_URL",
        default_value = "http://127.0.0.1:4566"
    )]
    pub sqs_endpoint: String,
    /// Rooms, 1..=N.
    #[arg(long, default_value_t = 20)]
    pub rooms: u32,
    /// Messages through the pipeline with envelopes.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Messages through the pipeline with single packing, which is far slower.
    #[arg(long, default_value_t = 20_000)]
    pub single_messages: u64,
    /// Sender connections per room.
    #[arg(long, default_value_t = 2)]
    pub connections_per_room: usize,
    /// Messages each sender keeps unacknowledged.
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// Packings to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "single,envelope")]
    pub packing: Vec<Packing>,
    /// Seconds of each baseline loop.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Route every SQS call through a proxy that delivers responses this many ms late, as a
    /// network round trip to a remote SQS would.
    #[arg(long, default_value_t = 0)]
    pub proxy_delay_ms: u64,
    /// A Redis to run the envelope pipeline a second time with its history there (spec.history
    /// store redis), beside the same run without it, and to measure the store's memory per event.
    #[arg(long, env = "CHATFLOW_REDIS_URL")]
    pub history_store_url: Option<String>,
}

async fn pipeline(
    o: &Options,
    endpoint: &str,
    packing: Packing,
    store: Option<&StoreOptions>,
) -> anyhow::Result<PipelineRun> {
    let rooms = RoomRange::new(1, o.rooms)?;
    let mut producer = ProducerConfig::local(rooms.start(), rooms.end());
    producer.packing = packing;
    let mut consumer = ConsumerConfig::local(rooms.start(), rooms.end());
    if let Some(store) = store {
        consumer.store = store.clone();
    }
    let w = Workload {
        messages: match packing {
            Packing::Single => o.single_messages,
            Packing::Envelope => o.messages,
        },
        rooms,
        warmup_connections: 0,
        warmup_messages: 0,
        connections_per_room: o.connections_per_room,
        window: o.window,
        ..Workload::default()
    };
    over_sqs::pipeline(endpoint, rooms, producer, consumer, &w, true).await
}

fn print_run(packing: Packing, r: &PipelineRun, baselines: (f64, f64)) {
    let s = &r.summary;
    println!("  packing {packing}:");
    figure(
        "    acked and delivered",
        s.throughput_per_sec,
        "msg/s",
        Some(("send+receive+delete loop", baselines.1)),
    );
    let (a, e) = (&s.ack_latency_ms, &s.e2e_latency_ms);
    println!(
        "    ack latency   p50 {:>8.2} ms  p99 {:>8.2} ms",
        a.p50, a.p99
    );
    println!(
        "    end to end    p50 {:>8.2} ms  p99 {:>8.2} ms",
        e.p50, e.p99
    );
    if let Some(v) = &s.delivery {
        println!(
            "    delivery      lost {}, duplicated {}, out of order {} ({} deliveries)",
            v.lost, v.duplicated, v.out_of_order, v.delivered
        );
    }
    let per_k = |n: u64| n as f64 * 1000.0 / s.ok.max(1) as f64;
    let q = &r.requests;
    println!(
        "    SQS requests per 1,000 messages: {:.1} (send {:.1}, receive {:.1} of which empty {:.1}, delete {:.1})",
        per_k(q.total()),
        per_k(q.send),
        per_k(q.receive),
        per_k(q.empty_receive),
        per_k(q.delete)
    );
}

/// Runs the scenario and prints its figures.
pub async fn run(o: Options) -> anyhow::Result<()> {
    let sqs = Endpoint::new(&o.sqs_endpoint, o.proxy_delay_ms).await?;
    let endpoint = sqs.url.as_str();
    println!(
        "bench e2e: {} rooms through producer -> SQS at {} -> consumer",
        o.rooms,
        Endpoint::describe(&o.sqs_endpoint, o.proxy_delay_ms)
    );
    let rooms = RoomRange::new(1, o.rooms)?;
    let seconds = Duration::from_secs(o.seconds);
    let send_only = sqs_loops::send_only(endpoint, rooms, seconds).await?;
    let send_receive_delete = sqs_loops::send_receive_delete(endpoint, rooms, seconds).await?;
    figure("SDK loop: SendMessageBatch only", send_only, "msg/s", None);
    figure(
        "SDK loop: send + receive + delete",
        send_receive_delete,
        "msg/s",
        None,
    );
    let mut envelope = None;
    for packing in &o.packing {
        let r = pipeline(&o, endpoint, *packing, None).await?;
        print_run(*packing, &r, (send_only, send_receive_delete));
        if *packing == Packing::Envelope {
            envelope = Some(r.summary);
        }
    }
    if let Some(url) = &o.history_store_url {
        let without = match envelope {
            Some(s) => s,
            None => {
                pipeline(&o, endpoint, Packing::Envelope, None)
                    .await?
                    .summary
            }
        };
        with_store(
            &o,
            endpoint,
            url,
            &without,
            (send_only, send_receive_delete),
        )
        .await?;
    }
    Ok(())
}

/// The envelope pipeline again with its history in Redis, against `without` (the same run with
/// memory-only history), and the store's memory per 1,000 events.
async fn with_store(
    o: &Options,
    endpoint: &str,
    url: &str,
    without: &Summary,
    baselines: (f64, f64),
) -> anyhow::Result<()> {
    let store = StoreOptions {
        url: Some(url.to_owned()),
        max_len: 10_000,
        max_age_secs: 3_600,
        key_prefix: format!("bench-{}", uuid::Uuid::new_v4().simple()),
        timeout_ms: 2_000,
    };
    println!("  with the history store at {url} (spec.history store redis):");
    let r = pipeline(o, endpoint, Packing::Envelope, Some(&store)).await?;
    print_run(Packing::Envelope, &r, baselines);
    let ratio = r.summary.throughput_per_sec / without.throughput_per_sec.max(1e-9);
    println!(
        "    verdict: {ratio:.2}x the throughput of the same run without the store (p99 end to end {:.1} ms vs {:.1} ms)",
        r.summary.e2e_latency_ms.p99, without.e2e_latency_ms.p99
    );
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let (mut bytes, mut events) = (0u64, 0u64);
    for room in 1..=o.rooms {
        let key = format!("{}:{{{room}}}:history", store.key_prefix);
        let used: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await?;
        let len: u64 = redis::cmd("XLEN").arg(&key).query_async(&mut conn).await?;
        bytes += used.unwrap_or(0);
        events += len;
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .arg(format!("{}:{{{room}}}:floor", store.key_prefix))
            .query_async(&mut conn)
            .await?;
    }
    if events > 0 {
        println!(
            "    store memory: {:.0} KiB per 1,000 events ({events} events in {} rooms, {:.1} MiB)",
            bytes as f64 / events as f64 * 1000.0 / 1024.0,
            o.rooms,
            bytes as f64 / (1024.0 * 1024.0)
        );
    }
    Ok(())
}
