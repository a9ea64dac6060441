//! The ChatRoomSet reconciler: queues first, then owned objects by server-side apply, pruning
//! of shards that left the spec, and a status that says what is ready.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatflow::queue::{Ensured, SharedQueues, SqsConfig, SqsQueues};
use chatflow::rooms::QueueNaming;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::conditions::{condition, is_true};
use crate::crd::{
    ChatRoomSet, ChatRoomSetStatus, DeletionPolicy, Endpoints, ProducerStatus, QueueCounts,
    ShardStatus,
};
use crate::desired::{self, CONSUMER_PORT, FIELD_MANAGER, PRODUCER_PORT, Plan, QueueLocation};
use crate::metrics::Metrics;

/// Finalizer that guards queue deletion.
pub const FINALIZER: &str = "chatflow.dev/queues";
/// Backlog is read per room; above this many rooms it is skipped to keep reconciles cheap.
const BACKLOG_ROOM_LIMIT: usize = 256;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a call.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Queues could not be ensured or deleted.
    #[error("queues: {0}")]
    Queues(String),
    /// The finalizer machinery failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// Short reason for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes",
            Error::Queues(_) => "queues",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Queue region and endpoint when a spec names none.
    pub defaults: QueueLocation,
    /// Queue calls in flight at once per set.
    pub queue_concurrency: usize,
    /// Periodic resync.
    pub resync: Duration,
    /// Event recorder.
    pub recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
    clients: tokio::sync::Mutex<HashMap<String, SharedQueues>>,
    totals: Mutex<HashMap<String, (u32, u32)>>,
}

impl Context {
    /// A context for `client`.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        defaults: QueueLocation,
        identity: &str,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(identity.to_owned()),
            },
        );
        Context {
            client,
            metrics,
            defaults,
            queue_concurrency: 32,
            resync: Duration::from_secs(60),
            recorder,
            failures: Mutex::default(),
            clients: tokio::sync::Mutex::default(),
            totals: Mutex::default(),
        }
    }

    /// The queue client of a location and prefix, built once.
    async fn queues(
        &self,
        loc: &QueueLocation,
        naming: &QueueNaming,
    ) -> Result<SharedQueues, Error> {
        let key = format!(
            "{:?}|{:?}|{}",
            loc.endpoint,
            loc.region,
            naming.name_prefix()
        );
        let mut clients = self.clients.lock().await;
        if let Some(q) = clients.get(&key) {
            return Ok(q.clone());
        }
        let config = SqsConfig {
            endpoint: loc.endpoint.clone(),
            region: loc.region.clone(),
            ..SqsConfig::default()
        };
        let q: SharedQueues = Arc::new(
            SqsQueues::connect(&config, naming.clone())
                .await
                .map_err(|e| Error::Queues(e.to_string()))?,
        );
        clients.insert(key, q.clone());
        Ok(q)
    }

    async fn event(&self, crs: &ChatRoomSet, type_: EventType, reason: &str, note: String) {
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &crs.object_ref(&())).await {
            tracing::debug!(error = %e, "event not recorded");
        }
    }

    fn record_totals(&self, key: &str, queues: u32, shards: u32) {
        let mut t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        if queues == 0 && shards == 0 {
            t.remove(key);
        } else {
            t.insert(key.to_owned(), (queues, shards));
        }
        self.metrics
            .queues
            .set(t.values().map(|v| v.0 as i64).sum());
        self.metrics
            .shards
            .set(t.values().map(|v| v.1 as i64).sum());
    }
}

fn key(crs: &ChatRoomSet) -> String {
    format!("{}/{}", crs.namespace().unwrap_or_default(), crs.name_any())
}

/// Reconciles one ChatRoomSet.
pub async fn reconcile(crs: Arc<ChatRoomSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let res = reconcile_inner(crs.clone(), ctx.clone()).await;
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    match &res {
        Ok(_) => {
            ctx.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key(&crs));
        }
        Err(e) => {
            ctx.metrics.error(e.reason());
            tracing::warn!(set = %key(&crs), error = %e, "reconcile failed");
        }
    }
    res
}

/// Backs off exponentially per object: 0.5 s, 1 s, 2 s ... up to 5 minutes.
pub fn error_policy(crs: Arc<ChatRoomSet>, _err: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let n = failures.entry(key(&crs)).or_default();
    *n = n.saturating_add(1);
    let delay = Duration::from_millis(500u64.saturating_mul(1 << (*n - 1).min(10)))
        .min(Duration::from_secs(300));
    Action::requeue(delay)
}

async fn reconcile_inner(crs: Arc<ChatRoomSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = crs.namespace().unwrap_or_else(|| "default".into());
    let api: Api<ChatRoomSet> = Api::namespaced(ctx.client.clone(), &ns);
    if crs.meta().deletion_timestamp.is_none()
        && let Err(reason) = desired::plan(&crs)
    {
        report_invalid(&api, &crs, &ctx, &reason).await?;
        return Ok(Action::await_change());
    }
    finalizer(&api, FINALIZER, crs, |event| async {
        match event {
            Finalizer::Apply(crs) => apply(crs, ctx.clone()).await,
            Finalizer::Cleanup(crs) => cleanup(crs, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

async fn report_invalid(
    api: &Api<ChatRoomSet>,
    crs: &ChatRoomSet,
    ctx: &Context,
    reason: &str,
) -> Result<(), Error> {
    let gen_ = crs.meta().generation;
    let prev = crs
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let already = prev
        .iter()
        .any(|c| c.type_ == "Ready" && c.reason == "InvalidSpec" && c.message == reason);
    let mut status = crs.status.clone().unwrap_or_default();
    status.observed_generation = gen_;
    status.conditions = vec![condition(
        "Ready",
        false,
        "InvalidSpec",
        reason,
        gen_,
        &prev,
    )];
    api.patch_status(
        &crs.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    if !already {
        ctx.event(crs, EventType::Warning, "InvalidSpec", reason.to_owned())
            .await;
    }
    Ok(())
}

async fn apply(crs: Arc<ChatRoomSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let plan = desired::plan(&crs).map_err(Error::Queues)?;
    let ns = crs.namespace().unwrap_or_else(|| "default".into());
    let name = crs.name_any();
    let gen_ = crs.meta().generation;
    let loc = QueueLocation::resolve(&crs, &ctx.defaults);

    // Queues first: workloads without their queues would only fail readiness.
    let (ready, repaired, queue_error) = match ctx.queues(&loc, &plan.naming).await {
        Ok(queues) => ensure_queues(&queues, &plan, ctx.queue_concurrency).await,
        Err(e) => (0, 0, Some(e.to_string())),
    };
    if repaired > 0 {
        ctx.event(
            &crs,
            EventType::Normal,
            "QueuesRepaired",
            format!("{repaired} queues had drifted attributes, set back"),
        )
        .await;
    }

    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    configmaps
        .patch(
            &plan.routing,
            &pp,
            &Patch::Apply(desired::routing_configmap(&crs, &plan)),
        )
        .await?;
    let producer = deployments
        .patch(
            &plan.producer,
            &pp,
            &Patch::Apply(desired::producer_deployment(&crs, &plan, &loc)),
        )
        .await?;
    services
        .patch(
            &plan.producer,
            &pp,
            &Patch::Apply(desired::service(
                &crs,
                &plan.producer,
                "producer",
                PRODUCER_PORT,
            )),
        )
        .await?;
    // Removed shards go first, and shards new to the spec wait until the removed ones' pods are
    // gone: two consumers polling one room would split its audience.
    let pruned = prune(&deployments, &services, &name, &plan).await?;
    if !pruned.is_empty() {
        ctx.event(
            &crs,
            EventType::Normal,
            "ShardsPruned",
            format!("removed {}", pruned.join(", ")),
        )
        .await;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let consumer_pods = pods
        .list(&ListParams::default().labels(&desired::consumer_selector(&name)))
        .await?
        .items;
    let lingering = lingering_pods(&consumer_pods, &plan);
    let existing: BTreeSet<String> = deployments
        .list(&ListParams::default().labels(&desired::consumer_selector(&name)))
        .await?
        .into_iter()
        .map(|d| d.name_any())
        .collect();
    let mut shard_status = Vec::with_capacity(plan.shards.len());
    for shard in &plan.shards {
        if lingering > 0 && !existing.contains(&shard.name) {
            shard_status.push(ShardStatus {
                name: shard.name.clone(),
                rooms: shard.rooms.to_string(),
                service: shard.name.clone(),
                ready_replicas: 0,
                backlog: None,
            });
            continue;
        }
        let d = deployments
            .patch(
                &shard.name,
                &pp,
                &Patch::Apply(desired::consumer_deployment(&crs, shard, &loc)),
            )
            .await?;
        services
            .patch(
                &shard.name,
                &pp,
                &Patch::Apply(desired::service(
                    &crs,
                    &shard.name,
                    "consumer",
                    CONSUMER_PORT,
                )),
            )
            .await?;
        shard_status.push(ShardStatus {
            name: shard.name.clone(),
            rooms: shard.rooms.to_string(),
            service: shard.name.clone(),
            ready_replicas: ready_replicas(&d),
            backlog: None,
        });
    }
    if queue_error.is_none()
        && plan.rooms.len() <= BACKLOG_ROOM_LIMIT
        && let Ok(queues) = ctx.queues(&loc, &plan.naming).await
    {
        fill_backlog(&queues, &plan, &mut shard_status, ctx.queue_concurrency).await;
    }

    let desired_queues = plan.rooms.len() as u32;
    let prev = crs
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let queues_ok = queue_error.is_none() && ready == desired_queues;
    let producer_ready = ready_replicas(&producer);
    let producer_ok = producer_ready >= crs.spec.producer.replicas;
    let shards_ready = shard_status
        .iter()
        .filter(|s| s.ready_replicas >= 1)
        .count();
    let consumers_ok = shards_ready == shard_status.len();
    let queues_cond = match &queue_error {
        None if queues_ok => condition(
            "QueuesReady",
            true,
            "QueuesEnsured",
            format!("{ready} of {desired_queues} queues ready"),
            gen_,
            &prev,
        ),
        None => condition(
            "QueuesReady",
            false,
            "QueuesPending",
            format!("{ready} of {desired_queues} queues ready"),
            gen_,
            &prev,
        ),
        Some(e) => condition(
            "QueuesReady",
            false,
            "QueueServiceUnavailable",
            format!("{ready} of {desired_queues} queues ready: {e}"),
            gen_,
            &prev,
        ),
    };
    let producer_cond = condition(
        "ProducerReady",
        producer_ok,
        if producer_ok {
            "Available"
        } else {
            "ReplicasNotReady"
        },
        format!(
            "{producer_ready} of {} replicas ready",
            crs.spec.producer.replicas
        ),
        gen_,
        &prev,
    );
    let consumers_cond = if lingering > 0 {
        condition(
            "ConsumersReady",
            false,
            "Resharding",
            format!(
                "waiting for {lingering} pods of removed shards to stop before starting new shards"
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
            format!("{shards_ready} of {} shards ready", shard_status.len()),
            gen_,
            &prev,
        )
    };
    let all = [&queues_cond, &producer_cond, &consumers_cond];
    let ready_cond = match all.iter().find(|c| c.status != "True") {
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
    let became_ready = queues_ok && !is_true(&prev, "QueuesReady");
    let status = ChatRoomSetStatus {
        observed_generation: gen_,
        conditions: vec![ready_cond, queues_cond, producer_cond, consumers_cond],
        rooms: Some(plan.rooms.to_string()),
        queues: QueueCounts {
            desired: desired_queues,
            ready,
        },
        shard_count: shard_status.len() as u32,
        shards: shard_status,
        producer: Some(ProducerStatus {
            service: plan.producer.clone(),
            ready_replicas: producer_ready,
        }),
        endpoints: Some(Endpoints {
            ingest: desired::ingest_template(&crs, &plan),
            subscribe: desired::subscribe_template(&crs),
        }),
    };
    let api: Api<ChatRoomSet> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    ctx.record_totals(&key(&crs), ready, plan.shards.len() as u32);
    if became_ready {
        ctx.event(
            &crs,
            EventType::Normal,
            "QueuesReady",
            format!("{ready} queues ready"),
        )
        .await;
    }
    match queue_error {
        Some(e) => {
            ctx.event(
                &crs,
                EventType::Warning,
                "QueueServiceUnavailable",
                e.clone(),
            )
            .await;
            Err(Error::Queues(e))
        }
        // Pods are not watched: look again soon while removed shards are stopping.
        None if lingering > 0 => Ok(Action::requeue(Duration::from_secs(2))),
        None => Ok(Action::requeue(ctx.resync)),
    }
}

fn ready_replicas(d: &Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// Ensures every room's queue, a bounded number at a time; returns (ready, repaired, first error).
async fn ensure_queues(
    queues: &SharedQueues,
    plan: &Plan,
    concurrency: usize,
) -> (u32, u32, Option<String>) {
    let results: Vec<_> = futures::stream::iter(plan.rooms.iter())
        .map(|room| {
            let (queues, attrs) = (queues.clone(), plan.attrs.clone());
            async move { queues.ensure_queue(room, &attrs).await }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut ready = 0;
    let mut repaired = 0;
    let mut first_error = None;
    for r in results {
        match r {
            Ok(Ensured::Ready) => ready += 1,
            Ok(Ensured::Repaired(_)) => {
                ready += 1;
                repaired += 1;
            }
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    (ready, repaired, first_error)
}

async fn fill_backlog(
    queues: &SharedQueues,
    plan: &Plan,
    shards: &mut [ShardStatus],
    concurrency: usize,
) {
    let depths: HashMap<u32, u64> = futures::stream::iter(plan.rooms.iter())
        .map(|room| {
            let queues = queues.clone();
            async move {
                (
                    room,
                    queues
                        .depth(room)
                        .await
                        .ok()
                        .map(|d| d.visible + d.in_flight),
                )
            }
        })
        .buffer_unordered(concurrency.max(1))
        .filter_map(|(room, d)| async move { d.map(|d| (room, d)) })
        .collect()
        .await;
    for (status, shard) in shards.iter_mut().zip(&plan.shards) {
        let known: Vec<u64> = shard
            .rooms
            .iter()
            .filter_map(|r| depths.get(&r).copied())
            .collect();
        if known.len() == shard.rooms.len() {
            status.backlog = Some(known.iter().sum());
        }
    }
}

/// Consumer pods of shards that left the spec and have not stopped yet.
pub fn lingering_pods(pods: &[Pod], plan: &Plan) -> usize {
    pods.iter()
        .filter(|p| {
            let workload = p.labels().get("chatflow.dev/workload").map(String::as_str);
            !plan
                .shards
                .iter()
                .any(|s| Some(s.name.as_str()) == workload)
        })
        .count()
}

/// Deletes consumer shards (Deployment and Service) this set owns but no longer wants.
async fn prune(
    deployments: &Api<Deployment>,
    services: &Api<Service>,
    name: &str,
    plan: &Plan,
) -> Result<Vec<String>, Error> {
    let wanted: BTreeSet<&str> = plan.shards.iter().map(|s| s.name.as_str()).collect();
    let lp = ListParams::default().labels(&desired::consumer_selector(name));
    let mut pruned = BTreeSet::new();
    for d in deployments.list(&lp).await? {
        let n = d.name_any();
        if !wanted.contains(n.as_str()) {
            deployments.delete(&n, &DeleteParams::background()).await?;
            pruned.insert(n);
        }
    }
    for s in services.list(&lp).await? {
        let n = s.name_any();
        if !wanted.contains(n.as_str()) {
            services.delete(&n, &DeleteParams::background()).await?;
            pruned.insert(n);
        }
    }
    Ok(pruned.into_iter().collect())
}

async fn cleanup(crs: Arc<ChatRoomSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.record_totals(&key(&crs), 0, 0);
    if crs.spec.queues.deletion_policy == DeletionPolicy::Retain {
        ctx.event(
            &crs,
            EventType::Normal,
            "QueuesRetained",
            "deletionPolicy Retain: queues kept".into(),
        )
        .await;
        return Ok(Action::await_change());
    }
    let plan = match desired::plan(&crs) {
        Ok(p) => p,
        Err(reason) => {
            // Without a valid range there is no safe list of queues to delete.
            ctx.event(
                &crs,
                EventType::Warning,
                "QueuesNotDeleted",
                format!("spec is invalid ({reason}); queues left in place"),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let loc = QueueLocation::resolve(&crs, &ctx.defaults);
    let queues = ctx.queues(&loc, &plan.naming).await?;
    let failures: Vec<String> = futures::stream::iter(plan.rooms.iter())
        .map(|room| {
            let queues = queues.clone();
            async move {
                queues
                    .delete_queue(room)
                    .await
                    .err()
                    .map(|e| format!("room {room}: {e}"))
            }
        })
        .buffer_unordered(ctx.queue_concurrency.max(1))
        .filter_map(|e| async move { e })
        .collect()
        .await;
    if let Some(first) = failures.first() {
        return Err(Error::Queues(format!(
            "{} queues not deleted, first: {first}",
            failures.len()
        )));
    }
    ctx.event(
        &crs,
        EventType::Normal,
        "QueuesDeleted",
        format!("deleted {} queues", plan.rooms.len()),
    )
    .await;
    Ok(Action::await_change())
}
