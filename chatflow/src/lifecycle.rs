//! A service's stop, in the same stages for every tier: it stops taking connections (and says it
//! is not ready), lets its connections finish what they accepted, then tells those left to go.
//! Every wait is bounded by a grace period, so a stalled peer cannot hold a pod past its
//! termination period.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The stop stages of one service and the connection tasks it waits for. Clones share them.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    stopping: CancellationToken,
    closing: CancellationToken,
    connections: TaskTracker,
    turns: Arc<Turns>,
}

/// Hands out the connections' turns to go: evenly over a window, among the connections open
/// when the first turn was asked for.
#[derive(Debug, Default)]
struct Turns {
    /// When the turns began, and how many connections share them.
    began: OnceLock<(Instant, usize)>,
    next: AtomicUsize,
}

impl Turns {
    fn take(&self, spread: Duration, open: usize) -> Instant {
        let (began, open) = *self.began.get_or_init(|| (Instant::now(), open.max(1)));
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        began + spread.mul_f64((k as f64 / open as f64).min(1.0))
    }
}

impl Lifecycle {
    /// A service not stopping yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Another service in the same server: it stops with this one, and closes and waits for
    /// its own connections (an edge beside a producer closes its subscribers after the
    /// producer has answered its senders).
    pub fn alongside(&self) -> Self {
        Lifecycle {
            stopping: self.stopping.clone(),
            closing: CancellationToken::new(),
            connections: TaskTracker::new(),
            turns: Arc::default(),
        }
    }

    /// Begins the stop: no new connections, and `/ready` fails so traffic moves elsewhere.
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    /// Whether the stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Fires when the stop begins.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Fires when the connections still open must go.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// `/ready`'s answer for `service`: ready until the stop begins.
    pub fn ready(&self, service: &str) -> Result<(), String> {
        if self.is_stopping() {
            Err(format!("{service} shutting down"))
        } else {
            Ok(())
        }
    }

    /// Runs a connection's task; the stop waits for it.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.connections.spawn(task);
    }

    /// Runs a connection's task, handing it a token that fires at the connection's turn to go
    /// once `trigger` fired (the stop, for senders; the close, for subscribers). With a zero
    /// `spread` every turn comes at once; otherwise the turns are spread evenly over `spread`
    /// among the connections open then, so their clients reconnect elsewhere a few at a time
    /// instead of all in the same instant. [`Lifecycle::close`] ends every wait at once.
    pub fn spawn_leaving<F, Fut>(&self, trigger: &CancellationToken, spread: Duration, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if spread.is_zero() {
            self.connections.spawn(task(trigger.child_token()));
            return;
        }
        let leave = CancellationToken::new();
        let conn = task(leave.clone());
        // Child tokens: each connection waits on its own, with no lock shared by every
        // connection polled at each of its wake-ups.
        let (trigger, closing) = (trigger.child_token(), self.closing.child_token());
        let (turns, open) = (self.turns.clone(), self.connections.clone());
        self.connections.spawn(async move {
            let pace = async move {
                tokio::select! {
                    _ = closing.cancelled() => {}
                    _ = async {
                        trigger.cancelled().await;
                        tokio::time::sleep_until(turns.take(spread, open.len())).await;
                    } => {}
                }
                leave.cancel();
                std::future::pending::<()>().await
            };
            // The connection runs on after its turn came, to say goodbye; it ends the task.
            tokio::select! {
                _ = conn => {}
                _ = pace => {}
            }
        });
    }

    /// Waits up to `grace` for the connections to end on their own; false when some are left.
    pub async fn finish(&self, grace: Duration) -> bool {
        self.connections.close();
        tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_ok()
    }

    /// Tells the connections still open to go, and waits up to `grace` for them.
    pub async fn close(&self, grace: Duration) -> bool {
        self.closing.cancel();
        self.finish(grace).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_ends_connections_that_wait_for_it_and_finish_reports_those_left() {
        let life = Lifecycle::new();
        let closing = life.closing().clone();
        life.spawn(async move { closing.cancelled().await });
        life.stop();
        assert!(life.is_stopping());
        assert!(
            life.ready("shard")
                .unwrap_err()
                .contains("shard shutting down")
        );
        assert!(
            !life.finish(Duration::from_millis(20)).await,
            "a connection waiting to be told to go is still open"
        );
        assert!(life.close(Duration::from_secs(5)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn connections_leave_spread_evenly_over_the_window_after_the_trigger() {
        let life = Lifecycle::new();
        let left = Arc::new(std::sync::Mutex::new(Vec::new()));
        let started = Instant::now();
        for _ in 0..10 {
            let left = left.clone();
            life.spawn_leaving(
                life.stopping(),
                Duration::from_secs(5),
                |leave| async move {
                    leave.cancelled().await;
                    left.lock().unwrap().push(started.elapsed());
                },
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            left.lock().unwrap().is_empty(),
            "nobody leaves before the stop"
        );
        life.stop();
        assert!(life.finish(Duration::from_secs(60)).await);
        let mut left = left.lock().unwrap().clone();
        left.sort();
        let secs: Vec<f64> = left.iter().map(|d| d.as_secs_f64() - 3.0).collect();
        let want: Vec<f64> = (0..10).map(|k| k as f64 * 0.5).collect();
        for (got, want) in secs.iter().zip(&want) {
            assert!((got - want).abs() < 0.01, "{secs:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_close_ends_the_wait_for_a_turn() {
        let life = Lifecycle::new();
        for _ in 0..4 {
            life.spawn_leaving(
                life.stopping(),
                Duration::from_secs(600),
                |leave| async move {
                    leave.cancelled().await;
                },
            );
        }
        life.stop();
        let before = Instant::now();
        assert!(life.close(Duration::from_secs(60)).await);
        assert!(before.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_service_alongside_stops_together_but_closes_apart() {
        let producer = Lifecycle::new();
        let edge = producer.alongside();
        producer.stop();
        assert!(edge.is_stopping());
        producer.close(Duration::from_millis(1)).await;
        assert!(!edge.closing().is_cancelled());
    }
}
