//! ChatFlow core: the wire protocol, room ranges and the FIFO queue layer shared by the
//! producer, the consumer, the operator and the load generator. The HTTP and WebSocket plumbing
//! the services share, their options and logging are features (`http`, `server`, `cli`,
//! `telemetry`), so each binary links only what it uses. Test support is `chatflow-testkit`.

#[cfg(feature = "http")]
pub mod about;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "http")]
pub mod client_ip;
#[cfg(feature = "cli")]
pub mod config;
pub mod envelope;
#[cfg(feature = "http")]
pub mod http;
pub mod lifecycle;
pub mod protocol;
pub mod queue;
pub mod retry;
pub mod rooms;
#[cfg(feature = "server")]
pub mod router;
#[cfg(feature = "server")]
pub mod service;
#[cfg(feature = "telemetry")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod ws;
