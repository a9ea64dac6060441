//! chatflow-producer: parse configuration, connect the queue backend, serve until SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use chatflow_producer::{ProducerConfig, start};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    chatflow::telemetry::init_logging();
    let config = ProducerConfig::parse();
    if let Err(e) = config.queue.naming() {
        eprintln!("chatflow-producer: invalid configuration: {e}");
        return ExitCode::from(2);
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "producer failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: ProducerConfig) -> anyhow::Result<()> {
    let queues = config
        .queue
        .connect()
        .await
        .context("connecting the queue backend")?;
    let producer = start(config, queues).await?;
    chatflow::telemetry::shutdown_signal().await;
    tracing::info!("shutdown signal received: draining");
    producer.shutdown().await;
    Ok(())
}
