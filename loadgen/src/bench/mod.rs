//! Benchmark scenarios; each prints its figures beside a baseline measured in the same run.

pub mod audience;
pub mod baseline;
pub mod counted;
pub mod cpu;
pub mod e2e;
pub mod edge;
pub mod fanout;
pub mod flood;
pub mod ingest;
pub mod memory;
pub mod over_sqs;
pub mod presence;
pub mod pump;
pub mod sqs_loops;
pub mod sustained;

use clap::Subcommand;

/// The named scenarios.
#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Producer ingest on the embedded queue, against a raw fastwebsockets echo.
    Ingest(ingest::Options),
    /// Consumer fan-out of one room to many subscribers, against a raw broadcast loop.
    Fanout(fanout::Options),
    /// One room's huge audience over edges: the last subscriber's delivery time and memory per
    /// subscriber, against a raw tokio broadcast server.
    Audience(audience::Options),
    /// One room's subscribers on one consumer, against the same spread over edges.
    Edge(edge::Options),
    /// The whole pipeline over SQS (LocalStack) per packing, against plain SDK loops.
    E2e(e2e::Options),
    /// Other users' latency while one user floods above its rate, against no flood.
    Flood(flood::Options),
    /// Open loop over SQS: the offered rate stepped up until the end-to-end p99 passes a bound,
    /// against a plain SDK loop.
    Sustained(sustained::Options),
    /// One room of 100,000 members' presence over several instances sharing a Redis: joins and
    /// leaves per second, store memory and roster latency, against raw Redis writes and reads.
    Presence(presence::Options),
    /// One worker process of `audience --processes`: its relays and its share of the audience.
    #[command(hide = true)]
    AudienceWorker(audience::WorkerOptions),
    /// Holds idle WebSocket connections open (used by the memory measurements).
    #[command(hide = true)]
    Hold(memory::HoldOptions),
}

/// Runs a scenario.
pub async fn run(scenario: Scenario) -> anyhow::Result<()> {
    match scenario {
        Scenario::Ingest(o) => ingest::run(o).await,
        Scenario::Fanout(o) => fanout::run(o).await,
        Scenario::Audience(o) => audience::run(o).await,
        Scenario::E2e(o) => e2e::run(o).await,
        Scenario::Edge(o) => edge::run(o).await,
        Scenario::Flood(o) => flood::run(o).await,
        Scenario::Sustained(o) => sustained::run(o).await,
        Scenario::Presence(o) => presence::run(o).await,
        Scenario::AudienceWorker(o) => audience::worker(o).await,
        Scenario::Hold(o) => memory::hold(o).await,
    }
}

/// Prints a figure line: name, value, unit, and its ratio to a baseline when given.
pub fn figure(name: &str, value: f64, unit: &str, baseline: Option<(&str, f64)>) {
    match baseline {
        Some((bname, b)) if b > 0.0 => {
            println!(
                "  {name:<38} {value:>12.0} {unit:<10} ({:.2}x {bname})",
                value / b
            )
        }
        _ => println!("  {name:<38} {value:>12.0} {unit}"),
    }
}
