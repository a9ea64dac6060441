//! Edge metrics, exposed on /metrics beside the producer's.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Every edge metric.
#[derive(Default)]
pub struct EdgeMetrics {
    /// Connected local subscribers.
    pub subscribers: Gauge,
    /// Rooms with an upstream subscription (connected or reconnecting).
    pub rooms: Gauge,
    /// Upstream subscriptions connected now.
    pub upstreams: Gauge,
    /// Upstream subscriptions made (first ones and reconnects).
    pub upstream_connects: Counter,
    /// Upstream connection attempts that failed.
    pub upstream_failures: Counter,
    /// Upstream resumes the shard could not vouch for.
    pub upstream_gaps: Counter,
    /// Events relayed from upstream (once per event, whatever the audience).
    pub broadcasts: Counter,
    /// Events times local subscribers they were handed to.
    pub deliveries: Counter,
    /// Local subscribers disconnected for falling behind.
    pub dropped_slow_subscribers: Counter,
    /// Local subscribers that resumed from a position.
    pub resumes: Counter,
    /// Local resumes whose gap this edge could not vouch for.
    pub resumes_partial: Counter,
}

impl EdgeMetrics {
    /// Creates the metrics and registers them under `chatflow_edge_`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = EdgeMetrics::default();
        let r = registry.sub_registry_with_prefix("chatflow_edge");
        r.register(
            "subscribers",
            "Connected local subscribers",
            m.subscribers.clone(),
        );
        r.register(
            "rooms",
            "Rooms with an upstream subscription",
            m.rooms.clone(),
        );
        r.register(
            "upstreams",
            "Upstream subscriptions connected",
            m.upstreams.clone(),
        );
        r.register(
            "upstream_connects",
            "Upstream subscriptions made, reconnects included",
            m.upstream_connects.clone(),
        );
        r.register(
            "upstream_failures",
            "Upstream connection attempts that failed",
            m.upstream_failures.clone(),
        );
        r.register(
            "upstream_gaps",
            "Upstream resumes the shard could not vouch for",
            m.upstream_gaps.clone(),
        );
        r.register(
            "broadcasts",
            "Events relayed from upstream",
            m.broadcasts.clone(),
        );
        r.register(
            "deliveries",
            "Events times local subscribers handed to",
            m.deliveries.clone(),
        );
        r.register(
            "dropped_slow_subscribers",
            "Local subscribers disconnected for falling behind",
            m.dropped_slow_subscribers.clone(),
        );
        r.register(
            "resumes",
            "Local subscribers that resumed",
            m.resumes.clone(),
        );
        r.register(
            "resumes_partial",
            "Local resumes this edge could not vouch for",
            m.resumes_partial.clone(),
        );
        m
    }
}
