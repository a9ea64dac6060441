//! Circuit breaker over queue publishing: fail fast while the queue service is down, probe
//! after a cooldown, close again by itself.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Breaker closed: go ahead, with retries.
    Allow,
    /// Breaker half-open: this caller is the single probe; one attempt only.
    Probe,
    /// Breaker open: fail at once.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// Counts consecutive failed batches; opens at `threshold`.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
    /// Closed with no failure counted: every publish asks, and in this, the usual state, it is
    /// answered without taking the lock that publishers on other threads would wait for.
    clean: AtomicBool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
            clean: AtomicBool::new(true),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides whether a batch may be sent now.
    pub fn admit(&self) -> Admission {
        if self.clean.load(Ordering::Acquire) {
            return Admission::Allow;
        }
        let mut s = self.state();
        match *s {
            State::Closed { .. } => Admission::Allow,
            State::Open { until } if Instant::now() >= until => {
                *s = State::HalfOpen;
                Admission::Probe
            }
            State::Open { .. } | State::HalfOpen => Admission::Reject,
        }
    }

    /// Records a batch that reached the queue.
    pub fn success(&self) {
        if self.clean.load(Ordering::Acquire) {
            return;
        }
        // Stored under the lock, so a failure recorded meanwhile cannot be overwritten as clean.
        let mut s = self.state();
        *s = State::Closed { failures: 0 };
        self.clean.store(true, Ordering::Release);
        drop(s);
    }

    /// Records a batch that did not; returns true when this opened the breaker.
    pub fn failure(&self) -> bool {
        let mut s = self.state();
        self.clean.store(false, Ordering::Release);
        let open = State::Open {
            until: Instant::now() + self.cooldown,
        };
        match *s {
            State::Closed { failures } if failures + 1 >= self.threshold => {
                *s = open;
                true
            }
            State::Closed { failures } => {
                *s = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::HalfOpen | State::Open { .. } => {
                *s = open;
                false
            }
        }
    }

    /// Whether messages are being refused.
    pub fn is_open(&self) -> bool {
        !self.clean.load(Ordering::Acquire) && !matches!(*self.state(), State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_closes_after_a_good_probe() {
        let b = Breaker::new(3, Duration::from_secs(2));
        assert!(!b.failure());
        assert!(!b.failure());
        assert_eq!(b.admit(), Admission::Allow);
        assert!(b.failure(), "third consecutive failure opens");
        assert_eq!(b.admit(), Admission::Reject);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.admit(), Admission::Probe);
        assert_eq!(b.admit(), Admission::Reject, "one probe at a time");
        b.failure();
        assert_eq!(b.admit(), Admission::Reject, "a failed probe reopens");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.admit(), Admission::Probe);
        b.success();
        assert_eq!(b.admit(), Admission::Allow);
        assert!(!b.is_open());
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(1));
        b.failure();
        b.success();
        assert!(!b.failure());
        assert!(!b.is_open());
    }
}
