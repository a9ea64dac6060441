//! Command-line interface.

use std::path::PathBuf;
use std::time::Duration;

use chatflow::rooms::RoomRange;
use clap::{Args, Parser, Subcommand};

use crate::run::Workload;

/// ChatFlow load generator and performance analyzer.
#[derive(Debug, Parser)]
#[command(name = "chatflow-loadgen", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Modes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start producer and consumer in this process and run the workload through them.
    Local {
        /// Workload.
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Go through SQS at this endpoint (LocalStack or AWS) instead of embedded queues.
        #[arg(long)]
        sqs_endpoint: Option<String>,
        /// Report files go here.
        #[arg(long, default_value = "loadgen-report")]
        out: PathBuf,
    },
    /// Run the workload against a deployed system.
    Run {
        /// Ingest URL template, e.g. ws://producer:8080/chat/{roomId}.
        #[arg(long)]
        ingest_url: String,
        /// Subscribe URL template, e.g. ws://consumer-{shard}:8081/subscribe/{roomId}; several
        /// (one per shard) as `START-END=URL` pairs separated by commas.
        #[arg(long)]
        subscribe_url: Option<String>,
        /// File with the HS256 secret the servers check tokens with: each sender connection
        /// then speaks as one user with a token of its own, and subscribers read with one.
        #[arg(long, env = "LOADGEN_JWT_SECRET_FILE")]
        jwt_secret_file: Option<PathBuf>,
        /// Workload.
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Report files go here.
        #[arg(long, default_value = "loadgen-report")]
        out: PathBuf,
    },
    /// The shipped Grafana dashboard and alert rules against a live Prometheus.
    Dashboard {
        /// Action.
        #[command(subcommand)]
        action: crate::monitoring::Action,
    },
    /// Check that a room's history outlives its shard: a burst sent with nobody subscribed is
    /// all there for a subscriber that resumes later.
    LateResume(crate::late_resume::Options),
    /// Named benchmark scenarios, each with its baseline measured in the same run.
    Bench {
        /// Scenario.
        #[command(subcommand)]
        scenario: crate::bench::Scenario,
    },
}

/// Workload flags.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Messages in the measured phase.
    #[arg(long, default_value_t = 500_000)]
    pub messages: u64,
    /// Warm-up connections.
    #[arg(long, default_value_t = 32)]
    pub warmup_connections: usize,
    /// Messages per warm-up connection.
    #[arg(long, default_value_t = 1_000)]
    pub warmup_messages: u64,
    /// Rooms, as START-END.
    #[arg(long, default_value = "1-20", value_parser = parse_rooms)]
    pub rooms: RoomRange,
    /// Sender connections per room.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub connections_per_room: u64,
    /// Messages each connection keeps outstanding.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub window: u64,
    /// Subscribers per room (0: no delivery check).
    #[arg(long, default_value_t = 1)]
    pub subscribers_per_room: usize,
    /// Retries per message on QUEUE_ERROR or a lost connection.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Seconds without a delivery before the run stops waiting for the rest.
    #[arg(long, default_value_t = 15)]
    pub drain_timeout_secs: u64,
    /// Open loop: offer this many messages per second in total across the measured phase's
    /// connections, measuring latency from each message's intended send time (corrects
    /// coordinated omission); the window still bounds what each connection has outstanding.
    /// Without it the run is closed loop. Warm-up is always closed loop.
    #[arg(long, value_name = "MSG_PER_SEC", value_parser = parse_rate)]
    pub rate: Option<f64>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        Ok(_) => Err("must be a positive number of messages per second".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_rooms(s: &str) -> Result<RoomRange, String> {
    s.parse()
        .map_err(|e: chatflow::rooms::RoomError| e.to_string())
}

impl WorkloadArgs {
    /// The workload these flags describe.
    pub fn workload(&self) -> Workload {
        Workload {
            messages: self.messages,
            warmup_connections: self.warmup_connections,
            warmup_messages: self.warmup_messages,
            rooms: self.rooms,
            connections_per_room: self.connections_per_room as usize,
            window: self.window as usize,
            subscribers_per_room: self.subscribers_per_room,
            max_retries: self.max_retries,
            seed: self.seed,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            rate: self.rate,
        }
    }
}
