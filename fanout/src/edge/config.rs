//! Edge options: flags with environment fallbacks, flattened into the producer's.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::routes::Routes;

/// How an edge serves `/subscribe/{roomId}` from the shards.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct EdgeConfig {
    /// The set's routing table (`routing.json`); enables `/subscribe/{roomId}` here, each room
    /// relayed from the shard the table names for it.
    #[arg(long, env = "EDGE_ROUTING_FILE")]
    pub edge_routing_file: Option<PathBuf>,
    /// One subscribe URL for every room (`ws://host:8081/subscribe/{roomId}`), instead of a
    /// routing table.
    #[arg(long, env = "EDGE_UPSTREAM", conflicts_with = "edge_routing_file")]
    pub edge_upstream: Option<String>,
    /// Seconds a room's upstream subscription outlives its last local subscriber, so clients
    /// that reconnect find their room still covered.
    #[arg(long, env = "EDGE_LINGER_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub edge_linger_secs: u64,
    /// Messages a local subscriber may fall behind before it is disconnected.
    #[arg(long, env = "EDGE_SUBSCRIBER_BUFFER", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub edge_subscriber_buffer: u64,
    /// Relayed events kept per room for local subscribers that resume with `?after=`.
    #[arg(long, env = "EDGE_HISTORY_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub edge_history_size: u64,
    /// Most concurrent local subscribers; more are refused with HTTP 503.
    #[arg(long, env = "EDGE_MAX_SUBSCRIBERS", default_value_t = 50_000)]
    pub edge_max_subscribers: usize,
    /// Seconds without any frame from a local subscriber before it is pinged; twice that and
    /// it is closed.
    #[arg(long, env = "EDGE_IDLE_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub edge_idle_timeout_secs: u64,
    /// At shutdown, local subscribers are closed (1001) spread evenly over this many seconds
    /// instead of all at once, so they resume elsewhere a few at a time; keep it well under the
    /// shutdown grace period. 0 closes them all at once.
    #[arg(long, env = "EDGE_CLOSE_SPREAD_SECS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub edge_close_spread_secs: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            edge_routing_file: None,
            edge_upstream: None,
            edge_linger_secs: 30,
            edge_subscriber_buffer: 4096,
            edge_history_size: 1000,
            edge_max_subscribers: 50_000,
            edge_idle_timeout_secs: 30,
            edge_close_spread_secs: 0,
        }
    }
}

impl EdgeConfig {
    /// An edge relaying every room from one consumer at `upstream` (a subscribe URL template).
    pub fn upstream(upstream: impl Into<String>) -> Self {
        EdgeConfig {
            edge_upstream: Some(upstream.into()),
            ..Default::default()
        }
    }

    /// Where rooms are relayed from, when the edge is enabled.
    pub fn routes(&self) -> Option<Routes> {
        match (&self.edge_routing_file, &self.edge_upstream) {
            (Some(path), _) => Some(Routes::file(path.clone())),
            (None, Some(template)) => Some(Routes::Template(template.clone())),
            (None, None) => None,
        }
    }

    /// How long an unwatched room keeps its upstream.
    pub fn linger(&self) -> Duration {
        Duration::from_secs(self.edge_linger_secs)
    }
}
