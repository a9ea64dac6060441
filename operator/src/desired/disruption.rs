//! The set's PodDisruptionBudgets: a node drain (or any eviction) takes at most one producer pod
//! and at most one consumer shard at a time, each the next only once its predecessor's
//! replacement is Ready.

use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{FIELD_MANAGER, Plan, labels, meta};
use crate::crd::ChatRoomSet;

/// The producer tier's budget and the shards' budget.
///
/// `maxUnavailable: 1`, never `minAvailable` equal to the replicas: a single-replica tier
/// (each shard is one) is still evicted, and a drain waits only for replacements to become
/// Ready. Pods that are not Ready are always evictable (`AlwaysAllow`, where the cluster serves
/// it), so a crash-looping pod can be moved while the budget is spent.
pub fn budgets(crs: &ChatRoomSet, plan: &Plan) -> [PodDisruptionBudget; 2] {
    [
        budget(crs, &plan.producer, "producer"),
        budget(crs, &plan.shards_budget, "consumer"),
    ]
}

fn budget(crs: &ChatRoomSet, name: &str, component: &str) -> PodDisruptionBudget {
    let instance = crs.name_any();
    let selector: BTreeMap<String, String> = [
        ("app.kubernetes.io/instance", instance.as_str()),
        ("app.kubernetes.io/component", component),
        ("app.kubernetes.io/managed-by", FIELD_MANAGER),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    PodDisruptionBudget {
        metadata: meta(crs, name, labels(&instance, component)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            min_available: None,
            selector: Some(LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
        }),
        status: None,
    }
}
