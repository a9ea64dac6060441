//! ChatFlow producer: WebSocket ingest that validates chat messages, batches them into each
//! room's FIFO queue, and acknowledges every message from its own queue result.

pub mod api;
pub mod batcher;
pub mod breaker;
pub mod config;
pub mod connection;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod server;

pub use chatflow::service::StartError;
pub use config::ProducerConfig;
pub use server::{Producer, ProducerHandle, start, start_on};
