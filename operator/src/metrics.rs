//! Operator metrics, exposed on /metrics.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
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

/// Labels of a shard autoscaling decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScalingLabels {
    /// The ChatRoomSet, as `namespace/name`.
    pub set: String,
    /// `up`, `down`, or `moved` (shards only: the same count placed differently).
    pub direction: &'static str,
}

/// Labels of a set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SetLabel {
    /// The ChatRoomSet, as `namespace/name`.
    pub set: String,
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

/// A gauge family whose series belong to ChatRoomSets: each record replaces one set's series, so
/// a room or Deployment the set no longer has (or could not read this time) loses its series
/// rather than keep a stale value.
pub struct PerSet<L> {
    /// The exported family.
    pub family: Family<L, Gauge>,
    exported: Mutex<HashMap<String, Vec<L>>>,
}

impl<L: Clone + Hash + Eq> Default for PerSet<L> {
    fn default() -> Self {
        PerSet {
            family: Family::default(),
            exported: Mutex::default(),
        }
    }
}

impl<L: Clone + Hash + Eq> PerSet<L> {
    /// Makes `values` the whole of `set`'s series.
    pub fn replace(&self, set: &str, values: Vec<(L, i64)>) {
        let mut exported = self.exported.lock().unwrap_or_else(|e| e.into_inner());
        let kept: HashSet<&L> = values.iter().map(|(l, _)| l).collect();
        for old in exported.remove(set).unwrap_or_default() {
            if !kept.contains(&old) {
                self.family.remove(&old);
            }
        }
        for (labels, value) in &values {
            self.family.get_or_create(labels).set(*value);
        }
        if !values.is_empty() {
            exported.insert(set.to_owned(), values.into_iter().map(|(l, _)| l).collect());
        }
    }
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
    pub queue_messages: PerSet<QueueLabels>,
    /// Ready replicas per Deployment the operator manages, as last observed.
    pub ready_replicas: PerSet<WorkloadLabels>,
    /// Shard count changes the autoscaler made, by set and direction.
    pub scalings: Family<ScalingLabels, Counter>,
    /// Shards the autoscaler wants, per set with spec.consumer.autoscaling.
    pub shards_wanted: Family<SetLabel, Gauge>,
    /// Producer pod count changes the autoscaler made, by set and direction.
    pub producer_scalings: Family<ScalingLabels, Counter>,
    /// Producer pods the autoscaler wants, per set with spec.producer.autoscaling.
    pub producers_wanted: Family<SetLabel, Gauge>,
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
            queue_messages: PerSet::default(),
            ready_replicas: PerSet::default(),
            scalings: Family::default(),
            shards_wanted: Family::default(),
            producer_scalings: Family::default(),
            producers_wanted: Family::default(),
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
            m.queue_messages.family.clone(),
        );
        r.register(
            "ready_replicas",
            "Ready replicas per managed Deployment, as last observed",
            m.ready_replicas.family.clone(),
        );
        r.register(
            "shard_scalings",
            "Shard count changes the autoscaler made, by set and direction (the reason is in the set's Events and status)",
            m.scalings.clone(),
        );
        r.register(
            "shards_wanted",
            "Shards the autoscaler wants, per set with spec.consumer.autoscaling",
            m.shards_wanted.clone(),
        );
        r.register(
            "producer_scalings",
            "Producer pod count changes the autoscaler made, by set and direction (the reason is in the set's Events and status)",
            m.producer_scalings.clone(),
        );
        r.register(
            "producers_wanted",
            "Producer pods the autoscaler wants, per set with spec.producer.autoscaling",
            m.producers_wanted.clone(),
        );
        m
    }

    /// Replaces `set`'s readiness series with `workloads` (Deployment, tier, ready replicas).
    pub fn record_replicas(&self, set: &str, workloads: &[(String, &'static str, i32)]) {
        let values = workloads
            .iter()
            .map(|(deployment, tier, ready)| {
                let labels = WorkloadLabels {
                    set: set.to_owned(),
                    deployment: deployment.clone(),
                    tier,
                };
                (labels, i64::from(*ready))
            })
            .collect();
        self.ready_replicas.replace(set, values);
    }

    /// Replaces `set`'s queue depths with `depths`.
    pub fn record_depths(&self, set: &str, depths: &HashMap<u32, QueueDepth>) {
        let series = |room: u32, state: &'static str, n: u64| {
            let labels = QueueLabels {
                set: set.to_owned(),
                room,
                state,
            };
            (labels, i64::try_from(n).unwrap_or(i64::MAX))
        };
        let values = depths
            .iter()
            .flat_map(|(&room, d)| {
                [
                    series(room, "visible", d.visible),
                    series(room, "in_flight", d.in_flight),
                ]
            })
            .collect();
        self.queue_messages.replace(set, values);
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
