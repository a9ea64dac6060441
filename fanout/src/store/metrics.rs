//! The history store's metrics, on /metrics only for shards that have a store.

use std::time::Duration;

use chatflow::rooms::RoomId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label for per-room series: a shard's rooms are a fixed range, so the cardinality is bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoomLabel {
    /// Room id.
    pub room: RoomId,
}

/// Label of a history store operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// `append` or `read`.
    pub op: &'static str,
}

/// Every history store metric (clones count into the same series).
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Seconds per append of a batch.
    pub append: Histogram,
    /// Failed calls, by operation (append, read).
    pub errors: Family<OpLabel, Counter>,
    /// 1 while the last call succeeded, 0 after a failure.
    pub up: Gauge,
    /// Per room: events in the store after the last append.
    pub length: Family<RoomLabel, Gauge>,
    /// Resumes answered from the store (the rest from the shard's memory).
    pub resumes: Counter,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        let m = StoreMetrics {
            append: Histogram::new(exponential_buckets(0.0002, 2.0, 16)),
            errors: Family::default(),
            up: Gauge::default(),
            length: Family::default(),
            resumes: Counter::default(),
        };
        // Every operation's series exists from the start, so a rate over it reads 0, not "no data".
        for op in ["append", "read"] {
            let _ = m.errors.get_or_create(&OpLabel { op });
        }
        m
    }
}

impl StoreMetrics {
    /// Registers them in the consumer's registry.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "resumes_from_store",
            "Resumes answered from the history store",
            self.resumes.clone(),
        );
        r.register(
            "history_store_append_seconds",
            "Seconds per append of a batch to the history store",
            self.append.clone(),
        );
        r.register(
            "history_store_errors",
            "Failed history store calls, by operation",
            self.errors.clone(),
        );
        r.register(
            "history_store_up",
            "1 while the last call to the history store succeeded",
            self.up.clone(),
        );
        r.register(
            "history_length",
            "Per room: events in the history store after the last append",
            self.length.clone(),
        );
    }

    /// Records a successful call.
    pub fn answered(&self) {
        self.up.set(1);
    }

    /// Records an append of `room` that took `took` and left `len` events.
    pub fn appended(&self, room: RoomId, took: Duration, len: u64) {
        self.append.observe(took.as_secs_f64());
        self.answered();
        self.length
            .get_or_create(&RoomLabel { room })
            .set(i64::try_from(len).unwrap_or(i64::MAX));
    }

    /// Records a failed call.
    pub fn failed(&self, op: &'static str) {
        self.errors.get_or_create(&OpLabel { op }).inc();
        self.up.set(0);
    }
}
