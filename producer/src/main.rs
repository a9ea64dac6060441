//! chatflow-producer: parse configuration, connect the queue backend, serve until SIGTERM.

use std::process::ExitCode;

use chatflow_producer::{ProducerConfig, start};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    chatflow::telemetry::init_logging();
    let config = ProducerConfig::parse();
    let queue = config.queue.clone();
    chatflow::service::main("chatflow-producer", &queue, config, start).await
}
