//! ChatFlow core: the wire protocol, room ranges and the FIFO queue layer shared by the
//! producer, the consumer, the operator and the load generator, plus the HTTP and WebSocket
//! plumbing the services share.

pub mod alloc;
pub mod config;
pub mod http;
pub mod protocol;
pub mod queue;
pub mod rooms;
pub mod router;
pub mod service;
pub mod telemetry;
pub mod testkit;
pub mod ws;
