//! Consumer metrics, exposed on /metrics.

use std::sync::atomic::AtomicU64;

use chatflow::rooms::RoomId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use chatflow_fanout::store::{RoomLabel, StoreMetrics};

/// Every consumer metric.
pub struct Metrics {
    /// Connected subscribers.
    pub subscribers: Gauge,
    /// Queue messages received (an envelope counts once).
    pub messages_received: Counter,
    /// Messages broadcast (once per message, whatever the audience).
    pub broadcasts: Counter,
    /// Per room: chat messages broadcast, which the operator's autoscaler reads as its rate.
    pub room_broadcasts: Family<RoomLabel, Counter>,
    /// Messages times subscribers they were handed to.
    pub deliveries: Counter,
    /// Messages of rooms without subscribers, deleted undelivered.
    pub unheard: Counter,
    /// Subscribers disconnected for falling behind.
    pub dropped_slow_subscribers: Counter,
    /// Redeliveries dropped by message id.
    pub duplicates_dropped: Counter,
    /// Queue bodies that were not a TaskMessage.
    pub malformed: Counter,
    /// Chat messages in queue bodies that break a rule the producer checks, dropped.
    pub rejected: Counter,
    /// Failed receives.
    pub poll_errors: Counter,
    /// Failed or refused deletes.
    pub delete_errors: Counter,
    /// Seconds from the producer's receivedAt to the broadcast.
    pub latency: Histogram,
    /// Per room: age of the oldest message in the last receive, 0 after an empty receive.
    pub queue_age: Family<RoomLabel, Gauge<f64, AtomicU64>>,
    /// Subscribers that resumed from a position.
    pub resumes: Counter,
    /// Resumes whose gap the room's history could not cover.
    pub resumes_partial: Counter,
    /// The history store's, registered only when the shard has one.
    pub store: StoreMetrics,
}

impl Metrics {
    /// Creates the metrics and registers them (the history store's with `with_store`).
    #[expect(
        clippy::too_many_lines,
        reason = "one registration per metric, in the order of the struct"
    )]
    pub fn new(registry: &mut Registry, with_store: bool) -> Self {
        let m = Metrics {
            subscribers: Gauge::default(),
            messages_received: Counter::default(),
            broadcasts: Counter::default(),
            room_broadcasts: Family::default(),
            deliveries: Counter::default(),
            unheard: Counter::default(),
            dropped_slow_subscribers: Counter::default(),
            duplicates_dropped: Counter::default(),
            malformed: Counter::default(),
            rejected: Counter::default(),
            poll_errors: Counter::default(),
            delete_errors: Counter::default(),
            // Up to 65 s: a message held for the visibility timeout (30 s) stays measurable.
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            queue_age: Family::default(),
            resumes: Counter::default(),
            resumes_partial: Counter::default(),
            store: StoreMetrics::default(),
        };
        let r = registry.sub_registry_with_prefix("chatflow_consumer");
        r.register(
            "subscribers",
            "Connected subscribers",
            m.subscribers.clone(),
        );
        r.register(
            "messages_received",
            "Queue messages received (an envelope counts once)",
            m.messages_received.clone(),
        );
        r.register("broadcasts", "Messages broadcast", m.broadcasts.clone());
        r.register(
            "room_broadcasts",
            "Per room: chat messages broadcast",
            m.room_broadcasts.clone(),
        );
        r.register(
            "deliveries",
            "Messages times subscribers handed to",
            m.deliveries.clone(),
        );
        r.register(
            "unheard",
            "Messages of rooms without subscribers, deleted",
            m.unheard.clone(),
        );
        r.register(
            "dropped_slow_subscribers",
            "Subscribers disconnected for falling behind",
            m.dropped_slow_subscribers.clone(),
        );
        r.register(
            "duplicates_dropped",
            "Redeliveries dropped by message id",
            m.duplicates_dropped.clone(),
        );
        r.register(
            "malformed",
            "Queue bodies that were not a TaskMessage",
            m.malformed.clone(),
        );
        r.register(
            "rejected",
            "Chat messages in queue bodies that break a rule the producer checks, dropped",
            m.rejected.clone(),
        );
        r.register("poll_errors", "Failed receives", m.poll_errors.clone());
        r.register(
            "delete_errors",
            "Failed or refused deletes",
            m.delete_errors.clone(),
        );
        r.register(
            "e2e_latency_seconds",
            "From the producer's receivedAt to the broadcast",
            m.latency.clone(),
        );
        r.register(
            "queue_age_seconds",
            "Per room: age of the oldest message in the last receive, 0 after an empty receive",
            m.queue_age.clone(),
        );
        r.register(
            "resumes",
            "Subscribers that resumed from a position",
            m.resumes.clone(),
        );
        r.register(
            "resumes_partial",
            "Resumes whose gap the room's history could not cover",
            m.resumes_partial.clone(),
        );
        if with_store {
            m.store.register(r);
        }
        m
    }

    /// Records the age of the oldest message `room` just received (0 when it received none).
    pub fn queue_age(&self, room: RoomId, seconds: f64) {
        self.queue_age
            .get_or_create(&RoomLabel { room })
            .set(seconds);
    }
}
