//! ChatFlow consumer: long-polls the room queues of one shard and broadcasts each message, in
//! queue order, to the room's WebSocket subscribers (with `chatflow-fanout`), deleting it only
//! after the broadcast and, with a history store, after the store took it.

pub mod config;
mod history;
pub mod metrics;
pub mod poller;
pub mod server;

pub use chatflow::service::StartError;
pub use config::ConsumerConfig;
pub use server::{Consumer, ConsumerHandle, start, start_on};
