//! chatflow-server: parse configuration, connect the queue backend, serve until SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use chatflow_server::{ServerConfig, start};

#[tokio::main]
async fn main() -> ExitCode {
    chatflow::telemetry::init_logging();
    let config = ServerConfig::parse();
    if let Err(e) = config.producer.queue.naming() {
        eprintln!("chatflow-server: invalid configuration: {e}");
        return ExitCode::from(2);
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "server failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let queues = config
        .producer
        .queue
        .connect()
        .await
        .context("connecting the queue backend")?;
    let server = start(config, queues).await?;
    chatflow::telemetry::shutdown_signal().await;
    tracing::info!("shutdown signal received: draining");
    server.shutdown().await;
    Ok(())
}
