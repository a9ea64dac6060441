//! chatflow-consumer: parse configuration, connect the queue backend, serve until SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use chatflow_consumer::{ConsumerConfig, start};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    chatflow::telemetry::init_logging();
    let config = ConsumerConfig::parse();
    if let Err(e) = config.queue.naming() {
        eprintln!("chatflow-consumer: invalid configuration: {e}");
        return ExitCode::from(2);
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "consumer failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: ConsumerConfig) -> anyhow::Result<()> {
    let queues = config
        .queue
        .connect()
        .await
        .context("connecting the queue backend")?;
    let consumer = start(config, queues).await?;
    chatflow::telemetry::shutdown_signal().await;
    tracing::info!("shutdown signal received: draining");
    consumer.shutdown().await;
    Ok(())
}
