//! Presence metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Every presence metric (clones count into the same series).
#[derive(Debug, Clone, Default)]
pub struct PresenceMetrics {
    /// Connections this process has in rooms' presence.
    pub connections: Gauge,
    /// Presence frames sent to local watchers (one per room per interval with changes).
    pub frames: Counter,
    /// Failed presence store calls; writes are retried and rosters answered 503 meanwhile.
    pub store_errors: Counter,
}

impl PresenceMetrics {
    /// Metrics registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = PresenceMetrics::default();
        registry.register(
            "chatflow_presence_connections",
            "Connections this process has in rooms' presence",
            m.connections.clone(),
        );
        registry.register(
            "chatflow_presence_frames",
            "Presence frames sent, one per watched room per interval with changes",
            m.frames.clone(),
        );
        registry.register(
            "chatflow_presence_store_errors",
            "Failed presence store calls",
            m.store_errors.clone(),
        );
        m
    }
}
