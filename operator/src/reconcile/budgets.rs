//! The set's PodDisruptionBudgets, written in the policy API version the cluster serves:
//! `policy/v1` from Kubernetes 1.21, else `policy/v1beta1`, which has no
//! `unhealthyPodEvictionPolicy` (there a pod that runs but is not Ready waits for the budget
//! like any other).

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::Error;
use crate::crd::ChatRoomSet;
use crate::desired::{self, Plan};

/// Which policy API version holds PodDisruptionBudgets on this cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetApi {
    /// `policy/v1` (Kubernetes 1.21 on).
    V1,
    /// `policy/v1beta1` (before 1.21).
    V1beta1,
}

impl BudgetApi {
    /// Asks the API server which version it serves.
    pub async fn detect(client: &Client) -> Result<Self, kube::Error> {
        match client.list_api_group_resources("policy/v1").await {
            Ok(list)
                if list
                    .resources
                    .iter()
                    .any(|r| r.name == "poddisruptionbudgets") =>
            {
                Ok(BudgetApi::V1)
            }
            Ok(_) => Ok(BudgetApi::V1beta1),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(BudgetApi::V1beta1),
            Err(e) => Err(e),
        }
    }

    /// The resource, for a dynamic client.
    pub fn resource(self) -> ApiResource {
        let version = match self {
            BudgetApi::V1 => "v1",
            BudgetApi::V1beta1 => "v1beta1",
        };
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "policy",
            version,
            "PodDisruptionBudget",
        ))
    }

    /// `budget` as this version takes it.
    pub fn object(self, budget: &PodDisruptionBudget) -> DynamicObject {
        let mut v = serde_json::to_value(budget).expect("a budget serializes");
        if self == BudgetApi::V1beta1 {
            v["apiVersion"] = "policy/v1beta1".into();
            if let Some(spec) = v.get_mut("spec").and_then(|s| s.as_object_mut()) {
                spec.remove("unhealthyPodEvictionPolicy");
            }
        }
        serde_json::from_value(v).expect("a budget is an object")
    }
}

/// Applies the set's two budgets.
pub async fn apply(
    client: &Client,
    api: BudgetApi,
    crs: &ChatRoomSet,
    plan: &Plan,
    pp: &PatchParams,
) -> Result<(), Error> {
    let ns = crs.namespace().unwrap_or_else(|| "default".into());
    let budgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &api.resource());
    for budget in desired::disruption::budgets(crs, plan) {
        budgets
            .patch(&budget.name_any(), pp, &Patch::Apply(api.object(&budget)))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{plan, tests::sample};

    #[test]
    fn before_1_21_the_budget_is_v1beta1_without_the_unhealthy_pod_policy() {
        let crs = sample("demo", 1, 20, 5);
        let [producer, _] = desired::disruption::budgets(&crs, &plan(&crs).unwrap());
        let old = BudgetApi::V1beta1.object(&producer);
        assert_eq!(old.types.as_ref().unwrap().api_version, "policy/v1beta1");
        assert_eq!(old.data["spec"]["maxUnavailable"], 1);
        assert!(old.data["spec"].get("unhealthyPodEvictionPolicy").is_none());
        let new = BudgetApi::V1.object(&producer);
        assert_eq!(new.types.as_ref().unwrap().api_version, "policy/v1");
        assert_eq!(
            new.data["spec"]["unhealthyPodEvictionPolicy"],
            "AlwaysAllow"
        );
        assert_eq!(BudgetApi::V1beta1.resource().api_version, "policy/v1beta1");
    }
}
