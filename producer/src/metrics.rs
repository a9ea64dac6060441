//! Producer metrics, exposed on /metrics.

use chatflow::protocol::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label for errors by code: a static string, so counting an error allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// Error code.
    pub code: &'static str,
}

/// Every producer metric.
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Upgrades refused at the connection limit.
    pub connections_refused: Counter,
    /// Text messages received.
    pub messages_received: Counter,
    /// Messages that passed validation, bound for the queue.
    pub messages_validated: Counter,
    /// Messages answered with ERROR, by code.
    pub errors: Family<CodeLabel, Counter>,
    /// Messages the queue accepted.
    pub messages_published: Counter,
    /// Messages the queue did not accept after retries.
    pub publish_failures: Counter,
    /// Chat messages per SendMessageBatch.
    pub batch_size: Histogram,
    /// Time of one batch call, seconds.
    pub publish_latency: Histogram,
    /// Retried batch calls.
    pub publish_retries: Counter,
    /// 1 while the circuit breaker refuses messages.
    pub breaker_open: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            messages_received: Counter::default(),
            messages_validated: Counter::default(),
            errors: Family::default(),
            messages_published: Counter::default(),
            publish_failures: Counter::default(),
            batch_size: Histogram::new([
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
            ]),
            publish_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            publish_retries: Counter::default(),
            breaker_open: Gauge::default(),
        };
        // Every code's series exists from the start, so a rate over it reads 0, not "no data".
        for code in ErrorCode::ALL {
            m.error_series(code);
        }
        let r = registry.sub_registry_with_prefix("chatflow_producer");
        r.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        r.register(
            "connections_refused",
            "Upgrades refused at the connection limit",
            m.connections_refused.clone(),
        );
        r.register(
            "messages_received",
            "Text messages received",
            m.messages_received.clone(),
        );
        r.register(
            "messages_validated",
            "Messages that passed validation",
            m.messages_validated.clone(),
        );
        r.register(
            "errors",
            "Messages answered with ERROR, by code",
            m.errors.clone(),
        );
        r.register(
            "messages_published",
            "Messages accepted by the queue",
            m.messages_published.clone(),
        );
        r.register(
            "publish_failures",
            "Messages the queue did not accept after retries",
            m.publish_failures.clone(),
        );
        r.register(
            "batch_size",
            "Chat messages per SendMessageBatch",
            m.batch_size.clone(),
        );
        r.register(
            "publish_latency_seconds",
            "Time of one batch call",
            m.publish_latency.clone(),
        );
        r.register(
            "publish_retries",
            "Retried batch calls",
            m.publish_retries.clone(),
        );
        r.register(
            "breaker_open",
            "1 while the circuit breaker refuses messages",
            m.breaker_open.clone(),
        );
        m
    }

    /// Counts an ERROR answer.
    pub fn error(&self, code: ErrorCode) {
        self.error_series(code).inc();
    }

    /// Counts `n` chat messages the queue did not take: each is answered QUEUE_ERROR.
    pub fn publish_failed(&self, n: u64) {
        self.publish_failures.inc_by(n);
        self.error_series(ErrorCode::QueueError).inc_by(n);
    }

    fn error_series(&self, code: ErrorCode) -> Counter {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .clone()
    }
}
