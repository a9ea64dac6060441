//! The autoscalers' part of a reconcile: measuring a set's queues and pods, deciding, announcing
//! each change as an Event and a metric, and when to look again.

use std::collections::HashMap;
use std::time::Duration;

use chatflow::rooms::{RoomId, RoomRange};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::{AUTOSCALE_PERIOD, Context, key, queues};
use crate::crd::{ChatRoomSet, ShardStatus};
use crate::desired;

/// How often a set is looked at again: an autoscaled set as often as an HPA measures its target.
pub(super) fn resync_for(ctx: &Context, autoscaled: bool) -> Duration {
    if autoscaled {
        AUTOSCALE_PERIOD.min(ctx.resync)
    } else {
        ctx.resync
    }
}

/// The next reconcile: soon after an autoscaler changed its decision (which the next plan
/// applies, reading it from the status), or when a cooldown or interval ends; else `action`.
pub(super) fn after_scaling(
    action: Action,
    shards: Option<&crate::autoscale::Decision>,
    producers: Option<&crate::autoscale::producers::ProducerDecision>,
    resync: Duration,
) -> Action {
    let changed = shards.is_some_and(|d| d.changed_from.is_some())
        || producers.is_some_and(|d| d.changed_from.is_some());
    let recheck = [
        shards.and_then(|d| d.recheck_in),
        producers.and_then(|d| d.recheck_in),
    ]
    .into_iter()
    .flatten()
    .min();
    match recheck {
        _ if changed => Action::requeue(Duration::from_secs(1)),
        Some(t) if t < resync => Action::requeue(t.max(Duration::from_secs(1))),
        _ => action,
    }
}

/// For a set with spec.producer.autoscaling: the producer pods' load, and the autoscaler's
/// decision from it; announced as an Event and counted when the pod count changes.
pub(super) async fn scale_producers(
    crs: &ChatRoomSet,
    ctx: &Context,
    plan: &desired::Plan,
) -> Option<crate::autoscale::producers::ProducerDecision> {
    let spec = crs.spec.producer.autoscaling.as_ref()?;
    let load = ctx
        .rates
        .measure_producers(&ctx.client, crs, plan, ctx.queue_concurrency)
        .await;
    let previous = crs
        .status
        .as_ref()
        .and_then(|s| s.producer.as_ref())
        .and_then(|p| p.autoscaling.as_ref());
    let d = crate::autoscale::producers::decide(
        spec,
        previous,
        plan.producer_replicas,
        &load,
        k8s_openapi::jiff::Timestamp::now(),
    );
    let set = key(crs);
    ctx.metrics
        .producers_wanted
        .get_or_create(&crate::metrics::SetLabel { set: set.clone() })
        .set(i64::from(d.status.replicas));
    if let Some(from) = d.changed_from {
        let to = d.status.replicas;
        let direction = if to > from { "up" } else { "down" };
        ctx.metrics
            .producer_scalings
            .get_or_create(&crate::metrics::ScalingLabels {
                set: set.clone(),
                direction,
            })
            .inc();
        let note = format!("{from} -> {to} producer pods: {}", d.status.reason);
        tracing::info!(set, %note, "producer autoscaling");
        let action = format!("Scale{from}To{to}");
        ctx.event_acting(crs, EventType::Normal, "ProducersScaled", &action, note)
            .await;
    }
    Some(d)
}

/// For a set with spec.consumer.autoscaling: its rooms' rates read from the shards (each
/// shard's also into `shards`), and the autoscaler's decision from them and the backlog when
/// `measured`, else its last one.
pub(super) async fn measure_and_decide(
    crs: &ChatRoomSet,
    ctx: &Context,
    plan: &desired::Plan,
    measured: bool,
    backlog: &queues::Backlog,
    shards: &mut [ShardStatus],
) -> Option<crate::autoscale::Decision> {
    crs.spec.consumer.autoscaling.as_ref()?;
    if !measured {
        return last_decision(crs);
    }
    let rates = ctx
        .rates
        .measure(&ctx.client, crs, plan, ctx.queue_concurrency)
        .await;
    fill_rates(plan, shards, &rates);
    let loads = queue_loads(plan, backlog, &rates);
    autoscale(crs, ctx, &key(crs), plan, &loads).await
}

/// The autoscaler's last decision, kept while the set cannot be measured: an unread queue is
/// not an idle one.
fn last_decision(crs: &ChatRoomSet) -> Option<crate::autoscale::Decision> {
    let status = crs.status.as_ref()?.autoscaling.clone()?;
    Some(crate::autoscale::Decision {
        status,
        changed_from: None,
        recheck_in: None,
    })
}

/// Each queue's backlog and its rooms' rate, in room order.
fn queue_loads(
    plan: &desired::Plan,
    backlog: &queues::Backlog,
    rates: &HashMap<RoomId, Option<f64>>,
) -> Vec<crate::autoscale::QueueLoad> {
    desired::queue_ranges(&plan.naming, plan.rooms)
        .into_iter()
        .map(|rooms| crate::autoscale::QueueLoad {
            rooms,
            backlog: backlog
                .depths
                .get(&rooms.start())
                .map_or(0, |d| d.visible + d.in_flight),
            rate: rooms.iter().map(|r| rates.get(&r).copied().flatten()).sum(),
        })
        .collect()
}

/// Each shard's rate in its status, where every room of it was measured.
fn fill_rates(
    plan: &desired::Plan,
    shards: &mut [ShardStatus],
    rates: &HashMap<RoomId, Option<f64>>,
) {
    for (status, shard) in shards.iter_mut().zip(&plan.shards) {
        let rate: Option<f64> = shard
            .rooms
            .iter()
            .map(|r| rates.get(&r).copied().flatten())
            .sum();
        status.messages_per_second = rate.map(|r| r.round() as u64);
    }
}

/// The shard autoscaler's decision for a set with spec.consumer.autoscaling, from its queues'
/// `loads`; announced as an Event and counted when the shards change.
async fn autoscale(
    crs: &ChatRoomSet,
    ctx: &Context,
    set: &str,
    plan: &desired::Plan,
    loads: &[crate::autoscale::QueueLoad],
) -> Option<crate::autoscale::Decision> {
    let spec = crs.spec.consumer.autoscaling.as_ref()?;
    let current: Vec<RoomRange> = plan.shards.iter().map(|s| s.rooms).collect();
    let previous = crs.status.as_ref().and_then(|s| s.autoscaling.as_ref());
    let d = crate::autoscale::decide(
        spec,
        previous,
        &current,
        loads,
        k8s_openapi::jiff::Timestamp::now(),
    );
    let labels = crate::metrics::SetLabel {
        set: set.to_owned(),
    };
    ctx.metrics
        .shards_wanted
        .get_or_create(&labels)
        .set(i64::from(d.status.shards));
    if let Some(from) = d.changed_from {
        let direction = match d.status.shards.cmp(&from) {
            std::cmp::Ordering::Greater => "up",
            std::cmp::Ordering::Less => "down",
            std::cmp::Ordering::Equal => "moved",
        };
        ctx.metrics
            .scalings
            .get_or_create(&crate::metrics::ScalingLabels {
                set: set.to_owned(),
                direction,
            })
            .inc();
        let note = format!("{from} -> {} shards: {}", d.status.shards, d.status.reason);
        tracing::info!(set, %note, "shard autoscaling");
        // The assignment's hash in the action: the recorder folds an Event into an earlier one
        // with the same action, keeping the earlier note.
        let action = format!(
            "Scale{from}To{}-{:08x}",
            d.status.shards,
            fnv(&d.status.assignment.join(","))
        );
        ctx.event_acting(crs, EventType::Normal, "ShardsScaled", &action, note)
            .await;
    }
    Some(d)
}

/// FNV-1a of `text`, 32 bits: a short stable tag.
fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}
