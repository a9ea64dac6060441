//! chatflow-producer: parse configuration, connect the queue backend, serve until SIGTERM.

use std::process::ExitCode;

use chatflow_producer::{ProducerConfig, start};
use clap::Parser;

// Frames, replies and queue bodies are allocated on one worker thread and freed on another;
// mimalloc's per-thread free lists take that without the arena lock contention of glibc's
// malloc, which showed in profiles of the pipeline under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    chatflow::telemetry::init_logging();
    let config = ProducerConfig::parse();
    let queue = config.queue.clone();
    chatflow::service::main("chatflow-producer", &queue, config, start).await
}
