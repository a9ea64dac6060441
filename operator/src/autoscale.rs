//! The shard autoscaler: from the backlog of each shard's queues, how many shards a set wants.
//! Up when a shard's backlog passes the target, at once to what the whole backlog needs, then
//! not again for an interval (new shards hold their rooms' backlog for their subscribers before
//! they drain it); down when the backlog has fitted fewer shards for a cooldown. Every change is
//! a reshard, which loses nothing for resuming subscribers.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{AutoscalingStatus, ShardAutoscaling};

/// The shard count a set's plan uses: the autoscaler's last decision within the bounds, or the
/// minimum before its first.
pub fn shards(spec: &ShardAutoscaling, status: Option<&AutoscalingStatus>) -> u32 {
    let lo = spec.min_shards.max(1);
    let hi = spec.max_shards.max(lo);
    status.map_or(lo, |s| s.shards.clamp(lo, hi))
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

/// A decision: the new status, and whether the shard count changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What the status says now.
    pub status: AutoscalingStatus,
    /// The shard count before, when it changed.
    pub changed_from: Option<u32>,
    /// How long until the decision may change by itself (a cooldown or interval running).
    pub recheck_in: Option<std::time::Duration>,
}

/// Decides from `backlogs` (one per current shard; None where unknown) at `now`.
pub fn decide(
    spec: &ShardAutoscaling,
    previous: Option<&AutoscalingStatus>,
    backlogs: &[Option<u64>],
    now: Timestamp,
) -> Decision {
    let current = shards(spec, previous);
    let hi = spec.max_shards.max(current);
    let target = spec.target_backlog_per_shard.max(1);
    let total: u64 = backlogs.iter().flatten().sum();
    let hottest = backlogs.iter().flatten().copied().max().unwrap_or(0);
    let needed = u32::try_from(total.div_ceil(target))
        .unwrap_or(u32::MAX)
        .clamp(spec.min_shards.max(1), hi);
    let last_scale = previous.and_then(|s| parse(s.last_scale_time.as_deref()));
    let since = |t: Timestamp| now.duration_since(t);
    let keep =
        |reason: String, low_since: Option<Timestamp>, recheck: Option<SignedDuration>| Decision {
            status: AutoscalingStatus {
                shards: current,
                reason,
                last_scale_time: previous.and_then(|s| s.last_scale_time.clone()),
                low_since: low_since.map(|t| t.to_string()),
            },
            changed_from: None,
            recheck_in: recheck.and_then(|d| d.try_into().ok()),
        };
    let scale = |to: u32, reason: String| Decision {
        status: AutoscalingStatus {
            shards: to,
            reason,
            last_scale_time: Some(now.to_string()),
            low_since: None,
        },
        changed_from: Some(current),
        recheck_in: None,
    };
    if hottest > target && needed > current {
        let interval = SignedDuration::from_secs(spec.scale_up_interval_seconds.into());
        let waited = last_scale.map_or(interval, since);
        let reason = format!(
            "backlog {total} over {current} shards, the hottest {hottest} above the target {target} per shard"
        );
        if waited < interval {
            return keep(
                format!(
                    "{reason}; the last change was {}s ago, up again after {}s",
                    waited.as_secs(),
                    interval.as_secs()
                ),
                None,
                Some(interval - waited),
            );
        }
        return scale(needed, format!("{reason}: {needed} shards"));
    }
    if needed < current {
        let cooldown = SignedDuration::from_secs(spec.scale_down_cooldown_seconds.into());
        let low = previous
            .and_then(|s| parse(s.low_since.as_deref()))
            .unwrap_or(now);
        let reason =
            format!("backlog {total} fits {needed} shards at the target {target} per shard");
        if since(low) < cooldown {
            let left = cooldown - since(low);
            return keep(
                format!("{reason}; down in {}s unless it grows", left.as_secs()),
                Some(low),
                Some(left),
            );
        }
        return scale(
            needed,
            format!("{reason} for {}s: {needed} shards", cooldown.as_secs()),
        );
    }
    keep(
        format!(
            "backlog {total} over {current} shards, the hottest {hottest}, within the target {target} per shard"
        ),
        None,
        None,
    )
}

fn parse(t: Option<&str>) -> Option<Timestamp> {
    t?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ShardAutoscaling {
        ShardAutoscaling {
            min_shards: 1,
            max_shards: 4,
            target_backlog_per_shard: 100,
            scale_up_interval_seconds: 60,
            scale_down_cooldown_seconds: 300,
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn a_shard_past_its_target_scales_up_at_once_to_what_the_backlog_needs_within_the_maximum() {
        let d = decide(&spec(), None, &[Some(350)], at(0));
        assert_eq!((d.changed_from, d.status.shards), (Some(1), 4));
        assert!(
            d.status.reason.contains("backlog 350"),
            "{}",
            d.status.reason
        );
        let d = decide(&spec(), None, &[Some(250)], at(0));
        assert_eq!(d.status.shards, 3);
        let d = decide(&spec(), None, &[Some(5_000)], at(0));
        assert_eq!(d.status.shards, 4, "never past maxShards");
    }

    #[test]
    fn a_scale_up_waits_for_the_interval_after_the_last_change() {
        let first = decide(&spec(), None, &[Some(150)], at(0)).status;
        assert_eq!(first.shards, 2);
        let d = decide(&spec(), Some(&first), &[Some(200), Some(200)], at(30));
        assert_eq!((d.changed_from, d.status.shards), (None, 2));
        assert_eq!(d.recheck_in, Some(std::time::Duration::from_secs(30)));
        let d = decide(&spec(), Some(&first), &[Some(200), Some(200)], at(61));
        assert_eq!((d.changed_from, d.status.shards), (Some(2), 4));
    }

    #[test]
    fn a_low_backlog_scales_down_only_after_the_cooldown_and_a_rise_resets_it() {
        let up = decide(&spec(), None, &[Some(400)], at(0)).status;
        assert_eq!(up.shards, 4);
        let low = decide(
            &spec(),
            Some(&up),
            &[Some(0), Some(10), Some(0), Some(0)],
            at(100),
        );
        assert_eq!(low.status.shards, 4);
        assert!(low.status.low_since.is_some());
        assert_eq!(low.recheck_in, Some(std::time::Duration::from_secs(300)));
        // Busy again within the cooldown: the clock starts over.
        let busy = decide(
            &spec(),
            Some(&low.status),
            &[Some(90), Some(90), Some(90), Some(90)],
            at(200),
        );
        assert_eq!(
            (busy.status.shards, busy.status.low_since.clone()),
            (4, None)
        );
        let low = decide(&spec(), Some(&busy.status), &[Some(0); 4], at(300)).status;
        let d = decide(&spec(), Some(&low), &[Some(0); 4], at(599));
        assert_eq!(d.status.shards, 4);
        let d = decide(&spec(), Some(&low), &[Some(0); 4], at(600));
        assert_eq!((d.changed_from, d.status.shards), (Some(4), 1));
        assert!(
            d.status.reason.contains("fits 1 shards"),
            "{}",
            d.status.reason
        );
    }

    #[test]
    fn the_plan_s_shard_count_stays_within_the_bounds() {
        let mut s = spec();
        assert_eq!(shards(&s, None), 1);
        let status = AutoscalingStatus {
            shards: 9,
            ..Default::default()
        };
        assert_eq!(shards(&s, Some(&status)), 4, "a lowered maximum wins");
        s.min_shards = 0;
        assert!(check(&s).is_err());
        s.min_shards = 5;
        assert!(check(&s).unwrap_err().contains("below minShards"));
    }
}
