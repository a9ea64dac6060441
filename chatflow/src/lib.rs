//! ChatFlow core: the wire protocol, room ranges and the FIFO queue layer shared by the
//! producer, the consumer, the operator and the load generator.

pub mod protocol;
pub mod queue;
pub mod rooms;
pub mod telemetry;
