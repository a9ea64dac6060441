//! `bench sustained`: the whole pipeline over SQS (LocalStack, by default behind a proxy that
//! delays every response as an in-region SQS would), driven open loop at offered rates stepped
//! up until the end-to-end p99 passes a bound. It prints each step (latency from each message's
//! intended send time, so a backlog that grows shows as latency) and the highest rate held,
//! beside a plain SDK send + receive + delete loop's ceiling against the same service in the
//! same run.

use std::time::Duration;

use chatflow::rooms::RoomRange;
use chatflow_consumer::ConsumerConfig;
use chatflow_producer::ProducerConfig;
use clap::Args;

use super::counted::Requests;
use super::over_sqs::{self, Endpoint};
use super::sqs_loops;
use crate::report::Summary;
use crate::run::Workload;

/// Options of `bench sustained`.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// SQS endpoint.
    #[arg(
        long,
        env = "AWS_ENDPOINT_URL",
        default_value = "http://127.0.0.1:4566"
    )]
    pub sqs_endpoint: String,
    /// Rooms the offered rate is spread over.
    #[arg(long, default_value_t = 1)]
    pub rooms: u32,
    /// Offered rates to step through, messages per second over all rooms, in order; the steps
    /// stop at the first that is not held.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2500,5000,10000,20000"
    )]
    pub rates: Vec<f64>,
    /// Seconds of load per step.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// A step is held when every message is delivered once and in order and the end-to-end
    /// p99 is at most this, in ms.
    #[arg(long, default_value_t = 250.0)]
    pub p99_bound_ms: f64,
    /// Milliseconds the proxy in front of the SQS endpoint adds to every response (0: none).
    #[arg(long, default_value_t = 20)]
    pub proxy_delay_ms: u64,
    /// Sender connections per room.
    #[arg(long, default_value_t = 4)]
    pub connections_per_room: usize,
    /// Messages each sender may have unacknowledged; a full window delays sends, and the delay
    /// counts as latency.
    #[arg(long, default_value_t = 2048)]
    pub window: usize,
    /// Queues the rooms are laid onto (consecutive rooms sharing one queue and message group);
    /// 0 gives every room its own queue.
    #[arg(long, default_value_t = 0)]
    pub buckets: u32,
    /// How long the producer's batch waits for more messages, in microseconds (its
    /// BATCH_LINGER_US).
    #[arg(long, default_value_t = 0)]
    pub linger_us: u64,
    /// Seconds of the SDK loop baseline.
    #[arg(long, default_value_t = 5)]
    pub baseline_seconds: u64,
}

impl Options {
    /// Rooms per queue: all the rooms spread evenly over the buckets.
    fn bucket_rooms(&self) -> u32 {
        match self.buckets {
            0 => 0,
            n => self.rooms.div_ceil(n),
        }
    }

    fn layout(&self) -> String {
        match self.bucket_rooms() {
            0 | 1 => "a queue per room".to_owned(),
            k => format!("{} queues of {k} rooms", self.rooms.div_ceil(k)),
        }
    }
}

/// One step: what was offered and what came of it.
struct Step {
    offered: f64,
    summary: Summary,
    requests: Requests,
}

impl Step {
    /// Every message acknowledged and delivered once, in order.
    fn clean(&self) -> bool {
        let s = &self.summary;
        s.ok == s.sent && s.delivery.as_ref().is_some_and(|v| v.clean())
    }

    fn held(&self, bound_ms: f64) -> bool {
        self.clean() && self.summary.e2e_latency_ms.p99 <= bound_ms
    }

    fn requests_per_thousand(&self) -> f64 {
        self.requests.total() as f64 * 1000.0 / self.summary.ok.max(1) as f64
    }

    /// Sends, receives and deletes per 1,000 messages.
    fn split_per_thousand(&self) -> String {
        let per = |n: u64| n as f64 * 1000.0 / self.summary.ok.max(1) as f64;
        let r = &self.requests;
        format!(
            "{:.0}/{:.0}/{:.0}",
            per(r.send),
            per(r.receive),
            per(r.delete)
        )
    }

    fn print(&self, bound_ms: f64) {
        let (s, e) = (&self.summary, &self.summary.e2e_latency_ms);
        println!(
            "  {:>9.0} {:>9.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {:>14}  {}",
            self.offered,
            s.throughput_per_sec,
            s.schedule_lag_ms.as_ref().map_or(0.0, |l| l.p99),
            s.ack_latency_ms.p99,
            e.p50,
            e.p99,
            e.p999,
            self.requests_per_thousand(),
            self.split_per_thousand(),
            match (self.clean(), self.held(bound_ms)) {
                (true, true) => "held".to_owned(),
                (true, false) => format!("p99 over {bound_ms:.0} ms"),
                (false, _) => format!(
                    "NOT CLEAN: {} of {} acked; {}",
                    s.ok,
                    s.sent,
                    s.delivery
                        .as_ref()
                        .map_or("no delivery check".to_owned(), |v| format!(
                            "lost {}, duplicated {}, out of order {}",
                            v.lost, v.duplicated, v.out_of_order
                        ))
                ),
            }
        );
    }
}

/// One step on a fresh pipeline (new queues, producer and consumer with their defaults).
async fn step(o: &Options, endpoint: &str, rate: f64) -> anyhow::Result<Step> {
    let rooms = RoomRange::new(1, o.rooms)?;
    let w = Workload {
        messages: (rate * o.seconds as f64).round() as u64,
        rooms,
        warmup_connections: 1,
        warmup_messages: 20,
        connections_per_room: o.connections_per_room,
        window: o.window,
        rate: Some(rate),
        ..Workload::default()
    };
    let mut producer = ProducerConfig::local(rooms.start(), rooms.end());
    let mut consumer = ConsumerConfig::local(rooms.start(), rooms.end());
    producer.queue.queue_bucket_rooms = o.bucket_rooms();
    consumer.queue.queue_bucket_rooms = o.bucket_rooms();
    producer.batch_linger_us = o.linger_us;
    let run = over_sqs::pipeline(endpoint, rooms, producer, consumer, &w, false).await?;
    Ok(Step {
        offered: rate,
        summary: run.summary,
        requests: run.requests,
    })
}

/// Runs the scenario and prints its figures.
pub async fn run(o: Options) -> anyhow::Result<()> {
    let sqs = Endpoint::new(&o.sqs_endpoint, o.proxy_delay_ms).await?;
    let endpoint = sqs.url.as_str();
    println!(
        "bench sustained: {} room(s) on {}, batch linger {} us, open loop, {} s per step, held = all delivered once in order and e2e p99 <= {:.0} ms; SQS at {}",
        o.rooms,
        o.layout(),
        o.linger_us,
        o.seconds,
        o.p99_bound_ms,
        Endpoint::describe(&o.sqs_endpoint, o.proxy_delay_ms)
    );
    let rooms = RoomRange::new(1, o.rooms)?;
    let ceiling =
        sqs_loops::send_receive_delete(endpoint, rooms, Duration::from_secs(o.baseline_seconds))
            .await?;
    println!(
        "  SDK loop baseline: send + receive + delete, one queue message each: {ceiling:.0} queue messages/s"
    );
    println!(
        "  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>14}",
        "offered",
        "achieved",
        "late p99",
        "ack p99",
        "e2e p50",
        "e2e p99",
        "p99.9",
        "SQS/1k",
        "send/recv/del"
    );
    let mut best: Option<Step> = None;
    for &rate in &o.rates {
        let s = step(&o, endpoint, rate).await?;
        s.print(o.p99_bound_ms);
        if !s.held(o.p99_bound_ms) {
            break;
        }
        best = Some(s);
    }
    match best {
        Some(s) => {
            let e = &s.summary.e2e_latency_ms;
            println!(
                "  verdict: {:.0} msg/s sustained (e2e p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, {:.1} SQS requests per 1,000 messages); {}",
                s.offered,
                e.p50,
                e.p99,
                e.p999,
                s.requests_per_thousand(),
                if ceiling > 0.0 {
                    format!(
                        "{:.2}x the SDK loop's queue messages/s",
                        s.offered / ceiling
                    )
                } else {
                    "the SDK loop completed no round trip to compare with".to_owned()
                }
            );
        }
        None => println!("  verdict: not even the first rate was held"),
    }
    Ok(())
}
