//! The shard autoscaler: from each queue's load (its backlog and the messages per second its
//! rooms broadcast, each against the spec's target for one shard), how many shards a set wants
//! and which rooms each holds. A shard past its target re-places the set at once (a room hotter
//! than a shard's headroom gets a shard of its own), then not again for an interval (new shards
//! hold their rooms' backlog for their subscribers before they drain it); fewer shards are taken
//! only after the load has fitted them for a cooldown. Every change is a reshard, which loses
//! nothing for resuming subscribers.

pub mod pack;
pub mod producers;

use std::collections::HashSet;

use chatflow::rooms::RoomRange;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{AutoscalingStatus, ShardAutoscaling};
use pack::Unit;

/// The shard count a set's plan uses: the autoscaler's last decision within the bounds, or the
/// minimum before its first.
pub fn shards(spec: &ShardAutoscaling, status: Option<&AutoscalingStatus>) -> u32 {
    let lo = spec.min_shards.max(1);
    let hi = spec.max_shards.max(lo);
    status.map_or(lo, |s| s.shards.clamp(lo, hi))
}

/// The shards of a set's plan: the autoscaler's last assignment when it still tiles the set's
/// queues within the bounds, else the queues spread evenly over `shards`.
pub fn placement(
    spec: &ShardAutoscaling,
    status: Option<&AutoscalingStatus>,
    queues: &[RoomRange],
) -> Vec<RoomRange> {
    let units: Vec<Unit> = queues
        .iter()
        .map(|&rooms| Unit { rooms, share: 0.0 })
        .collect();
    let lo = spec.min_shards.max(1) as usize;
    let hi = spec.max_shards.max(spec.min_shards.max(1)) as usize;
    let assigned: Option<Vec<RoomRange>> = status.and_then(|s| {
        s.assignment
            .iter()
            .map(|r| r.parse().ok())
            .collect::<Option<Vec<RoomRange>>>()
    });
    match assigned {
        Some(a) if (lo..=hi).contains(&a.len()) && tiles(&a, queues) => a,
        _ => pack::even(&units, shards(spec, status)),
    }
}

/// Whether `shards` cover `queues` in order without a gap, each queue whole in one shard.
fn tiles(shards: &[RoomRange], queues: &[RoomRange]) -> bool {
    let (Some(first), Some(last)) = (queues.first(), queues.last()) else {
        return false;
    };
    let starts: HashSet<_> = queues.iter().map(|q| q.start()).collect();
    let ends: HashSet<_> = queues.iter().map(|q| q.end()).collect();
    shards.first().map(|s| s.start()) == Some(first.start())
        && shards.last().map(|s| s.end()) == Some(last.end())
        && shards
            .windows(2)
            .all(|w| w[0].end().checked_add(1) == Some(w[1].start()))
        && shards
            .iter()
            .all(|s| starts.contains(&s.start()) && ends.contains(&s.end()))
}

/// Why `spec.consumer.autoscaling` cannot be served, if it cannot.
pub fn check(spec: &ShardAutoscaling) -> Result<(), String> {
    if spec.min_shards == 0 {
        return Err("spec.consumer.autoscaling.minShards must be at least 1".into());
    }
    if spec.max_shards < spec.min_shards {
        return Err(format!(
            "spec.consumer.autoscaling.maxShards ({}) is below minShards ({})",
            spec.max_shards, spec.min_shards
        ));
    }
    Ok(())
}

/// What one queue carried at a measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueLoad {
    /// The queue's rooms: one room, or a bucket's.
    pub rooms: RoomRange,
    /// Messages waiting or in flight.
    pub backlog: u64,
    /// Chat messages per second its rooms broadcast, when measured.
    pub rate: Option<f64>,
}

/// A decision: the new status, and whether the shards changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What the status says now.
    pub status: AutoscalingStatus,
    /// The shard count before, when the shards changed.
    pub changed_from: Option<u32>,
    /// How long until the decision may change by itself (a cooldown or interval running).
    pub recheck_in: Option<std::time::Duration>,
}

/// Decides from `loads` (every queue of the set, in room order) for the shards `current` holds
/// now, at `now`. Where a rate is unknown it counts as none for going up, and forbids going down.
pub fn decide(
    spec: &ShardAutoscaling,
    previous: Option<&AutoscalingStatus>,
    current: &[RoomRange],
    loads: &[QueueLoad],
    now: Timestamp,
) -> Decision {
    let targets = Targets::of(spec);
    let units: Vec<Unit> = loads
        .iter()
        .map(|l| Unit {
            rooms: l.rooms,
            share: targets.share(l.backlog, l.rate.unwrap_or(0.0)),
        })
        .collect();
    let complete = loads.iter().all(|l| l.rate.is_some());
    let lo = spec.min_shards.max(1);
    let hi = spec.max_shards.max(lo);
    let wanted = pack::pack(&units, lo, hi);
    let shard_loads = pack::loads(&units, current);
    let (hottest, hottest_load) = shard_loads
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, 0.0));
    let measured = targets.describe(loads, current.get(hottest).copied(), hottest_load);
    let since = |t: Timestamp| now.duration_since(t);
    let turn = Turn {
        previous,
        current,
        wanted: &wanted,
        now,
    };
    let (keep, change) = (|r, l, t| turn.keep(r, l, t), |r| turn.change(r));
    if hottest_load > 1.0 && wanted != current {
        return turn.place(spec, measured);
    }
    if wanted.len() < current.len() && hottest_load <= 1.0 {
        if !complete {
            return keep(
                format!(
                    "{measured}; a shard's rate is not measured yet, so no shard is taken away"
                ),
                None,
                None,
            );
        }
        let cooldown = SignedDuration::from_secs(spec.scale_down_cooldown_seconds.into());
        let low = previous
            .and_then(|s| parse(s.low_since.as_deref()))
            .unwrap_or(now);
        let reason = format!("{measured}; the load fits {} shards", wanted.len());
        if since(low) < cooldown {
            let left = cooldown - since(low);
            return keep(
                format!("{reason}, fewer in {}s unless it grows", left.as_secs()),
                Some(low),
                Some(left),
            );
        }
        return change(format!("{reason}, for {}s", cooldown.as_secs()));
    }
    let why = if hottest_load > 1.0 {
        "; no placement within maxShards does better"
    } else {
        ", within the target"
    };
    keep(format!("{measured}{why}"), None, None)
}

/// The two ways a decision goes: keep the shards, or change them to those wanted.
struct Turn<'a> {
    previous: Option<&'a AutoscalingStatus>,
    current: &'a [RoomRange],
    wanted: &'a [RoomRange],
    now: Timestamp,
}

impl Turn<'_> {
    /// A shard past its target: the placement the loads call for, once the interval since the
    /// last change and the stabilization have passed.
    fn place(&self, spec: &ShardAutoscaling, measured: String) -> Decision {
        // Past the target since the first measurement that saw it, kept while it holds: a shard
        // catching up after a stall broadcasts a burst that one measurement mistakes for load.
        let high = self
            .previous
            .and_then(|s| parse(s.high_since.as_deref()))
            .unwrap_or(self.now);
        let stabilization = SignedDuration::from_secs(spec.scale_up_stabilization_seconds.into());
        let interval = SignedDuration::from_secs(spec.scale_up_interval_seconds.into());
        let since = |t: Timestamp| self.now.duration_since(t);
        let last_scale = self
            .previous
            .and_then(|s| parse(s.last_scale_time.as_deref()));
        let waited = last_scale.map_or(interval, since);
        let mut held = if waited < interval {
            self.keep(
                format!(
                    "{measured}; the last change was {}s ago, again after {}s",
                    waited.as_secs(),
                    interval.as_secs()
                ),
                None,
                Some(interval - waited),
            )
        } else if since(high) < stabilization {
            self.keep(
                format!(
                    "{measured}; past the target for {}s, placed anew after {}s unless it falls",
                    since(high).as_secs(),
                    stabilization.as_secs()
                ),
                None,
                Some(stabilization - since(high)),
            )
        } else {
            return self.change(measured);
        };
        held.status.high_since = Some(high.to_string());
        held
    }

    fn keep(
        &self,
        reason: String,
        low_since: Option<Timestamp>,
        recheck: Option<SignedDuration>,
    ) -> Decision {
        Decision {
            status: AutoscalingStatus {
                shards: self.current.len() as u32,
                assignment: names(self.current),
                reason,
                last_scale_time: self.previous.and_then(|s| s.last_scale_time.clone()),
                low_since: low_since.map(|t| t.to_string()),
                high_since: None,
            },
            changed_from: None,
            recheck_in: recheck.and_then(|d| d.try_into().ok()),
        }
    }

    fn change(&self, reason: String) -> Decision {
        let wanted = names(self.wanted);
        Decision {
            status: AutoscalingStatus {
                shards: wanted.len() as u32,
                reason: format!("{reason}: {} shards {}", wanted.len(), wanted.join(", ")),
                assignment: wanted,
                last_scale_time: Some(self.now.to_string()),
                low_since: None,
                high_since: None,
            },
            changed_from: Some(self.current.len() as u32),
            recheck_in: None,
        }
    }
}

/// A shard's targets.
struct Targets {
    backlog: u64,
    rate: Option<u64>,
}

impl Targets {
    fn of(spec: &ShardAutoscaling) -> Self {
        Targets {
            backlog: spec.target_backlog_per_shard.max(1),
            rate: spec.target_messages_per_second_per_shard.map(|r| r.max(1)),
        }
    }

    /// A load's share of one shard: the larger of its backlog's and its rate's.
    fn share(&self, backlog: u64, rate: f64) -> f64 {
        let by_rate = self.rate.map_or(0.0, |t| rate / t as f64);
        (backlog as f64 / self.backlog as f64).max(by_rate)
    }

    /// The measurement behind a decision: the busiest shard, its load against the targets, and
    /// the hottest room.
    fn describe(&self, loads: &[QueueLoad], shard: Option<RoomRange>, load: f64) -> String {
        let Some(shard) = shard else {
            return "no shard measured".into();
        };
        let within: Vec<&QueueLoad> = loads
            .iter()
            .filter(|l| shard.contains(l.rooms.start()))
            .collect();
        let backlog: u64 = within.iter().map(|l| l.backlog).sum();
        let mut text = format!(
            "busiest shard {shard} at {:.0}% of its target: backlog {backlog} of {}",
            load * 100.0,
            self.backlog
        );
        if let Some(target) = self.rate {
            let rate: f64 = within.iter().filter_map(|l| l.rate).sum();
            text.push_str(&format!(", {rate:.0} of {target} msg/s"));
        }
        let hot = loads.iter().max_by(|a, b| {
            self.share(a.backlog, a.rate.unwrap_or(0.0))
                .total_cmp(&self.share(b.backlog, b.rate.unwrap_or(0.0)))
        });
        if let Some(hot) = hot {
            let share = self.share(hot.backlog, hot.rate.unwrap_or(0.0));
            if share > 0.0 {
                let rooms = match hot.rooms.len() {
                    1 => format!("room {}", hot.rooms.start()),
                    _ => format!("rooms {}", hot.rooms),
                };
                text.push_str(&format!("; hottest {rooms} at {:.0}%", share * 100.0));
            }
        }
        text
    }
}

fn names(ranges: &[RoomRange]) -> Vec<String> {
    ranges.iter().map(ToString::to_string).collect()
}

fn parse(t: Option<&str>) -> Option<Timestamp> {
    t?.parse().ok()
}

#[cfg(test)]
mod tests;
