//! A service's stop, in the same stages for every tier: it stops taking connections (and says it
//! is not ready), lets its connections finish what they accepted, then tells those left to go.
//! Every wait is bounded by a grace period, so a stalled peer cannot hold a pod past its
//! termination period.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The stop stages of one service and the connection tasks it waits for. Clones share them.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    stopping: CancellationToken,
    closing: CancellationToken,
    connections: TaskTracker,
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
