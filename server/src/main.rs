//! chatflow-server: parse configuration, connect the queue backend, serve until SIGTERM.

use std::process::ExitCode;

use chatflow_server::{ServerConfig, start};

// Frames, replies and queue bodies are allocated on one worker thread and freed on another;
// mimalloc's per-thread free lists take that without the arena lock contention of glibc's
// malloc, which showed in profiles of the pipeline under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    chatflow::telemetry::init_logging();
    let config = ServerConfig::parse();
    let queue = config.producer.queue.clone();
    chatflow::service::main("chatflow-server", &queue, config, start).await
}
