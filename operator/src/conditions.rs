//! Status conditions that keep their transition time while their status holds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition, carrying over `lastTransitionTime` from `previous` when the status is unchanged.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: last,
    }
}

/// Whether the named condition is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_holds_while_status_holds() {
        let first = condition("Ready", false, "A", "m", Some(1), &[]);
        let again = condition(
            "Ready",
            false,
            "B",
            "m2",
            Some(2),
            std::slice::from_ref(&first),
        );
        assert_eq!(again.last_transition_time, first.last_transition_time);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let flipped = condition("Ready", true, "C", "m3", Some(2), &[again]);
        assert_ne!(flipped.last_transition_time, first.last_transition_time);
        assert!(is_true(&[flipped], "Ready"));
    }
}
