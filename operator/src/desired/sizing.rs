//! Bounds the workloads get from their memory limits, so a pod at its bounds stays inside its
//! limit: the producer's unanswered messages, the consumer's per-room history.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Kept out of the bounds for the runtime, buffers and everything not counted.
const RESERVE: u64 = 128 << 20;
/// Budget per place under the producer's MAX_UNANSWERED: a message takes one per 4 KiB of its
/// frame plus its stamped entry and reply, so a few hundred bytes take one and 16 KiB five.
const PER_UNANSWERED: u64 = 4 << 10;
/// Budget per history event: its JSON (a 500-character text and the other fields).
const PER_HISTORY_EVENT: u64 = 2 << 10;
/// History never takes more than this share of what is left after the reserve.
const HISTORY_SHARE: u64 = 4;

/// Bytes of a Kubernetes quantity in the forms memory limits use (`512Mi`, `1G`, `1048576`,
/// `1e9`); None for anything else.
pub fn bytes(q: &Quantity) -> Option<u64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    let b = number * scale;
    (b.is_finite() && b >= 0.0).then_some(b as u64)
}

/// The container's memory limit in bytes, when it has one we can read.
pub fn memory_limit(r: &ResourceRequirements) -> Option<u64> {
    r.limits.as_ref()?.get("memory").and_then(bytes)
}

/// MAX_UNANSWERED for a producer with this memory limit.
pub fn max_unanswered(limit: u64) -> u64 {
    (limit.saturating_sub(RESERVE) / PER_UNANSWERED).clamp(1_000, 10_000_000)
}

/// HISTORY_SIZE for a consumer shard of `rooms` rooms with this memory limit, at most the
/// consumer's own default of 1,000.
pub fn history_size(limit: u64, rooms: u64) -> u64 {
    let budget = limit.saturating_sub(RESERVE) / HISTORY_SHARE;
    (budget / (rooms.max(1) * PER_HISTORY_EVENT)).min(1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities_read_as_bytes() {
        let b = |s: &str| bytes(&Quantity(s.into()));
        assert_eq!(b("512Mi"), Some(512 << 20));
        assert_eq!(b("1Gi"), Some(1 << 30));
        assert_eq!(b("1.5Gi"), Some(3 << 29));
        assert_eq!(b("500M"), Some(500_000_000));
        assert_eq!(b("1048576"), Some(1 << 20));
        assert_eq!(b("1e9"), Some(1_000_000_000));
        assert_eq!(b("lots"), None);
        assert_eq!(b("12Qi"), None);
    }

    #[test]
    fn bounds_grow_with_the_limit_and_stay_inside_it() {
        let default_limit = 512 << 20;
        let unanswered = max_unanswered(default_limit);
        assert_eq!(unanswered, 98_304, "about the producer's own default");
        assert!(unanswered * PER_UNANSWERED + RESERVE <= default_limit);
        assert!(max_unanswered(2 << 30) > unanswered);
        assert_eq!(
            max_unanswered(64 << 20),
            1_000,
            "a floor keeps a tiny pod usable"
        );

        assert_eq!(
            history_size(default_limit, 10),
            1_000,
            "the default fits easily"
        );
        let crowded = history_size(default_limit, 1_000);
        assert_eq!(crowded, 49);
        assert!(crowded * 1_000 * PER_HISTORY_EVENT <= (default_limit - RESERVE) / HISTORY_SHARE);
    }
}
