//! chatflow-server: parse configuration, connect the queue backend, serve until SIGTERM.

use std::process::ExitCode;

use chatflow_server::{ServerConfig, start};

#[tokio::main]
async fn main() -> ExitCode {
    chatflow::telemetry::init_logging();
    let config = ServerConfig::parse();
    let queue = config.producer.queue.clone();
    chatflow::service::main("chatflow-server", &queue, config, start).await
}
