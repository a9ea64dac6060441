//! ChatFlow fan-out, shared by the consumer shards and the edge on the producer pods: a room's
//! subscribers and history, the subscriber loop with its resume from a position, the history
//! store outside the pods, and the edge that relays a shard's rooms.

pub mod admission;
pub mod edge;
pub mod history;
pub mod page;
pub mod presence;
pub mod resume;
pub mod room;
pub mod store;
pub mod subscriber;
