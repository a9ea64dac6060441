//! chatflow-consumer: parse configuration, connect the queue backend, serve until SIGTERM.

use std::process::ExitCode;

use chatflow_consumer::{ConsumerConfig, start};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    chatflow::telemetry::init_logging();
    let config = ConsumerConfig::parse();
    let queue = config.queue.clone();
    chatflow::service::main("chatflow-consumer", &queue, config, start).await
}
