//! Producer options: flags with environment fallbacks.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chatflow::auth::AuthOptions;
use chatflow::config::QueueOptions;
use chatflow::envelope::Packing;
use chatflow_fanout::edge::EdgeConfig;
use chatflow_fanout::presence::PresenceOptions;
use clap::Parser;

/// Everything the producer can be told at start-up.
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(
    name = "chatflow-producer",
    version,
    about = "ChatFlow WebSocket ingest"
)]
pub struct ProducerConfig {
    /// Address to listen on (WebSocket, health, readiness and metrics).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,
    /// Serve `/metrics` here instead of on LISTEN_ADDR, away from the Service clients use.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// This instance's id, stamped on every message (at most 256 bytes: shards drop messages
    /// whose stamps are longer).
    #[arg(long, env = "SERVER_ID", default_value = "producer-1", value_parser = server_id)]
    pub server_id: String,
    /// Rooms and queue backend.
    #[command(flatten)]
    pub queue: QueueOptions,
    /// Proxies whose X-Forwarded-For is believed (comma-separated IPs).
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpAddr>,
    /// How messages are laid into SQS messages: `envelope` (many per SQS message) or `single`
    /// (one TaskMessage each, the original format).
    #[arg(long, env = "PACKING", default_value = "envelope")]
    pub packing: Packing,
    /// How long a batch waits for more messages before it is sent, in microseconds. 0 sends
    /// what is there at once: with one batch in flight per room, messages that arrive during a
    /// queue round trip fill the next batch anyway, while a linger delays every ack under
    /// steady load.
    #[arg(long, env = "BATCH_LINGER_US", default_value_t = 0)]
    pub batch_linger_us: u64,
    /// Largest accepted message, in bytes; larger ones close the socket with 1009.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u64).range(64..=16_777_216))]
    pub max_frame_bytes: u64,
    /// Most concurrent WebSocket connections; more are refused with HTTP 503.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,
    /// Messages a connection may have unacknowledged before its reading pauses.
    #[arg(long, env = "MAX_UNACKED", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_unacked: u64,
    /// Places for messages read and not yet answered over all connections, 4 KiB each: a message
    /// takes one place per 4 KiB of its frame plus 1 KiB (most take one, a 16 KiB frame five),
    /// so the bound holds in bytes however large the frames. At the bound every connection's
    /// reading pauses until answers go out.
    #[arg(long, env = "MAX_UNANSWERED", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_unanswered: u64,
    /// Seconds without any frame from a client before it is pinged; twice that and it is closed.
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// Attempts per batch for transient failures.
    #[arg(long, env = "PUBLISH_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub publish_attempts: u32,
    /// First retry delay in milliseconds; doubles per attempt, with jitter.
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = 50)]
    pub retry_base_ms: u64,
    /// Longest retry delay in milliseconds.
    #[arg(long, env = "RETRY_MAX_MS", default_value_t = 1000)]
    pub retry_max_ms: u64,
    /// Consecutive failed batches that open the circuit breaker.
    #[arg(long, env = "BREAKER_THRESHOLD", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_threshold: u32,
    /// How long the breaker stays open before a probe, in milliseconds.
    #[arg(long, env = "BREAKER_COOLDOWN_MS", default_value_t = 2000)]
    pub breaker_cooldown_ms: u64,
    /// How long shutdown waits for pending messages to be answered, in seconds.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    /// Messages per second one user may send, over all its connections (0: no limit); more
    /// are answered RATE_LIMITED and not published.
    #[arg(long, env = "USER_MESSAGE_RATE", default_value_t = 10)]
    pub user_message_rate: u32,
    /// Messages a user may send at once above its rate.
    #[arg(long, env = "USER_MESSAGE_BURST", default_value_t = 20)]
    pub user_message_burst: u32,
    /// Messages per second one client address may send (0: no limit).
    #[arg(long, env = "IP_MESSAGE_RATE", default_value_t = 0)]
    pub ip_message_rate: u32,
    /// Messages a client address may send at once above its rate.
    #[arg(long, env = "IP_MESSAGE_BURST", default_value_t = 200)]
    pub ip_message_burst: u32,
    /// At shutdown, senders' connections are closed (1001) spread evenly over this many seconds
    /// instead of all at once, so their clients reconnect to other pods a few at a time; at most
    /// half of SHUTDOWN_GRACE_SECS. 0 closes them all at once.
    #[arg(long, env = "CLOSE_SPREAD_SECS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub close_spread_secs: u64,
    /// Key of the server API (`POST /api/rooms/{roomId}/messages` with `Authorization: apikey
    /// KEY`), at least 16 characters; unset, the API is off.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    #[serde(skip)]
    pub api_key: Option<ApiKey>,
    /// Tokens, origins and connection limits.
    #[command(flatten)]
    pub auth: AuthOptions,
    /// `/subscribe/{roomId}` relayed from the shards (off unless a routing source is given).
    #[command(flatten)]
    pub edge: EdgeConfig,
    /// Who is in each room: the edge's subscribers, and with a store every pod's.
    #[command(flatten)]
    pub presence: PresenceOptions,
}

/// The server API key; its `Debug` does not show it, so no log of the settings does.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(pub String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(…)")
    }
}

impl std::str::FromStr for ApiKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ApiKey(s.to_owned()))
    }
}

fn server_id(s: &str) -> Result<String, String> {
    match s.len() {
        1..=256 => Ok(s.to_owned()),
        n => Err(format!("must be 1 to 256 bytes, not {n}")),
    }
}

impl ProducerConfig {
    /// Defaults for in-process use (tests, loadgen local): embedded queues, loopback, no
    /// message rate limit (one process plays every user, many times a second each).
    pub fn local(rooms_start: u32, rooms_end: u32) -> Self {
        let mut c =
            ProducerConfig::parse_from(["chatflow-producer", "--queue-backend", "embedded"]);
        c.listen_addr = "127.0.0.1:0".parse().expect("literal address");
        c.user_message_rate = 0;
        c.queue.rooms_start = rooms_start;
        c.queue.rooms_end = rooms_end;
        c
    }

    /// How long closes are spread over at shutdown: as asked, within half the grace period.
    pub fn close_spread(&self) -> Duration {
        Duration::from_secs(self.close_spread_secs.min(self.shutdown_grace_secs / 2))
    }

    /// Batch linger.
    pub fn linger(&self) -> Duration {
        Duration::from_micros(self.batch_linger_us)
    }
}
