//! ChatFlow's test and benchmark support, kept out of the crates that ship: a TCP proxy that
//! can be cut or delayed (a queue service outage, a remote round trip), a global allocator that
//! counts live heap bytes, a plain HTTP probe for the services' routes, and a redis-server of a
//! test's own.

pub mod alloc;
pub mod http;
pub mod proxy;
pub mod redis;

pub use http::{http_exchange, http_get, http_request};
pub use proxy::Proxy;
pub use redis::RedisServer;
