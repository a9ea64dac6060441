//! Consumer options: flags with environment fallbacks.

use std::net::SocketAddr;
use std::time::Duration;

use chatflow::auth::AuthOptions;
use chatflow::config::QueueOptions;
use clap::Parser;

use chatflow_fanout::store::StoreOptions;

/// Everything the consumer can be told at start-up.
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(name = "chatflow-consumer", version, about = "ChatFlow fan-out shard")]
pub struct ConsumerConfig {
    /// Address to listen on (subscribers, health, readiness and metrics).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8081")]
    pub listen_addr: SocketAddr,
    /// Serve `/metrics` here instead of on LISTEN_ADDR, away from the Service clients use.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// This instance's id, for logs.
    #[arg(long, env = "SERVER_ID", default_value = "consumer-1")]
    pub server_id: String,
    /// Rooms owned and queue backend.
    #[command(flatten)]
    pub queue: QueueOptions,
    /// Tokens, origins and connection limits for subscribers.
    #[command(flatten)]
    pub auth: AuthOptions,
    /// The history store beyond the shard's memory (Redis), when set.
    #[command(flatten)]
    pub store: StoreOptions,
    /// Longest wait of a room's long poll, in seconds. Shutdown lets the polls in flight finish
    /// (a remote poll cannot be withdrawn), so this stays well under SHUTDOWN_GRACE_SECS.
    #[arg(long, env = "POLL_WAIT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub poll_wait_secs: u64,
    /// Concurrent long polls; 0 gives every queue (a room's, or a bucket's) its own (lowest
    /// latency).
    #[arg(long, env = "CONSUMER_POLLERS", default_value_t = 0)]
    pub pollers: usize,
    /// Messages a subscriber may fall behind before it is disconnected; at least what one
    /// receive brings (4,000 with envelopes), or a burst disconnects subscribers that keep up.
    #[arg(long, env = "SUBSCRIBER_BUFFER", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub subscriber_buffer: u64,
    /// Seconds without any frame from a subscriber before it is pinged; twice that and it is
    /// closed (1001), so subscribers that vanished without closing do not hold their places.
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout_secs: u64,
    /// Broadcasts kept per room for subscribers that resume with `?after=`; each costs about
    /// the size of its JSON event (a few hundred bytes).
    #[arg(long, env = "HISTORY_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub history_size: u64,
    /// How long, in seconds, a starting shard waits for a room's subscribers to come back
    /// before taking the room's backlog; it starts at once for a room that has one. 0 never waits.
    #[arg(long, env = "RESUME_HOLD_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub resume_hold_secs: u64,
    /// Message ids remembered per room to drop redeliveries.
    #[arg(long, env = "DEDUP_MEMORY", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub dedup_memory: u64,
    /// Most concurrent subscribers; more are refused with HTTP 503.
    #[arg(long, env = "MAX_SUBSCRIBERS", default_value_t = 50_000)]
    pub max_subscribers: usize,
    /// How long shutdown waits for broadcasts in hand, in seconds.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
}

impl ConsumerConfig {
    /// Defaults for in-process use (tests, loadgen local): embedded queues, loopback.
    pub fn local(rooms_start: u32, rooms_end: u32) -> Self {
        let mut c =
            ConsumerConfig::parse_from(["chatflow-consumer", "--queue-backend", "embedded"]);
        c.listen_addr = "127.0.0.1:0".parse().expect("literal address");
        c.queue.rooms_start = rooms_start;
        c.queue.rooms_end = rooms_end;
        // An in-process queue dies with the process: no predecessor left a backlog to hold.
        c.resume_hold_secs = 0;
        c
    }

    /// Long-poll wait and concurrency for `rooms` queues: one long poll per queue by default.
    /// With fewer pollers than queues, queues take turns (a fair semaphore) with short polls, so a
    /// turn comes within about a second and a busy queue cannot hold a poller for long.
    pub fn poll_plan(&self, rooms: usize) -> (Option<usize>, Duration) {
        if self.pollers == 0 || self.pollers >= rooms {
            return (None, Duration::from_secs(self.poll_wait_secs));
        }
        (Some(self.pollers), Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_room_long_polls_unless_pollers_are_capped() {
        let mut c = ConsumerConfig::local(1, 100);
        assert_eq!(c.poll_plan(100), (None, Duration::from_secs(10)));
        c.pollers = 100;
        assert_eq!(c.poll_plan(100), (None, Duration::from_secs(10)));
        c.pollers = 20;
        assert_eq!(c.poll_plan(100), (Some(20), Duration::ZERO));
    }

    #[test]
    fn a_subscriber_that_keeps_up_is_not_disconnected_by_the_burst_of_one_receive() {
        let c = ConsumerConfig::local(1, 1);
        assert!(c.subscriber_buffer as usize >= chatflow::envelope::RECEIVE_MAX_MESSAGES);
        let edge = chatflow_fanout::edge::EdgeConfig::default();
        assert!(edge.edge_subscriber_buffer as usize >= chatflow::envelope::RECEIVE_MAX_MESSAGES);
    }
}
