//! Operator metrics, exposed on /metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label for errors by reason: a static string, so counting an error allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why it failed.
    pub reason: &'static str,
}

/// Every operator metric.
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: Counter,
    /// Failed reconciles by reason.
    pub errors: Family<ReasonLabel, Counter>,
    /// Reconcile duration, seconds.
    pub duration: Histogram,
    /// Queues managed (ready) across all sets.
    pub queues: Gauge,
    /// Consumer shards managed across all sets.
    pub shards: Gauge,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            reconciles: Counter::default(),
            errors: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            queues: Gauge::default(),
            shards: Gauge::default(),
            leader: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("chatflow_operator");
        r.register("reconciles", "Reconciles run", m.reconciles.clone());
        r.register(
            "reconcile_errors",
            "Failed reconciles by reason",
            m.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            m.duration.clone(),
        );
        r.register(
            "queues_managed",
            "Queues ready across all sets",
            m.queues.clone(),
        );
        r.register(
            "shards_managed",
            "Consumer shards across all sets",
            m.shards.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader lease",
            m.leader.clone(),
        );
        m
    }

    /// Counts a failed reconcile.
    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabel { reason }).inc();
    }
}
