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
    /// One entry per planned shard, in plan order.
    pub shards: Vec<ShardStatus>,
    /// Consumer pods of removed shards that have not stopped yet.
    pub lingering_shards: usize,
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

/// The status of `crs` for `plan` as `observed`, keeping transition times from the previous one.
pub fn compute(crs: &ChatRoomSet, plan: &Plan, observed: &Observed) -> ChatRoomSetStatus {
    let gen_ = crs.metadata.generation;
    let prev: Vec<Condition> = crs
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let desired_queues = plan.rooms.len() as u32;
    let ready = observed.queues_ready;
    let queues_cond = match (&observed.queue_error, &observed.queue_conflict) {
        (_, Some(conflict)) => condition(
            "QueuesReady",
            false,
            "QueueOwnedByAnotherSet",
            conflict.clone(),
            gen_,
            &prev,
        ),
        (None, None) if ready == desired_queues => condition(
            "QueuesReady",
            true,
            "QueuesEnsured",
            format!("{ready} of {desired_queues} queues ready"),
            gen_,
            &prev,
        ),
        (None, None) => condition(
            "QueuesReady",
            false,
            "QueuesPending",
            format!("{ready} of {desired_queues} queues ready"),
            gen_,
            &prev,
        ),
        (Some(e), None) => condition(
            "QueuesReady",
            false,
            "QueueServiceUnavailable",
            format!("{ready} of {desired_queues} queues ready: {}", brief(e)),
            gen_,
            &prev,
        ),
    };
    let wanted = crs.spec.producer.replicas;
    let producer_ok = observed.producer_ready >= wanted;
    let producer_cond = condition(
        "ProducerReady",
        producer_ok,
        if producer_ok {
            "Available"
        } else {
            "ReplicasNotReady"
        },
        format!("{} of {wanted} replicas ready", observed.producer_ready),
        gen_,
        &prev,
    );
    let shards_ready = observed
        .shards
        .iter()
        .filter(|s| s.ready_replicas >= 1)
        .count();
    let consumers_ok = shards_ready == observed.shards.len();
    let consumers_cond = if observed.lingering_shards > 0 {
        condition(
            "ConsumersReady",
            false,
            "Resharding",
            format!(
                "waiting for {} removed shards to stop before starting new shards",
                observed.lingering_shards
            ),
            gen_,
            &prev,
        )
    } else {
        condition(
            "ConsumersReady",
            consumers_ok,
            if consumers_ok {
                "Available"
            } else {
                "ShardsNotReady"
            },
            format!("{shards_ready} of {} shards ready", observed.shards.len()),
            gen_,
            &prev,
        )
    };
    let parts = [&queues_cond, &producer_cond, &consumers_cond];
    let ready_cond = match parts.iter().find(|c| c.status != "True") {
        None => condition(
            "Ready",
            true,
            "Ready",
            "queues, producer and consumers are ready",
            gen_,
            &prev,
        ),
        Some(c) => {
            let reason = match c.type_.as_str() {
                "QueuesReady" => "QueuesNotReady",
                "ProducerReady" => "ProducerNotReady",
                _ => "ConsumersNotReady",
            };
            condition("Ready", false, reason, c.message.clone(), gen_, &prev)
        }
    };
    ChatRoomSetStatus {
        observed_generation: gen_,
        conditions: vec![ready_cond, queues_cond, producer_cond, consumers_cond],
        rooms: Some(plan.rooms.to_string()),
        queues: QueueCounts {
            desired: desired_queues,
            ready,
        },
        shard_count: observed.shards.len() as u32,
        shards: observed.shards.clone(),
        producer: Some(ProducerStatus {
            service: plan.producer.clone(),
            ready_replicas: observed.producer_ready,
        }),
        endpoints: Some(Endpoints {
            ingest: desired::ingest_template(crs, plan),
            subscribe: desired::subscribe_template(crs),
            edge: desired::edge_template(crs, plan),
            public: crs
                .spec
                .ingress
                .as_ref()
                .map(desired::ingress::public_urls)
                .unwrap_or_default(),
        }),
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
