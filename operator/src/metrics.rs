//! Operator metrics, exposed on /metrics.

use std::collections::HashMap;
use std::sync::Mutex;

use chatflow::queue::QueueDepth;
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

/// Labels of a room queue's depth.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The ChatRoomSet, as `namespace/name`.
    pub set: String,
    /// Room id.
    pub room: u32,
    /// `visible` (waiting) or `in_flight` (received, not yet deleted).
    pub state: &'static str,
}

/// Labels of a workload's readiness.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    /// The ChatRoomSet, as `namespace/name`.
    pub set: String,
    /// The Deployment: the producer's or a consumer shard's.
    pub deployment: String,
    /// `producer` or `consumer`.
    pub tier: &'static str,
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
    /// Messages per room queue and state, as last read by a reconcile.
    pub queue_messages: Family<QueueLabels, Gauge>,
    /// Ready replicas per Deployment the operator manages, as last observed.
    pub ready_replicas: Family<WorkloadLabels, Gauge>,
    /// The rooms each set last exported, so that rooms a set no longer has are removed.
    exported: Mutex<HashMap<String, Vec<u32>>>,
    /// The Deployments each set last exported.
    exported_workloads: Mutex<HashMap<String, Vec<WorkloadLabels>>>,
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
            queue_messages: Family::default(),
            ready_replicas: Family::default(),
            exported: Mutex::default(),
            exported_workloads: Mutex::default(),
        };
        // Every reason's series exists from the start, so a rate over it reads 0, not "no data".
        for reason in crate::reconcile::Error::REASONS {
            let _ = m.errors.get_or_create(&ReasonLabel { reason });
        }
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
        r.register(
            "queue_messages",
            "Messages per room queue, visible or in flight, as last read (sets of up to 256 rooms)",
            m.queue_messages.clone(),
        );
        r.register(
            "ready_replicas",
            "Ready replicas per managed Deployment, as last observed",
            m.ready_replicas.clone(),
        );
        m
    }

    /// Replaces `set`'s readiness series with `workloads` (Deployment, tier, ready replicas).
    pub fn record_replicas(&self, set: &str, workloads: &[(String, &'static str, i32)]) {
        let mut exported = self
            .exported_workloads
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for old in exported.remove(set).unwrap_or_default() {
            self.ready_replicas.remove(&old);
        }
        let labels: Vec<WorkloadLabels> = workloads
            .iter()
            .map(|(deployment, tier, ready)| {
                let l = WorkloadLabels {
                    set: set.to_owned(),
                    deployment: deployment.clone(),
                    tier,
                };
                self.ready_replicas.get_or_create(&l).set(i64::from(*ready));
                l
            })
            .collect();
        if !labels.is_empty() {
            exported.insert(set.to_owned(), labels);
        }
    }

    /// Replaces `set`'s queue depths with `depths`; rooms not in it (gone, or unreadable this
    /// time) lose their series rather than keep a stale value.
    pub fn record_depths(&self, set: &str, depths: &HashMap<u32, QueueDepth>) {
        let labels = |room: u32, state: &'static str| QueueLabels {
            set: set.to_owned(),
            room,
            state,
        };
        let mut exported = self.exported.lock().unwrap_or_else(|e| e.into_inner());
        for room in exported.remove(set).unwrap_or_default() {
            if !depths.contains_key(&room) {
                self.queue_messages.remove(&labels(room, "visible"));
                self.queue_messages.remove(&labels(room, "in_flight"));
            }
        }
        for (&room, depth) in depths {
            let visible = i64::try_from(depth.visible).unwrap_or(i64::MAX);
            let in_flight = i64::try_from(depth.in_flight).unwrap_or(i64::MAX);
            self.queue_messages
                .get_or_create(&labels(room, "visible"))
                .set(visible);
            self.queue_messages
                .get_or_create(&labels(room, "in_flight"))
                .set(in_flight);
        }
        if !depths.is_empty() {
            exported.insert(set.to_owned(), depths.keys().copied().collect());
        }
    }

    /// Counts a failed reconcile.
    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabel { reason }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn queue_depths_follow_the_sets_rooms() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        let depth = |visible, in_flight| QueueDepth { visible, in_flight };
        m.record_depths(
            "chat/a",
            &HashMap::from([(1, depth(5, 2)), (2, depth(0, 0))]),
        );
        let text = exported(&registry);
        assert!(
            text.contains(
                r#"chatflow_operator_queue_messages{set="chat/a",room="1",state="visible"} 5"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"room="1",state="in_flight"} 2"#), "{text}");
        // Room 2 left the set: its series goes, room 1's is updated.
        m.record_depths("chat/a", &HashMap::from([(1, depth(7, 0))]));
        let text = exported(&registry);
        assert!(text.contains(r#"room="1",state="visible"} 7"#), "{text}");
        assert!(!text.contains(r#"room="2""#), "{text}");
        // A deleted set exports nothing.
        m.record_depths("chat/a", &HashMap::new());
        assert!(!exported(&registry).contains("room="), "nothing stays");
    }

    #[test]
    fn readiness_follows_the_sets_deployments() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.record_replicas(
            "chat/a",
            &[
                ("a-producer".into(), "producer", 2),
                ("a-shard-0".into(), "consumer", 0),
            ],
        );
        let text = exported(&registry);
        assert!(
            text.contains(r#"chatflow_operator_ready_replicas{set="chat/a",deployment="a-shard-0",tier="consumer"} 0"#),
            "{text}"
        );
        m.record_replicas("chat/a", &[("a-producer".into(), "producer", 2)]);
        assert!(
            !exported(&registry).contains("a-shard-0"),
            "a removed shard goes"
        );
    }
}
