//! `bench e2e`: the whole pipeline over SQS (LocalStack), beside LocalStack's own batched send
//! rate measured with a direct SDK loop in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chatflow::queue::{
    BodyFormat, PublishEntry, QueueAttributes, SharedQueues, SqsConfig, SqsQueues,
};
use chatflow::rooms::{QueueNaming, RoomRange};
use clap::Args;

use super::figure;
use crate::local::LocalSystem;
use crate::progress::Progress;
use crate::run::{self, Workload};

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
    /// Messages through the pipeline.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Concurrent senders in the direct SDK loop (one per room in the pipeline run, 20).
    #[arg(long, default_value_t = 20)]
    pub concurrency: usize,
    /// Seconds of the direct SDK loop.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

async fn direct_rate(o: &Options) -> anyhow::Result<f64> {
    let prefix = format!("bd{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let config = SqsConfig {
        endpoint: Some(o.sqs_endpoint.clone()),
        ..SqsConfig::default()
    };
    let queues: SharedQueues =
        Arc::new(SqsQueues::connect(&config, QueueNaming::parse(&prefix)?).await?);
    let rooms = RoomRange::new(1, o.concurrency as u32)?;
    chatflow::queue::ensure_rooms(queues.as_ref(), rooms).await?;
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for room in rooms.iter() {
        let (queues, sent) = (queues.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let entries: Vec<PublishEntry> = (0..10)
                    .map(|i| PublishEntry {
                        body: format!("{{\"n\":{n}}}"),
                        group_id: room.to_string(),
                        dedup_id: format!("{room}-{n}-{i}"),
                        format: BodyFormat::Task,
                    })
                    .collect();
                if let Ok(res) = queues.publish(room, &entries).await {
                    sent.fetch_add(
                        res.iter().filter(|r| r.is_ok()).count() as u64,
                        Ordering::Relaxed,
                    );
                }
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let rate = sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    for room in rooms.iter() {
        let _ = queues.delete_queue(room).await;
    }
    let _ = QueueAttributes::default();
    Ok(rate)
}

/// Runs the scenario and prints its figures.
pub async fn run(o: Options) -> anyhow::Result<()> {
    println!(
        "bench e2e: {} messages through producer -> SQS at {} -> consumer",
        o.messages, o.sqs_endpoint
    );
    let baseline = direct_rate(&o).await?;
    let w = Workload {
        messages: o.messages,
        warmup_connections: 0,
        warmup_messages: 0,
        connections_per_room: 1,
        window: 64,
        ..Workload::default()
    };
    let system = LocalSystem::start(w.rooms, Some(o.sqs_endpoint.clone())).await?;
    let result = run::execute(&system.targets(), &w, &Progress::new(true)).await;
    system.stop().await;
    let s = crate::report::summarize(&result?);
    figure(
        "LocalStack direct SendMessageBatch (baseline)",
        baseline,
        "msg/s",
        None,
    );
    figure(
        "pipeline acked throughput",
        s.throughput_per_sec,
        "msg/s",
        Some(("LocalStack", baseline)),
    );
    let (a, e) = (&s.ack_latency_ms, &s.e2e_latency_ms);
    println!(
        "  ack latency   p50 {:>8.2} ms  p99 {:>8.2} ms",
        a.p50, a.p99
    );
    println!(
        "  end to end    p50 {:>8.2} ms  p99 {:>8.2} ms",
        e.p50, e.p99
    );
    if let Some(v) = s.delivery {
        println!(
            "  delivery      lost {}, duplicated {}, out of order {} ({} deliveries)",
            v.lost, v.duplicated, v.out_of_order, v.delivered
        );
    }
    Ok(())
}
