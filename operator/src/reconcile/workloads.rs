//! The reconciler's Kubernetes work: server-side apply of the routing ConfigMap, the pods'
//! NetworkPolicy and PodDisruptionBudgets, the producer, its Ingress and the consumer shards, pruning of shards that left the spec,
//! read from the watch caches.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};

use super::Error;
use super::budgets::BudgetApi;
use crate::crd::{ChatRoomSet, ShardStatus};
use crate::desired::{
    self, CONSUMER_PORT, FIELD_MANAGER, PRODUCER_PORT, Plan, QueueLocation, Shard,
};

/// Watch caches of the objects the operator owns, so a reconcile reads them without a LIST.
#[derive(Clone)]
pub struct Stores {
    /// Deployments managed by the operator.
    pub deployments: Store<Deployment>,
    /// Services managed by the operator.
    pub services: Store<Service>,
}

/// The cached objects of kind `K` in `ns` that belong to the consumer shards of set `name`.
fn consumers_of<K>(store: &Store<K>, ns: &str, name: &str) -> Vec<std::sync::Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .into_iter()
        .filter(|o| {
            let labels = o.labels();
            o.namespace().as_deref() == Some(ns)
                && labels.get("app.kubernetes.io/instance").map(String::as_str) == Some(name)
                && labels
                    .get("app.kubernetes.io/component")
                    .map(String::as_str)
                    == Some("consumer")
                && labels
                    .get("app.kubernetes.io/managed-by")
                    .map(String::as_str)
                    == Some(FIELD_MANAGER)
        })
        .collect()
}

/// A set's consumer shards as last seen: Deployment and Service names.
struct Consumers {
    deployments: BTreeSet<String>,
    services: BTreeSet<String>,
}

impl Consumers {
    /// From the watch caches: no API call.
    fn cached(stores: &Stores, ns: &str, name: &str) -> Self {
        Consumers {
            deployments: consumers_of(&stores.deployments, ns, name)
                .iter()
                .map(|d| d.name_any())
                .collect(),
            services: consumers_of(&stores.services, ns, name)
                .iter()
                .map(|s| s.name_any())
                .collect(),
        }
    }

    /// From the API server, as of now.
    async fn listed(client: &kube::Client, ns: &str, name: &str) -> Result<Self, Error> {
        let lp = ListParams::default().labels(&desired::consumer_selector(name));
        let names = |list: Vec<String>| list.into_iter().collect::<BTreeSet<String>>();
        Ok(Consumers {
            deployments: names(
                Api::<Deployment>::namespaced(client.clone(), ns)
                    .list_metadata(&lp)
                    .await?
                    .into_iter()
                    .map(|d| d.name_any())
                    .collect(),
            ),
            services: names(
                Api::<Service>::namespaced(client.clone(), ns)
                    .list_metadata(&lp)
                    .await?
                    .into_iter()
                    .map(|s| s.name_any())
                    .collect(),
            ),
        })
    }
}

/// What applying the workloads observed.
pub struct Applied {
    /// Ready replicas of the producer Deployment.
    pub producer_ready: i32,
    /// Replicas of the producer Deployment, ready or not.
    pub producer_replicas: i32,
    /// One entry per planned shard, in plan order (backlog not yet filled).
    pub shards: Vec<ShardStatus>,
    /// Removed shards whose Deployment (so whose pods) is not gone yet; new shards wait.
    pub lingering_shards: usize,
    /// Shards (Deployments and Services) deleted because they left the spec.
    pub pruned: Vec<String>,
}

impl Applied {
    /// Nothing applied: every planned shard reported with no ready replicas.
    pub fn withheld(plan: &Plan) -> Self {
        Applied {
            producer_ready: 0,
            producer_replicas: 0,
            shards: plan.shards.iter().map(unready).collect(),
            lingering_shards: 0,
            pruned: Vec::new(),
        }
    }
}

/// A planned shard as reported before its Deployment says anything.
fn unready(shard: &Shard) -> ShardStatus {
    ShardStatus {
        name: shard.name.clone(),
        rooms: shard.rooms.to_string(),
        service: shard.name.clone(),
        ready_replicas: 0,
        backlog: None,
        messages_per_second: None,
    }
}

/// Applies every owned object of `crs`; shards new to the spec wait while removed shards
/// linger, because two consumers polling one room would split its audience.
pub async fn apply(
    client: &kube::Client,
    stores: &Stores,
    budget_api: BudgetApi,
    crs: &ChatRoomSet,
    plan: &Plan,
    loc: &QueueLocation,
) -> Result<Applied, Error> {
    let ns = crs.namespace().unwrap_or_else(|| "default".into());
    let name = crs.name_any();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    configmaps
        .patch(
            &plan.routing,
            &pp,
            &Patch::Apply(desired::routing_configmap(crs, plan)),
        )
        .await?;
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .patch(
            &plan.network_policy,
            &pp,
            &Patch::Apply(desired::network_policy(crs, plan)),
        )
        .await?;
    let producer = deployments
        .patch(
            &plan.producer,
            &pp,
            &Patch::Apply(desired::producer_deployment(crs, plan, loc)),
        )
        .await?;
    services
        .patch(
            &plan.producer,
            &pp,
            &Patch::Apply(desired::service(
                crs,
                &plan.producer,
                "producer",
                PRODUCER_PORT,
            )),
        )
        .await?;
    public_address(client, crs, plan, &pp, &ns).await?;
    let mut view = Consumers::cached(stores, &ns, &name);
    // Starting a shard is the one step that must not act on a cache a moment behind (a shard
    // created by the previous reconcile, a removed one already gone): it reads the server first.
    if plan
        .shards
        .iter()
        .any(|s| !view.deployments.contains(&s.name))
    {
        view = Consumers::listed(client, &ns, &name).await?;
    }
    // Budgets only pace evictions: one the API refuses (an operator upgraded without its RBAC)
    // must not keep the set from running.
    if let Err(e) = super::budgets::apply(client, budget_api, crs, plan, &pp).await {
        tracing::warn!(set = %name, error = %e, "PodDisruptionBudgets not applied");
    }
    let pruned = prune(&deployments, &services, &view, plan).await?;
    let lingering = lingering_shards(&view.deployments, plan);
    let existing = &view.deployments;
    let mut shards = Vec::with_capacity(plan.shards.len());
    for shard in &plan.shards {
        let mut status = unready(shard);
        if lingering == 0 || existing.contains(&shard.name) {
            let objects = (&deployments, &services, &pp);
            status.ready_replicas = apply_shard(objects, crs, shard, loc).await?;
        }
        shards.push(status);
    }
    Ok(Applied {
        producer_ready: ready_replicas(&producer),
        producer_replicas: producer
            .status
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(0),
        shards,
        lingering_shards: lingering,
        pruned,
    })
}

/// Applies a shard's Deployment and Service; its ready replicas.
async fn apply_shard(
    (deployments, services, pp): (&Api<Deployment>, &Api<Service>, &PatchParams),
    crs: &ChatRoomSet,
    shard: &Shard,
    loc: &QueueLocation,
) -> Result<i32, Error> {
    let d = deployments
        .patch(
            &shard.name,
            pp,
            &Patch::Apply(desired::consumer_deployment(crs, shard, loc)),
        )
        .await?;
    let service = desired::service(crs, &shard.name, "consumer", CONSUMER_PORT);
    services
        .patch(&shard.name, pp, &Patch::Apply(service))
        .await?;
    Ok(ready_replicas(&d))
}

/// Applies the Ingress the spec asks for; removes the one a previous spec asked for (the
/// status still lists its URLs), so an idle set without one costs no call.
async fn public_address(
    client: &kube::Client,
    crs: &ChatRoomSet,
    plan: &Plan,
    pp: &PatchParams,
    ns: &str,
) -> Result<(), Error> {
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), ns);
    match desired::ingress::ingress(crs, plan) {
        Some(ingress) => {
            ingresses
                .patch(&plan.producer, pp, &Patch::Apply(ingress))
                .await?;
        }
        None if crs
            .status
            .as_ref()
            .and_then(|s| s.endpoints.as_ref())
            .is_some_and(|e| !e.public.is_empty()) =>
        {
            delete(&ingresses, &plan.producer, &DeleteParams::background()).await?;
        }
        None => {}
    }
    Ok(())
}

fn ready_replicas(d: &Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// Consumer Deployments of shards that left the spec. They are deleted in the foreground, so
/// each stays until its pods are gone: counting them needs no access to pods.
pub fn lingering_shards(deployments: &BTreeSet<String>, plan: &Plan) -> usize {
    deployments
        .iter()
        .filter(|d| !plan.shards.iter().any(|s| &s.name == *d))
        .count()
}

/// Deletes consumer shards (Deployment and Service) this set owns but no longer wants.
async fn prune(
    deployments: &Api<Deployment>,
    services: &Api<Service>,
    view: &Consumers,
    plan: &Plan,
) -> Result<Vec<String>, Error> {
    let wanted: BTreeSet<&str> = plan.shards.iter().map(|s| s.name.as_str()).collect();
    let mut pruned = BTreeSet::new();
    for n in view
        .deployments
        .iter()
        .filter(|n| !wanted.contains(n.as_str()))
    {
        // Foreground: the Deployment stays (deleting) until its ReplicaSet and pods are gone.
        delete(deployments, n, &DeleteParams::foreground()).await?;
        pruned.insert(n.clone());
    }
    for n in view
        .services
        .iter()
        .filter(|n| !wanted.contains(n.as_str()))
    {
        delete(services, n, &DeleteParams::background()).await?;
        pruned.insert(n.clone());
    }
    Ok(pruned.into_iter().collect())
}

/// Deletes an object; one the cache still shows but the server no longer has is already where
/// it should be, and one already being deleted is simply asked again.
async fn delete<K>(api: &Api<K>, name: &str, how: &DeleteParams) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, how).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
