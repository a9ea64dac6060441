//! Whether a quiet peer is still there: ping it after a silence, and call it gone when a ping
//! goes unanswered for as long again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What a connection's writer does at a tick of its idle timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The peer spoke recently, or was pinged and still has time to answer.
    Fine,
    /// Silent for the idle time: send a ping.
    Ping,
    /// A ping went unanswered for the idle time: close.
    Gone,
}

/// The last sign of life of a peer, shared between the reader that sees it and the writer that
/// pings; milliseconds on one clock, so a pong in the same millisecond as its ping counts.
#[derive(Debug, Clone)]
pub struct Liveness {
    epoch: Instant,
    idle_ms: u64,
    last_seen_ms: Arc<AtomicU64>,
    pinged_ms: Option<u64>,
}

impl Liveness {
    /// A peer just seen, to be pinged after `idle` of silence.
    pub fn new(idle: Duration) -> Self {
        Liveness {
            epoch: Instant::now(),
            idle_ms: idle.as_millis().max(1) as u64,
            last_seen_ms: Arc::new(AtomicU64::new(0)),
            pinged_ms: None,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Records a frame from the peer (the reader calls this).
    pub fn seen(&self) {
        self.last_seen_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// What to do now (the writer calls this at each tick); a ping it asks for counts as sent.
    pub fn check(&mut self) -> Check {
        let now = self.now_ms();
        let seen = self.last_seen_ms.load(Ordering::Relaxed);
        match self.pinged_ms {
            Some(at) if seen < at && now.saturating_sub(at) >= self.idle_ms => Check::Gone,
            Some(at) if seen < at => Check::Fine,
            _ if now.saturating_sub(seen) >= self.idle_ms => {
                self.pinged_ms = Some(now);
                Check::Ping
            }
            _ => Check::Fine,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_answering_peer_is_pinged_and_kept_a_silent_one_is_gone() {
        let idle = Duration::from_secs(30);
        let mut answering = Liveness::new(idle);
        let mut silent = Liveness::new(idle);
        let mut checks = Vec::new();
        for _ in 0..6 {
            tokio::time::advance(idle).await;
            let a = answering.check();
            if a == Check::Ping {
                // Answered within the same millisecond: still an answer.
                answering.seen();
            }
            checks.push((a, silent.check()));
        }
        assert!(checks.iter().all(|(a, _)| *a != Check::Gone), "{checks:?}");
        assert_eq!(checks[0], (Check::Ping, Check::Ping));
        assert_eq!(
            checks[1].1,
            Check::Gone,
            "one idle period after an unanswered ping"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_talking_peer_is_never_pinged() {
        let idle = Duration::from_secs(30);
        let mut l = Liveness::new(idle);
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(10)).await;
            l.seen();
            assert_eq!(l.check(), Check::Fine);
        }
    }
}
