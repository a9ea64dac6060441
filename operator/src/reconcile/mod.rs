//! The ChatRoomSet reconciler: queues first, then owned objects by server-side apply, pruning
//! of shards that left the spec, and a status that says what is ready.
//!
//! Split by concern: [`queues`] (SQS), [`workloads`] (Kubernetes objects),
//! [`crate::status`] (what to report, computed without I/O), and the [`Context`] they share.

pub mod budgets;
mod context;
pub mod queues;
mod rates;
mod scaling;
pub mod workloads;

pub use context::Context;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};

use chatflow::queue::SharedQueues;

use crate::crd::{ChatRoomSet, DeletionPolicy, ShardStatus};
use crate::desired::{self, FIELD_MANAGER, QueueLocation};
use crate::status::{self, Observed};
pub use workloads::{Stores, lingering_shards};

/// Finalizer that guards queue deletion.
pub const FINALIZER: &str = "chatflow.dev/queues";
/// Backlog is read per queue; above this many queues it is skipped to keep reconciles cheap.
const BACKLOG_QUEUE_LIMIT: usize = 256;

/// How often a set with spec.consumer.autoscaling is measured.
pub(super) const AUTOSCALE_PERIOD: Duration = Duration::from_secs(15);

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
    /// The watch caches of owned objects are not running (no controller is).
    #[error("owned-object caches are not running")]
    NoCaches,
}

impl Error {
    /// Every [`Error::reason`].
    pub const REASONS: [&'static str; 4] = ["kubernetes", "queues", "finalizer", "caches"];

    /// Short reason for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes",
            Error::Queues(_) => "queues",
            Error::Finalizer(_) => "finalizer",
            Error::NoCaches => "caches",
        }
    }
}

pub(super) fn key(crs: &ChatRoomSet) -> String {
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

/// Backs off exponentially per object: 0.5 s, 1 s, 2 s ... up to 5 minutes. Per object, unlike
/// the controller's default, so one set's outage does not slow the others.
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
        && let Err(reason) = desired::plan(&crs).and_then(|_| {
            match desired::endpoint_refusal(&crs, &ctx.defaults, &ctx.allowed_endpoints)
                .or_else(|| ctx.ingress_policy.refusal(&crs))
            {
                Some(refusal) => Err(refusal),
                None => Ok(()),
            }
        })
    {
        write_status(&api, &crs, &status::invalid(&crs, &reason)).await?;
        if !status::already_invalid(&crs, &reason) {
            ctx.event(&crs, EventType::Warning, "InvalidSpec", reason)
                .await;
        }
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

/// Writes the status by server-side apply, as the owned objects are written.
async fn write_status(
    api: &Api<ChatRoomSet>,
    crs: &ChatRoomSet,
    status: &crate::crd::ChatRoomSetStatus,
) -> Result<(), Error> {
    api.patch_status(
        &crs.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(status::apply_body(crs, status)),
    )
    .await?;
    Ok(())
}

async fn apply(crs: Arc<ChatRoomSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let plan = desired::plan(&crs).map_err(Error::Queues)?;
    let set = key(&crs);
    // By uid: a set deleted (with its queues) and created again under the same name is new.
    let queue_key = format!("{set}/{}", crs.uid().unwrap_or_default());
    let loc = QueueLocation::resolve(&crs, &ctx.defaults);
    let stores = ctx.stores()?;

    // Queues first: workloads without their queues would only fail readiness.
    let client = ctx.queues.client(&loc, &plan.naming).await;
    let ensured = ensure_queues(&crs, &ctx, &plan, &loc, &queue_key, &client).await;

    let conflict = conflict_note(&plan, &ensured.conflicts);
    if let Some(note) = &conflict {
        ctx.event(&crs, EventType::Warning, "QueueConflict", note.clone())
            .await;
    }
    // A producer of a set whose queues are partly another set's would publish into them.
    let applied = match conflict {
        None => {
            let budget_api = ctx.budget_api().await?;
            workloads::apply(&ctx.client, &stores, budget_api, &crs, &plan, &loc).await?
        }
        Some(_) => workloads::Applied::withheld(&plan),
    };
    if !applied.pruned.is_empty() {
        let note = format!("removed {}", applied.pruned.join(", "));
        ctx.event(&crs, EventType::Normal, "ShardsPruned", note)
            .await;
    }
    let mut shards = applied.shards;
    let mut backlog = queues::Backlog::default();
    if ensured.error.is_none()
        && plan.queues.len() <= BACKLOG_QUEUE_LIMIT
        && let Ok(q) = &client
    {
        backlog = queues::fill_backlog(q, &plan, &mut shards, ctx.queue_concurrency).await;
    }
    if backlog.missing {
        // A queue went missing behind the operator's back: the next reconcile creates it.
        ctx.queues.forget(&queue_key);
    }
    ctx.metrics.record_depths(&set, &backlog.depths);
    record_replicas(&ctx, &set, &plan, applied.producer_ready, &shards);
    // Decided only on a full measurement: an unread queue is not an idle one.
    let measured =
        ensured.error.is_none() && !backlog.missing && shards.iter().all(|s| s.backlog.is_some());
    let scaled =
        scaling::measure_and_decide(&crs, &ctx, &plan, measured, &backlog, &mut shards).await;
    let producers = scaling::scale_producers(&crs, &ctx, &plan).await;

    let observed = Observed {
        queues_ready: ensured.ready,
        queue_error: ensured.error.clone(),
        queue_conflict: conflict_note(&plan, &ensured.conflicts),
        producer_ready: applied.producer_ready,
        producer_replicas: applied.producer_replicas,
        shards,
        lingering_shards: applied.lingering_shards,
        autoscaling: scaled.as_ref().map(|d| d.status.clone()),
        producer_autoscaling: producers.as_ref().map(|d| d.status.clone()),
    };
    let status = status::compute(&crs, &plan, &observed);
    let api: Api<ChatRoomSet> =
        Api::namespaced(ctx.client.clone(), &crs.namespace().unwrap_or_default());
    write_status(&api, &crs, &status).await?;
    ctx.record_totals(&set, ensured.ready, plan.shards.len() as u32);
    announce_queues_ready(&crs, &ctx, &status, ensured.ready).await;
    let settled = ctx.queues.cached(&queue_key, &plan, &loc).is_some();
    let resync = scaling::resync_for(&ctx, scaled.is_some() || producers.is_some());
    let action = next(
        &crs,
        &ctx,
        resync,
        ensured,
        applied.lingering_shards,
        settled,
    )
    .await?;
    Ok(scaling::after_scaling(
        action,
        scaled.as_ref(),
        producers.as_ref(),
        resync,
    ))
}

/// An Event when the set's queues have just become ready.
async fn announce_queues_ready(
    crs: &ChatRoomSet,
    ctx: &Context,
    status: &crate::crd::ChatRoomSetStatus,
    ready: u32,
) {
    let was_ready = crs
        .status
        .as_ref()
        .is_some_and(|s| crate::conditions::is_true(&s.conditions, "QueuesReady"));
    if crate::conditions::is_true(&status.conditions, "QueuesReady") && !was_ready {
        let note = format!("{ready} queues ready");
        ctx.event(crs, EventType::Normal, "QueuesReady", note).await;
    }
}

/// The set's queues as ensured now, or as a recent reconcile left them (queue calls cost a
/// round trip per room); drifted attributes set back are announced.
async fn ensure_queues(
    crs: &ChatRoomSet,
    ctx: &Context,
    plan: &desired::Plan,
    loc: &QueueLocation,
    queue_key: &str,
    client: &Result<SharedQueues, Error>,
) -> queues::Ensure {
    let ensured = match (client, ctx.queues.cached(queue_key, plan, loc)) {
        (Ok(_), Some(cached)) => cached,
        (Ok(q), None) => {
            let owner = desired::queue_owner(crs);
            let out = queues::ensure(q, plan, &owner, ctx.queue_concurrency).await;
            ctx.queues.record(queue_key, plan, loc, &out);
            out
        }
        (Err(e), _) => queues::Ensure {
            error: Some(e.to_string()),
            ..Default::default()
        },
    };
    if ensured.repaired > 0 {
        let note = format!(
            "{} queues had drifted attributes, set back",
            ensured.repaired
        );
        ctx.event(crs, EventType::Normal, "QueuesRepaired", note)
            .await;
    }
    ensured
}

/// Ready replicas per Deployment of the set, as metrics.
fn record_replicas(
    ctx: &Context,
    set: &str,
    plan: &desired::Plan,
    producer_ready: i32,
    shards: &[ShardStatus],
) {
    let replicas: Vec<(String, &'static str, i32)> =
        std::iter::once((plan.producer.clone(), "producer", producer_ready))
            .chain(
                shards
                    .iter()
                    .map(|s| (s.name.clone(), "consumer", s.ready_replicas)),
            )
            .collect();
    ctx.metrics.record_replicas(set, &replicas);
}

/// When to look again: at once (with backoff) after a queue error, soon while the set is
/// settling, otherwise at the resync period.
async fn next(
    crs: &ChatRoomSet,
    ctx: &Context,
    resync: Duration,
    ensured: queues::Ensure,
    lingering_shards: usize,
    settled: bool,
) -> Result<Action, Error> {
    match ensured.error {
        Some(e) => {
            ctx.event(
                crs,
                EventType::Warning,
                "QueueServiceUnavailable",
                e.clone(),
            )
            .await;
            Err(Error::Queues(e))
        }
        // Another set's queues change only when a set goes away, which is not watched here.
        None if !ensured.conflicts.is_empty() => Ok(Action::requeue(resync)),
        // Pods are not watched by the controller: look again soon while removed shards stop.
        None if lingering_shards > 0 => Ok(Action::requeue(Duration::from_secs(2))),
        None if !settled => Ok(Action::requeue(Duration::from_secs(2))),
        None => Ok(Action::requeue(resync)),
    }
}

/// One sentence naming the queues another set owns, if any.
fn conflict_note(plan: &desired::Plan, conflicts: &[(u32, String)]) -> Option<String> {
    let (room, owner) = conflicts.first()?;
    let queue = plan
        .naming
        .queue_name(*room)
        .unwrap_or_else(|_| format!("of room {room}"));
    if owner == queues::UNTAGGED {
        return Some(format!(
            "{} of {} queues exist without an owner tag (first: {queue}); set spec.queues.adoptUntagged: true to take them as this set's, or choose another spec.queues.prefix",
            conflicts.len(),
            plan.queues.len()
        ));
    }
    Some(format!(
        "{} of {} queues belong to another ChatRoomSet (first: {queue}, owned by {owner}); choose another spec.queues.prefix",
        conflicts.len(),
        plan.queues.len()
    ))
}

async fn cleanup(crs: Arc<ChatRoomSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let set = key(&crs);
    ctx.record_totals(&set, 0, 0);
    ctx.metrics.record_depths(&set, &Default::default());
    ctx.metrics.record_replicas(&set, &[]);
    ctx.queues
        .forget(&format!("{set}/{}", crs.uid().unwrap_or_default()));
    ctx.rates.forget(&set);
    if crs.spec.queues.deletion_policy == DeletionPolicy::Retain {
        if let Ok(plan) = desired::plan(&crs) {
            let loc = QueueLocation::resolve(&crs, &ctx.defaults);
            ctx.queues.drop_client(&loc, &plan.naming).await;
        }
        let note = "deletionPolicy Retain: queues kept".to_owned();
        ctx.event(&crs, EventType::Normal, "QueuesRetained", note)
            .await;
        return Ok(Action::await_change());
    }
    let plan = match desired::plan(&crs) {
        Ok(p) => p,
        Err(reason) => {
            // Without a valid range there is no safe list of queues to delete.
            let note = format!("spec is invalid ({reason}); queues left in place");
            ctx.event(&crs, EventType::Warning, "QueuesNotDeleted", note)
                .await;
            return Ok(Action::await_change());
        }
    };
    if let Some(refusal) = desired::endpoint_refusal(&crs, &ctx.defaults, &ctx.allowed_endpoints) {
        let note = format!("{refusal}; queues left in place");
        ctx.event(&crs, EventType::Warning, "QueuesNotDeleted", note)
            .await;
        return Ok(Action::await_change());
    }
    let loc = QueueLocation::resolve(&crs, &ctx.defaults);
    let queues = ctx.queues.client(&loc, &plan.naming).await?;
    let owner = desired::queue_owner(&crs);
    let done = queues::delete_all(&queues, plan.rooms, &owner, ctx.queue_concurrency).await;
    if let Some(first) = done.failures.first() {
        return Err(Error::Queues(format!(
            "{} queues not deleted, first: {first}",
            done.failures.len()
        )));
    }
    ctx.queues.drop_client(&loc, &plan.naming).await;
    let note = format!("deleted {} queues", done.deleted);
    ctx.event(&crs, EventType::Normal, "QueuesDeleted", note)
        .await;
    if let Some(first) = done.kept.first() {
        let note = format!(
            "{} queues in the range belong to another set and were kept, first: {first}",
            done.kept.len()
        );
        ctx.event(&crs, EventType::Normal, "QueuesKept", note).await;
    }
    Ok(Action::await_change())
}
