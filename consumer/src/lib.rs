//! ChatFlow consumer: long-polls the room queues of one shard and broadcasts each message, in
//! queue order, to the room's WebSocket subscribers, deleting it only after the broadcast.

pub mod config;
pub mod edge;
pub mod history;
pub mod metrics;
pub mod poller;
pub mod resume;
pub mod room;
pub mod server;
pub mod store;
pub mod subscriber;

pub use chatflow::service::StartError;
pub use config::ConsumerConfig;
pub use server::{Consumer, ConsumerHandle, start, start_on};
