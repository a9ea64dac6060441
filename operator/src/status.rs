//! The status a reconcile reports, computed from the plan and what was observed: no I/O, so
//! every condition's wording and transition is unit-tested.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use crate::conditions::condition;
use crate::crd::{
    ChatRoomSet, ChatRoomSetStatus, Endpoints, ProducerStatus, QueueCounts, ShardStatus,
};
use crate::desired::{self, Plan};

/// What a reconcile saw of the set's queues and workloads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Queues that exist with the wanted attributes.
    pub queues_ready: u32,
    /// Why the queue service could not be used, if it could not.
    pub queue_error: Option<String>,
    /// Which of the set's queues another set owns, if any.
    pub queue_conflict: Option<String>,
    /// Ready replicas of the producer Deployment.
    pub producer_ready: i32,
    /// Replicas of the producer Deployment, ready or not.
    pub producer_replicas: i32,
    /// One entry per planned shard, in plan order.
    pub shards: Vec<ShardStatus>,
    /// Consumer pods of removed shards that have not stopped yet.
    pub lingering_shards: usize,
    /// The shard autoscaler's decision, with spec.consumer.autoscaling.
    pub autoscaling: Option<crate::crd::AutoscalingStatus>,
    /// The producer autoscaler's decision, with spec.producer.autoscaling.
    pub producer_autoscaling: Option<crate::crd::ProducerAutoscalingStatus>,
}

/// Longest queue error quoted in a condition.
const ERROR_MAX: usize = 200;

/// A queue error as a condition quotes it: one line, at most [`ERROR_MAX`] characters, so a
/// service's answer is summarized rather than relayed into a status anyone may read.
fn brief(e: &str) -> String {
    let line: String = e.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= ERROR_MAX {
        return line;
    }
    let cut: String = line.chars().take(ERROR_MAX).collect();
    format!("{cut}…")
}

/// Conditions of one status, keeping the transition times of the previous one.
struct Conditions<'a> {
    generation: Option<i64>,
    previous: &'a [Condition],
}

impl Conditions<'_> {
    fn make(&self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Condition {
        condition(type_, ok, reason, message, self.generation, self.previous)
    }

    fn queues(&self, observed: &Observed, desired: u32) -> Condition {
        let ready = observed.queues_ready;
        let counted = format!("{ready} of {desired} queues ready");
        match (&observed.queue_error, &observed.queue_conflict) {
            (_, Some(conflict)) => self.make(
                "QueuesReady",
                false,
                "QueueOwnedByAnotherSet",
                conflict.clone(),
            ),
            (None, None) if ready == desired => {
                self.make("QueuesReady", true, "QueuesEnsured", counted)
            }
            (None, None) => self.make("QueuesReady", false, "QueuesPending", counted),
            (Some(e), None) => self.make(
                "QueuesReady",
                false,
                "QueueServiceUnavailable",
                format!("{counted}: {}", brief(e)),
            ),
        }
    }

    fn producer(&self, observed: &Observed, wanted: i32) -> Condition {
        let ok = observed.producer_ready >= wanted;
        let reason = if ok { "Available" } else { "ReplicasNotReady" };
        let message = format!("{} of {wanted} replicas ready", observed.producer_ready);
        self.make("ProducerReady", ok, reason, message)
    }

    fn consumers(&self, observed: &Observed) -> Condition {
        if observed.lingering_shards > 0 {
            let message = format!(
                "waiting for {} removed shards to stop before starting new shards",
                observed.lingering_shards
            );
            return self.make("ConsumersReady", false, "Resharding", message);
        }
        let shards = observed.shards.len();
        let ready = observed
            .shards
            .iter()
            .filter(|s| s.ready_replicas >= 1)
            .count();
        let ok = ready == shards;
        let reason = if ok { "Available" } else { "ShardsNotReady" };
        self.make(
            "ConsumersReady",
            ok,
            reason,
            format!("{ready} of {shards} shards ready"),
        )
    }

    /// `Ready`: true when every part is; otherwise the first part that is not says why.
    fn ready(&self, parts: [&Condition; 3]) -> Condition {
        match parts.iter().find(|c| c.status != "True") {
            None => self.make(
                "Ready",
                true,
                "Ready",
                "queues, producer and consumers are ready",
            ),
            Some(c) => {
                let reason = match c.type_.as_str() {
                    "QueuesReady" => "QueuesNotReady",
                    "ProducerReady" => "ProducerNotReady",
                    _ => "ConsumersNotReady",
                };
                self.make("Ready", false, reason, c.message.clone())
            }
        }
    }
}

/// The status of `crs` for `plan` as `observed`, keeping transition times from the previous one.
pub fn compute(crs: &ChatRoomSet, plan: &Plan, observed: &Observed) -> ChatRoomSetStatus {
    let previous: Vec<Condition> = crs
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let conditions = Conditions {
        generation: crs.metadata.generation,
        previous: &previous,
    };
    let desired_queues = plan.queues.len() as u32;
    let queues = conditions.queues(observed, desired_queues);
    let producer = conditions.producer(observed, plan.producer_replicas);
    let consumers = conditions.consumers(observed);
    let ready = conditions.ready([&queues, &producer, &consumers]);
    ChatRoomSetStatus {
        observed_generation: crs.metadata.generation,
        conditions: vec![ready, queues, producer, consumers],
        rooms: Some(plan.rooms.to_string()),
        queues: QueueCounts {
            desired: desired_queues,
            ready: observed.queues_ready,
        },
        shard_count: observed.shards.len() as u32,
        shards: observed.shards.clone(),
        producer: Some(ProducerStatus {
            service: plan.producer.clone(),
            ready_replicas: observed.producer_ready,
            replicas: observed.producer_replicas,
            selector: Some(desired::producer_selector(&crs.name_any(), &plan.producer)),
            autoscaling: observed.producer_autoscaling.clone(),
        }),
        endpoints: Some(endpoints(crs, plan)),
        autoscaling: observed.autoscaling.clone(),
    }
}

/// Where clients of the set connect.
fn endpoints(crs: &ChatRoomSet, plan: &Plan) -> Endpoints {
    Endpoints {
        ingest: desired::ingest_template(crs, plan),
        subscribe: desired::subscribe_template(crs),
        edge: desired::edge_template(crs, plan),
        public: crs
            .spec
            .ingress
            .as_ref()
            .map(desired::ingress::public_urls)
            .unwrap_or_default(),
    }
}

/// The status of a spec that cannot be reconciled: the previous status with only `Ready=False`.
pub fn invalid(crs: &ChatRoomSet, reason: &str) -> ChatRoomSetStatus {
    let prev = crs
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut status = crs.status.clone().unwrap_or_default();
    status.observed_generation = crs.metadata.generation;
    status.conditions = vec![condition(
        "Ready",
        false,
        "InvalidSpec",
        reason,
        crs.metadata.generation,
        &prev,
    )];
    status
}

/// Whether `crs` already reports `reason` as its invalid-spec message (so no new event is due).
pub fn already_invalid(crs: &ChatRoomSet, reason: &str) -> bool {
    crs.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "InvalidSpec" && c.message == reason)
    })
}

/// The server-side apply body of a status.
pub fn apply_body(crs: &ChatRoomSet, status: &ChatRoomSetStatus) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "chatflow.dev/v1alpha1",
        "kind": "ChatRoomSet",
        "metadata": { "name": crs.name_any() },
        "status": status,
    })
}

#[cfg(test)]
mod tests;
