//! The producer autoscaler: from the open connections and the publish rate the producer pods
//! report, how many pods the set wants. Up at once to what the load needs at the headroom (a new
//! pod disturbs nobody); down only after the load has fitted fewer pods for a cooldown, because
//! a pod taken away closes its connections, which its clients then resume on the others.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{pack::HEADROOM, parse};
use crate::crd::{ProducerAutoscaling, ProducerAutoscalingStatus};

/// What the producer pods carried at a measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProducerLoad {
    /// Open WebSockets over the Ready pods, when every one answered.
    pub connections: Option<u64>,
    /// Chat messages per second they published, when every one was read twice.
    pub rate: Option<f64>,
}

/// A decision: the new status, and the pod count before when it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerDecision {
    /// What the status says now.
    pub status: ProducerAutoscalingStatus,
    /// The pod count before, when it changed.
    pub changed_from: Option<i32>,
    /// How long until the decision may change by itself (a cooldown running).
    pub recheck_in: Option<std::time::Duration>,
}

/// The producer pods a set's plan uses: the autoscaler's last decision within the bounds, or the
/// minimum before its first.
pub fn replicas(spec: &ProducerAutoscaling, status: Option<&ProducerAutoscalingStatus>) -> i32 {
    let lo = spec.min_replicas.max(1);
    let hi = spec.max_replicas.max(lo);
    status.map_or(lo, |s| s.replicas.clamp(lo, hi))
}

/// Why `spec.producer.autoscaling` cannot be served, if it cannot.
pub fn check(spec: &ProducerAutoscaling) -> Result<(), String> {
    if spec.min_replicas < 1 {
        return Err("spec.producer.autoscaling.minReplicas must be at least 1".into());
    }
    if spec.max_replicas < spec.min_replicas {
        return Err(format!(
            "spec.producer.autoscaling.maxReplicas ({}) is below minReplicas ({})",
            spec.max_replicas, spec.min_replicas
        ));
    }
    if spec.target_connections_per_pod.is_none()
        && spec.target_messages_per_second_per_pod.is_none()
    {
        return Err("spec.producer.autoscaling needs targetConnectionsPerPod, targetMessagesPerSecondPerPod or both".into());
    }
    Ok(())
}

/// Decides from `load` for the `current` pods, at `now`. What is not measured counts as nothing
/// for going up, and forbids going down.
pub fn decide(
    spec: &ProducerAutoscaling,
    previous: Option<&ProducerAutoscalingStatus>,
    current: i32,
    load: &ProducerLoad,
    now: Timestamp,
) -> ProducerDecision {
    let lo = spec.min_replicas.max(1);
    let hi = spec.max_replicas.max(lo);
    let by_connections = spec
        .target_connections_per_pod
        .map(|t| load.connections.unwrap_or(0) as f64 / t.max(1) as f64);
    let by_rate = spec
        .target_messages_per_second_per_pod
        .map(|t| load.rate.unwrap_or(0.0) / t.max(1) as f64);
    let pods = by_connections.unwrap_or(0.0).max(by_rate.unwrap_or(0.0));
    let needed = ((pods / HEADROOM).ceil() as i64).clamp(i64::from(lo), i64::from(hi)) as i32;
    let mut measured = format!("{current} pods carry");
    if let Some(t) = spec.target_connections_per_pod {
        let c = load.connections.map_or("?".into(), |c| c.to_string());
        measured.push_str(&format!(" {c} connections (target {t} a pod)"));
    }
    if let Some(t) = spec.target_messages_per_second_per_pod {
        let r = load.rate.map_or("?".into(), |r| format!("{r:.0}"));
        measured.push_str(&format!(" {r} msg/s (target {t} a pod)"));
    }
    let keep = |reason: String, low: Option<Timestamp>, recheck: Option<SignedDuration>| {
        ProducerDecision {
            status: ProducerAutoscalingStatus {
                replicas: current,
                reason,
                last_scale_time: previous.and_then(|s| s.last_scale_time.clone()),
                low_since: low.map(|t| t.to_string()),
            },
            changed_from: None,
            recheck_in: recheck.and_then(|d| d.try_into().ok()),
        }
    };
    let change = |reason: String| ProducerDecision {
        status: ProducerAutoscalingStatus {
            replicas: needed,
            reason: format!("{reason}: {needed} pods"),
            last_scale_time: Some(now.to_string()),
            low_since: None,
        },
        changed_from: Some(current),
        recheck_in: None,
    };
    if needed > current {
        return change(format!(
            "{measured}, {:.0}% of {current} pods",
            pods / f64::from(current.max(1)) * 100.0
        ));
    }
    if needed < current {
        let complete = (spec.target_connections_per_pod.is_none() || load.connections.is_some())
            && (spec.target_messages_per_second_per_pod.is_none() || load.rate.is_some());
        if !complete {
            return keep(
                format!("{measured}; not fully measured yet, so no pod is taken away"),
                None,
                None,
            );
        }
        let cooldown = SignedDuration::from_secs(spec.scale_down_cooldown_seconds.into());
        let low = previous
            .and_then(|s| parse(s.low_since.as_deref()))
            .unwrap_or(now);
        let waited = now.duration_since(low);
        let reason = format!("{measured}, which {needed} pods hold");
        if waited < cooldown {
            let left = cooldown - waited;
            return keep(
                format!("{reason}; fewer in {}s unless it grows", left.as_secs()),
                Some(low),
                Some(left),
            );
        }
        return change(format!("{reason} for {}s", cooldown.as_secs()));
    }
    keep(format!("{measured}, within the targets"), None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProducerAutoscaling {
        ProducerAutoscaling {
            min_replicas: 2,
            max_replicas: 6,
            target_connections_per_pod: Some(1_000),
            target_messages_per_second_per_pod: Some(500),
            scale_down_cooldown_seconds: 120,
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn load(connections: u64, rate: f64) -> ProducerLoad {
        ProducerLoad {
            connections: Some(connections),
            rate: Some(rate),
        }
    }

    #[test]
    fn connections_or_publish_rate_past_the_headroom_add_pods_at_once_within_the_maximum() {
        let d = decide(&spec(), None, 2, &load(1_000, 100.0), at(0));
        assert_eq!(d.changed_from, None, "1,000 connections over 2 pods is 50%");
        let d = decide(&spec(), None, 2, &load(2_000, 100.0), at(0));
        assert_eq!((d.changed_from, d.status.replicas), (Some(2), 3));
        assert!(
            d.status.reason.contains("2000 connections"),
            "{}",
            d.status.reason
        );
        let d = decide(&spec(), None, 2, &load(10, 1_500.0), at(0));
        assert_eq!(d.status.replicas, 4, "1,500 msg/s at 400 a pod");
        let d = decide(&spec(), None, 2, &load(100_000, 0.0), at(0));
        assert_eq!(d.status.replicas, 6);
    }

    #[test]
    fn fewer_pods_only_after_the_cooldown_and_never_on_a_partial_measurement() {
        let quiet = load(100, 10.0);
        let low = decide(&spec(), None, 4, &quiet, at(0));
        assert_eq!(low.changed_from, None);
        assert_eq!(low.recheck_in, Some(std::time::Duration::from_secs(120)));
        let d = decide(&spec(), Some(&low.status), 4, &quiet, at(119));
        assert_eq!(d.changed_from, None);
        let d = decide(&spec(), Some(&low.status), 4, &quiet, at(120));
        assert_eq!((d.changed_from, d.status.replicas), (Some(4), 2));
        let partial = ProducerLoad {
            connections: Some(0),
            rate: None,
        };
        let d = decide(&spec(), None, 4, &partial, at(0));
        assert_eq!((d.changed_from, d.status.low_since), (None, None));
    }

    #[test]
    fn the_spec_needs_a_target_and_sane_bounds() {
        let mut s = spec();
        assert!(check(&s).is_ok());
        assert_eq!(replicas(&s, None), 2);
        s.target_connections_per_pod = None;
        s.target_messages_per_second_per_pod = None;
        assert!(
            check(&s)
                .unwrap_err()
                .contains("needs targetConnectionsPerPod")
        );
        let mut s = spec();
        s.max_replicas = 1;
        assert!(check(&s).unwrap_err().contains("below minReplicas"));
    }
}
