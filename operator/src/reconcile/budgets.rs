//! The set's PodDisruptionBudgets, written as the cluster takes them: `policy/v1` from
//! Kubernetes 1.21, else `policy/v1beta1`; with `unhealthyPodEvictionPolicy` only from 1.27,
//! where it is on by default (before, a server-side apply would refuse or drop the field, and a
//! pod that runs but is not Ready waits for the budget like any other).

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::Error;
use crate::crd::ChatRoomSet;
use crate::desired::{self, Plan};

/// How this cluster takes PodDisruptionBudgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetApi {
    /// `policy/v1` (Kubernetes 1.21 on); `unhealthy_policy` from 1.27.
    V1 {
        /// Whether `unhealthyPodEvictionPolicy` is served.
        unhealthy_policy: bool,
    },
    /// `policy/v1beta1` (before 1.21).
    V1beta1,
}

/// First minor version of Kubernetes 1 that serves `unhealthyPodEvictionPolicy` by default.
const UNHEALTHY_POLICY_MINOR: u32 = 27;

impl BudgetApi {
    /// Asks the API server which version it serves, and its release.
    pub async fn detect(client: &Client) -> Result<Self, kube::Error> {
        let v1 = match client.list_api_group_resources("policy/v1").await {
            Ok(list) => list
                .resources
                .iter()
                .any(|r| r.name == "poddisruptionbudgets"),
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            Err(e) => return Err(e),
        };
        if !v1 {
            return Ok(BudgetApi::V1beta1);
        }
        let info = client.apiserver_version().await?;
        Ok(BudgetApi::V1 {
            unhealthy_policy: serves_unhealthy_policy(&info.major, &info.minor),
        })
    }

    /// Whether budgets written this way say `unhealthyPodEvictionPolicy: AlwaysAllow`.
    pub fn unhealthy_policy(self) -> bool {
        matches!(
            self,
            BudgetApi::V1 {
                unhealthy_policy: true
            }
        )
    }

    /// The resource, for a dynamic client.
    pub fn resource(self) -> ApiResource {
        let version = match self {
            BudgetApi::V1 { .. } => "v1",
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
        }
        if !self.unhealthy_policy()
            && let Some(spec) = v.get_mut("spec").and_then(|s| s.as_object_mut())
        {
            spec.remove("unhealthyPodEvictionPolicy");
        }
        serde_json::from_value(v).expect("a budget is an object")
    }
}

/// Whether a Kubernetes release (`major`, `minor` as `/version` gives them, e.g. "1", "27+")
/// serves `unhealthyPodEvictionPolicy`.
fn serves_unhealthy_policy(major: &str, minor: &str) -> bool {
    let number = |s: &str| {
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse::<u32>()
            .ok()
    };
    match (number(major), number(minor)) {
        (Some(1), Some(minor)) => minor >= UNHEALTHY_POLICY_MINOR,
        (Some(major), _) => major > 1,
        _ => false,
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
    fn each_release_gets_the_budget_it_takes() {
        let crs = sample("demo", 1, 20, 5);
        let [producer, _] = desired::disruption::budgets(&crs, &plan(&crs).unwrap());
        let old = BudgetApi::V1beta1.object(&producer);
        assert_eq!(old.types.as_ref().unwrap().api_version, "policy/v1beta1");
        assert_eq!(old.data["spec"]["maxUnavailable"], 1);
        assert!(old.data["spec"].get("unhealthyPodEvictionPolicy").is_none());
        let new = BudgetApi::V1 {
            unhealthy_policy: true,
        }
        .object(&producer);
        assert_eq!(new.types.as_ref().unwrap().api_version, "policy/v1");
        assert_eq!(
            new.data["spec"]["unhealthyPodEvictionPolicy"],
            "AlwaysAllow"
        );
        let v1_26 = BudgetApi::V1 {
            unhealthy_policy: false,
        }
        .object(&producer);
        assert_eq!(v1_26.types.as_ref().unwrap().api_version, "policy/v1");
        assert!(
            v1_26.data["spec"]
                .get("unhealthyPodEvictionPolicy")
                .is_none()
        );
        assert!(serves_unhealthy_policy("1", "27"));
        assert!(serves_unhealthy_policy("1", "33+"));
        assert!(!serves_unhealthy_policy("1", "26"));
        assert!(!serves_unhealthy_policy("1", "20"));
        assert!(!serves_unhealthy_policy("", ""));
        assert_eq!(BudgetApi::V1beta1.resource().api_version, "policy/v1beta1");
    }
}
